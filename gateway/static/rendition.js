// Which image of a photo the viewer shows: the thumbnail at once (blurred), then the preview
// (JPEG, at most 1440 px, made by ingest whatever the original's type), then the original only on
// demand ("Full resolution") and only where the browser decodes its type. A photo without a
// preview (stored before previews; the server makes it on first request) falls back to the
// original where the browser can show it, else to the thumbnail, with a note saying so. Load
// errors show in the stage, where the user looks.
import { originalUrl, previewUrl, thumbnailUrl } from "./api.js";
import { $ } from "./dom.js";

export const PREVIEW_PX = 1440;
// Types every browser decodes in an <img>; never HEIC/HEIF.
const BROWSER_TYPES = new Set(["image/jpeg", "image/png", "image/webp", "image/gif"]);

let current = null; // the photo whose image is shown
let run = 0; // loads for a photo no longer shown are dropped

const browserCanShow = (photo) => BROWSER_TYPES.has(photo.contentType);
const typeName = (photo) => (photo.contentType || "").replace(/^image\//, "").toUpperCase() || "this";

function setNote(message) {
  $("viewer-note").textContent = message;
  $("viewer-note").hidden = !message;
}

/** A message over the image, where the user looks (a toast would sit under the modal viewer). */
export function showStageError(message) {
  setError(message);
}

function setError(message) {
  $("viewer-error").textContent = message;
  $("viewer-error").hidden = !message;
}

/** Shows `url` in the image element as `stage` (preview, original, thumbnail). */
function load(stage, url) {
  const image = $("viewer-image");
  image.dataset.stage = stage;
  image.classList.add("loading");
  image.src = url;
}

/** The full-resolution action: offered where the original is decodable here and larger. */
function offerFull(photo) {
  const image = $("viewer-image");
  const larger = Math.max(photo.width || 0, photo.height || 0) > Math.max(image.naturalWidth, image.naturalHeight);
  $("viewer-full").hidden = !(browserCanShow(photo) && larger);
}

/** Loads the original beside the preview and swaps it in once decoded; the preview stays on error. */
function showFull() {
  const photo = current;
  const started = run;
  const button = $("viewer-full");
  button.disabled = true;
  button.textContent = "Loading full resolution…";
  const full = new Image();
  full.onload = () => {
    if (started !== run) return;
    button.hidden = true;
    const image = $("viewer-image");
    image.dataset.stage = "original";
    image.src = full.src;
  };
  full.onerror = () => {
    if (started !== run) return;
    button.disabled = false;
    button.textContent = "Full resolution";
    setError(`The full-resolution image of this ${typeName(photo)} photo could not be loaded; `
      + "the preview is shown.");
  };
  full.src = originalUrl(photo.name);
}

export function showImage(photo) {
  run += 1;
  current = photo;
  setNote("");
  setError("");
  const button = $("viewer-full");
  button.hidden = true;
  button.disabled = false;
  button.textContent = "Full resolution";
  $("viewer-placeholder").src = thumbnailUrl(photo.name);
  load("preview", previewUrl(photo.name));
}

export function clearImage() {
  run += 1;
  current = null;
  $("viewer-image").removeAttribute("src");
  $("viewer-placeholder").removeAttribute("src");
  $("viewer-full").hidden = true;
  setNote("");
  setError("");
}

function loaded(event) {
  const image = event.target;
  image.classList.remove("loading");
  if (current && image.dataset.stage === "preview") offerFull(current);
}

function failed(event) {
  const image = event.target;
  if (!current || !image.getAttribute("src")) return; // cleared
  const photo = current;
  const stage = image.dataset.stage;
  if (stage === "preview" && browserCanShow(photo)) {
    setNote("No preview could be made of this photo: showing the original.");
    load("original", originalUrl(photo.name));
  } else if (stage === "preview") {
    setNote(`No preview could be made of this ${typeName(photo)} photo, and the browser cannot show `
      + "its original: showing the small thumbnail. Download gives the original.");
    load("thumbnail", thumbnailUrl(photo.name));
  } else {
    image.classList.add("loading"); // the blurred thumbnail stays under the message
    setError("The photo could not be loaded. Check the connection and open it again.");
  }
}

export function initImage() {
  const image = $("viewer-image");
  image.addEventListener("load", loaded);
  image.addEventListener("error", failed);
  $("viewer-full").addEventListener("click", showFull);
}
