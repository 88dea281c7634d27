// The JSON API: every call carries "Authorization: Bearer <key>" when a key is stored; a 401 asks the
// user for the key (the field in the header) and retries. Errors come back as ApiError, built from the
// server's error shape {"error": {"message", "type", "param", "code", "details"}}.

const ROOT = new URL("../", import.meta.url); // the server's root: the UI is served at <root>/ui/
const KEY = "agentflow.apiKey";

export class ApiError extends Error {
  constructor(status, message, {code = null, type = null, param = null, details = null} = {}) {
    super(message);
    Object.assign(this, {name: "ApiError", status, code, type, param, details});
  }
}

export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), ROOT);
}

// ---- the API key ---------------------------------------------------------------------------------

export function storedKey() {
  try {
    return localStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

/** Keep the key (localStorage) and retry the calls waiting for it; returns how many were waiting. */
export function storeKey(key) {
  try {
    if (key) localStorage.setItem(KEY, key);
    else localStorage.removeItem(KEY);
  } catch { /* storage disabled: the key lives until the page closes */ }
  memoryKey = key;
  const waiting = keyWaiters;
  keyWaiters = [];
  for (const resolve of waiting) resolve();
  return waiting.length;
}

let memoryKey = null;
let keyWaiters = [];
let onKeyNeeded = () => {};

/** Who asks the user for a key: called with the server's message each time a call answers 401. */
export function whenKeyNeeded(callback) {
  onKeyNeeded = callback;
}

function currentKey() {
  return memoryKey ?? storedKey();
}

/** Wait until the user gives a (new) key. */
export function askForKey(message) {
  onKeyNeeded(message);
  return new Promise((resolve) => keyWaiters.push(resolve));
}

export function headers(extra = {}) {
  const result = new Headers(extra);
  const key = currentKey();
  if (key) result.set("Authorization", `Bearer ${key}`);
  return result;
}

// ---- calls ---------------------------------------------------------------------------------------

/** The ApiError a failed response stands for. */
export async function errorOf(response) {
  const text = await response.text().catch(() => "");
  let body = null;
  try {
    body = JSON.parse(text);
  } catch { /* not JSON: a proxy's page, say */ }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error === "object" && typeof error.message === "string") {
    return new ApiError(response.status, error.message, error);
  }
  const snippet = text.trim().slice(0, 200);
  return new ApiError(response.status, `${response.status} ${response.statusText}${snippet ? ": " + snippet : ""}`);
}

const RATE_LIMIT_RETRIES = 5;

/** Seconds a 429's Retry-After asks for (1 when absent or unreadable), at most 30. */
function retryAfter(response) {
  const seconds = Number(response.headers.get("Retry-After"));
  return Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 30) : 1;
}

/** method + path (+ a JSON body) → the parsed JSON answer (null for 204). Throws ApiError. A 429 (the
 * server's rate limit, checked before anything else, so a retry is safe) is waited out a few times. */
export async function api(method, path, body) {
  for (let limited = 0; ; ) {
    const init = {method, headers: headers(body === undefined ? {} : {"Content-Type": "application/json"})};
    if (body !== undefined) init.body = JSON.stringify(body);
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch (error) {
      throw new ApiError(0, `could not reach the server (${error.message})`, {code: "network_error"});
    }
    if (response.status === 401) {
      const error = await errorOf(response);
      await askForKey(error.message);
      continue; // the server checks the key before anything else, so a retry is safe
    }
    if (response.status === 429 && limited < RATE_LIMIT_RETRIES) {
      limited += 1;
      await response.text().catch(() => "");
      await new Promise((resolve) => setTimeout(resolve, retryAfter(response) * 1000));
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    return response.json();
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

/** A path with its query string, leaving out empty parameters. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const seg = encodeURIComponent;
