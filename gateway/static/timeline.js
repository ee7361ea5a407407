// The timeline: every photo newest first, under a heading per day taken (else uploaded), with the
// next page loaded as its end scrolls into view.
import { api } from "./api.js";
import { browseParams, browsing, refreshBrowseBar, resetBrowse, showBrowseBar } from "./browse.js";
import { $, el } from "./dom.js";
import {
  dayHeading, dayKey, knownPhotos, onPhotoChange, photoTile, rememberPhoto, sortTime, updateTile,
} from "./photos.js";

// ?pageSize=N on the page's URL overrides it (the browser tests page through a few photos).
const PAGE_SIZE = Number(new URLSearchParams(location.search).get("pageSize")) || 60;
const PRELOAD_MARGIN = "800px 0px";
const COUNT_REFRESH_MS = 300;

const tiles = new Map(); // name -> <li> in the timeline
let nextPageToken = null; // null: nothing loaded yet; "": every page loaded
let loading = null;
let oldestLoaded = null; // the last photo of the pages loaded so far
let total = 0; // photos the server counts, kept current between refreshes
let countTimer = 0;
let observer = null;
let applyingPage = false; // set while a listed page goes into the store (synchronously)
let generation = 0; // a page that arrives after the timeline was stopped is dropped

/** Newest first by time taken (else uploaded), then by name, as the server lists them. */
function newerFirst(a, b) {
  return (b.time - a.time) || (a.name < b.name ? 1 : a.name > b.name ? -1 : 0);
}

const sortKey = (photo) => ({ time: sortTime(photo).getTime(), name: photo.name });
const tileKey = (li) => ({ time: Number(li.dataset.time), name: li.dataset.name });

/** Whether a photo belongs among the pages loaded so far (older ones come with a later page). */
function withinLoadedPages(photo) {
  return nextPageToken === "" || (oldestLoaded !== null && newerFirst(sortKey(photo), oldestLoaded) <= 0);
}

function daySection(key) {
  const root = $("timeline");
  const existing = root.querySelector(`section[data-day="${key}"]`);
  if (existing) return existing.querySelector("ul");
  const headingId = `day-${key}`;
  const section = el("section", { class: "day", dataset: { day: key }, "aria-labelledby": headingId },
    el("h2", { id: headingId, class: "day-heading" }, dayHeading(key)),
    el("ul", { class: "grid", role: "list" }));
  const later = [...root.children].find((other) => other.dataset.day < key);
  root.insertBefore(section, later || null);
  return section.querySelector("ul");
}

/** Shows or updates the photo's tile; false when the photo belongs to a page not loaded yet. */
function placeTile(photo) {
  const existing = tiles.get(photo.name);
  if (existing) {
    updateTile(existing.querySelector(".tile"), photo);
    return true;
  }
  if (!withinLoadedPages(photo)) return false;
  const li = photoTile(photo);
  li.dataset.time = String(sortTime(photo).getTime());
  const list = daySection(dayKey(sortTime(photo)));
  const key = sortKey(photo);
  const after = [...list.children].find((other) => newerFirst(key, tileKey(other)) < 0);
  list.insertBefore(li, after || null);
  tiles.set(photo.name, li);
  $("timeline-empty").hidden = true;
  return true;
}

function removeTile(name) {
  const li = tiles.get(name);
  if (!li) return;
  tiles.delete(name);
  const section = li.closest("section");
  li.remove();
  if (!section.querySelector("li")) section.remove();
}

function showCount(count) {
  total = count;
  $("photo-count").textContent = `${total} ${total === 1 ? "photo" : "photos"}`;
  $("timeline-empty").hidden = total > 0 || tiles.size > 0;
}

/** Asks the server for the total again after photos came or went (debounced); the count shown
 * meanwhile is adjusted by hand. */
function refreshCount() {
  clearTimeout(countTimer);
  countTimer = setTimeout(async () => {
    refreshBrowseBar();
    try {
      showCount((await api(`/photos?${new URLSearchParams({ ...browseParams(), pageSize: "1" })}`)).totalSize);
    } catch {
      // The count stays as it was; the next change tries again.
    }
  }, COUNT_REFRESH_MS);
}

function showLoadState(message = "", { retry = false } = {}) {
  const box = $("timeline-status");
  box.replaceChildren(message);
  if (retry) box.append(" ", el("button", { type: "button", class: "button", onclick: loadNextPage }, "Try again"));
  box.hidden = !message;
}

/** Fetches and shows the next page; false when that failed (the status line then offers a retry). */
async function fetchPage() {
  const params = new URLSearchParams({ ...browseParams(), pageSize: String(PAGE_SIZE) });
  if (nextPageToken) params.set("pageToken", nextPageToken);
  const started = generation;
  showLoadState("Loading photos…");
  try {
    const page = await api(`/photos?${params}`);
    if (started !== generation) return false;
    nextPageToken = page.nextPageToken;
    if (page.photos.length) oldestLoaded = sortKey(page.photos[page.photos.length - 1]);
    applyingPage = true;
    try {
      for (const photo of page.photos) placeTile(rememberPhoto(photo));
    } finally {
      applyingPage = false;
    }
    showCount(page.totalSize);
    // Photos that arrived while the page was on its way, and now fall within the loaded range
    // (while browsing, the server's pages alone say which photos match).
    let arrived = false;
    for (const photo of browsing() ? [] : knownPhotos()) {
      if (!tiles.has(photo.name)) arrived = placeTile(photo) || arrived;
    }
    if (arrived) refreshCount();
    showLoadState();
    return true;
  } catch (err) {
    if (started === generation) showLoadState(`Could not load photos: ${err.message}`, { retry: true });
    return false;
  }
}

/** Loads the next page unless one is loading or none is left. */
function loadNextPage() {
  if (loading || nextPageToken === "") return loading;
  const request = fetchPage().then((loaded) => {
    if (loading === request) loading = null;
    // Observing again reports the sentinel's current state: still in view means load another page.
    if (loaded && nextPageToken && observer) {
      observer.unobserve($("timeline-sentinel"));
      observer.observe($("timeline-sentinel"));
    }
  });
  loading = request;
  return request;
}

/** Lists again from the top with the browse bar's filters. */
function reloadTimeline() {
  clearTimeline();
  observer = new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting)) loadNextPage();
  }, { rootMargin: PRELOAD_MARGIN });
  observer.observe($("timeline-sentinel"));
  return loadNextPage();
}

export function startTimeline() {
  showBrowseBar($("timeline-view"), $("timeline-empty"), reloadTimeline);
  return reloadTimeline();
}

export function stopTimeline() {
  resetBrowse();
  clearTimeline();
}

function clearTimeline() {
  generation += 1;
  loading = null;
  clearTimeout(countTimer);
  if (observer) observer.disconnect();
  observer = null;
  tiles.clear();
  nextPageToken = null;
  oldestLoaded = null;
  $("timeline").replaceChildren();
  $("photo-count").textContent = "";
  $("timeline-empty").hidden = true;
  showLoadState();
}

/** Timeline tiles in display order, for stepping through photos in the viewer. */
export const timelineNames = () => [...$("timeline").querySelectorAll("li[data-name]")].map((li) => li.dataset.name);

onPhotoChange((photo) => {
  if (!observer || applyingPage) return; // signed out, or a listed page going in
  if (photo.deleted) {
    if (tiles.has(photo.name)) showCount(total - 1);
    removeTile(photo.name);
    refreshCount();
    return;
  }
  if (tiles.has(photo.name)) {
    placeTile(photo);
    return;
  }
  // Most likely a photo uploaded since the count was taken (while browsing, the count tells).
  if (!browsing() && placeTile(photo)) showCount(total + 1);
  refreshCount();
});
