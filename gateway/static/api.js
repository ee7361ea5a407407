// The gateway's HTTP API. The page never keeps the API key: POST /api/v1/session trades it for a
// server-side session whose token is in an HttpOnly cookie, which fetch, XHR, <img> and
// EventSource all send (same origin). Writes also carry this page's Origin, which the gateway checks.

export const API = "/api/v1";
// Where earlier versions kept the key; removed on load.
const LEGACY_KEY_STORAGE = "photostore.apiKey";

// gRPC status codes the page reacts to.
export const CODE = { NOT_FOUND: 5, FAILED_PRECONDITION: 9, UNAVAILABLE: 14, UNAUTHENTICATED: 16 };

let sessionExpired = () => {};
let signedIn = false;

export const isSignedIn = () => signedIn;
/** Whether a 401 means the session ended (and not a sign-in attempt that failed). */
export const setSignedIn = (value) => { signedIn = value; };

try {
  sessionStorage.removeItem(LEGACY_KEY_STORAGE);
  localStorage.removeItem(LEGACY_KEY_STORAGE);
} catch {
  // storage disabled: nothing was kept there either
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }

  get code() {
    return this.body.code;
  }
}

/** The ErrorInfo reason of a google.rpc.Status body, e.g. "MODEL_NOT_READY". */
export function errorReason(status) {
  const info = ((status && status.details) || []).find((detail) => detail.reason);
  return info ? info.reason : "";
}

/** Called when the server stops accepting the session (it expired, was signed out elsewhere, or
 * its key was revoked). */
export function setSessionExpiredHandler(handler) {
  sessionExpired = handler;
}

/** A JSON request; resolves with the body, rejects with an ApiError carrying the Status body. */
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, headers: {}, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(API + path, init);
  const body = await response.json().catch(() => null);
  if (response.status === 401 && signedIn) sessionExpired();
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/**
 * Uploads one file through XMLHttpRequest, so its progress can be shown.
 * Resolves with {status, body}; rejects only when no response came (network error, abort).
 */
export function uploadFile(file, { onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${API}/photos`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => resolve({ status: xhr.status, body: xhr.response || {} });
    xhr.onerror = () => reject(new Error("the connection to the server failed"));
    xhr.onabort = () => reject(new DOMException("upload cancelled", "AbortError"));
    signal.addEventListener("abort", () => xhr.abort(), { once: true });
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

export const photoHash = (name) => `#/${name}`;
export const thumbnailUrl = (name) => `${API}/${name}/thumbnail`;
export const originalUrl = (name) => `${API}/${name}/original`;
export const previewUrl = (name) => `${API}/${name}/preview`;
