// Forms generated from a JSON Schema, for flags used as configuration: each variant of a flag
// with a schema is edited as fields (text, number, checkbox, choice, nested groups, lists) instead
// of raw JSON. What a form cannot express (`oneOf`, `$ref`, tuples, deeper than MAX_DEPTH) is
// edited as JSON in place. The server validates every write against the schema either way.

import { h, uid } from "./dom.js";

const MAX_DEPTH = 8;

function typeOf(schema, value) {
  let t = schema.type;
  if (Array.isArray(t)) t = t.find((x) => x !== "null") || t[0];
  if (t) return t;
  if (schema.enum) return typeof schema.enum[0];
  if (schema.properties) return "object";
  if (schema.items) return "array";
  if (value !== undefined) return Array.isArray(value) ? "array" : value === null ? "null" : typeof value;
  return "json";
}

function describe(schema) {
  return schema.description ? h("small", { class: "hint" }, schema.description) : null;
}

/** A form for `value` under `schema`; calls `onChange(newValue)` on every edit. `label` names the
 *  control for assistive technology. */
export function formFor(schema, value, onChange, label, depth = 0) {
  schema = schema && typeof schema === "object" ? schema : {};
  const unsupported = schema.oneOf || schema.anyOf || schema.allOf || schema.$ref || depth > MAX_DEPTH;
  const type = unsupported ? "json" : typeOf(schema, value);
  const id = uid("sf");
  const title = schema.title || label;

  if (schema.enum && !unsupported) {
    const select = h(
      "select",
      { id, onchange: () => onChange(schema.enum[Number(select.value)]) },
      schema.enum.map((v, i) => h("option", { value: String(i), selected: JSON.stringify(v) === JSON.stringify(value) }, JSON.stringify(v))),
    );
    return h("div", { class: "field" }, h("label", { for: id }, title), select, describe(schema));
  }
  switch (type) {
    case "boolean": {
      const box = h("input", { id, type: "checkbox", checked: value === true, onchange: () => onChange(box.checked) });
      return h("div", { class: "field check" }, h("label", { for: id }, box, ` ${title}`), describe(schema));
    }
    case "integer":
    case "number": {
      const input = h("input", {
        id,
        type: "number",
        step: type === "integer" ? "1" : "any",
        min: schema.minimum,
        max: schema.maximum,
        value: value ?? "",
        oninput: () => {
          if (input.value === "") return;
          const n = Number(input.value);
          if (!Number.isNaN(n)) onChange(n);
        },
      });
      return h("div", { class: "field" }, h("label", { for: id }, title), input, describe(schema));
    }
    case "string": {
      const input = h("input", { id, type: "text", value: value ?? "", maxlength: schema.maxLength, oninput: () => onChange(input.value) });
      return h("div", { class: "field" }, h("label", { for: id }, title), input, describe(schema));
    }
    case "object": {
      const current = value && typeof value === "object" && !Array.isArray(value) ? { ...value } : {};
      const props = schema.properties || {};
      const required = new Set(schema.required || []);
      return h(
        "fieldset",
        { class: "schema-group" },
        h("legend", {}, title),
        describe(schema),
        Object.entries(props).map(([name, sub]) =>
          formFor(
            sub,
            current[name],
            (v) => {
              current[name] = v;
              onChange({ ...current });
            },
            `${name}${required.has(name) ? " (required)" : ""}`,
            depth + 1,
          ),
        ),
      );
    }
    case "array": {
      const items = Array.isArray(value) ? [...value] : [];
      const list = h("ol", { class: "schema-list" });
      const render = () => {
        list.replaceChildren(
          ...items.map((item, i) =>
            h(
              "li",
              {},
              formFor(
                schema.items || {},
                item,
                (v) => {
                  items[i] = v;
                  onChange([...items]);
                },
                `${title} item ${i + 1}`,
                depth + 1,
              ),
              h(
                "button",
                {
                  type: "button",
                  "aria-label": `Remove ${title} item ${i + 1}`,
                  onclick: () => {
                    items.splice(i, 1);
                    onChange([...items]);
                    render();
                  },
                },
                "Remove",
              ),
            ),
          ),
        );
      };
      render();
      const blank = () => {
        const t = typeOf(schema.items || {}, undefined);
        return { string: "", number: 0, integer: 0, boolean: false, object: {}, array: [] }[t] ?? null;
      };
      return h(
        "fieldset",
        { class: "schema-group" },
        h("legend", {}, title),
        describe(schema),
        list,
        h(
          "button",
          {
            type: "button",
            onclick: () => {
              items.push(blank());
              onChange([...items]);
              render();
            },
          },
          `Add to ${title}`,
        ),
      );
    }
    default: {
      // JSON in place, for what a form cannot express.
      const area = h("textarea", { id, class: "code", rows: "4", spellcheck: "false" }, JSON.stringify(value ?? null, null, 2));
      area.addEventListener("input", () => {
        try {
          onChange(JSON.parse(area.value));
          area.removeAttribute("aria-invalid");
        } catch {
          area.setAttribute("aria-invalid", "true");
        }
      });
      return h("div", { class: "field" }, h("label", { for: id }, `${title} (JSON)`), area, describe(schema));
    }
  }
}
