// Search by description: the query and filters live in the URL hash (#/search?q=...), so a search
// can be bookmarked and Back returns to it; results are ranked with their scores.
import { api, CODE } from "./api.js";
import { $, el } from "./dom.js";
import { displayName, formatDate, knownPhotos, onPhotoChange, photoTile, sortTime, updateTile } from "./photos.js";

const RESULT_LIMIT = 60;
const FILTER_FIELDS = ["from", "to", "cameraMake", "cameraModel", "minScore"];
let searchRun = 0; // answers to an older search are dropped

/** The hash for the query in the top bar and the filters in the search view. */
export function searchHash() {
  const params = new URLSearchParams();
  const q = $("search-input").value.trim();
  if (q) params.set("q", q);
  const form = $("search-filters");
  for (const field of FILTER_FIELDS) {
    const value = form.elements[field].value.trim();
    if (value) params.set(field, value);
  }
  const query = params.toString();
  return query ? `#/search?${query}` : "#/search";
}

/** Start of a local calendar day (YYYY-MM-DD) plus `days`, as an ISO instant. */
function dayStart(day, days = 0) {
  const [year, month, date] = day.split("-").map(Number);
  return new Date(year, month - 1, date + days).toISOString();
}

/** The page's parameters as GET /api/v1/search takes them: "to" is a whole day, endTime exclusive. */
function apiParams(params) {
  const out = new URLSearchParams({ q: params.get("q"), pageSize: String(RESULT_LIMIT) });
  if (params.get("from")) out.set("startTime", dayStart(params.get("from")));
  if (params.get("to")) out.set("endTime", dayStart(params.get("to"), 1));
  for (const field of ["cameraMake", "cameraModel", "minScore"]) {
    if (params.get(field)) out.set(field, params.get(field));
  }
  return out;
}

function fillForm(params) {
  $("search-input").value = params.get("q") || "";
  const form = $("search-filters");
  for (const field of FILTER_FIELDS) form.elements[field].value = params.get(field) || "";
  const filtered = FILTER_FIELDS.some((field) => params.get(field));
  if (filtered) $("search-filter-box").open = true;
}

/** Camera makes and models of the photos loaded so far, offered as suggestions. */
function suggestCameras() {
  const makes = new Set();
  const models = new Set();
  for (const photo of knownPhotos()) {
    if (photo.cameraMake) makes.add(photo.cameraMake);
    if (photo.cameraModel) models.add(photo.cameraModel);
  }
  const options = (values) => [...values].sort().map((value) => el("option", { value }));
  $("camera-makes").replaceChildren(...options(makes));
  $("camera-models").replaceChildren(...options(models));
}

// Per-signal scores of a hit (SignalScores): each is present only when that signal matched the photo.
const SIGNALS = [
  ["clip", "image", "CLIP: how well the picture itself fits your words"],
  ["text", "labels", "How well the photo's labels and the text in it fit your words"],
  ["keyword", "words", "Share of your words found in the file name, labels or text in the photo"],
];

function signalScores(signals = {}) {
  const parts = SIGNALS.filter(([key]) => typeof signals[key] === "number")
    .map(([key, label, title]) => el("span", { class: `signal ${key}`, title }, `${label} ${signals[key].toFixed(2)}`));
  return parts.length ? el("span", { class: "signals" }, ...parts) : null;
}

/** Why it matched: the query words found, the labels the classifier gave, the text read (OCR). */
function whatMatched(photo, matchedTerms = []) {
  const parts = [];
  if (matchedTerms.length) parts.push(el("span", { class: "matched-terms" }, `words: ${matchedTerms.join(", ")}`));
  if (Array.isArray(photo.labels) && photo.labels.length) {
    const names = photo.labels.map((label) => label.text).filter(Boolean);
    parts.push(el("span", { class: "matched-labels" }, `labels: ${names.join(", ")}`));
  }
  if (photo.ocrText) parts.push(el("q", { class: "matched-text" }, photo.ocrText.replace(/\s+/g, " ")));
  const separated = parts.flatMap((part, i) => (i ? ["; ", part] : [part]));
  return parts.length ? el("p", { class: "what-matched" }, "Matched: ", ...separated) : null;
}

function hitItem(hit, rank) {
  const { photo, score } = hit;
  const caption = el("div", { class: "hit-caption" },
    el("span", { class: "score", title: "Relevance: the probability that this photo is what you asked for, from the signals that matched" },
      score.toFixed(3)),
    signalScores(hit.signals),
    el("span", { class: "hit-name" }, displayName(photo)),
    el("span", { class: "hit-date" }, formatDate(sortTime(photo))),
    whatMatched(photo, hit.matchedTerms));
  const item = photoTile(photo, { caption: [caption] });
  item.dataset.rank = String(rank + 1);
  return item;
}

function showEmpty(title, ...text) {
  $("search-empty").replaceChildren(el("h2", {}, title), el("p", {}, ...text));
  $("search-empty").hidden = false;
}

/** Why a search found nothing: no photos, none indexed yet, the cut-off, or the filters. */
async function explainNoHits(params) {
  const [all, indexed] = await Promise.all([api("/photos?pageSize=1"), api("/photos?pageSize=1&status=indexed")]);
  const filtered = ["from", "to", "cameraMake", "cameraModel"].some((field) => params.get(field));
  if (all.totalSize === 0) {
    showEmpty("No photos yet", "Upload some photos first: each one can be found as soon as it is indexed. ",
      el("a", { href: "#/photos" }, "Go to your photos"));
  } else if (indexed.totalSize === 0) {
    showEmpty("Nothing is indexed yet",
      `Your ${all.totalSize} ${all.totalSize === 1 ? "photo is" : "photos are"} still being indexed; `
      + "search finds them as soon as they are.");
  } else if (params.get("minScore")) {
    showEmpty("Nothing matched above the cut-off",
      `No photo scored ${params.get("minScore")} or more for “${params.get("q")}”`
      + `${filtered ? " within these filters" : ""}. Lower the minimum score or clear it.`);
  } else {
    const dated = params.get("from") || params.get("to");
    showEmpty("Nothing matched these filters",
      "No indexed photo was taken in this date range or with this camera. "
      + `${dated ? "Dates match only photos whose EXIF says when they were taken. " : ""}`
      + "Widen the filters or clear them.");
  }
}

function showFailure(err) {
  if (err.code === CODE.UNAVAILABLE) {
    showEmpty("The search model is not ready", `${err.message}. `,
      "Uploads are kept and indexed once it is ready; try again in a moment.");
  } else showEmpty("Cannot search", err.message);
}

export async function showSearch(params) {
  const run = ++searchRun;
  fillForm(params);
  suggestCameras();
  $("search-results").replaceChildren();
  $("search-empty").hidden = true;
  const q = params.get("q");
  if (!q) {
    $("search-heading").textContent = "Search";
    $("search-summary").textContent = "Describe what is in a photo, e.g. “a cat on a sofa” or “a rocket launch”.";
    return;
  }
  $("search-heading").textContent = `“${q}”`;
  $("search-summary").textContent = "Searching…";
  $("search-view").setAttribute("aria-busy", "true");
  try {
    const response = await api(`/search?${apiParams(params)}`);
    if (run !== searchRun) return;
    $("search-results").replaceChildren(...response.hits.map(hitItem));
    showSummary(response.hits.length, response.models.join(", "));
    if (!response.hits.length) await explainNoHits(params);
  } catch (err) {
    if (run !== searchRun) return;
    $("search-summary").textContent = "";
    showFailure(err);
  } finally {
    if (run === searchRun) $("search-view").removeAttribute("aria-busy");
  }
}

function showSummary(count, model = $("search-summary").dataset.model) {
  $("search-summary").dataset.model = model;
  $("search-summary").textContent = count
    ? `${count} ${count === 1 ? "photo" : "photos"}, best match first. Scores combine the picture, `
      + `its labels and text, and your words found in it (${model || "words only"}).`
    : "";
}

/** Result tiles in rank order, for stepping through photos in the viewer. */
export const searchResultNames = () => [...$("search-results").querySelectorAll("li[data-name]")]
  .map((li) => li.dataset.name);

export function clearSearch() {
  searchRun += 1;
  $("search-results").replaceChildren();
  $("search-empty").hidden = true;
  $("search-summary").textContent = "";
}

onPhotoChange((photo) => {
  const item = $("search-results").querySelector(`li[data-name="${photo.name}"]`);
  if (!item) return;
  if (photo.deleted) {
    item.remove();
    showSummary($("search-results").children.length);
  } else updateTile(item.querySelector(".tile"), photo);
});
