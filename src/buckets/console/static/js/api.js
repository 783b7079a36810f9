// The console's JSON API, from the page: fetch() for calls, XMLHttpRequest for uploads
// (its upload progress events drive the progress bars). Every state-changing call
// repeats the session's CSRF token in a header; a 401 means the session is gone.

export const BASE = "api/";
const CSRF_HEADER = "X-Buckets-CSRF";

export const session = { user: null, root: false, csrf: null, expires: 0 };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || `HTTP${status}`;
  }
}

// Called when a call answers 401 (set by app.js: back to the login form).
let onLoggedOut = () => {};
export function whenLoggedOut(callback) {
  onLoggedOut = callback;
}

function setSession(data) {
  session.user = data.user;
  session.root = Boolean(data.root);
  session.csrf = data.csrf;
  session.expires = data.expires;
}

export function clearSession() {
  session.user = null;
  session.root = false;
  session.csrf = null;
  session.expires = 0;
}

async function errorOf(response) {
  let code = null;
  let message = null;
  try {
    const body = await response.json();
    code = body.code;
    message = body.message;
  } catch (_) {
    message = `${response.status} ${response.statusText}`;
  }
  return new ApiError(response.status, code, message);
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && session.csrf) headers[CSRF_HEADER] = session.csrf;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch (error) {
    throw new ApiError(0, "NetworkError", "The server cannot be reached.");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && path !== "login" && path !== "session") {
      clearSession();
      onLoggedOut(error);
    }
    throw error;
  }
  return response.json();
}

export async function login(accessKey, secretKey) {
  setSession(await call("POST", "login", { access_key: accessKey, secret_key: secretKey }));
  return session;
}

export async function resume() {
  setSession(await call("GET", "session"));
  return session;
}

export async function logout() {
  try {
    await call("POST", "logout", {});
  } finally {
    clearSession();
  }
}

export function bucketPath(bucket, rest = "") {
  return `buckets/${encodeURIComponent(bucket)}${rest}`;
}

export function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return pairs.length ? "?" + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&") : "";
}

export function downloadUrl(bucket, key) {
  return BASE + bucketPath(bucket, "/download" + query({ key }));
}

// One PUT of `blob` with progress: resolves with the JSON answer, rejects with an ApiError.
// `handle.abort()` cancels it.
export function put(path, blob, { contentType, onProgress, handle } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", BASE + path);
    xhr.setRequestHeader(CSRF_HEADER, session.csrf || "");
    xhr.setRequestHeader("Content-Type", contentType || "application/octet-stream");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (onProgress && event.lengthComputable) onProgress(event.loaded, event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(xhr.response);
        return;
      }
      const body = xhr.response || {};
      const error = new ApiError(xhr.status, body.code, body.message);
      if (xhr.status === 401) {
        clearSession();
        onLoggedOut(error);
      }
      reject(error);
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "NetworkError", "The upload was cut off.")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "Cancelled", "Cancelled.")));
    if (handle) handle.abort = () => xhr.abort();
    xhr.send(blob);
  });
}
