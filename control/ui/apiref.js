// The API reference, rendered from control's own `/openapi.json` (the document the router is built
// from, so it lists exactly the routes that exist), with "try it" sending real requests with the
// signed-in token.

import { api, ApiError } from "./api.js";
import { h, fill, field, jsonBlock } from "./dom.js";

const METHODS = ["get", "post", "put", "patch", "delete"];

/** A schema with its `$ref`s followed (one level at a time, cycles cut). */
function resolve(doc, schema, seen = new Set()) {
  if (!schema || typeof schema !== "object") return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (seen.has(name)) return { $ref: schema.$ref };
    return resolve(doc, doc.components?.schemas?.[name], new Set([...seen, name]));
  }
  if (Array.isArray(schema)) return schema.map((s) => resolve(doc, s, seen));
  const out = {};
  for (const [k, v] of Object.entries(schema)) out[k] = typeof v === "object" ? resolve(doc, v, seen) : v;
  return out;
}

function operation(doc, path, method, op) {
  const params = op.parameters || [];
  const inputs = params.map((p) => {
    const [wrap, input] = field(`${p.name} (${p.in}${p.required ? ", required" : ""})`, h("input", { autocomplete: "off", "data-in": p.in, "data-name": p.name }), p.description);
    return { p, wrap, input };
  });
  const hasBody = Boolean(op.requestBody);
  const bodySchema = op.requestBody?.content?.["application/json"]?.schema;
  const [bodyWrap, bodyArea] = field("Request body (JSON)", h("textarea", { class: "code", rows: "6", spellcheck: "false" }, "{}"));
  const result = h("div", { "aria-live": "polite" });
  const send = async (ev) => {
    ev.preventDefault();
    let url = path;
    const query = {};
    const headers = {};
    for (const { p, input } of inputs) {
      const v = input.value.trim();
      if (!v) continue;
      if (p.in === "path") url = url.replace(`{${p.name}}`, encodeURIComponent(v));
      else if (p.in === "query") query[p.name] = v;
      else if (p.in === "header") headers[p.name] = v;
    }
    try {
      const r = await api(method.toUpperCase(), url, { query, headers, body: hasBody ? bodyArea.value : undefined });
      fill(result, h("p", {}, `${r.status}${r.etag ? ` — ETag ${r.etag}` : ""}`), r.data === null ? null : jsonBlock(r.data));
    } catch (e) {
      if (e instanceof ApiError) fill(result, h("p", { class: "verdict bad" }, `${e.status}`), jsonBlock(e.problem));
      else fill(result, h("p", {}, String(e)));
    }
  };
  return h(
    "details",
    { class: "op" },
    h("summary", {}, h("span", { class: `method ${method}` }, method.toUpperCase()), " ", h("code", {}, path), op.summary ? ` — ${op.summary}` : ""),
    op.description ? h("p", { class: "meta" }, op.description) : null,
    bodySchema ? [h("h3", {}, "Request body"), jsonBlock(resolve(doc, bodySchema))] : null,
    h("h3", {}, "Responses"),
    h(
      "ul",
      {},
      Object.entries(op.responses || {}).map(([status, r]) => h("li", {}, h("code", {}, status), ` ${r.description || ""}`)),
    ),
    h("form", { class: "card", "aria-label": `Try ${method.toUpperCase()} ${path}`, onsubmit: send }, h("h3", {}, "Try it"), inputs.map((x) => x.wrap), hasBody ? bodyWrap : null, h("button", { type: "submit", class: "primary" }, "Send")),
    result,
  );
}

export async function apiReference() {
  const { data: doc } = await api("GET", "/openapi.json");
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = op.tags?.[0] || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(doc, path, method, op));
    }
  }
  return h(
    "section",
    {},
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, "API reference")),
    h("p", { class: "meta" }, `${doc.info?.title || "API"} ${doc.info?.version || ""}, from `, h("a", { href: "/openapi.json" }, "/openapi.json"), ". Requests you send here use your token and really happen."),
    [...byTag.entries()].map(([tag, ops]) => h("section", { class: "tag" }, h("h2", {}, tag), ops)),
  );
}
