// The trash (#/trash): photos deleted and not yet purged, most recently deleted first, each with
// the days it has left and a Restore button; Empty trash deletes them all for good.
import { api, thumbnailUrl } from "./api.js";
import { confirmAction, plural } from "./confirm.js";
import { $, el, toast } from "./dom.js";
import { altText, displayName, rememberPhoto } from "./photos.js";

const PAGE_SIZE = 100;
const DAY_MS = 24 * 3600 * 1000;

let nextPageToken = "";
let run = 0;

/** "3 days left" until purge_time (the server purges it then). */
export function daysLeft(photo) {
  const days = Math.max(0, Math.ceil((Date.parse(photo.purgeTime) - Date.now()) / DAY_MS));
  return days === 0 ? "Deleted for good today" : `${plural(days, "day")} left`;
}

function trashItem(photo) {
  return el("li", { class: "tile-item trash-item", dataset: { name: photo.name } },
    el("span", { class: "tile" }, el("img", { src: thumbnailUrl(photo.name), alt: altText(photo), loading: "lazy" })),
    el("span", { class: "trash-days muted small" }, daysLeft(photo)),
    el("button", { type: "button", class: "button trash-restore", onclick: () => restore(photo),
                   "aria-label": `Restore ${displayName(photo)}` }, "Restore"));
}

function showEmptyState() {
  const any = $("trash-list").children.length > 0;
  $("trash-empty").hidden = any;
  $("trash-empty-all").disabled = !any;
}

async function loadPage() {
  const started = run;
  const params = new URLSearchParams({ deleted: "true", pageSize: String(PAGE_SIZE) });
  if (nextPageToken) params.set("pageToken", nextPageToken);
  $("trash-status").textContent = "Loading the trash…";
  try {
    const page = await api(`/photos?${params}`);
    if (started !== run) return;
    $("trash-list").append(...page.photos.map(trashItem));
    nextPageToken = page.nextPageToken;
    $("trash-more").hidden = !nextPageToken;
    $("trash-status").textContent = "";
  } catch (err) {
    if (started === run) $("trash-status").textContent = `Could not load the trash: ${err.message}`;
  }
  showEmptyState();
}

export function showTrash() {
  run += 1;
  nextPageToken = "";
  $("trash-view").hidden = false;
  $("trash-list").replaceChildren();
  $("trash-empty").hidden = true;
  return loadPage();
}

export function hideTrash() {
  run += 1;
  $("trash-view").hidden = true;
  $("trash-list").replaceChildren();
}

async function restore(photo) {
  try {
    const { photos } = await api("/photos:undelete", { method: "POST", json: { names: [photo.name] } });
    photos.forEach(rememberPhoto); // back in the timeline
  } catch (err) {
    toast(`Could not restore ${displayName(photo)}: ${err.message}`, { error: true });
    return;
  }
  $("trash-list").querySelector(`li[data-name="${CSS.escape(photo.name)}"]`)?.remove();
  showEmptyState();
  toast(`Restored ${displayName(photo)}.`);
}

async function emptyTrash() {
  const ok = await confirmAction({ title: "Empty the trash?",
    text: "Every photo in the trash is deleted for good, with its thumbnails and search entries. This cannot be undone.",
    action: "Empty trash" });
  if (!ok) return;
  try {
    const { names } = await api("/photos:purge", { method: "POST", json: { all: true } });
    toast(`Deleted ${plural(names.length, "photo")} for good.`);
  } catch (err) {
    toast(`Could not empty the trash: ${err.message}`, { error: true });
  }
  showTrash();
}

export function initTrash() {
  $("trash-empty-all").addEventListener("click", emptyTrash);
  $("trash-more").addEventListener("click", loadPage);
}
