// Entry point: sign-in, the live event stream, hash routing and keyboard shortcuts.
//   #/photos        timeline            #/search?q=...   search results
//   #/photos/<id>   viewer over whichever of the views was shown last
//   #/albums, #/albums/<id>   albums (albums.js)     #/trash   the trash (trash.js)
import { API, api, CODE, isSignedIn, setSessionExpiredHandler, setSignedIn } from "./api.js";
import { $, toast } from "./dom.js";
import { forgetAllPhotos, forgetPhoto, onPhotoChange, rememberPhoto, statusOf } from "./photos.js";
import { hideDuplicates, initDuplicates, showDuplicates } from "./duplicates.js";
import { albumPhotoNames, hideAlbums, initAlbums, isAlbumsHash, showAlbums } from "./albums.js";
import { clearSelection, initSelection } from "./selection.js";
import { hideTrash, initTrash, showTrash } from "./trash.js";
import { clearSearch, searchHash, searchResultNames, showSearch } from "./search.js";
import { startTimeline, stopTimeline, timelineNames } from "./timeline.js";
import { initUploads, photosBeingIndexed, resetUploads } from "./upload.js";
import { hideViewer, initViewer, showPhoto } from "./viewer.js";

const RECONNECT_MS = 5000;
const MODEL_POLL_MS = 3000;
const PHOTO_ROUTE = /^#\/photos\/([^/?#]+)$/;

let baseHash = "#/photos"; // the view under the viewer
let leavingViewer = false; // a history.go back to that view is on its way
let shownBase = "";
let events = null;
let everConnected = false;
let reconnectTimer = 0;
let modelTimer = 0;

// Routing

const isPhotoHash = (hash) => PHOTO_ROUTE.test(hash);
const viewerDepth = () => (history.state && history.state.viewerDepth) || 0;

function showBase(hash) {
  if (hash === shownBase) return;
  shownBase = hash;
  const search = hash.startsWith("#/search");
  const duplicates = hash.startsWith("#/duplicates");
  const albums = isAlbumsHash(hash);
  const trash = hash === "#/trash";
  clearSelection();
  $("timeline-view").hidden = search || duplicates || albums || trash;
  if (albums) showAlbums(hash);
  else hideAlbums();
  if (trash) showTrash();
  else hideTrash();
  $("search-view").hidden = !search;
  if (duplicates) showDuplicates();
  else hideDuplicates();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = search ? "search" : duplicates ? "duplicates" : albums ? "albums" : trash ? "trash" : "photos";
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (search) showSearch(new URLSearchParams(hash.split("?")[1] || ""));
  else {
    clearSearch();
    $("search-input").value = "";
  }
}

function route() {
  leavingViewer = false;
  if (!isSignedIn()) return;
  const hash = location.hash || "#/photos";
  const photo = hash.match(PHOTO_ROUTE);
  if (photo) {
    showBase(baseHash);
    showPhoto(`photos/${decodeURIComponent(photo[1])}`);
    return;
  }
  hideViewer();
  baseHash = hash.startsWith("#/search") || hash === "#/duplicates" || isAlbumsHash(hash) || hash === "#/trash"
    ? hash : "#/photos";
  showBase(baseHash);
}

/** Opens a photo as a new history entry, so Back closes the viewer again. */
function openPhoto(hash) {
  if (hash === location.hash) return;
  const depth = isPhotoHash(location.hash) ? viewerDepth() : 0;
  history.pushState({ viewerDepth: depth + 1 }, "", hash);
  route();
}

/** Back to the view under the viewer, past every photo opened on the way. */
function closeViewer() {
  if (!isPhotoHash(location.hash) || leavingViewer) return;
  const depth = viewerDepth();
  if (depth > 0) {
    leavingViewer = true;
    history.go(-depth);
  } else {
    history.replaceState(null, "", baseHash);
    route();
  }
}

function neighbour(name, offset) {
  const names = baseHash.startsWith("#/search") ? searchResultNames()
    : baseHash.startsWith("#/albums/") ? albumPhotoNames() : timelineNames();
  const index = names.indexOf(name);
  return index < 0 ? "" : names[index + offset] || "";
}

function navigate(hash) {
  if (hash !== location.hash) history.pushState(null, "", hash);
  route();
}

// Live status

function watchEvents() {
  clearTimeout(reconnectTimer);
  if (events) events.close();
  const source = new EventSource(`${API}/events`);
  events = source;
  source.addEventListener("open", () => {
    $("live-state").dataset.state = "on";
    if (everConnected) refreshIndexing(); // changes made while disconnected were missed
    everConnected = true;
  });
  source.addEventListener("photo", (message) => {
    const change = JSON.parse(message.data);
    if (change.changeType === "PHOTO_CHANGE_TYPE_DELETED") forgetPhoto(change.photo.name);
    else rememberPhoto(change.photo);
  });
  source.addEventListener("rpc_error", (message) => {
    const status = JSON.parse(message.data);
    if (status.code === CODE.UNAUTHENTICATED) sessionExpired();
    else toast(`Live updates interrupted: ${status.message}. Reconnecting…`, { error: true });
  });
  source.addEventListener("error", () => {
    $("live-state").dataset.state = "off";
    // EventSource retries by itself, unless the server answered with an error status. A revoked
    // key then ends the session (through api's 401 handler); anything else is tried again later.
    if (source.readyState === EventSource.CLOSED && source === events) {
      api("/model").catch(() => {});
      reconnectTimer = setTimeout(watchEvents, RECONNECT_MS);
    }
  });
}

async function refreshIndexing() {
  for (const name of photosBeingIndexed()) {
    try {
      rememberPhoto((await api(`/${name}`)).photo);
    } catch (err) {
      if (err.code === CODE.NOT_FOUND) forgetPhoto(name);
    }
  }
}

// What each model gives search, in the words the page uses.
const MODEL_USES = {
  MODEL_ROLE_CLIP: "what photos show (image model)",
  MODEL_ROLE_LABELS: "labels",
  MODEL_ROLE_OCR: "text in photos",
  MODEL_ROLE_SENTENCE: "descriptions of labels and text",
};

async function showModelState() {
  clearTimeout(modelTimer);
  const box = $("model-state");
  try {
    const info = await api("/model");
    const uses = (models) => models.map((m) => MODEL_USES[m.role] || m.model);
    const ready = info.models.filter((m) => m.ready);
    const waiting = info.models.filter((m) => !m.ready);
    // File names (and labels and text once read) are always matched as keywords.
    const using = [...uses(ready), "file names"];
    box.textContent = `Search uses ${using.join(", ")}.` +
      (waiting.length ? ` Not ready yet: ${uses(waiting).join(", ")}.` : "");
    box.title = waiting.map((m) => `${m.model}: ${m.reason || "loading"}`).join("\n") ||
      ready.map((m) => m.model).join(", ") + ` on ${info.device}`;
    box.dataset.state = waiting.length ? "loading" : "ready";
    if (!waiting.length) return;
  } catch (err) {
    box.dataset.state = "loading";
    box.textContent = `Search models unavailable: ${err.message}`;
  }
  modelTimer = setTimeout(showModelState, MODEL_POLL_MS);
}

// Session

function showSignIn(message = "") {
  $("sign-in").hidden = false;
  $("app").hidden = true;
  const error = $("sign-in-error");
  error.textContent = message;
  error.hidden = !message;
  $("api-key").setAttribute("aria-invalid", String(Boolean(message)));
  $("api-key").focus();
  $("api-key").select();
}

function enterApp() {
  setSignedIn(true);
  $("sign-in").hidden = true;
  $("app").hidden = false;
  $("key-form").reset();
  everConnected = false;
  watchEvents();
  showModelState();
  shownBase = "";
  startTimeline();
  route();
}

/** Trades the key for a session cookie; the key itself is not kept anywhere on the page. */
async function signIn(key) {
  const button = $("key-form").querySelector("button");
  button.disabled = true;
  try {
    await api("/session", { method: "POST", json: { apiKey: key } });
  } catch (err) {
    showSignIn(err.status === 401
      ? "That API key was not accepted. Check that you copied all of it; it starts with psk_."
      : `Cannot sign in right now: ${err.message}`);
    return;
  } finally {
    button.disabled = false;
  }
  enterApp();
}

function leaveApp() {
  setSignedIn(false);
  clearTimeout(reconnectTimer);
  clearTimeout(modelTimer);
  if (events) events.close();
  events = null;
  resetUploads();
  clearSelection();
  hideViewer();
  stopTimeline();
  clearSearch();
  forgetAllPhotos();
  shownBase = "";
  history.replaceState(null, "", location.pathname + location.search);
}

async function signOut() {
  await api("/session", { method: "DELETE" }).catch(() => {});
  leaveApp();
  showSignIn();
}

function sessionExpired() {
  leaveApp();
  showSignIn("Your session has ended or your API key is no longer accepted. Sign in again.");
}

// Keyboard: "/" searches, "u" uploads; arrows, Delete and Escape work in the viewer.
function shortcut(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || $("app").hidden) return;
  if (event.target.closest("input, textarea, select, [contenteditable]") || document.querySelector("dialog[open]")) {
    return;
  }
  if (event.key === "/") $("search-input").focus();
  else if (event.key === "u") $("file-input").click();
  else return;
  event.preventDefault();
}

function init() {
  initUploads();
  initDuplicates();
  initSelection();
  initAlbums();
  initTrash();
  initViewer({ close: closeViewer, neighbour, step: (name) => {
    history.replaceState(history.state, "", `#/${name}`);
    route();
  } });
  setSessionExpiredHandler(sessionExpired);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) signIn(key);
    else showSignIn("Enter your API key.");
  });
  $("sign-out").addEventListener("click", signOut);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(searchHash());
  });
  $("search-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(searchHash());
  });
  $("search-filters").addEventListener("reset", () => setTimeout(() => navigate(searchHash())));
  // The skip link moves focus without touching the route.
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $($("app").hidden ? "api-key" : "main").focus();
  });
  // Photo links open the viewer as a history entry of their own.
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='#/photos/']");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    openPhoto(link.getAttribute("href"));
  });
  document.addEventListener("keydown", shortcut);
  // A photo got indexed: the model is ready now, whatever the last look said.
  onPhotoChange((photo) => {
    if (!photo.deleted && statusOf(photo).key === "indexed" && $("model-state").dataset.state === "loading") {
      showModelState();
    }
  });
  window.addEventListener("hashchange", route);
  // A session from before (this tab reloaded, another tab signed in) goes on without the key.
  api("/session").then(enterApp, () => showSignIn());
}

init();
