// Small DOM helpers. Everything that may come from the server goes in as text (Text nodes,
// textContent, attribute values), never as markup: there is no innerHTML anywhere in the UI.

const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "hidden", "open"]);

/** An element: h("div", {class: "card"}, "text", child, [more, children]). Strings become Text nodes. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A link inside the app: parts are URL-encoded, so a server string can never change the route. */
export function link(parts, ...children) {
  return h("a", {href: route(...parts)}, ...children);
}

export function route(...parts) {
  return "#/" + parts.map((part) => encodeURIComponent(String(part))).join("/");
}

/** A value as JSON text for a <pre>: on one line when short, indented otherwise. */
export function pretty(value) {
  if (value === undefined) return "";
  try {
    const short = JSON.stringify(value);
    return short === undefined || short.length <= 72 ? String(short) : JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** Characters of a JSON block shown at first: laying out megabytes of text (a tool that returned a whole
 * file) would freeze the page for seconds; the rest is a click away. */
export const SHOWN_CHARS = 100_000;

/** A value as a JSON <pre>; past SHOWN_CHARS, its start and a button that shows the rest. */
/** An error event's text: its message, prefixed by its type unless the message starts with it already. */
export function errorLine(event) {
  const error = String(event.error ?? "");
  const type = event.error_type;
  return !type || error.startsWith(`${type}:`) ? error : `${type}: ${error}`;
}

export function jsonBlock(value, className = "json") {
  const text = pretty(value);
  if (text.length <= SHOWN_CHARS) return h("pre", {class: className}, text);
  const pre = h("pre", {class: className, "data-truncated": "true"}, text.slice(0, SHOWN_CHARS));
  const more = h("button", {type: "button", class: "link-button show-all", onclick: () => {
    pre.textContent = text;
    delete pre.dataset.truncated;
    more.remove();
  }}, `… ${(text.length - SHOWN_CHARS).toLocaleString("en")} more characters: show all`);
  const block = document.createDocumentFragment();
  block.append(pre, more);
  return block;
}

export function when(seconds) {
  if (typeof seconds !== "number") return "";
  return new Date(seconds * 1000).toLocaleString();
}

export function duration(seconds) {
  if (typeof seconds !== "number") return "";
  return seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
}

export function badge(status) {
  return h("span", {class: `badge status-${String(status).replace(/[^a-z_-]/gi, "")}`, "data-status": status},
           status);
}

// ---- the message area ----------------------------------------------------------------------------

let area = null;

export function messageArea(el) {
  area = el;
}

/** Show a message (kind: error | info); it stays until dismissed or the view changes. */
export function notify(text, kind = "error", detail = null) {
  const item = h("div", {class: `message ${kind}`, role: kind === "error" ? "alert" : "status"},
                 h("span", {class: "message-text"}, text),
                 detail ? h("span", {class: "message-detail"}, detail) : null,
                 h("button", {type: "button", class: "dismiss", "aria-label": "dismiss",
                              onclick: () => item.remove()}, "×"));
  area.append(item);
  return item;
}

/** An error of any kind, shown with its API code and parameter when it has them. */
export function showError(error, context = "") {
  const prefix = context ? `${context}: ` : "";
  const parts = [];
  if (error && error.status) parts.push(`HTTP ${error.status}`);
  if (error && error.code) parts.push(`code ${error.code}`);
  if (error && error.param) parts.push(`param ${error.param}`);
  const item = notify(prefix + (error && error.message ? error.message : String(error)), "error",
                      parts.length ? parts.join(" · ") : null);
  if (error && Array.isArray(error.details) && error.details.length > 1) {
    const list = h("ul", {class: "message-list"});
    for (const d of error.details.slice(0, 20)) list.append(h("li", null, detailText(d)));
    item.insertBefore(list, item.lastChild);
  }
  return item;
}

function detailText(detail) {
  if (detail && typeof detail === "object") {
    const where = detail.pointer || (Array.isArray(detail.loc) ? detail.loc.join(".") : "");
    const line = detail.line ? ` (line ${detail.line})` : "";
    return `${where ? where + ": " : ""}${detail.message ?? pretty(detail)}${line}`;
  }
  return String(detail);
}

export function clearMessages() {
  area.replaceChildren();
}
