// Plain page over the gateway's JSON API. The key lives in sessionStorage (for fetch headers)
// and in an HttpOnly cookie set by POST /api/v1/session (for <img> and EventSource).
"use strict";

const API = "/api/v1";
const KEY_STORAGE = "photostore.apiKey";
const STATUS_LABELS = {
  PHOTO_STATUS_UPLOADED: ["uploaded", "Indexing…"],
  PHOTO_STATUS_INDEXED: ["indexed", "Indexed"],
  PHOTO_STATUS_FAILED: ["failed", "Failed"],
};

const $ = (id) => document.getElementById(id);
const libraryCards = new Map(); // photo name -> card element in the library grid
let nextPageToken = "";
let libraryTotal = 0; // photos the server counts, kept current as photos come and go
let events = null;

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(API + path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok && !(body && body.results)) throw new ApiError(response.status, body);
  return body;
}

function notify(message) {
  $("notice").textContent = message;
}

function reasonOf(status) {
  // The first ErrorInfo reason or field violation, as a hint next to the message.
  const details = (status && status.details) || [];
  const violation = details.flatMap((d) => d.fieldViolations || [])[0];
  const info = details.find((d) => d.reason);
  if (violation && violation.field) return `${status.message} (${violation.field})`;
  return info ? `${status.message} [${info.reason}]` : (status && status.message) || "failed";
}

function photoId(name) {
  return name.slice("photos/".length);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function setStatus(badge, photo) {
  const [cls, label] = STATUS_LABELS[photo.status] || ["", photo.status || ""];
  badge.className = `status ${cls}`;
  badge.textContent = photo.statusReason ? `${label}: ${photo.statusReason}` : label;
}

function photoCard(photo, score) {
  const filename = photo.filename || photo.name;
  const badge = el("span", { class: "status" });
  setStatus(badge, photo);
  const card = el("li", { class: "card", "data-name": photo.name },
    el("a", { href: `${API}/photos/${photoId(photo.name)}/original`, target: "_blank", rel: "noopener" },
      el("img", { src: `${API}/photos/${photoId(photo.name)}/thumbnail`, alt: filename, loading: "lazy" })),
    el("span", { class: "name" }, filename),
    badge,
  );
  if (score !== undefined) {
    card.append(el("span", { class: "score" }, `score ${score.toFixed(3)}`));
  }
  card.append(el("div", { class: "actions" },
    el("button", { type: "button", "aria-label": `Find photos similar to ${filename}`,
                   onclick: () => showSimilar(photo) }, "Similar"),
    el("button", { type: "button", "aria-label": `Delete ${filename}`,
                   onclick: () => deletePhoto(photo) }, "Delete"),
  ));
  return card;
}

// Library

function addToLibrary(photo, { prepend = false } = {}) {
  const existing = libraryCards.get(photo.name);
  if (existing) {
    setStatus(existing.querySelector(".status"), photo);
    return;
  }
  const card = photoCard(photo);
  libraryCards.set(photo.name, card);
  if (prepend) {
    $("photos").prepend(card);
    showTotal(libraryTotal + 1); // a new photo, not one of a listed page
  } else $("photos").append(card);
}

function showTotal(total) {
  libraryTotal = total;
  $("total").textContent = `(${total})`;
}

function removeEverywhere(name) {
  if (libraryCards.delete(name)) showTotal(Math.max(0, libraryTotal - 1));
  for (const card of document.querySelectorAll(".card")) {
    if (card.dataset.name === name) card.remove();
  }
}

async function loadPhotos(pageToken = "") {
  const params = new URLSearchParams({ pageSize: "60" });
  if (pageToken) params.set("pageToken", pageToken);
  const page = await api(`/photos?${params}`);
  page.photos.forEach((photo) => addToLibrary(photo));
  nextPageToken = page.nextPageToken;
  $("more").hidden = !nextPageToken;
  showTotal(page.totalSize);
}

async function deletePhoto(photo) {
  if (!confirm(`Delete ${photo.filename || photo.name}?`)) return;
  try {
    await api(`/photos/${photoId(photo.name)}`, { method: "DELETE" });
    removeEverywhere(photo.name);
    notify(`Deleted ${photo.filename || photo.name}.`);
  } catch (err) {
    notify(`Could not delete: ${err.message}`);
  }
}

// Upload

async function upload(event) {
  event.preventDefault();
  const files = $("files").files;
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  const list = $("upload-results");
  list.replaceChildren(el("li", {}, `Uploading ${files.length} file(s)…`));
  try {
    const body = await api("/photos", { method: "POST", body: form });
    list.replaceChildren(...body.results.map((result) => {
      if (result.error) {
        return el("li", { class: "error" }, `${result.filename}: rejected, ${reasonOf(result.error)}`);
      }
      if (!result.duplicate) addToLibrary(result.photo, { prepend: true });
      return result.duplicate
        ? el("li", { class: "duplicate" }, `${result.filename}: already stored as ${result.photo.filename}`)
        : el("li", { class: "ok" }, `${result.filename}: stored`);
    }));
    $("upload-form").reset();
  } catch (err) {
    list.replaceChildren(el("li", { class: "error" }, `Upload failed: ${reasonOf(err.body) || err.message}`));
  }
}

// Search and similar

function showHits(heading, response) {
  $("hits-heading").textContent = heading;
  $("hits-model").textContent = response.hits.length
    ? `Best first; scores are cosine similarities (${response.model}).`
    : "Nothing found.";
  $("hits").replaceChildren(...response.hits.map((hit) => photoCard(hit.photo, hit.score)));
  $("hits-section").hidden = false;
  $("hits-heading").focus();
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  try {
    showHits(`Results for “${q}”`, await api(`/search?${new URLSearchParams({ q })}`));
  } catch (err) {
    notify(`Search failed: ${reasonOf(err.body) || err.message}`);
  }
}

async function showSimilar(photo) {
  try {
    const response = await api(`/photos/${photoId(photo.name)}/similar`);
    showHits(`Similar to ${photo.filename || photo.name}`, response);
  } catch (err) {
    notify(`Could not find similar photos: ${reasonOf(err.body) || err.message}`);
  }
}

// Live status

function watch() {
  if (events) events.close();
  events = new EventSource(`${API}/events`);
  events.addEventListener("photo", (message) => {
    const change = JSON.parse(message.data);
    if (!change.photo) return;
    if (change.deleted) {
      removeEverywhere(change.photo.name);
      return;
    }
    const photo = { ...change.photo, status: change.status, statusReason: change.reason };
    addToLibrary(photo, { prepend: true });
    for (const card of document.querySelectorAll("#hits .card")) {
      if (card.dataset.name === photo.name) setStatus(card.querySelector(".status"), photo);
    }
  });
  events.addEventListener("rpc_error", (message) => {
    const status = JSON.parse(message.data);
    notify(`Live updates stopped: ${reasonOf(status)}`);
    if (status.code === 16) events.close(); // UNAUTHENTICATED: reconnecting will not help
  });
  const source = events;
  source.addEventListener("error", () => {
    // EventSource retries by itself unless the server answered with an error status.
    if (source.readyState === EventSource.CLOSED && source === events) {
      notify("Live updates lost; reconnecting in a few seconds…");
      setTimeout(() => { if (source === events && sessionStorage.getItem(KEY_STORAGE)) watch(); }, 5000);
    }
  });
}

// Session

async function signIn(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
  try {
    await api("/session", { method: "POST", headers: { "Content-Type": "application/json" },
                            body: JSON.stringify({ apiKey: key }) });
  } catch (err) {
    sessionStorage.removeItem(KEY_STORAGE);
    notify(err.status === 401 ? "That API key is not valid." : `Cannot sign in: ${err.message}`);
    return;
  }
  notify("");
  $("key-form").hidden = true;
  $("signed-in").hidden = false;
  $("main").hidden = false;
  libraryCards.clear();
  $("photos").replaceChildren();
  watch();
  await loadPhotos().catch((err) => notify(`Cannot list photos: ${err.message}`));
}

async function signOut() {
  if (events) events.close();
  await api("/session", { method: "DELETE" }).catch(() => {});
  sessionStorage.removeItem(KEY_STORAGE);
  events = null;
  $("main").hidden = true;
  $("signed-in").hidden = true;
  $("key-form").hidden = false;
  $("key-form").reset();
  $("api-key").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("api-key").value.trim());
  });
  $("sign-out").addEventListener("click", signOut);
  $("upload-form").addEventListener("submit", upload);
  $("search-form").addEventListener("submit", search);
  $("clear-hits").addEventListener("click", () => { $("hits-section").hidden = true; });
  $("more").addEventListener("click", () => loadPhotos(nextPageToken));
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) signIn(key);
});
