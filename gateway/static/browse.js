// Browsing without a query: a bar above the timeline to jump to a year or month and to keep only one
// camera or place, from the counts the server gives (GET /photos:summarize). The timeline lists
// with browseParams(); a change calls the timeline back to load again.
import { api } from "./api.js";
import { el } from "./dom.js";

const MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
  "October", "November", "December"];

let selected = { when: "", camera: "", place: "" }; // the <select> values
let bar = null;
let onChange = () => {};

/** The filters of the selection as ListPhotos query parameters. */
export function browseParams() {
  const params = {};
  if (selected.when) {
    const [year, month] = selected.when.split("-").map(Number);
    const start = month ? Date.UTC(year, month - 1, 1) : Date.UTC(year, 0, 1);
    const end = month ? Date.UTC(year, month, 1) : Date.UTC(year + 1, 0, 1);
    params.startTime = new Date(start).toISOString();
    params.endTime = new Date(end).toISOString();
  }
  if (selected.camera) {
    const [make, model] = JSON.parse(selected.camera);
    if (make) params.cameraMake = make;
    if (model) params.cameraModel = model;
  }
  if (selected.place) params.place = selected.place;
  return params;
}

export const browsing = () => Boolean(selected.when || selected.camera || selected.place);

/** "Canon" + "Canon EOS 5D" reads "Canon EOS 5D". */
function cameraLabel(make, model) {
  return model.toLowerCase().startsWith(make.toLowerCase()) ? model : `${make} ${model}`.trim();
}

function option(value, label, current) {
  return el("option", { value, selected: value === current }, label);
}

function select(id, label, options) {
  const node = el("select", { id, name: id, onchange: changed }, ...options);
  return el("label", { for: id }, label, node);
}

function render(summary) {
  const years = new Map(); // year -> [months]
  for (const m of summary.months || []) {
    if (!years.has(m.year)) years.set(m.year, []);
    years.get(m.year).push(m);
  }
  const whenOptions = [option("", "All dates", selected.when)];
  for (const [year, months] of years) {
    const total = months.reduce((sum, m) => sum + m.count, 0);
    whenOptions.push(el("optgroup", { label: String(year) },
      option(String(year), `${year} (${total})`, selected.when),
      ...months.map((m) => option(`${year}-${m.month}`, `${MONTH_NAMES[m.month - 1]} ${year} (${m.count})`,
        selected.when))));
  }
  const cameraOptions = [option("", "All cameras", selected.camera), ...(summary.cameras || []).map((c) =>
    option(JSON.stringify([c.cameraMake || "", c.cameraModel || ""]),
      `${cameraLabel(c.cameraMake || "", c.cameraModel || "")} (${c.count})`, selected.camera))];
  const placeOptions = [option("", "All places", selected.place), ...(summary.places || []).map((p) =>
    option(p.place.city, `${[p.place.city, p.place.country].filter(Boolean).join(", ")} (${p.count})`,
      selected.place))];
  bar.replaceChildren(
    select("browse-when", "Date", whenOptions),
    select("browse-camera", "Camera", cameraOptions),
    select("browse-place", "Place", placeOptions),
    el("div", { class: "filter-actions" },
      el("button", { type: "button", class: "button", id: "browse-clear", hidden: !browsing(), onclick: clear },
        "Show all")));
}

function changed() {
  selected = {
    when: bar.querySelector("#browse-when").value,
    camera: bar.querySelector("#browse-camera").value,
    place: bar.querySelector("#browse-place").value,
  };
  bar.querySelector("#browse-clear").hidden = !browsing();
  onChange();
}

function clear() {
  selected = { when: "", camera: "", place: "" };
  for (const node of bar.querySelectorAll("select")) node.value = "";
  bar.querySelector("#browse-clear").hidden = true;
  onChange();
}

/** Puts the bar above the timeline (once) and fills it with the library's current counts. */
export async function showBrowseBar(container, before, changedCallback) {
  onChange = changedCallback;
  if (!bar) {
    bar = el("form", { id: "browse-filters", class: "filters browse", "aria-label": "Browse by date, camera or place",
                       onsubmit: (event) => event.preventDefault() });
    container.insertBefore(bar, before);
  }
  await refreshBrowseBar();
}

/** Fills the bar again with the current counts (after photos came or went). */
export async function refreshBrowseBar() {
  if (!bar) return;
  try {
    render(await api("/photos:summarize"));
  } catch {
    // The counts stay as they were; the next change tries again.
  }
}

/** Forgets the selection (signing out). */
export function resetBrowse() {
  selected = { when: "", camera: "", place: "" };
  if (bar) bar.replaceChildren();
}
