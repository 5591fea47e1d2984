// The REST API and the change stream, with the token the user signed in with. The token is kept in
// sessionStorage (this browser tab's session only) and sent as `Authorization: Bearer`; the change
// stream, a WebSocket, cannot carry headers from a browser, so it offers the token as the
// `vexil.token.<token>` subprotocol (never in the URL, which would end up in logs).

const TOKEN = "vexil.console.token";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  set(token) {
    sessionStorage.setItem(TOKEN, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN);
  },
};

/** An error answer: `status` and the problem+json body (`detail`, `errors` with JSON paths). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** Calls the API: resolves `{status, data, etag}`, rejects with ApiError. */
export async function api(method, path, { body, headers = {}, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  }
  const init = { method, headers: { ...headers }, credentials: "omit", cache: "no-store" };
  if (session.token) init.headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, { detail: `control did not answer (${e.message})` });
  }
  const type = response.headers.get("content-type") || "";
  let data = null;
  if (response.status !== 204) {
    const text = await response.text();
    data = type.includes("json") && text ? JSON.parse(text) : text;
  }
  if (!response.ok) throw new ApiError(response.status, typeof data === "object" ? data : { detail: data });
  return { status: response.status, data, etag: response.headers.get("etag") };
}

/** Every page of a `{items, next_cursor}` listing (bounded to `max` items). */
export async function all(path, query = {}, max = 10000) {
  const items = [];
  let cursor;
  do {
    const { data } = await api("GET", path, { query: { ...query, cursor, limit: 1000 } });
    items.push(...data.items);
    cursor = data.next_cursor;
  } while (cursor && items.length < max);
  return items;
}

/** Follows an environment's change stream. `onMessage(msg)` per JSON message; `onState(text)` when
 *  the connection opens, closes or retries. Reconnects with backoff, resuming after the last
 *  revision seen. Returns `stop()`. */
export function follow(env, onMessage, onState) {
  let ws;
  let stopped = false;
  let lastRevision = null;
  let retry = 500;
  let timer;
  const open = () => {
    const url = new URL(`/api/v1/environments/${encodeURIComponent(env)}/events`, location.origin);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (lastRevision !== null) url.searchParams.set("from_revision", lastRevision);
    ws = new WebSocket(url, ["vexil.events.v1", `vexil.token.${session.token}`]);
    ws.onopen = () => {
      retry = 500;
      onState("live");
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (typeof msg.revision === "number" && (msg.type === "change" || msg.type === "ready" || msg.type === "reset")) {
        lastRevision = msg.revision;
      }
      onMessage(msg);
    };
    ws.onclose = (e) => {
      if (stopped) return;
      onState(`reconnecting (${e.code}${e.reason ? `: ${e.reason}` : ""})`);
      timer = setTimeout(open, retry);
      retry = Math.min(retry * 2, 10000);
    };
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (ws) ws.close(1000);
  };
}
