// The console's pages. Each view is `async (ctx, ...params) => Node`; `ctx` has the caller (`me`),
// `can(permission, env)`, `go(hash)` and `onLeave(fn)` for what must stop when the page changes.

import { api, all, follow, ApiError } from "./api.js";
import { h, fill, field, announce, confirmDialog, ago, table, jsonBlock } from "./dom.js";
import { parseWithSpans, parsePath, pathKey, lineCol } from "./jsonpos.js";
import { formFor } from "./schemaform.js";

/** The JSON in text area `area`, or `undefined` after announcing that `what` is not valid JSON. */
function jsonIn(area, what) {
  try {
    return JSON.parse(area.value);
  } catch (e) {
    announce(`${what} is not valid JSON: ${e.message}`, "error");
    return undefined;
  }
}

const enc = encodeURIComponent;
const envPath = (env) => `/api/v1/environments/${enc(env)}`;

/** How long a write waits for the environment's sidecars to acknowledge it. */
const WAIT = "5s";

/** A sentence about a write's `sync` answer: how many connected sidecars hold the change. */
function syncText(sync) {
  if (!sync) return "";
  if (sync.connected === 0) return " No sidecar is connected.";
  return ` ${sync.acked} of ${sync.connected} sidecars hold it${sync.lagging?.length ? ` (waiting for ${sync.lagging.join(", ")})` : ""}.`;
}

/** Shows an API error in the status bar, with every JSON path the problem lists. */
export function report(e) {
  if (e instanceof ApiError) {
    const paths = (e.problem.errors || []).map((x) => `${x.path}: ${x.message}`);
    announce([e.message, ...paths].join(" — "), "error");
  } else {
    announce(String(e), "error");
  }
}

function heading(text, ...extra) {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, text), ...extra);
}

function stateBadge(state) {
  return h("span", { class: `badge ${state === "ENABLED" ? "on" : "off"}` }, state === "ENABLED" ? "enabled" : "disabled");
}

// ------------------------------------------------------------------ environments

export async function environments(ctx) {
  const items = await all("/api/v1/environments");
  const rows = items.map((e) => [
    h("a", { href: `#/env/${enc(e.key)}` }, e.key),
    e.name,
    String(e.revision),
    ago(e.updated_at),
  ]);
  const page = h(
    "section",
    {},
    heading("Environments"),
    items.length ? table("Environments", ["Key", "Name", "Revision", "Changed"], rows) : h("p", {}, "No environment yet."),
  );
  if (ctx.can("admin", null)) {
    const [keyField, key] = field("Key", h("input", { name: "key", required: true, pattern: "[a-z0-9][a-z0-9_-]{0,62}", autocomplete: "off" }), "Lowercase letters, digits, - and _");
    const [nameField, name] = field("Name", h("input", { name: "name", autocomplete: "off" }));
    page.append(
      h(
        "form",
        {
          class: "card",
          "aria-label": "New environment",
          onsubmit: async (ev) => {
            ev.preventDefault();
            try {
              await api("POST", "/api/v1/environments", { body: { key: key.value, name: name.value || key.value } });
              ctx.go(`#/env/${enc(key.value)}`, `Environment ${key.value} created.`);
            } catch (e) {
              report(e);
            }
          },
        },
        h("h2", {}, "New environment"),
        keyField,
        nameField,
        h("button", { type: "submit", class: "primary" }, "Create environment"),
      ),
    );
  }
  return page;
}

// ------------------------------------------------------------------ flags

export async function flags(ctx, env) {
  const items = await all(`${envPath(env)}/flags`);
  const canWrite = ctx.can("write_flags", env);
  const body = h("tbody");
  const [filterField, filter] = field("Filter by key", h("input", { type: "search", autocomplete: "off" }));
  const render = () => {
    const q = filter.value.trim();
    fill(
      body,
      items
        .filter((f) => !q || f.key.includes(q))
        .map((f) => {
          const d = f.definition || {};
          return h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/env/${enc(env)}/flags/${enc(f.key)}` }, f.key)),
            h("td", {}, stateBadge(f.state)),
            h("td", {}, d.defaultVariant ?? "—"),
            h("td", {}, Object.keys(d.variants || {}).join(", ")),
            h("td", {}, d.targeting && Object.keys(d.targeting).length ? "yes" : "no"),
            h("td", {}, ago(f.updated_at)),
            h("td", {}, canWrite ? killSwitch(env, f, async () => ctx.refresh()) : null),
          );
        }),
    );
  };
  filter.addEventListener("input", render);
  render();
  return h(
    "section",
    {},
    heading(`Flags`, canWrite ? h("a", { class: "button primary", href: `#/env/${enc(env)}/flags/new` }, "New flag") : null),
    filterField,
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Flags" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, `Flags of ${env}`),
        h("thead", {}, h("tr", {}, ["Key", "State", "Default", "Variants", "Targeting", "Changed", "Kill switch"].map((x) => h("th", { scope: "col" }, x)))),
        body,
      ),
    ),
    items.length ? null : h("p", {}, "No flag yet."),
  );
}

/** The one-click kill switch (then a confirmation): disables an enabled flag, enables a disabled one. */
function killSwitch(env, flag, done) {
  const enabled = flag.state === "ENABLED";
  return h(
    "button",
    {
      class: enabled ? "danger" : "",
      "aria-label": `${enabled ? "Disable" : "Enable"} ${flag.key}`,
      onclick: async () => {
        const ok = await confirmDialog(
          `${enabled ? "Disable" : "Enable"} ${flag.key}?`,
          enabled
            ? `Every sidecar of ${env} stops serving ${flag.key}: applications fall back to the default in their code.`
            : `Every sidecar of ${env} serves ${flag.key} again, with its rules.`,
          enabled ? "Disable" : "Enable",
          enabled,
        );
        if (!ok) return;
        try {
          const { data } = await api("PATCH", `${envPath(env)}/flags/${enc(flag.key)}`, {
            body: { state: enabled ? "DISABLED" : "ENABLED" },
            query: { wait: WAIT },
          });
          announce(`${flag.key} ${enabled ? "disabled" : "enabled"}.${syncText(data.sync)}`);
          await done();
        } catch (e) {
          report(e);
        }
      },
    },
    enabled ? "Disable" : "Enable",
  );
}

const NEW_FLAG = {
  state: "ENABLED",
  variants: { on: true, off: false },
  defaultVariant: "off",
  targeting: {},
  metadata: {},
};

/** Maps an engine path (`flags.KEY.targeting.if[0]`) to the segments inside the flag's own JSON. */
function flagSegments(path, key) {
  const segs = parsePath(path);
  if (segs[0] === "flags" && segs[1] === key) return segs.slice(2);
  return null;
}

/** A JSON editor that validates as the user types: syntax locally, the rest by `validate(value)`
 *  (which throws an ApiError with problem `errors`). Errors are listed with their line and column;
 *  choosing one selects the text it is about. Returns `{el, text, value()}`. */
function jsonEditor({ label, initial, validate, segmentsOf, readOnly }) {
  const area = h("textarea", { class: "code", rows: "18", spellcheck: "false", autocapitalize: "off", readonly: readOnly || null }, initial);
  const [wrap] = field(label, area);
  const list = h("ul", { class: "problems", "aria-live": "polite" });
  const verdict = h("p", { class: "verdict", role: "status" });
  area.setAttribute("aria-describedby", "");
  const errorsId = `${area.id}-problems`;
  list.id = errorsId;
  area.setAttribute("aria-describedby", errorsId);
  let timer;
  let seq = 0;
  let parsed = null;
  const select = (start, end) => {
    area.focus();
    area.setSelectionRange(start, end);
  };
  const show = (problems) => {
    fill(
      list,
      problems.map((p) =>
        h(
          "li",
          {},
          p.at
            ? h("button", { class: "link", type: "button", onclick: () => select(p.at[0], p.at[1]) }, `line ${p.line}, column ${p.col}`)
            : null,
          p.at ? " " : null,
          h("code", {}, p.path || "(document)"),
          `: ${p.message}`,
        ),
      ),
    );
    area.setAttribute("aria-invalid", problems.length ? "true" : "false");
  };
  const check = async () => {
    const mine = ++seq;
    const text = area.value;
    try {
      parsed = parseWithSpans(text);
    } catch (e) {
      parsed = null;
      const { line, col } = lineCol(text, e.offset);
      show([{ path: "JSON", message: e.message, at: [e.offset, Math.min(text.length, e.offset + 1)], line, col }]);
      fill(verdict, "Not valid JSON");
      verdict.className = "verdict bad";
      return;
    }
    if (!validate) {
      show([]);
      return;
    }
    try {
      await validate(parsed.value);
      if (mine !== seq) return;
      show([]);
      fill(verdict, "Valid");
      verdict.className = "verdict good";
    } catch (e) {
      if (mine !== seq) return;
      const errors = e instanceof ApiError && e.problem.errors?.length ? e.problem.errors : [{ path: "", message: e.message }];
      show(
        errors.map((x) => {
          const segs = segmentsOf(x.path);
          let at = null;
          if (segs) {
            // The longest prefix of the path that names text the user typed.
            for (let n = segs.length; n >= 0 && !at; n -= 1) at = parsed.spans.get(pathKey(segs.slice(0, n))) || null;
          }
          const pos = at ? lineCol(text, at[0]) : {};
          return { path: x.path, message: x.message, at, ...pos };
        }),
      );
      fill(verdict, `${errors.length} problem${errors.length > 1 ? "s" : ""}`);
      verdict.className = "verdict bad";
    }
  };
  area.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(check, 300);
  });
  check();
  return {
    el: h("div", { class: "editor" }, wrap, verdict, list),
    text: () => area.value,
    value: () => (parsed ? parsed.value : null),
    /** Replaces the text with `v` as JSON, then checks it. */
    setValue: (v) => {
      area.value = JSON.stringify(v, null, 2);
      clearTimeout(timer);
      timer = setTimeout(check, 300);
    },
    recheck: check,
  };
}

export async function flag(ctx, env, key) {
  const isNew = key === undefined;
  const canWrite = ctx.can("write_flags", env);
  let record = null;
  let etag = null;
  if (!isNew) {
    const r = await api("GET", `${envPath(env)}/flags/${enc(key)}`);
    record = r.data;
    etag = r.etag;
  }
  const [keyField, keyInput] = field("Flag key", h("input", { name: "key", required: true, autocomplete: "off", value: key || "" }), "Lowercase letters, digits, _, -, . (a header dictionary key)");
  const currentKey = () => (isNew ? keyInput.value.trim() : key);
  const editor = jsonEditor({
    label: "Definition (flagd JSON)",
    initial: JSON.stringify(record ? record.definition : NEW_FLAG, null, 2),
    readOnly: !canWrite,
    validate: async (value) => {
      const k = currentKey();
      if (!k) throw new ApiError(400, { detail: "the flag needs a key", errors: [{ path: "key", message: "the flag needs a key" }] });
      await api("POST", `${envPath(env)}/flags/${enc(k)}/validate`, { body: value });
    },
    segmentsOf: (path) => flagSegments(path, currentKey()),
  });
  if (isNew) keyInput.addEventListener("input", () => editor.recheck());
  const schemaPart = isNew ? null : schemaSection(ctx, env, key, record, editor, canWrite);
  const proposalPart = isNew ? null : await proposalSection(ctx, env, key, record, canWrite);
  const save = async (ev) => {
    ev.preventDefault();
    const value = editor.value();
    if (!value) {
      announce("The definition is not valid JSON.", "error");
      return;
    }
    try {
      const headers = etag ? { "If-Match": etag } : {};
      const { data } = await api("PUT", `${envPath(env)}/flags/${enc(currentKey())}`, { body: value, headers, query: { wait: WAIT } });
      const saved = `Saved ${currentKey()} (version ${data.version}).${syncText(data.sync)}`;
      if (isNew) ctx.go(`#/env/${enc(env)}/flags/${enc(currentKey())}`, saved);
      else ctx.go(location.hash, saved);
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) {
        announce("This flag was changed by someone else since you opened it: reload to see their change (your text is not saved).", "error");
      } else report(e);
    }
  };
  const actions = [];
  if (!isNew && canWrite) {
    actions.push(killSwitch(env, record, async () => ctx.refresh()));
    actions.push(
      h(
        "button",
        {
          class: "danger",
          type: "button",
          onclick: async () => {
            if (!(await confirmDialog(`Delete ${key}?`, `The flag leaves ${env}; sidecars stop serving it.`, "Delete", true))) return;
            try {
              await api("DELETE", `${envPath(env)}/flags/${enc(key)}`, { headers: etag ? { "If-Match": etag } : {} });
              ctx.go(`#/env/${enc(env)}`, `Deleted ${key}.`);
            } catch (e) {
              report(e);
            }
          },
        },
        "Delete",
      ),
    );
  }
  return h(
    "section",
    {},
    heading(isNew ? "New flag" : key, record ? stateBadge(record.state) : null),
    record ? h("p", { class: "meta" }, `Version ${record.version}, changed `, ago(record.updated_at)) : null,
    h(
      "form",
      { onsubmit: save, "aria-label": isNew ? "New flag" : `Flag ${key}` },
      isNew ? keyField : null,
      schemaPart ? schemaPart.form : null,
      editor.el,
      canWrite ? h("button", { type: "submit", class: "primary" }, isNew ? "Create flag" : "Save") : h("p", { class: "meta" }, "Your token may read this flag, not change it."),
    ),
    actions.length ? h("div", { class: "actions" }, actions) : null,
    proposalPart,
    schemaPart ? schemaPart.schema : null,
    isNew ? null : await guardSection(ctx, env, key, record, canWrite),
  );
}

/** A flag's guard (docs/guards.md): its state and each arm's figures; editors arm one (a JSON
 *  definition), reset a tripped one, or remove it. */
async function guardSection(ctx, env, key, record, canWrite) {
  const path = `${envPath(env)}/flags/${enc(key)}/guard`;
  let guard = null;
  try {
    guard = (await api("GET", path)).data;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  const variants = Object.keys((record && record.definition.variants) || {});
  const template = guard
    ? guard.guard
    : { rollout: variants[0] || "", baseline: variants[1] || "", signal: "error_rate", threshold: 0.02, min_sample: 1000, alpha: 0.01, action: "set_variant", safe_variant: variants[1] || "" };
  const arm = (a) => `${a.requests} requests, ${a.failures} failed (${Math.round(a.failure_share * 1000) / 10} %)`;
  const [defField, defArea] = field(
    "Guard definition (JSON)",
    h("textarea", { class: "code", rows: "6", spellcheck: "false", readonly: canWrite ? null : true }, JSON.stringify(template, null, 2)),
    "rollout and baseline variants, signal (error_rate or latency), threshold, min_sample, alpha, action (set_variant with safe_variant, or disable)",
  );
  const act = async (method, p, body, done) => {
    try {
      await api(method, p, body === undefined ? {} : { body });
      ctx.go(location.hash, done);
    } catch (e) {
      report(e);
    }
  };
  return h(
    "details",
    { class: "guard", open: guard ? true : null },
    h("summary", {}, guard ? `Guard: ${guard.state}` : "Guard (none)"),
    guard
      ? h(
          "dl",
          { "aria-label": "Guard" },
          h("dt", {}, "State"),
          h("dd", {}, h("span", { class: `badge ${guard.state === "armed" ? "on" : "off"}` }, guard.state), " since ", ago(guard.tripped_at || guard.armed_at)),
          h("dt", {}, `Rollout (${guard.guard.rollout})`),
          h("dd", {}, arm(guard.rollout)),
          h("dt", {}, `Baseline (${guard.guard.baseline})`),
          h("dd", {}, arm(guard.baseline)),
          h("dt", {}, "Looks"),
          h("dd", {}, guard.last_look ? `${guard.looks}; the latest: z = ${guard.last_look.z.toFixed(2)}, p = ${guard.last_look.p_value.toExponential(2)} against ${guard.last_look.level}` : `${guard.looks} (the first comes at ${guard.guard.min_sample} answers per arm)`),
        )
      : h("p", { class: "meta" }, "A guard switches this flag off when its rollout variant fails more than its baseline (docs: guards)."),
    guard && guard.trip ? jsonBlock(guard.trip) : null,
    canWrite ? defField : null,
    canWrite
      ? h(
          "div",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              onclick: async () => {
                const body = jsonIn(defArea, "The guard");
                if (body === undefined) return;
                await act("PUT", path, body, `Guard of ${key} armed.`);
              },
            },
            guard ? "Arm again (from zero)" : "Arm guard",
          ),
          guard && guard.state === "tripped" ? h("button", { type: "button", onclick: () => act("POST", `${path}/reset`, undefined, `Guard of ${key} reset.`) }, "Reset") : null,
          guard
            ? h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: async () => {
                    if (!(await confirmDialog(`Remove the guard of ${key}?`, "Its counts are dropped.", "Remove", true))) return;
                    await act("DELETE", path, undefined, `Guard of ${key} removed.`);
                  },
                },
                "Remove guard",
              )
            : null,
        )
      : null,
  );
}

/** Shadow evaluation: the flag's proposal (a new targeting rule, evaluated by the sidecars on a
 *  sample of real decisions without changing any), what it would change, and publishing it. */
async function proposalSection(ctx, env, key, record, canWrite) {
  const path = `${envPath(env)}/flags/${enc(key)}/proposal`;
  let proposal = null;
  let tag = null;
  try {
    const r = await api("GET", path);
    proposal = r.data;
    tag = r.etag;
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  const live = record.definition;
  const editor = jsonEditor({
    label: "Proposed targeting (JsonLogic)",
    initial: JSON.stringify((proposal ? proposal.definition.targeting : live.targeting) ?? {}, null, 2),
    readOnly: !canWrite,
    // Checked as the flag with this rule would be.
    validate: async (value) => {
      await api("POST", `${envPath(env)}/flags/${enc(key)}/validate`, { body: { ...live, targeting: value } });
    },
    segmentsOf: (p) => {
      const segs = flagSegments(p, key);
      return segs && segs[0] === "targeting" ? segs.slice(1) : null;
    },
  });
  const [ratioField, ratioInput] = field(
    "Sample ratio",
    h("input", { name: "sample_ratio", type: "number", min: "0.0001", max: "1", step: "any", value: String(proposal ? proposal.sample_ratio : 0.01) }),
    "The share of the flag's decisions the sidecars evaluate the proposal on (0.01: 1 %).",
  );
  const save = async (ev) => {
    ev.preventDefault();
    const targeting = editor.value();
    if (targeting === null) {
      announce("The proposed targeting is not valid JSON.", "error");
      return;
    }
    try {
      const headers = tag ? { "If-Match": tag } : {};
      const body = { targeting, sample_ratio: Number(ratioInput.value) };
      const { data } = await api("PUT", path, { body, headers, query: { wait: WAIT } });
      ctx.go(location.hash, `Proposal ${data.id} saved: the sidecars evaluate it on ${data.sample_ratio * 100} % of the decisions.${syncText(data.sync)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) {
        announce("The proposal was replaced by someone else since you opened it: reload to see theirs.", "error");
      } else report(e);
    }
  };
  const parts = [h("h2", {}, "Proposal")];
  if (!proposal) {
    parts.push(h("p", { class: "meta" }, "No proposal. A proposed rule is evaluated by the sidecars beside the live one on a sample of real decisions, without changing any; you see what it would change before publishing it."));
  } else {
    parts.push(
      h("p", { class: "meta" }, `Proposal ${proposal.id} by ${proposal.proposed_by}, `, ago(proposal.proposed_at), `; evaluated on ${proposal.sample_ratio * 100} % of the decisions.`),
    );
    const summary = h("p", { class: "comparison", role: "status" });
    const pairs = h("div");
    const [windowField, windowSelect] = field(
      "Window",
      h("select", { name: "minutes" }, [15, 60, 360, 1440, 10080].map((m) => h("option", { value: String(m), selected: m === 60 || null }, m < 1440 ? `last ${m} minutes` : `last ${m / 1440} day${m > 1440 ? "s" : ""}`))),
    );
    const name = (v) => (v === null ? "(no value)" : v);
    const compare = async () => {
      try {
        const { data } = await api("GET", `${path}/comparison`, { query: { minutes: windowSelect.value } });
        fill(summary, data.summary);
        fill(
          pairs,
          data.transitions.length
            ? table(
                "Live → proposed",
                ["From (live)", "To (proposed)", "Changed", "Decisions", "Share"],
                data.transitions.map((t) => [name(t.from), name(t.to), t.changed ? "yes" : "no", String(t.evaluations), `${(t.share * 100).toFixed(1)} %`]),
              )
            : null,
        );
        return data;
      } catch (e) {
        report(e);
        return null;
      }
    };
    windowSelect.addEventListener("change", compare);
    await compare();
    parts.push(windowField, summary, pairs, h("button", { type: "button", onclick: compare }, "Refresh the comparison"));
    if (canWrite) {
      parts.push(
        h(
          "div",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              class: "primary",
              onclick: async () => {
                const data = await compare();
                const said = data ? data.summary : "The comparison could not be read.";
                if (!(await confirmDialog(`Publish the proposal for ${key}?`, `${said}. The flag takes the proposed definition for every decision.`, "Publish"))) return;
                try {
                  const { data: flagNow } = await api("POST", `${path}/publish`, { headers: { "If-Match": tag }, query: { wait: WAIT } });
                  ctx.go(location.hash, `Published: ${key} is at version ${flagNow.version}.${syncText(flagNow.sync)}`);
                } catch (e) {
                  if (e instanceof ApiError && e.status === 409) announce(`${e.message}`, "error");
                  else report(e);
                }
              },
            },
            "Publish",
          ),
          h(
            "button",
            {
              type: "button",
              class: "danger",
              onclick: async () => {
                if (!(await confirmDialog(`Drop the proposal for ${key}?`, "Its comparison is deleted with it.", "Drop", true))) return;
                try {
                  await api("DELETE", path);
                  ctx.go(location.hash, `Proposal for ${key} dropped.`);
                } catch (e) {
                  report(e);
                }
              },
            },
            "Drop",
          ),
        ),
      );
    }
  }
  if (canWrite || proposal) {
    parts.push(
      h(
        "form",
        { onsubmit: save, "aria-label": `Proposal for ${key}` },
        editor.el,
        ratioField,
        canWrite ? h("button", { type: "submit" }, proposal ? "Save as a new proposal" : "Propose") : null,
      ),
    );
  }
  return h("section", { class: "card proposal", "aria-label": "Proposal" }, parts);
}

/** For a flag used as configuration: its variants as forms generated from its JSON Schema (each
 *  edit writes the variant into the definition's JSON, which stays what is saved), and the schema
 *  itself, to read or (with write access) set and remove. */
function schemaSection(ctx, env, key, record, editor, canWrite) {
  const path = `${envPath(env)}/flags/${enc(key)}/schema`;
  // The flag's record carries its schema (absent when it has none).
  const schema = record.schema ?? null;
  let form = null;
  if (schema) {
    const forms = h("div");
    const render = () => {
      const def = editor.value();
      const variants = def && typeof def.variants === "object" && def.variants ? def.variants : {};
      fill(
        forms,
        Object.keys(variants).map((name) =>
          h(
            "div",
            { class: "card variant-form" },
            formFor(
              schema,
              variants[name],
              (v) => {
                const now = editor.value();
                if (!now) {
                  announce("The definition is not valid JSON: fix it before using the form.", "error");
                  return;
                }
                now.variants[name] = v;
                editor.setValue(now);
              },
              `Variant ${name}`,
            ),
          ),
        ),
      );
    };
    render();
    form = h(
      "section",
      { "aria-label": "Variants from the schema" },
      h("h2", {}, "Variants"),
      h("p", { class: "meta" }, "Fields from the flag's JSON Schema; each edit is written into the definition below, which is what Save sends."),
      forms,
      h("button", { type: "button", onclick: render }, "Refresh the form from the JSON"),
    );
  }
  const [schemaField, schemaArea] = field(
    "JSON Schema of the variants",
    h("textarea", { class: "code", rows: "8", spellcheck: "false", readonly: canWrite ? null : true }, schema ? JSON.stringify(schema, null, 2) : ""),
    "Every variant must match it; writes that would break it are refused.",
  );
  const schemaBox = h(
    "details",
    { class: "card" },
    h("summary", {}, schema ? "JSON Schema (set)" : "JSON Schema (none)"),
    schemaField,
    canWrite
      ? h(
          "div",
          { class: "actions" },
          h(
            "button",
            {
              type: "button",
              class: "primary",
              onclick: async () => {
                const value = jsonIn(schemaArea, "The schema");
                if (value === undefined) return;
                try {
                  await api("PUT", path, { body: value });
                  ctx.go(location.hash, `Schema of ${key} saved.`);
                } catch (e) {
                  report(e);
                }
              },
            },
            "Save schema",
          ),
          schema
            ? h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: async () => {
                    if (!(await confirmDialog(`Remove the schema of ${key}?`, "Its variants are no longer checked against it.", "Remove", true))) return;
                    try {
                      await api("DELETE", path);
                      ctx.go(location.hash, `Schema of ${key} removed.`);
                    } catch (e) {
                      report(e);
                    }
                  },
                },
                "Remove schema",
              )
            : null,
        )
      : null,
  );
  return { form, schema: schemaBox };
}

// ------------------------------------------------------------------ evaluators

export async function evaluators(ctx, env) {
  const items = await all(`${envPath(env)}/evaluators`);
  const canWrite = ctx.can("write_flags", env);
  const editorFor = (key, definition, etag) => {
    const editor = jsonEditor({ label: `Evaluator ${key || "(new)"}`, initial: JSON.stringify(definition, null, 2), readOnly: !canWrite });
    const [keyField, keyInput] = field("Evaluator key", h("input", { autocomplete: "off" }));
    return h(
      "form",
      {
        class: "card",
        "aria-label": key ? `Evaluator ${key}` : "New evaluator",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const k = key || keyInput.value.trim();
          try {
            const { data } = await api("PUT", `${envPath(env)}/evaluators/${enc(k)}`, {
              body: editor.value(),
              headers: etag ? { "If-Match": etag } : {},
              query: { wait: WAIT },
            });
            announce(`Saved evaluator ${k}.${syncText(data.sync)}`);
            ctx.refresh();
          } catch (e) {
            report(e);
          }
        },
      },
      h("h2", {}, key || "New evaluator"),
      key ? null : keyField,
      editor.el,
      canWrite ? h("button", { type: "submit", class: "primary" }, "Save evaluator") : null,
    );
  };
  // A record's ETag is its version.
  const forms = items.map((ev) => editorFor(ev.key, ev.definition, `"${ev.version}"`));
  return h(
    "section",
    {},
    heading("Evaluators"),
    h("p", { class: "meta" }, "Shared targeting rules flags use with {\"$ref\": \"key\"}."),
    forms.length ? forms : h("p", {}, "No evaluator yet."),
    canWrite ? editorFor(null, { in: ["@example.com", { var: "email" }] }, null) : null,
  );
}

// ------------------------------------------------------------------ preview

export async function preview(ctx, env) {
  const items = await all(`${envPath(env)}/flags`);
  const [ctxField, ctxArea] = field("Evaluation context (JSON)", h("textarea", { class: "code", rows: "6", spellcheck: "false" }, JSON.stringify({ targetingKey: "user-1", email: "ada@example.com" }, null, 2)));
  const [flagField, flagSelect] = field("Flag", h("select", {}, h("option", { value: "" }, "All flags"), items.map((f) => h("option", { value: f.key }, f.key))));
  const out = h("div", { "aria-live": "polite" });
  return h(
    "section",
    {},
    heading("Evaluation preview"),
    h(
      "form",
      {
        class: "card",
        "aria-label": "Evaluation preview",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const context = jsonIn(ctxArea, "The context");
          if (context === undefined) return;
          try {
            const { data } = await api("POST", `${envPath(env)}/evaluate`, { body: { context, flag: flagSelect.value || undefined } });
            fill(
              out,
              h("p", { class: "meta" }, `Revision ${data.revision}`),
              table(
                "Results",
                ["Flag", "Value", "Variant", "Reason", "Error"],
                data.results.map((r) => [r.key, JSON.stringify(r.value), r.variant ?? "—", r.reason ?? "", r.errorCode ? `${r.errorCode}: ${r.errorMessage ?? ""}` : ""]),
              ),
            );
          } catch (e) {
            report(e);
          }
        },
      },
      ctxField,
      flagField,
      h("button", { type: "submit", class: "primary" }, "Evaluate"),
    ),
    out,
  );
}

// ------------------------------------------------------------------ promote

/** What replacing `to`'s flag set by `from`'s changes, per section. */
function difference(from, to) {
  const out = [];
  for (const section of ["flags", "$evaluators"]) {
    const a = from[section] || {};
    const b = to[section] || {};
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const what = section === "flags" ? "flag" : "evaluator";
      if (!(k in b)) out.push({ change: "added", what, key: k, after: a[k] });
      else if (!(k in a)) out.push({ change: "removed", what, key: k, before: b[k] });
      else if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push({ change: "changed", what, key: k, before: b[k], after: a[k] });
    }
  }
  return out.sort((x, y) => x.key.localeCompare(y.key));
}

export async function promote(ctx, env) {
  const targets = (await all("/api/v1/environments")).filter((e) => e.key !== env && ctx.can("write_flags", e.key));
  const [toField, toSelect] = field("Promote to", h("select", {}, h("option", { value: "" }, "Choose an environment"), targets.map((e) => h("option", { value: e.key }, e.key))));
  const out = h("div", { "aria-live": "polite" });
  const show = async () => {
    const to = toSelect.value;
    fill(out);
    if (!to) return;
    const [source, target] = await Promise.all([api("GET", `${envPath(env)}/flagset`), api("GET", `${envPath(to)}/flagset`)]);
    const diff = difference(source.data, target.data);
    const apply = h(
      "button",
      {
        class: "primary",
        disabled: diff.length === 0,
        onclick: async () => {
          if (!(await confirmDialog(`Promote ${env} to ${to}?`, `${diff.length} change${diff.length === 1 ? "" : "s"} to ${to}, in one revision.`, "Promote"))) return;
          try {
            const { data } = await api("POST", `${envPath(env)}/promote`, { body: { to }, headers: { "If-Match": target.etag }, query: { wait: WAIT } });
            announce(`Promoted ${env} to ${to} (revision ${data.revision ?? ""}).${syncText(data.sync)}`);
            await show();
          } catch (e) {
            if (e instanceof ApiError && e.status === 412) announce(`${to} changed since the difference was shown; it is shown again.`, "error");
            else report(e);
            await show();
          }
        },
      },
      `Promote to ${to}`,
    );
    fill(
      out,
      diff.length
        ? table(
            `Changes to ${to}`,
            ["Change", "Kind", "Key", "Detail"],
            diff.map((d) => [
              h("span", { class: `badge ${d.change}` }, d.change),
              d.what,
              d.key,
              h("details", {}, h("summary", {}, "JSON"), d.before !== undefined ? [h("h3", {}, `In ${to} now`), jsonBlock(d.before)] : null, d.after !== undefined ? [h("h3", {}, `From ${env}`), jsonBlock(d.after)] : null),
            ]),
          )
        : h("p", {}, `${to} already has exactly ${env}'s flags and evaluators.`),
      apply,
    );
  };
  toSelect.addEventListener("change", () => show().catch(report));
  return h("section", {}, heading(`Promote ${env}`), targets.length ? toField : h("p", {}, "No other environment your token may change."), out);
}

// ------------------------------------------------------------------ fleet

export async function fleet(ctx, env) {
  let current = (await api("GET", envPath(env))).data.revision;
  let sidecars = [];
  const revisionEl = h("strong", { "data-testid": "current-revision" }, String(current));
  const liveEl = h("span", { class: "badge off", role: "status" }, "connecting");
  const body = h("tbody");
  const render = () => {
    fill(
      body,
      sidecars.map((s) => {
        const lag = Math.max(0, current - s.acked_revision);
        return h(
          "tr",
          { "data-sidecar": s.id },
          h("td", {}, s.id),
          h("td", {}, h("span", { class: `badge ${s.connected ? "on" : "off"}` }, s.connected ? "connected" : s.stale ? "stale" : "disconnected")),
          h("td", { "data-testid": "acked" }, String(s.acked_revision)),
          h("td", {}, h("span", { class: lag ? "badge off" : "badge on" }, String(lag))),
          h("td", {}, ago(s.last_seen)),
          h("td", {}, s.version || ""),
          h("td", {}, s.replica || ""),
        );
      }),
    );
  };
  const load = async () => {
    sidecars = await all("/api/v1/sidecars", { environment: env });
    render();
  };
  await load();
  let pending;
  const reload = () => {
    clearTimeout(pending);
    pending = setTimeout(() => load().catch(report), 150);
  };
  const stop = follow(
    env,
    (msg) => {
      if (msg.type === "change" || msg.type === "ready" || msg.type === "reset") {
        current = Math.max(current, msg.revision);
        fill(revisionEl, String(current));
        render();
      }
      if (msg.type === "sidecar") {
        const s = sidecars.find((x) => x.session_id === msg.session_id);
        if (s && msg.event === "acked") {
          s.acked_revision = msg.revision;
          s.last_seen = msg.time;
          render();
        } else reload();
      }
    },
    (state) => {
      fill(liveEl, state);
      liveEl.className = `badge ${state === "live" ? "on" : "off"}`;
    },
  );
  const tick = setInterval(render, 5000);
  ctx.onLeave(() => {
    stop();
    clearInterval(tick);
    clearTimeout(pending);
  });
  return h(
    "section",
    {},
    heading("Fleet", liveEl),
    h("p", {}, `${env} is at revision `, revisionEl, ". Every sidecar that follows it, as the store knows it, updated live."),
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Sidecars" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, `Sidecars of ${env}`),
        h("thead", {}, h("tr", {}, ["Sidecar", "Connection", "Acked revision", "Lag", "Last seen", "Version", "Replica"].map((x) => h("th", { scope: "col" }, x)))),
        body,
      ),
    ),
  );
}

// ------------------------------------------------------------------ audit

export async function audit(ctx) {
  const fields = {};
  const inputs = [
    ["environment", "Environment"],
    ["flag", "Flag"],
    ["actor", "Actor"],
    ["since", "Since (RFC 3339)"],
    ["until", "Until (RFC 3339)"],
  ].map(([name, label]) => {
    const [wrap, input] = field(label, h("input", { name, autocomplete: "off" }));
    fields[name] = input;
    return wrap;
  });
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  let cursor = null;
  const load = async (append) => {
    const query = { limit: 50, cursor: append ? cursor : undefined };
    for (const [k, input] of Object.entries(fields)) query[k] = input.value.trim() || undefined;
    const { data } = await api("GET", "/api/v1/audit", { query });
    const rows = data.items.map((a) =>
      h(
        "tr",
        {},
        h("td", {}, ago(a.at)),
        h("td", {}, a.actor),
        h("td", {}, h("code", {}, a.action)),
        h("td", {}, a.environment || "—"),
        h("td", {}, a.target || "—"),
        h("td", {}, h("details", {}, h("summary", {}, "Before and after"), h("h3", {}, "Before"), jsonBlock(a.before), h("h3", {}, "After"), jsonBlock(a.after))),
      ),
    );
    if (append) body.append(...rows);
    else fill(body, rows);
    cursor = data.next_cursor;
    more.hidden = !cursor;
  };
  more.addEventListener("click", () => load(true).catch(report));
  await load(false);
  return h(
    "section",
    {},
    heading("Audit log"),
    h(
      "form",
      {
        class: "card filters",
        "aria-label": "Audit filters",
        onsubmit: (ev) => {
          ev.preventDefault();
          load(false).catch(report);
        },
      },
      inputs,
      h("button", { type: "submit", class: "primary" }, "Filter"),
    ),
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": "Audit entries" },
      h("table", {}, h("caption", { class: "visually-hidden" }, "Audit entries, newest first"), h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Environment", "Target", "Change"].map((x) => h("th", { scope: "col" }, x)))), body),
    ),
    more,
  );
}

// ------------------------------------------------------------------ tokens

export async function tokens(ctx) {
  const items = await all("/api/v1/tokens");
  const [nameField, name] = field("Name", h("input", { required: true, autocomplete: "off" }), "Who or what the token is for (shown in the audit log)");
  const [roleField, role] = field("Role", h("select", {}, ["viewer", "editor", "admin", "sidecar"].map((r) => h("option", { value: r }, r))));
  const [envField, envs] = field("Environments", h("input", { autocomplete: "off" }), "Comma-separated; empty for all (a sidecar token needs at least one)");
  const secretBox = h("div", { "aria-live": "polite" });
  const rowOf = (t) => [
    String(t.id),
    t.name,
    t.role,
    t.environments.length ? t.environments.join(", ") : "all",
    ago(t.created_at),
    ago(t.last_used_at),
    t.revoked_at
      ? h("span", { class: "badge off" }, "revoked")
      : h(
          "button",
          {
            class: "danger",
            "aria-label": `Revoke ${t.name}`,
            onclick: async () => {
              if (!(await confirmDialog(`Revoke ${t.name}?`, "Requests with this token are refused from now on.", "Revoke", true))) return;
              try {
                await api("DELETE", `/api/v1/tokens/${t.id}`);
                announce(`Token ${t.name} revoked.`);
                ctx.refresh();
              } catch (e) {
                report(e);
              }
            },
          },
          "Revoke",
        ),
  ];
  const list = table("Tokens", ["Id", "Name", "Role", "Environments", "Created", "Last used", "Revoke"], items.map(rowOf));
  return h(
    "section",
    {},
    heading("Tokens"),
    list,
    h(
      "form",
      {
        class: "card",
        "aria-label": "New token",
        onsubmit: async (ev) => {
          ev.preventDefault();
          const environments = envs.value.split(",").map((s) => s.trim()).filter(Boolean);
          try {
            const { data } = await api("POST", "/api/v1/tokens", { body: { name: name.value, role: role.value, environments } });
            const secret = h("input", { readonly: true, value: data.token, "aria-label": "New token secret", class: "code" });
            list.querySelector("tbody").append(h("tr", {}, rowOf(data).map((c) => h("td", {}, c))));
            fill(
              secretBox,
              h(
                "div",
                { class: "card secret" },
                h("h2", {}, `Token ${data.name}`),
                h("p", {}, "Copy it now: it is shown this once and never again."),
                secret,
                h("button", { type: "button", onclick: () => navigator.clipboard?.writeText(data.token).then(() => announce("Copied.")) }, "Copy"),
              ),
            );
            secret.select();
          } catch (e) {
            report(e);
          }
        },
      },
      h("h2", {}, "New token"),
      nameField,
      roleField,
      envField,
      h("button", { type: "submit", class: "primary" }, "Create token"),
    ),
    secretBox,
  );
}

// ------------------------------------------------------------------ usage

/** "on 62 % · off 38 %" as bars a screen reader reads as text. */
function shares(variants) {
  if (!variants.length) return h("span", { class: "meta" }, "—");
  return h(
    "ul",
    { class: "shares" },
    variants.map((v) => {
      const pct = Math.round(v.share * 1000) / 10;
      return h(
        "li",
        {},
        h("span", { class: "share-label" }, `${v.variant ?? "(no value)"} ${pct} %`),
        h("progress", { max: "100", value: String(pct), "aria-hidden": "true" }),
      );
    }),
  );
}

export async function usage(ctx, env) {
  const [daysField, days] = field(
    "Window",
    h("select", {}, [1, 7, 30, 90].map((d) => h("option", { value: String(d), selected: d === 7 }, `${d} day${d > 1 ? "s" : ""}`))),
  );
  const out = h("div", { "aria-live": "polite" });
  const load = async () => {
    const n = days.value;
    const [report, stale] = await Promise.all([
      api("GET", `${envPath(env)}/usage`, { query: { days: n } }),
      api("GET", `${envPath(env)}/usage/stale`, { query: { days: n } }),
    ]);
    const r = report.data;
    const st = stale.data;
    fill(
      out,
      h("p", { class: "meta" }, `Evaluations counted by the sidecars since `, ago(r.since), "."),
      table(
        "Usage by flag",
        ["Flag", "Evaluations", "Variants", "Last evaluated (hour)", "Targeting"],
        r.flags.map((f) => [
          h("a", { href: `#/env/${enc(env)}/flags/${enc(f.flag)}` }, f.flag),
          String(f.evaluations),
          shares(f.variants),
          ago(f.last_evaluated),
          f.targeted ? "yes" : "no",
        ]),
      ),
      h("h2", {}, `Not evaluated in ${st.days} day${st.days > 1 ? "s" : ""}`),
      st.unused.length
        ? table(
            "Flags not evaluated",
            ["Flag", "Created", "Last evaluated before"],
            st.unused.map((f) => [h("a", { href: `#/env/${enc(env)}/flags/${enc(f.flag)}` }, f.flag), ago(f.created_at), ago(f.last_evaluated)]),
          )
        : h("p", {}, "Every flag was evaluated."),
      h("h2", {}, "Constant but still called"),
      h("p", { class: "meta" }, "Flags with targeting whose every evaluation in the window gave the same variant: the rule decides nothing, so they are candidates for removal."),
      st.constant.length
        ? table(
            "Constant flags",
            ["Flag", "Variant served", "Evaluations"],
            st.constant.map((f) => [h("a", { href: `#/env/${enc(env)}/flags/${enc(f.flag)}` }, f.flag), f.variant ?? "(no value)", String(f.evaluations)]),
          )
        : h("p", {}, "None."),
    );
  };
  days.addEventListener("change", () => load().catch(report));
  await load();
  const guards = (await api("GET", `${envPath(env)}/guards`)).data;
  const failing = (a) => `${a.requests} (${Math.round(a.failure_share * 1000) / 10} % failed)`;
  return h(
    "section",
    {},
    heading("Usage"),
    daysField,
    out,
    h("h2", {}, "Guards"),
    guards.length
      ? table(
          "Guards",
          ["Flag", "State", "Rollout", "Baseline", "Looks"],
          guards.map((g) => [
            h("a", { href: `#/env/${enc(env)}/flags/${enc(g.flag)}` }, g.flag),
            g.state,
            `${g.guard.rollout}: ${failing(g.rollout)}`,
            `${g.guard.baseline}: ${failing(g.baseline)}`,
            String(g.looks),
          ]),
        )
      : h("p", {}, "No flag has a guard."),
  );
}
