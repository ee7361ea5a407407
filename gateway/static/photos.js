// The photos the page knows, kept current from API responses and the event stream, plus how a
// photo is written out (dates, sizes, status) and drawn as a tile.
import { photoHash, thumbnailUrl } from "./api.js";
import { el } from "./dom.js";

const STATUS = {
  PHOTO_STATUS_UPLOADED: { key: "uploaded", label: "Indexing…" },
  PHOTO_STATUS_INDEXED: { key: "indexed", label: "Searchable" },
  PHOTO_STATUS_FAILED: { key: "failed", label: "Indexing failed" },
};
const UNKNOWN_STATUS = { key: "unknown", label: "Unknown" };
// Reading the text in a searchable photo, a later stage (none for photos from before it existed).
const TEXT_STATE = {
  STAGE_STATE_PENDING: { key: "reading", label: "reading text…" },
  STAGE_STATE_DONE: { key: "read", label: "text read" },
  STAGE_STATE_FAILED: { key: "failed", label: "text not read" },
  STAGE_STATE_SKIPPED: { key: "off", label: "text reading off" },
};

export const statusOf = (photo) => STATUS[photo.status] || UNKNOWN_STATUS;
/** Where reading its text stands, or null when there is nothing to say. */
export const textStateOf = (photo) => (photo.status === "PHOTO_STATUS_INDEXED" && TEXT_STATE[photo.textState]) || null;

// Store

const known = new Map(); // name -> photo
const listeners = new Set();

/** Calls listener(photo) for every change; a deleted photo comes as {name, deleted: true}. */
export function onPhotoChange(listener) {
  listeners.add(listener);
}

/** Keeps whichever copy was updated last (an upload's answer can arrive after "indexed"). */
export function rememberPhoto(photo) {
  if (photo.deleteTime) { // in the trash: out of the library (trash.js lists it)
    forgetPhoto(photo.name);
    return photo;
  }
  const current = known.get(photo.name);
  if (current && Date.parse(current.updateTime) > Date.parse(photo.updateTime)) return current;
  known.set(photo.name, photo);
  for (const listener of listeners) listener(photo);
  return photo;
}

export function forgetPhoto(name) {
  known.delete(name);
  for (const listener of listeners) listener({ name, deleted: true });
}

export const knownPhoto = (name) => known.get(name);
export const knownPhotos = () => known.values();
export const forgetAllPhotos = () => known.clear();

// Formatting

/** When the photo was taken, else when it was uploaded: what the server sorts and filters by. */
export const sortTime = (photo) => new Date(photo.takeTime || photo.createTime);

/** Local calendar day, YYYY-MM-DD. */
export function dayKey(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short",
                                                        year: "numeric" });
const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "long", year: "numeric" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function dayHeading(key) {
  const [year, month, day] = key.split("-").map(Number);
  const date = new Date(year, month - 1, day);
  const today = new Date();
  if (key === dayKey(today)) return "Today";
  if (key === dayKey(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1))) return "Yesterday";
  return dayFormat.format(date);
}

export const formatDate = (date) => dateFormat.format(date);
export const formatDateTime = (date) => dateTimeFormat.format(date);

const BYTE_UNITS = ["B", "KB", "MB", "GB"];

export function formatBytes(value) {
  let size = Number(value);
  let unit = 0;
  while (size >= 1000 && unit < BYTE_UNITS.length - 1) {
    size /= 1000;
    unit += 1;
  }
  return unit ? `${size.toFixed(1)} ${BYTE_UNITS[unit]}` : `${size} B`;
}

export const displayName = (photo) => photo.filename || photo.name;
export const altText = (photo) => `${displayName(photo)}, ${formatDate(sortTime(photo))}`;

// Tiles

/**
 * A focusable link to the photo with its thumbnail (never the original) and a status badge while
 * it is not indexed. `caption` nodes go under the image (search results use it).
 */
export function photoTile(photo, { caption = [] } = {}) {
  const link = el("a", { class: "tile", href: photoHash(photo.name), dataset: { name: photo.name } },
    el("img", { src: thumbnailUrl(photo.name), alt: altText(photo), loading: "lazy", decoding: "async" }),
    el("span", { class: "badge" }));
  updateTile(link, photo);
  return el("li", { class: "tile-item", dataset: { name: photo.name } }, link, ...caption);
}

export function updateTile(link, photo) {
  const status = statusOf(photo);
  link.dataset.status = status.key;
  const badge = link.querySelector(".badge");
  badge.textContent = status.key === "indexed" ? "" : status.label;
  badge.title = photo.statusReason || "";
}
