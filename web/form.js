// A form built from a JSON Schema: one field per property for string, number, integer, boolean and
// enum properties (required marked, defaults filled in), a JSON box per property of any other kind,
// and a raw JSON editor for the whole value (the only editor when the schema is not a plain object).

import {h, pretty, showError} from "./dom.js";

/** What the user typed cannot be sent (bad JSON, say); shown before anything goes to the server. */
export class InputError extends Error {}

let forms = 0;

function typeOf(schema) {
  if (!schema || typeof schema !== "object") return null;
  if (Array.isArray(schema.enum) && schema.enum.length && schema.enum.every(isPrimitive)) return "enum";
  const type = Array.isArray(schema.type) ? schema.type.filter((t) => t !== "null") : [schema.type];
  return type.length === 1 && ["string", "number", "integer", "boolean"].includes(type[0]) ? type[0] : null;
}

function isPrimitive(value) {
  return value === null || ["string", "number", "boolean"].includes(typeof value);
}

function required(schema) {
  return new Set(Array.isArray(schema.required) ? schema.required.filter((name) => typeof name === "string") : []);
}

/** [name, schema] of each property, and of each required name the schema has no property for (a value of
 * any kind): the form asks for everything the server will insist on. */
function properties(schema) {
  const own = schema.properties && typeof schema.properties === "object" ? Object.entries(schema.properties) : [];
  const named = new Set(own.map(([name]) => name));
  return [...own, ...[...required(schema)].filter((name) => !named.has(name)).map((name) => [name, {}])];
}

/** True when every property can be a form field (and there is at least one). */
function formable(schema) {
  return Boolean(schema && typeof schema === "object" && (schema.type === "object" || schema.properties)
                 && schema.properties && typeof schema.properties === "object"
                 && Object.keys(schema.properties).length);
}

/** A value that matches the schema's shape, to start the JSON editor from. */
export function skeleton(schema) {
  if (!schema || typeof schema !== "object") return null;
  if ("default" in schema) return schema.default;
  if ("const" in schema) return schema.const;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  if (type === "object" || schema.properties) {
    // entries, not assignments: a property may be called "__proto__"
    return Object.fromEntries(properties(schema)
      .filter(([name, sub]) => required(schema).has(name) || (sub && typeof sub === "object" && "default" in sub))
      .map(([name, sub]) => [name, skeleton(sub)]));
  }
  return {array: [], string: "", number: 0, integer: 0, boolean: false, null: null}[type] ?? null;
}

class Field {
  constructor(name, schema, required, id) {
    this.name = name;
    this.schema = schema && typeof schema === "object" ? schema : {};
    this.required = required;
    this.kind = typeOf(this.schema) || "json";
    this.touched = false;
    this.input = this.build(id);
    this.input.addEventListener("input", () => (this.touched = true));
    this.input.addEventListener("change", () => (this.touched = true));
    if ("default" in this.schema) this.set(this.schema.default);
  }

  build(id) {
    const attrs = {id, name: this.name, "data-kind": this.kind};
    const s = this.schema;
    switch (this.kind) {
      case "enum": {
        const select = h("select", attrs, this.required && "default" in s ? null : h("option", {value: ""}, "—"));
        s.enum.forEach((option, i) => select.append(h("option", {value: String(i)},
                                                        typeof option === "string" ? option : pretty(option))));
        return select;
      }
      case "boolean":
        return h("input", {...attrs, type: "checkbox"});
      case "number":
      case "integer":
        return h("input", {...attrs, type: "number", step: this.kind === "integer" ? "1" : "any",
                           min: s.minimum, max: s.maximum});
      case "string":
        return (s.maxLength ?? Infinity) <= 120 || s.format || s.pattern
          ? h("input", {...attrs, type: "text", maxlength: s.maxLength})
          : h("textarea", {...attrs, rows: 3});
      default:
        return h("textarea", {...attrs, rows: 3, class: "json-input", spellcheck: "false",
                              placeholder: "JSON"});
    }
  }

  set(value) {
    const input = this.input;
    switch (this.kind) {
      case "enum": {
        const i = this.schema.enum.findIndex((option) => JSON.stringify(option) === JSON.stringify(value));
        input.value = i < 0 ? "" : String(i);
        break;
      }
      case "boolean":
        input.checked = value === true;
        break;
      case "json":
        input.value = value === undefined ? "" : pretty(value);
        break;
      default:
        input.value = value === undefined || value === null ? "" : String(value);
    }
  }

  /** [has a value, the value]; an optional field left empty has none. */
  get() {
    const input = this.input;
    switch (this.kind) {
      case "enum":
        return input.value === "" ? [false] : [true, this.schema.enum[Number(input.value)]];
      case "boolean":
        return this.required || this.touched || "default" in this.schema ? [true, input.checked] : [false];
      case "number":
      case "integer":
        if (input.validity.badInput) throw new InputError(`${this.name}: "${input.value}" is not a number`);
        return input.value === "" ? [false] : [true, Number(input.value)];
      case "string":
        return input.value === "" && !this.required ? [false] : [true, input.value];
      default: {
        if (input.value.trim() === "") return [false];
        return [true, parseJson(input.value, this.name)];
      }
    }
  }

  element() {
    const label = h("label", {for: this.input.id}, this.schema.title || this.name,
                    this.required ? h("span", {class: "required", title: "required"}, " *") : null);
    const type = this.kind === "json" ? "JSON" : this.kind === "enum" ? "one of" : this.kind;
    return h("div", {class: `field field-${this.kind}`, "data-field": this.name},
             h("div", {class: "field-head"}, label, h("span", {class: "field-type"}, type)),
             this.input,
             this.schema.description ? h("div", {class: "field-help"}, this.schema.description) : null);
  }
}

/** Parse JSON the user typed, or throw an InputError saying where it is wrong. */
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new InputError(`${what} is not valid JSON: ${error.message}`);
  }
}

/** The editor for a value described by `schema`: fields where possible, raw JSON always available. */
export class SchemaForm {
  constructor(schema, {initial, label = "value"} = {}) {
    const id = `f${++forms}`;
    this.schema = schema;
    this.label = label;
    this.fields = [];
    if (formable(schema)) {
      const needed = required(schema);
      this.fields = properties(schema).map(([name, sub], i) => new Field(name, sub, needed.has(name), `${id}-${i}`));
    }
    this.raw = h("textarea", {class: "json-input raw-json", rows: 8, spellcheck: "false", name: "raw-json",
                              "aria-label": `${label} as JSON`});
    this.raw.value = pretty(initial !== undefined ? initial : skeleton(schema) ?? {});
    this.jsonMode = this.fields.length === 0;
    this.fieldBox = h("div", {class: "fields"}, this.fields.map((f) => f.element()));
    this.toggle = h("button", {type: "button", class: "link-button toggle-json", onclick: () => {
      try {
        this.switchMode();
      } catch (error) {
        showError(error);
      }
    }});
    this.element = h("div", {class: "schema-form"}, this.fieldBox, this.raw,
                     this.fields.length ? h("div", {class: "form-tools"}, this.toggle) : null);
    if (initial !== undefined && this.fields.length) this.setFields(initial);
    this.show();
  }

  show() {
    this.fieldBox.hidden = this.jsonMode;
    this.raw.hidden = !this.jsonMode;
    this.toggle.textContent = this.jsonMode ? "Edit as form" : "Edit as JSON";
  }

  setFields(value) {
    if (!value || typeof value !== "object" || Array.isArray(value)) return false;
    const known = new Set(this.fields.map((f) => f.name));
    if (Object.keys(value).some((key) => !known.has(key))) return false;
    for (const field of this.fields) {
      const given = Object.hasOwn(value, field.name);
      field.set(given ? value[field.name] : undefined);
      field.touched = given;
    }
    return true;
  }

  /** Switch between fields and raw JSON, carrying the value over. Throws InputError if it cannot. */
  switchMode() {
    const value = this.value();
    if (this.jsonMode) {
      if (!this.setFields(value)) {
        throw new InputError(`this ${this.label} does not fit the form's fields; keep editing it as JSON`);
      }
    } else {
      this.raw.value = pretty(value);
    }
    this.jsonMode = !this.jsonMode;
    this.show();
  }

  /** The value to send; throws InputError for JSON that does not parse or a number that is not one. */
  value() {
    if (this.jsonMode) return parseJson(this.raw.value, `the ${this.label}`);
    const entries = [];
    for (const field of this.fields) {
      const [present, v] = field.get();
      if (present) entries.push([field.name, v]);
    }
    return Object.fromEntries(entries); // not value[name] = v: a property may be called "__proto__"
  }
}
