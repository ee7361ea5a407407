// The gateway's HTTP API. The key lives in sessionStorage (sent as a Bearer header by fetch and
// XHR) and in the HttpOnly cookie set by POST /api/v1/session (sent by <img> and EventSource).

export const API = "/api/v1";
const KEY_STORAGE = "photostore.apiKey";

// gRPC status codes the page reacts to.
export const CODE = { NOT_FOUND: 5, FAILED_PRECONDITION: 9, UNAVAILABLE: 14, UNAUTHENTICATED: 16 };

let sessionExpired = () => {};

export const storedKey = () => sessionStorage.getItem(KEY_STORAGE);
export const storeKey = (key) => sessionStorage.setItem(KEY_STORAGE, key);
export const forgetKey = () => sessionStorage.removeItem(KEY_STORAGE);

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

function authHeaders(headers = {}) {
  const key = storedKey();
  return key ? { ...headers, Authorization: `Bearer ${key}` } : headers;
}

/** Called when the server stops accepting the stored key (it was revoked, or the user removed). */
export function setSessionExpiredHandler(handler) {
  sessionExpired = handler;
}

/** A JSON request; resolves with the body, rejects with an ApiError carrying the Status body. */
export async function api(path, { method = "GET", json } = {}) {
  const init = { method, headers: authHeaders() };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(API + path, init);
  const body = await response.json().catch(() => null);
  if (response.status === 401 && storedKey()) sessionExpired();
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
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
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
