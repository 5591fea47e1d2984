// Building pages with DOM calls only: text is always a text node, never parsed as HTML, so a flag
// key, an audit entry or an error message cannot inject markup into the console.

/** h("tag", {attr: value, onclick: fn}, ...children): an element. Children may be strings,
 *  elements, arrays of them, or null/false (skipped). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value") {
      el.value = value;
    } else if (name === "checked" || name === "disabled" || name === "selected") {
      el[name] = Boolean(value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replaces everything inside `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let seq = 0;
/** A fresh element id (labels point at inputs by id). */
export function uid(prefix = "f") {
  seq += 1;
  return `${prefix}-${seq}`;
}

/** A labelled form control: returns [wrapper, control]. */
export function field(label, control, hint) {
  const id = control.id || uid();
  control.id = id;
  const hintEl = hint ? h("small", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return [h("div", { class: "field" }, h("label", { for: id }, label), control, hintEl), control];
}

/** Says `message` to screen readers and shows it in the status bar. */
export function announce(message, kind = "info") {
  const bar = document.getElementById("status");
  if (!bar) return;
  fill(bar, message);
  bar.className = `status ${kind}`;
}

/** A modal confirmation; resolves true when confirmed. Keyboard: Enter confirms, Escape cancels. */
export function confirmDialog(title, message, confirmLabel = "Confirm", danger = false) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const dialog = h(
      "dialog",
      { "aria-labelledby": titleId, class: "confirm" },
      h(
        "form",
        { method: "dialog" },
        h("h2", { id: titleId }, title),
        h("p", {}, message),
        h(
          "div",
          { class: "actions" },
          h("button", { value: "cancel", type: "submit" }, "Cancel"),
          h("button", { value: "ok", type: "submit", class: danger ? "danger" : "primary" }, confirmLabel),
        ),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    dialog.querySelector(`button[value="ok"]`).focus();
  });
}

/** Short relative time ("12 s ago") for an RFC 3339 time, with the exact time as a tooltip. */
export function ago(rfc3339) {
  if (!rfc3339) return h("span", {}, "—");
  const then = Date.parse(rfc3339);
  const secs = Math.max(0, Math.round((Date.now() - then) / 1000));
  const text =
    secs < 60 ? `${secs} s ago` : secs < 3600 ? `${Math.round(secs / 60)} min ago` : secs < 86400 ? `${Math.round(secs / 3600)} h ago` : `${Math.round(secs / 86400)} d ago`;
  return h("time", { datetime: rfc3339, title: rfc3339 }, text);
}

/** A table in a horizontally scrolling wrapper (narrow screens). `rows` are arrays of cells. */
export function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map((r) => (r instanceof Node ? r : h("tr", {}, r.map((c) => h("td", {}, c)))))),
    ),
  );
}

/** Pretty JSON in a <pre>. */
export function jsonBlock(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}
