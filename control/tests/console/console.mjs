// The console in a real browser: Debian's Chromium driven by playwright-core, against a real
// control with a real sidecar following `prod` (started by control/tests/console.rs, which passes
// everything in the environment). Each step prints a line; the first failure exits 1 with a
// screenshot in $SHOTS.
//
// Steps: sign in; a bad rule shows the engine's error at its line; create a flag; flip it with the
// kill switch and watch, on a second tab's fleet page, the sidecar acknowledge the new revision;
// read the audit entry; preview an evaluation; promote after seeing the difference; a new token's
// secret shown once; the API reference answers "try it"; a viewer token is offered no write;
// the layout fits a narrow screen and the kill switch works from the keyboard; a proposal compared
// on the sidecar's decisions, then published.

import { createRequire } from "node:module";
import path from "node:path";

const { BASE, ADMIN_TOKEN, VIEWER_TOKEN, JS_MODULES, CHROMIUM, SHOTS, SIDECAR_ID, OFREP } = process.env;
const require = createRequire(path.join(JS_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const TIMEOUT = 15000;
const step = (text) => console.log(`step: ${text}`);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // The machine has no network but localhost: keep Chromium from reaching out at all.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const pages = [];
let failed = false;
const cspViolations = [];

async function newPage(viewport = { width: 1280, height: 900 }, options = {}) {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`console error: ${m.text()}`);
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  pages.push(page);
  return page;
}

async function signIn(page, token) {
  await page.goto(`${BASE}/ui/`);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: "Environments", level: 1 }).waitFor();
}

function expect(cond, what) {
  if (!cond) throw new Error(`expected: ${what}`);
}

/** Waits until `fn()` (in node) resolves truthy. */
async function until(fn, what) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const v = await fn().catch(() => false);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const GOOD = {
  state: "ENABLED",
  variants: { on: true, off: false },
  defaultVariant: "off",
  targeting: { if: [{ "==": [{ var: "plan" }, "pro"] }, "on", "off"] },
};

try {
  // ---- sign in
  const admin = await newPage();
  step("a wrong token is refused");
  await admin.goto(`${BASE}/ui/`);
  await admin.getByLabel("Token").fill("vxl_not-a-token");
  await admin.getByRole("button", { name: "Sign in" }).click();
  await admin.getByText("That token was refused.").waitFor();

  step("sign in as admin");
  await signIn(admin, ADMIN_TOKEN);
  await admin.getByRole("link", { name: "prod" }).click();
  await admin.getByRole("heading", { name: "Flags", level: 1 }).waitFor();

  // ---- a bad rule: the engine's error, placed on the line the user typed
  step("a bad rule shows the engine's error at its place");
  await admin.getByRole("link", { name: "New flag" }).click();
  await admin.getByLabel("Flag key").fill("checkout");
  const editor = admin.getByLabel("Definition (flagd JSON)");
  const bad = { ...GOOD, targeting: { if: [{ frobnicate: [{ var: "plan" }, "pro"] }, "on", "off"] } };
  await editor.fill(JSON.stringify(bad, null, 2));
  const problem = admin.locator("ul.problems li").first();
  await problem.waitFor();
  const text = await problem.textContent();
  expect(/targeting/.test(text) && /line \d+, column \d+/.test(text), `an error at a targeting path with its line: ${text}`);
  expect((await editor.getAttribute("aria-invalid")) === "true", "the editor marked invalid");
  // Choosing the error selects the text it is about.
  await problem.getByRole("button").click();
  const selected = await editor.evaluate((el) => el.value.slice(el.selectionStart, el.selectionEnd));
  expect(selected.length > 0 && selected.includes("frobnicate"), `the bad part selected, got ${JSON.stringify(selected)}`);
  expect(await admin.getByRole("button", { name: "Create flag" }).isVisible(), "create offered");

  step("a JSON syntax error names its line");
  await editor.fill('{"state": "ENABLED",\n  "variants": {"on": true,}\n}');
  await admin.locator("ul.problems li", { hasText: "line 2" }).waitFor();

  // ---- create
  step("create the flag");
  await editor.fill(JSON.stringify(GOOD, null, 2));
  await admin.getByText("Valid", { exact: true }).waitFor();
  await admin.getByRole("button", { name: "Create flag" }).click();
  await admin.getByRole("heading", { name: "checkout", level: 1 }).waitFor();
  await admin.locator("#status", { hasText: "Saved checkout" }).waitFor();

  // ---- the fleet, live, in a second tab
  step("the fleet page shows the sidecar");
  const fleet = await newPage();
  await signIn(fleet, ADMIN_TOKEN);
  await fleet.goto(`${BASE}/ui/#/env/prod/fleet`);
  await fleet.getByRole("heading", { name: "Fleet", level: 1 }).waitFor();
  await fleet.getByText("live", { exact: true }).waitFor();
  const row = fleet.locator(`tr[data-sidecar="${SIDECAR_ID}"]`).first();
  await row.waitFor();
  const revisionNow = async () => Number(await fleet.getByTestId("current-revision").textContent());
  const acked = async () => Number(await row.getByTestId("acked").textContent());
  await until(async () => (await acked()) === (await revisionNow()), "the sidecar to hold the current revision");
  const before = await revisionNow();

  // ---- flip it (the kill switch: one click, then a confirmation)
  step("flip the flag with the kill switch");
  await admin.getByRole("link", { name: "Flags" }).click();
  await admin.getByRole("button", { name: "Disable checkout" }).click();
  const dialog = admin.getByRole("dialog");
  await dialog.getByText("applications fall back").waitFor();
  await dialog.getByRole("button", { name: "Disable" }).click();
  await admin.locator("#status", { hasText: "checkout disabled" }).waitFor();
  const status = await admin.locator("#status").textContent();
  expect(/1 of 1 sidecars hold it/.test(status), `the write waited for the sidecar: ${status}`);
  await admin.getByRole("button", { name: "Enable checkout" }).waitFor();

  step("the sidecar's acknowledged revision follows, live");
  await until(async () => (await revisionNow()) === before + 1, `the revision to become ${before + 1}`);
  await until(async () => (await acked()) === before + 1, `the sidecar to acknowledge ${before + 1}`);

  // ---- the audit entry
  step("the audit log has the change");
  await admin.getByRole("link", { name: "Audit log" }).click();
  await admin.getByLabel("Flag").fill("checkout");
  await admin.getByRole("button", { name: "Filter" }).click();
  const entry = admin.locator("tbody tr", { hasText: "flag.state" }).first();
  await entry.waitFor();
  expect(/admin/.test(await entry.textContent()), "the entry names the actor");
  await entry.getByText("Before and after").click();
  expect(/DISABLED/.test(await entry.textContent()), "the entry shows the new state");
  expect((await admin.locator("tbody tr", { hasText: "flag.create" }).count()) === 1, "the creation is listed");

  // ---- evaluation preview
  step("the evaluation preview answers for a typed context");
  await admin.goto(`${BASE}/ui/#/env/prod/flags/checkout`);
  await admin.getByRole("button", { name: "Enable checkout" }).click();
  await admin.getByRole("dialog").getByRole("button", { name: "Enable" }).click();
  await admin.locator("#status", { hasText: "checkout enabled" }).waitFor();
  await admin.getByRole("link", { name: "Preview" }).click();
  await admin.getByLabel("Evaluation context (JSON)").fill('{"targetingKey": "u1", "plan": "pro"}');
  await admin.getByLabel("Flag", { exact: true }).selectOption("checkout");
  await admin.getByRole("button", { name: "Evaluate" }).click();
  const result = admin.locator("tbody tr", { hasText: "checkout" });
  await result.waitFor();
  const cells = await result.locator("td").allTextContents();
  expect(cells[1] === "true" && cells[2] === "on" && cells[3] === "TARGETING_MATCH", `checkout is on for a pro user: ${cells}`);

  // ---- promotion: the difference first, then one action
  step("promotion shows the difference, then applies it");
  await admin.getByRole("link", { name: "Promote" }).click();
  await admin.getByLabel("Promote to").selectOption("staging");
  const added = admin.locator("tbody tr", { hasText: "checkout" });
  await added.waitFor();
  expect(/added/.test(await added.textContent()), "checkout listed as added to staging");
  await admin.getByRole("button", { name: "Promote to staging" }).click();
  await admin.getByRole("dialog").getByRole("button", { name: "Promote" }).click();
  await admin.locator("#status", { hasText: "Promoted prod to staging" }).waitFor();
  await admin.getByText("staging already has exactly prod's flags and evaluators.").waitFor();

  // ---- a token: its secret shown once
  step("a new token's secret is shown once");
  await admin.getByRole("link", { name: "Tokens" }).click();
  await admin.getByLabel("Name").fill("ci-reader");
  await admin.getByLabel("Role").selectOption("viewer");
  await admin.getByRole("button", { name: "Create token" }).click();
  const secret = await admin.getByLabel("New token secret").inputValue();
  expect(/^vxl_[A-Za-z0-9_-]{20,}$/.test(secret), `a token secret: ${secret}`);
  await admin.locator("tbody tr", { hasText: "ci-reader" }).waitFor();
  await admin.reload();
  await admin.locator("tbody tr", { hasText: "ci-reader" }).waitFor();
  expect(!(await admin.content()).includes(secret), "the secret is not shown again");
  const whoami = await fetch(`${BASE}/api/v1/whoami`, { headers: { Authorization: `Bearer ${secret}` } }).then((r) => r.json());
  expect(whoami.role === "viewer", `the new token works: ${JSON.stringify(whoami)}`);

  // ---- a flag used as configuration: its variants in a form from its JSON Schema
  step("a configuration flag is edited in a form generated from its schema");
  await admin.goto(`${BASE}/ui/#/env/prod/flags/page-config`);
  await admin.getByRole("heading", { name: "page-config", level: 1 }).waitFor();
  const small = admin.getByRole("group", { name: "Variant small" });
  const size = small.getByLabel("page_size (required)");
  expect((await size.inputValue()) === "10", "the form shows the variant's value");
  await size.fill("500");
  const schemaProblem = admin.locator("ul.problems li", { hasText: "maximum" }).first();
  await schemaProblem.waitFor();
  expect(/variants\.small\.page_size/.test(await schemaProblem.textContent()), `the schema's error names the variant's field: ${await schemaProblem.textContent()}`);
  await size.fill("25");
  await small.getByLabel("theme").selectOption({ label: '"dark"' });
  await small.getByLabel("beta").check();
  await admin.getByText("Valid", { exact: true }).waitFor();
  await admin.getByRole("button", { name: "Save", exact: true }).click();
  await admin.locator("#status", { hasText: "Saved page-config" }).waitFor();
  const saved = await fetch(`${BASE}/api/v1/environments/prod/flags/page-config`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => r.json());
  const v = saved.definition.variants.small;
  expect(v.page_size === 25 && v.theme === "dark" && v.beta === true, `the form's values were saved: ${JSON.stringify(v)}`);

  // ---- usage: what the sidecar evaluated, by variant
  step("the usage page shows the sidecar's evaluations by variant");
  const lookup = async (context) => {
    const r = await fetch(`${OFREP}/ofrep/v1/evaluate/flags/checkout`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ context }),
    });
    expect(r.ok, `an OFREP lookup through the sidecar: ${r.status}`);
  };
  for (let i = 0; i < 10; i += 1) await lookup({ targetingKey: `p${i}`, plan: "pro" });
  for (let i = 0; i < 30; i += 1) await lookup({ targetingKey: `f${i}`, plan: "free" });
  await admin.goto(`${BASE}/ui/#/env/prod/usage`);
  await admin.getByRole("heading", { name: "Usage", level: 1 }).waitFor();
  const usageRow = admin.locator("tbody tr", { has: admin.getByRole("link", { name: "checkout", exact: true }) }).first();
  let window = "1";
  await until(async () => {
    // Choosing another window loads the report again.
    window = window === "1" ? "7" : "1";
    await admin.getByLabel("Window").selectOption(window);
    await admin.waitForTimeout(300);
    const cells = await usageRow.locator("td").allTextContents();
    return cells[1] === "40" && /on 25 %/.test(cells[2]) && /off 75 %/.test(cells[2]);
  }, "checkout's 40 evaluations, 25 % on and 75 % off, in the usage report");

  // ---- shadow evaluation: a proposal compared on the sidecar's real decisions, then published
  step("a proposal is compared on the sidecar's decisions, then published");
  await admin.goto(`${BASE}/ui/#/env/prod/flags/checkout`);
  await admin.getByRole("heading", { name: "checkout", level: 1 }).waitFor();
  const proposalBox = admin.getByRole("region", { name: "Proposal" });
  const proposed = proposalBox.getByLabel("Proposed targeting (JsonLogic)");
  await proposed.fill(JSON.stringify({ frobnicate: [{ var: "plan" }] }));
  await proposalBox.locator("ul.problems li").first().waitFor();
  await proposed.fill(JSON.stringify({ if: [{ "==": [{ var: "plan" }, "free"] }, "on", "off"] }));
  await proposalBox.getByText("Valid", { exact: true }).waitFor();
  await proposalBox.getByLabel("Sample ratio").fill("1");
  await proposalBox.getByRole("button", { name: "Propose" }).click();
  await admin.locator("#status", { hasText: "saved: the sidecars evaluate it on 100 %" }).waitFor();
  // Live: pro on, others off; proposed: free on, others off. 10 pro and 30 free: all change.
  for (let i = 0; i < 10; i += 1) await lookup({ targetingKey: `sp${i}`, plan: "pro" });
  for (let i = 0; i < 30; i += 1) await lookup({ targetingKey: `sf${i}`, plan: "free" });
  const verdict = admin.getByRole("region", { name: "Proposal" }).locator("p.comparison");
  await until(async () => {
    await admin.getByRole("button", { name: "Refresh the comparison" }).click();
    await admin.waitForTimeout(300);
    return /would change 100\.0 % of decisions .* \(40 sampled\): off → on 75\.0 %, on → off 25\.0 %/.test(await verdict.textContent());
  }, "the comparison: 40 sampled, off → on 75 %, on → off 25 %");
  await admin.getByRole("region", { name: "Proposal" }).getByRole("button", { name: "Publish" }).click();
  const publishDialog = admin.getByRole("dialog");
  await publishDialog.getByText("would change 100.0 %").waitFor();
  await publishDialog.getByRole("button", { name: "Publish" }).click();
  await admin.locator("#status", { hasText: "Published: checkout" }).waitFor();
  const flagNow = await fetch(`${BASE}/api/v1/environments/prod/flags/checkout`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } }).then((r) => r.json());
  expect(JSON.stringify(flagNow.definition.targeting).includes("free"), `the proposal was published: ${JSON.stringify(flagNow.definition)}`);

  // ---- a guard on the flag: armed from its page, listed with the usage
  step("a guard is armed from the flag's page and listed on the usage page");
  await admin.goto(`${BASE}/ui/#/env/prod/flags/checkout`);
  await admin.getByText("Guard (none)").click();
  await admin.getByRole("button", { name: "Arm guard" }).click();
  await admin.locator("#status", { hasText: "Guard of checkout armed" }).waitFor();
  await admin.getByText("Guard: armed").waitFor();
  await admin.getByRole("link", { name: "Usage" }).click();
  await admin.getByRole("table", { name: "Guards" }).locator("tbody tr", { hasText: "armed" }).waitFor();

  // ---- API reference, try it
  step("the API reference sends a real request");
  await admin.getByRole("link", { name: "API", exact: true }).click();
  const op = admin.locator("details.op", { hasText: "/api/v1/whoami" });
  await op.locator("summary").click();
  await op.getByRole("button", { name: "Send" }).click();
  await op.locator("pre.json", { hasText: '"role": "admin"' }).waitFor();

  // ---- a viewer is offered nothing it may not do
  step("a viewer token is offered no write");
  const viewer = await newPage();
  await signIn(viewer, VIEWER_TOKEN);
  expect((await viewer.getByRole("link", { name: "Tokens" }).count()) === 0, "no Tokens page for a viewer");
  expect((await viewer.getByRole("form", { name: "New environment" }).count()) === 0, "no environment creation");
  await viewer.getByRole("link", { name: "prod" }).click();
  await viewer.getByRole("link", { name: "checkout" }).waitFor();
  expect((await viewer.getByRole("link", { name: "New flag" }).count()) === 0, "no New flag");
  expect((await viewer.getByRole("button", { name: /Enable checkout|Disable checkout/ }).count()) === 0, "no kill switch");
  await viewer.getByRole("link", { name: "checkout" }).click();
  await viewer.getByText("Your token may read this flag, not change it.").waitFor();
  expect((await viewer.getByLabel("Definition (flagd JSON)").getAttribute("readonly")) !== null, "the definition read-only");
  expect((await viewer.getByRole("button", { name: "Save" }).count()) === 0, "no Save");
  // What the page does not offer, the API refuses anyway.
  const refused = await viewer.evaluate(async () => {
    const token = sessionStorage.getItem("vexil.console.token");
    const r = await fetch("/api/v1/environments/prod/flags/checkout", {
      method: "PATCH",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ state: "ENABLED" }),
    });
    return r.status;
  });
  expect(refused === 403, `a viewer's write refused with 403, got ${refused}`);

  // ---- narrow screen and keyboard
  step("a narrow screen: nothing wider than the screen, the kill switch from the keyboard");
  const phone = await newPage({ width: 375, height: 720 });
  await signIn(phone, ADMIN_TOKEN);
  await phone.goto(`${BASE}/ui/#/env/prod`);
  await phone.getByRole("button", { name: "Disable checkout" }).waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 0, `the page fits 375 px (overflow ${overflow}px)`);
  await phone.getByRole("button", { name: "Disable checkout" }).focus();
  await phone.keyboard.press("Enter");
  await phone.getByRole("dialog").waitFor();
  await phone.keyboard.press("Enter"); // the confirm button has the focus
  await phone.locator("#status", { hasText: "checkout disabled" }).waitFor();

  // ---- accessibility of every page, by axe-core (WCAG 2 A and AA rules)
  step("every page passes axe-core's WCAG 2 A/AA checks");
  // axe is injected as a script, which the console's CSP rightly forbids: this one tab bypasses it.
  const a11y = await newPage({ width: 1280, height: 900 }, { bypassCSP: true });
  const axeSource = path.join(JS_MODULES, "axe-core", "axe.min.js");
  const audit = async (what) => {
    await a11y.addScriptTag({ path: axeSource });
    const result = await a11y.evaluate(async () => {
      const r = await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } });
      return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(" ")) }));
    });
    for (const v of result) console.log(`axe ${what}: ${v.impact} ${v.id}: ${v.help} at ${v.nodes.join(", ")}`);
    const serious = result.filter((v) => v.impact === "serious" || v.impact === "critical");
    expect(serious.length === 0, `no serious accessibility problem on ${what}: ${serious.map((v) => v.id).join(", ")}`);
  };
  await a11y.goto(`${BASE}/ui/`);
  await a11y.getByLabel("Token").waitFor();
  await audit("sign-in");
  await signIn(a11y, ADMIN_TOKEN);
  for (const [hash, heading] of [
    ["#/", "Environments"],
    ["#/env/prod", "Flags"],
    ["#/env/prod/flags/checkout", "checkout"],
    ["#/env/prod/flags/new", "New flag"],
    ["#/env/prod/evaluators", "Evaluators"],
    ["#/env/prod/preview", "Evaluation preview"],
    ["#/env/prod/promote", "Promote prod"],
    ["#/env/prod/fleet", "Fleet"],
    ["#/env/prod/usage", "Usage"],
    ["#/audit", "Audit log"],
    ["#/tokens", "Tokens"],
    ["#/api", "API reference"],
  ]) {
    await a11y.goto(`${BASE}/ui/${hash}`);
    await a11y.getByRole("heading", { name: heading, level: 1, exact: true }).waitFor();
    await audit(hash);
  }
  expect(cspViolations.length === 0, `no Content-Security-Policy violation: ${cspViolations.join(" | ")}`);

  step("done");
} catch (e) {
  failed = true;
  console.log(`FAILED: ${e.message}`);
  let i = 0;
  for (const page of pages) {
    i += 1;
    const file = path.join(SHOTS, `page-${i}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    console.log(`screenshot: ${file} (${page.url()})`);
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
