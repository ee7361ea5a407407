// The photo viewer: a modal dialog over the timeline or the results, opened by #/photos/<id>.
// The image (thumbnail, preview, original on demand: rendition.js), EXIF details, similar
// photos, download and delete (after a confirm dialog).
import { api, CODE, originalUrl } from "./api.js";
import { $, el, toast } from "./dom.js";
import { clearImage, initImage, showImage, showStageError } from "./rendition.js";
import {
  altText, displayName, forgetPhoto, formatBytes, formatDateTime, knownPhoto, onPhotoChange, photoTile,
  rememberPhoto, statusOf, textStateOf,
} from "./photos.js";

const SIMILAR_LIMIT = 12;
const OSM = "https://www.openstreetmap.org/";

let shown = null; // the photo in the viewer
let showRun = 0; // answers about a photo no longer shown are dropped
let similarOpen = false; // keep showing similar photos while stepping through them
let navigation = { close() {}, neighbour() { return ""; }, step() {} };

function detail(field, label, ...value) {
  return el("div", { class: "detail", dataset: { field } }, el("dt", {}, label), el("dd", {}, ...value));
}

/** "Canon" + "Canon EOS 5D" reads "Canon EOS 5D", not "Canon Canon EOS 5D". */
function cameraName(photo) {
  const make = photo.cameraMake || "";
  const model = photo.cameraModel || "";
  return model.toLowerCase().startsWith(make.toLowerCase()) ? model : `${make} ${model}`.trim();
}

/** "Paris, Ile-de-France, France" (reverse geocoded from the GPS fix), on its own line. */
function placeName(named) {
  if (!named) return [];
  const parts = [named.city, named.region, named.country].filter((part, i, all) => part && all.indexOf(part) === i);
  return [el("span", { class: "place-name" }, parts.join(", ")), el("br")];
}

function place(location) {
  const lat = location.latitude.toFixed(5);
  const lon = location.longitude.toFixed(5);
  const link = el("a", { href: `${OSM}?mlat=${lat}&mlon=${lon}#map=15/${lat}/${lon}`, target: "_blank",
                        rel: "noopener noreferrer" }, "Open in OpenStreetMap");
  const altitude = location.altitude ? `, ${Math.round(location.altitude)} m` : "";
  return [el("span", { class: "coordinates" }, `${lat}, ${lon}${altitude}`), el("br"), link];
}

function details(photo) {
  const status = statusOf(photo);
  const rows = [
    detail("taken", "Taken", photo.takeTime ? formatDateTime(new Date(photo.takeTime))
      : el("span", { class: "muted" }, "Unknown (no EXIF date)")),
    detail("uploaded", "Uploaded", formatDateTime(new Date(photo.createTime))),
  ];
  if (photo.cameraMake || photo.cameraModel) rows.push(detail("camera", "Camera", cameraName(photo)));
  if (photo.location) rows.push(detail("place", "Place", ...placeName(photo.place), ...place(photo.location)));
  const megapixels = (photo.width * photo.height) / 1e6;
  rows.push(
    detail("dimensions", "Dimensions", `${photo.width} × ${photo.height} px (${megapixels.toFixed(1)} MP)`),
    detail("size", "Size", formatBytes(photo.sizeBytes)),
    detail("type", "Type", photo.contentType),
    detail("status", "Status", el("span", { class: `status ${status.key}` }, status.label),
      photo.statusReason ? el("span", { class: "status-reason" }, ` — ${photo.statusReason}`) : null),
  );
  const text = textStateOf(photo);
  if (text) {
    rows.push(detail("text-state", "Text reading", el("span", { class: `status text-${text.key}` }, text.label),
      photo.textStateReason ? el("span", { class: "status-reason" }, ` — ${photo.textStateReason}`) : null));
  }
  if (photo.labels?.length) {
    rows.push(detail("labels", "Labels", photo.labels
      .map((label) => `${label.text} (${Math.round(label.score * 100)}%)`).join(", ")));
  }
  if (photo.ocrText) rows.push(detail("text", "Text in photo", el("q", {}, photo.ocrText.replace(/\s+/g, " "))));
  const models = photo.embeddingModels || [];
  if (models.length) rows.push(detail("model", models.length > 1 ? "Models" : "Model", models.join(", ")));
  rows.push(detail("sha256", "SHA-256", el("code", { title: photo.sha256 }, `${photo.sha256.slice(0, 16)}…`)));
  return rows;
}

function render(photo) {
  const changed = !shown || shown.name !== photo.name;
  shown = photo;
  $("viewer-title").textContent = displayName(photo);
  $("viewer-details").replaceChildren(...details(photo));
  const favorite = $("viewer-favorite");
  favorite.setAttribute("aria-pressed", String(Boolean(photo.favorite)));
  favorite.textContent = photo.favorite ? "★ Favourite" : "☆ Favourite";
  const download = $("viewer-download");
  download.href = originalUrl(photo.name);
  download.setAttribute("download", displayName(photo));
  if (changed) {
    $("viewer-image").alt = altText(photo);
    showImage(photo);
    $("viewer-prev").disabled = !navigation.neighbour(photo.name, -1);
    $("viewer-next").disabled = !navigation.neighbour(photo.name, 1);
  }
}

function similarItem(hit, index) {
  const self = hit.photo.name === shown.name;
  const caption = el("span", { class: "similar-score" }, self ? "This photo" : hit.score.toFixed(3));
  const item = photoTile(hit.photo, { caption: [caption] });
  if (self) item.classList.add("current");
  item.dataset.rank = String(index + 1);
  return item;
}

async function showSimilar() {
  const photo = shown;
  const run = showRun;
  similarOpen = true;
  $("similar").hidden = false;
  $("similar-status").textContent = "Looking for similar photos…";
  $("similar-strip").replaceChildren();
  try {
    const response = await api(`/${photo.name}/similar?pageSize=${SIMILAR_LIMIT}`);
    if (run !== showRun) return;
    $("similar-strip").replaceChildren(...response.hits.map(similarItem));
    $("similar-status").textContent = response.hits.length > 1 ? "" : "No other photo to compare with yet.";
  } catch (err) {
    if (run !== showRun) return;
    $("similar-status").textContent = err.code === CODE.FAILED_PRECONDITION
      ? "This photo is not indexed yet, so there is nothing to compare it with."
      : err.code === CODE.UNAVAILABLE ? `The search model is not ready: ${err.message}`
        : `Could not find similar photos: ${err.message}`;
  }
}

function confirmDelete() {
  const photo = shown;
  const dialog = $("confirm-delete");
  $("confirm-text").textContent = `“${displayName(photo)}” moves to the trash: it leaves your photos, albums and `
    + "search, and is deleted for good after 30 days unless you restore it.";
  dialog.returnValue = "";
  dialog.showModal();
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "delete") deletePhoto(photo);
  }, { once: true });
}

async function deletePhoto(photo) {
  try {
    await api(`/${photo.name}`, { method: "DELETE" });
  } catch (err) {
    if (err.code !== CODE.NOT_FOUND) {
      toast(`Could not delete ${displayName(photo)}: ${err.message}`, { error: true });
      return;
    }
  }
  forgetPhoto(photo.name); // closes the viewer through the change listener below
  toast(`Moved ${displayName(photo)} to the trash.`);
}

async function toggleFavorite() {
  const photo = shown;
  try {
    const updated = await api(`/${photo.name}`, { method: "PATCH", json: { favorite: !photo.favorite } });
    rememberPhoto(updated.photo); // re-renders through the change listener below
  } catch (err) {
    toast(`Could not change the favourite: ${err.message}`, { error: true });
  }
}

/** Shows a photo; the known copy at once, then the server's current one. */
export async function showPhoto(name) {
  const dialog = $("viewer");
  const run = ++showRun;
  const known = knownPhoto(name);
  if (known) render(known);
  if (!dialog.open) {
    dialog.showModal();
    $("viewer-close").focus();
  }
  try {
    const { photo } = await api(`/${name}`);
    if (run !== showRun) return;
    render(rememberPhoto(photo));
    if (similarOpen) showSimilar();
  } catch (err) {
    if (run !== showRun) return;
    if (err.code === CODE.NOT_FOUND) {
      forgetPhoto(name);
      toast("That photo no longer exists.", { error: true });
      navigation.close();
    } else showStageError(`Cannot show the photo: ${err.message}`);
  }
}

export function hideViewer() {
  showRun += 1;
  shown = null;
  similarOpen = false;
  $("similar").hidden = true;
  clearImage();
  if ($("confirm-delete").open) $("confirm-delete").close();
  if ($("viewer").open) $("viewer").close();
}

/**
 * `nav.close()` leaves the viewer (back to the view under it), `nav.neighbour(name, ±1)` names the
 * photo before or after in that view, `nav.step(name)` shows another photo in place of this one.
 */
export function initViewer(nav) {
  navigation = nav;
  const dialog = $("viewer");
  const step = (offset) => {
    const next = shown && navigation.neighbour(shown.name, offset);
    if (next) navigation.step(next);
  };
  // Escape closes the dialog natively; the route follows.
  dialog.addEventListener("close", () => { if (shown) navigation.close(); });
  dialog.addEventListener("keydown", (event) => {
    if (event.target.closest("input, textarea, select") || $("confirm-delete").open) return;
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else if (event.key === "Delete") confirmDelete();
    else return;
    event.preventDefault();
  });
  $("viewer-close").addEventListener("click", () => navigation.close());
  $("viewer-prev").addEventListener("click", () => step(-1));
  $("viewer-next").addEventListener("click", () => step(1));
  $("viewer-similar").addEventListener("click", showSimilar);
  $("viewer-delete").addEventListener("click", confirmDelete);
  $("viewer-favorite").addEventListener("click", toggleFavorite);
  initImage();
}

onPhotoChange((photo) => {
  if (!shown || shown.name !== photo.name) return;
  if (photo.deleted) navigation.close();
  else render(photo);
});
