// Uploads: files picked or dropped go through a queue, a few at a time, one request per file so
// each shows its own progress; the event stream then moves each stored photo on to "indexed".
import { errorReason, photoHash, thumbnailUrl, uploadFile } from "./api.js";
import { $, el } from "./dom.js";
import { displayName, onPhotoChange, rememberPhoto, statusOf, textStateOf } from "./photos.js";

const MAX_PARALLEL = 3;
const IN_FLIGHT = new Set(["queued", "uploading", "checking"]);

let items = [];
const waiting = [];
const itemsByPhoto = new Map(); // photo name -> item of the upload that stored it
let running = 0;
let cancelAll = new AbortController();

function createItem(file) {
  const item = {
    file,
    photoName: "",
    thumb: el("span", { class: "upload-thumb", "aria-hidden": "true" }),
    label: el("span", { class: "upload-name" }, file.name),
    progress: el("progress", { max: "1", value: "0", "aria-label": `${file.name} upload progress` }),
    state: el("span", { class: "upload-state" }),
  };
  item.li = el("li", { class: "upload-item" }, item.thumb,
    el("div", { class: "upload-text" }, item.label, item.progress, item.state));
  setState(item, "queued", "Waiting…");
  return item;
}

function setState(item, state, ...text) {
  item.li.dataset.state = state;
  item.state.replaceChildren(...text);
  item.progress.hidden = !IN_FLIGHT.has(state);
  showSummary();
}

function showSummary() {
  const count = (...states) => items.filter((item) => states.includes(item.li.dataset.state)).length;
  const sending = count(...IN_FLIGHT);
  const indexing = count("uploaded");
  const title = sending ? `Uploading: ${items.length - sending} of ${items.length} done`
    : indexing ? `Indexing ${indexing} ${indexing === 1 ? "photo" : "photos"}…`
      : `${items.length} ${items.length === 1 ? "upload" : "uploads"} done`;
  const parts = [[count("indexed"), "searchable"], [count("duplicate"), "already stored"],
    [count("rejected", "error"), "not stored"], [count("failed"), "failed to index"]];
  $("upload-title").textContent = title;
  $("upload-summary").textContent = parts.filter(([n]) => n).map(([n, what]) => `${n} ${what}`).join(" · ");
}

function photoLink(photo) {
  return el("a", { href: photoHash(photo.name) }, displayName(photo));
}

/** What the stored photo's status says: indexing, searchable (then its text read), or failed with the reason. */
function showPhotoStatus(item, photo) {
  const status = statusOf(photo).key;
  const text = textStateOf(photo);
  if (status === "indexed") {
    setState(item, "indexed", text ? `Searchable · ${text.label}` : "Searchable");
    item.li.dataset.text = text ? text.key : "";
    item.state.title = text && text.key === "failed" ? photo.textStateReason || "" : "";
  }
  else if (status === "failed") setState(item, "failed", `Indexing failed: ${photo.statusReason || "no reason given"}`);
  else setState(item, "uploaded", "Uploaded · indexing…");
}

function stored(item, result) {
  const photo = rememberPhoto(result.photo);
  item.photoName = photo.name;
  item.thumb.replaceChildren(el("img", { src: thumbnailUrl(photo.name), alt: "" }));
  if (result.duplicate) {
    setState(item, "duplicate", "Already stored as ", photoLink(photo));
    return;
  }
  itemsByPhoto.set(photo.name, item);
  item.label.replaceChildren(photoLink(photo));
  showPhotoStatus(item, photo);
  showSimilar(item, result.similarPhotos || []);
}

/** A near-duplicate: stored anyway, with a note naming the photos it looks like. */
function showSimilar(item, similar) {
  if (!similar.length) return;
  item.li.dataset.similar = "true";
  item.li.querySelector(".upload-text").append(el("p", { class: "upload-similar" },
    "Looks like an existing photo: ",
    ...similar.slice(0, 3).map((photo) => el("a", { href: photoHash(photo.name), class: "similar-link" },
      el("img", { src: thumbnailUrl(photo.name), alt: "" }), displayName(photo))),
    " · ", el("a", { href: "#/duplicates" }, "Review duplicates")));
}

function rejected(item, status) {
  setState(item, "rejected", `Rejected: ${status.message || "the server gave no reason"}`);
  item.state.title = errorReason(status);
}

async function send(item) {
  setState(item, "uploading", "Uploading 0%");
  try {
    const { status, body } = await uploadFile(item.file, {
      signal: cancelAll.signal,
      onProgress: (fraction) => {
        item.progress.value = fraction;
        if (fraction < 1) setState(item, "uploading", `Uploading ${Math.round(fraction * 100)}%`);
        else setState(item, "checking", "Checking…");
      },
    });
    // One file per request: its result, or when nothing was stored the Status with that result.
    const result = (body.results || [])[0];
    if (status === 200 && result && result.photo) stored(item, result);
    else rejected(item, (result && result.error) || body);
  } catch (err) {
    if (err.name === "AbortError") return;
    setState(item, "error", `Upload failed: ${err.message}. `,
      el("button", { type: "button", class: "link-button", onclick: () => enqueue(item) }, "Retry"));
  }
}

function pump() {
  while (running < MAX_PARALLEL && waiting.length) {
    const item = waiting.shift();
    running += 1;
    send(item).finally(() => {
      running -= 1;
      pump();
    });
  }
}

function enqueue(item) {
  item.progress.value = 0;
  setState(item, "queued", "Waiting…");
  waiting.push(item);
  pump();
}

function uploadFiles(files) {
  const added = [...files].map(createItem);
  if (!added.length) return;
  items.push(...added);
  $("upload-list").append(...added.map((item) => item.li));
  $("upload-panel").hidden = false;
  added.forEach(enqueue);
}

/** Names of photos uploaded here that are still waiting to be indexed. */
export const photosBeingIndexed = () => [...itemsByPhoto.keys()].filter(
  (name) => itemsByPhoto.get(name).li.dataset.state === "uploaded");

/** Closes the panel, dropping every finished upload from it. */
function closePanel() {
  const keep = items.filter((item) => IN_FLIGHT.has(item.li.dataset.state));
  for (const item of items) {
    if (!keep.includes(item)) {
      item.li.remove();
      itemsByPhoto.delete(item.photoName);
    }
  }
  items = keep;
  $("upload-panel").hidden = true;
}

export function resetUploads() {
  cancelAll.abort();
  cancelAll = new AbortController();
  waiting.length = 0;
  items = [];
  itemsByPhoto.clear();
  $("upload-list").replaceChildren();
  $("upload-panel").hidden = true;
}

// Drag and drop anywhere on the page; the overlay says where the files go.
function draggingFiles(event) {
  return event.dataTransfer && [...event.dataTransfer.types].includes("Files");
}

export function initUploads() {
  const overlay = $("drop-overlay");
  const input = $("file-input");
  input.addEventListener("change", () => {
    uploadFiles(input.files);
    input.value = "";
  });
  for (const button of document.querySelectorAll("[data-action=choose-files]")) {
    button.addEventListener("click", () => input.click());
  }
  $("upload-close").addEventListener("click", closePanel);
  window.addEventListener("dragover", (event) => {
    if ($("app").hidden || !draggingFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    overlay.hidden = false;
  });
  overlay.addEventListener("dragleave", () => { overlay.hidden = true; });
  window.addEventListener("drop", (event) => {
    if ($("app").hidden || !draggingFiles(event)) return;
    event.preventDefault();
    overlay.hidden = true;
    uploadFiles(event.dataTransfer.files);
  });
}

onPhotoChange((photo) => {
  const item = itemsByPhoto.get(photo.name);
  if (!item) return;
  if (photo.deleted) {
    itemsByPhoto.delete(photo.name);
    setState(item, "deleted", "Deleted");
  } else showPhotoStatus(item, photo);
});
