// Duplicates view (#/duplicates): groups of photos that look alike (re-saved, resized, slightly
// edited), the one to keep first. "Keep this one" moves the group's others to the trash.
import { api, photoHash, thumbnailUrl } from "./api.js";
import { $, el, toast } from "./dom.js";
import { displayName, formatBytes, formatDateTime, forgetPhoto } from "./photos.js";

const PAGE_SIZE = 20;

let nextToken = "";
let generation = 0; // a reload drops the answers of the loads before it

export function showDuplicates() {
  $("duplicates-view").hidden = false;
  $("duplicates-list").replaceChildren();
  nextToken = "";
  load(++generation);
}

export function hideDuplicates() {
  $("duplicates-view").hidden = true;
  generation += 1;
}

async function load(current) {
  const status = $("duplicates-status");
  const more = $("duplicates-more");
  more.hidden = true;
  status.textContent = "Looking for photos that look alike…";
  let page;
  try {
    const token = nextToken ? `&pageToken=${encodeURIComponent(nextToken)}` : "";
    page = await api(`/duplicateGroups?pageSize=${PAGE_SIZE}${token}`);
  } catch (err) {
    if (current === generation) status.textContent = `Cannot list duplicates: ${err.message}`;
    return;
  }
  if (current !== generation) return;
  $("duplicates-list").append(...page.groups.map(groupItem));
  nextToken = page.nextPageToken;
  more.hidden = !nextToken;
  const shown = $("duplicates-list").children.length;
  status.textContent = shown ? `${shown} ${shown === 1 ? "group" : "groups"} of photos that look alike`
    : "No photos look alike.";
}

function groupItem(group) {
  const li = el("li", { class: "duplicate-group" });
  const photos = group.photos.map((photo, index) => el("figure", { class: "duplicate", dataset: { name: photo.name } },
    el("a", { href: photoHash(photo.name), class: "tile" },
      el("img", { src: thumbnailUrl(photo.name), alt: displayName(photo), loading: "lazy" })),
    el("figcaption", {},
      el("span", { class: "duplicate-name" }, displayName(photo)),
      el("span", { class: "muted small" }, `${photo.width} × ${photo.height} · ${formatBytes(Number(photo.sizeBytes))}`),
      el("span", { class: "muted small" }, `Uploaded ${formatDateTime(new Date(photo.createTime))}`),
      index === 0 ? el("span", { class: "small" }, "Suggested to keep") : null,
      el("button", { type: "button", class: "button", onclick: () => keep(li, group, photo) }, "Keep this one"))));
  li.append(...photos);
  return li;
}

/** Moves every photo of the group but `kept` to the trash (the delete route). */
async function keep(li, group, kept) {
  const others = group.photos.filter((photo) => photo.name !== kept.name);
  for (const button of li.querySelectorAll("button")) button.disabled = true;
  try {
    for (const photo of others) {
      await api(`/${photo.name}`, { method: "DELETE" });
      forgetPhoto(photo.name);
    }
  } catch (err) {
    toast(`Could not move the others to the trash: ${err.message}`, { error: true });
    for (const button of li.querySelectorAll("button")) button.disabled = false;
    return;
  }
  li.remove();
  toast(`Kept ${displayName(kept)}; moved ${others.length} to the trash.`);
}

export function initDuplicates() {
  $("duplicates-more").addEventListener("click", () => load(generation));
}
