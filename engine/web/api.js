// Calls to the admin API (`/api/v1/...`) with the session cookie and the CSRF header.

let csrfToken = "1";
const unauthorizedListeners = [];

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Use the token the login answered for state-changing calls (else the plain header). */
export function setCsrfToken(token) {
  csrfToken = token ? String(token) : "1";
}

/** Called whenever the API answers 401: the session is gone. */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

/** One API call; resolves to the JSON answer, rejects with ApiError (status, text). */
export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD") headers["X-Interlink-CSRF"] = csrfToken;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1/${path}`, init);
  } catch (error) {
    throw new ApiError(0, "the engine cannot be reached");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && !quiet401) unauthorizedListeners.forEach((f) => f());
    const text = (data && data.error) || response.statusText || `HTTP ${response.status}`;
    throw new ApiError(response.status, text);
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
