// The console's shell: sign-in, navigation and the router (`#/...` routes, so every page has a
// URL and the browser's back button works). Pages are in views.js and apiref.js.

import { api, session, ApiError } from "./api.js";
import { h, fill, field, announce } from "./dom.js";
import * as views from "./views.js";
import { apiReference } from "./apiref.js";

const main = document.getElementById("main");
const top = document.getElementById("top");
const envNav = document.getElementById("env-nav");

let me = null;
let leaving = [];
/** A message to show once the next page is on screen (a write that leads to another page). */
let pending = null;

const ctx = {
  get me() {
    return me;
  },
  /** Whether the signed-in token may do `permission` (read, write_flags, admin) on `env`
   *  (`null`: something that concerns every environment). */
  can(permission, env) {
    if (!me || !me.permissions.includes(permission)) return false;
    if (me.environments === null) return true;
    return env !== null && me.environments.includes(env);
  },
  /** Shows page `hash`, then `message` in the status bar. */
  go(hash, message) {
    pending = message || null;
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  refresh() {
    return route();
  },
  onLeave(fn) {
    leaving.push(fn);
  },
};

const routes = [
  [/^#?\/?$/, () => views.environments(ctx)],
  [/^#\/env\/([^/]+)$/, (env) => views.flags(ctx, env), "flags"],
  [/^#\/env\/([^/]+)\/flags\/new$/, (env) => views.flag(ctx, env), "flags"],
  [/^#\/env\/([^/]+)\/flags\/([^/]+)$/, (env, key) => views.flag(ctx, env, key), "flags"],
  [/^#\/env\/([^/]+)\/evaluators$/, (env) => views.evaluators(ctx, env), "evaluators"],
  [/^#\/env\/([^/]+)\/preview$/, (env) => views.preview(ctx, env), "preview"],
  [/^#\/env\/([^/]+)\/promote$/, (env) => views.promote(ctx, env), "promote"],
  [/^#\/env\/([^/]+)\/fleet$/, (env) => views.fleet(ctx, env), "fleet"],
  [/^#\/env\/([^/]+)\/usage$/, (env) => views.usage(ctx, env), "usage"],
  [/^#\/audit$/, () => views.audit(ctx)],
  [/^#\/tokens$/, () => views.tokens(ctx)],
  [/^#\/api$/, () => apiReference()],
];

function header() {
  const link = (href, text) => h("a", { href, "aria-current": location.hash === href ? "page" : null }, text);
  fill(
    top,
    h("a", { class: "brand", href: "#/" }, "Vexil"),
    me
      ? [
          h(
            "nav",
            { "aria-label": "Main" },
            link("#/", "Environments"),
            link("#/audit", "Audit log"),
            ctx.can("admin", null) ? link("#/tokens", "Tokens") : null,
            link("#/api", "API"),
          ),
          h(
            "div",
            { class: "who" },
            h("span", {}, `${me.name} (${me.role})`),
            h(
              "button",
              {
                type: "button",
                onclick: () => {
                  session.clear();
                  me = null;
                  location.hash = "#/";
                  route();
                },
              },
              "Sign out",
            ),
          ),
        ]
      : null,
  );
}

function environmentNav(env, tab) {
  if (!env) {
    envNav.hidden = true;
    return;
  }
  const e = encodeURIComponent(env);
  const tabs = [
    ["flags", `#/env/${e}`, "Flags"],
    ["evaluators", `#/env/${e}/evaluators`, "Evaluators"],
    ["preview", `#/env/${e}/preview`, "Preview"],
    ["promote", `#/env/${e}/promote`, "Promote"],
    ["fleet", `#/env/${e}/fleet`, "Fleet"],
    ["usage", `#/env/${e}/usage`, "Usage"],
  ];
  envNav.hidden = false;
  fill(
    envNav,
    h("span", { class: "env-name" }, env),
    tabs.map(([id, href, text]) => h("a", { href, "aria-current": id === tab ? "page" : null }, text)),
  );
}

function signIn(message) {
  environmentNav(null);
  const [tokenField, token] = field("Token", h("input", { type: "password", autocomplete: "off", required: true }), "An API token (vxl_…) or a JWT. It is kept for this browser tab's session only.");
  fill(
    main,
    h(
      "section",
      { class: "signin" },
      h("h1", { tabindex: "-1" }, "Sign in"),
      message ? h("p", { class: "verdict bad", role: "alert" }, message) : null,
      h(
        "form",
        {
          class: "card",
          "aria-label": "Sign in",
          onsubmit: async (ev) => {
            ev.preventDefault();
            session.set(token.value.trim());
            await start();
          },
        },
        tokenField,
        h("button", { type: "submit", class: "primary" }, "Sign in"),
      ),
    ),
  );
  main.querySelector("input").focus();
}

async function start() {
  if (!session.token) {
    header();
    signIn();
    return;
  }
  try {
    me = (await api("GET", "/api/v1/whoami")).data;
  } catch (e) {
    session.clear();
    me = null;
    header();
    signIn(e instanceof ApiError && e.status === 401 ? "That token was refused." : e.message);
    return;
  }
  await route();
}

let routing = 0;
async function route() {
  for (const fn of leaving) fn();
  leaving = [];
  if (!me) return start();
  header();
  const hash = location.hash || "#/";
  const mine = ++routing;
  for (const [re, view, tab] of routes) {
    const m = re.exec(hash);
    if (!m) continue;
    const params = m.slice(1).map(decodeURIComponent);
    environmentNav(tab ? params[0] : null, tab);
    fill(main, h("p", { class: "meta" }, "Loading…"));
    try {
      const page = await view(...params);
      if (mine !== routing) return;
      fill(main, page);
      main.querySelector("h1")?.focus();
      if (pending) announce(pending);
      pending = null;
      document.title = `${main.querySelector("h1")?.textContent || "Console"} — Vexil`;
    } catch (e) {
      if (mine !== routing) return;
      if (e instanceof ApiError && e.status === 401) {
        session.clear();
        me = null;
        header();
        signIn("Your token is no longer accepted; sign in again.");
        return;
      }
      fill(main, h("section", {}, h("h1", { tabindex: "-1" }, "Could not load this page"), h("p", { role: "alert" }, e.message)));
    }
    return;
  }
  environmentNav(null);
  fill(main, h("section", {}, h("h1", { tabindex: "-1" }, "No such page"), h("a", { href: "#/" }, "Environments")));
}

window.addEventListener("hashchange", () => {
  if (!pending) announce("");
  route();
});
start();
