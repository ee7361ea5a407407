// Multi-select in the photo grids (the timeline and an album): a checkbox on every tile, shift-click
// for a range, and, while photos are selected, a click on a tile selects instead of opening it.
// The selection bar acts on the selection: add to an album, favourite, delete (to the trash), and
// in an album, remove from it.
import { api } from "./api.js";
import { addToAlbum, removeFromAlbum } from "./albums.js";
import { confirmAction, plural } from "./confirm.js";
import { $, el, toast } from "./dom.js";
import { forgetPhoto, knownPhoto, onPhotoChange, rememberPhoto } from "./photos.js";

const GRIDS = ["timeline", "album-photos"];
const selected = new Set();
let scope = null; // the grid the selection is in
let anchor = ""; // the tile clicked last, one end of a shift-click range
let bar = null;

const items = (grid) => [...grid.querySelectorAll("li[data-name]")];
const itemOf = (grid, name) => grid.querySelector(`li[data-name="${CSS.escape(name)}"]`);

function addCheckbox(li) {
  if (li.querySelector(".select-box")) return;
  const img = li.querySelector("img");
  li.prepend(el("input", { type: "checkbox", class: "select-box",
                           "aria-label": `Select ${img ? img.alt : li.dataset.name}` }));
  li.classList.toggle("selected", selected.has(li.dataset.name));
  li.querySelector(".select-box").checked = selected.has(li.dataset.name);
}

function mark(grid, name, on) {
  if (on) selected.add(name);
  else selected.delete(name);
  const li = itemOf(grid, name);
  if (li) {
    li.classList.toggle("selected", on);
    const box = li.querySelector(".select-box");
    if (box) box.checked = on;
  }
}

/** Toggles `name`, or with shift sets the range from the last clicked tile to it. */
function choose(grid, name, shift) {
  if (scope !== grid) clearSelection();
  scope = grid;
  const names = items(grid).map((li) => li.dataset.name);
  if (shift && anchor && names.includes(anchor)) {
    const [from, to] = [names.indexOf(anchor), names.indexOf(name)].sort((a, b) => a - b);
    for (const between of names.slice(from, to + 1)) mark(grid, between, true);
  } else mark(grid, name, !selected.has(name));
  anchor = name;
  showBar();
}

export function clearSelection() {
  for (const name of [...selected]) if (scope) mark(scope, name, false);
  selected.clear();
  scope = null;
  anchor = "";
  showBar();
}

export const selectedNames = () => [...selected];

function showBar() {
  if (!bar) return;
  bar.hidden = selected.size === 0;
  $("selection-count").textContent = `${plural(selected.size, "photo")} selected`;
  $("selection-remove").hidden = !scope || scope.id !== "album-photos";
  const photos = [...selected].map(knownPhoto).filter(Boolean);
  const allFavourite = photos.length > 0 && photos.every((photo) => photo.favorite);
  $("selection-favorite").textContent = allFavourite ? "Unfavourite" : "Favourite";
}

async function favourite() {
  const names = selectedNames();
  const value = $("selection-favorite").textContent === "Favourite";
  try {
    for (const name of names) {
      rememberPhoto((await api(`/${name}`, { method: "PATCH", json: { favorite: value } })).photo);
    }
    toast(`${value ? "Marked" : "Unmarked"} ${plural(names.length, "photo")} as favourite.`);
  } catch (err) {
    toast(`Could not change the favourites: ${err.message}`, { error: true });
  }
  showBar();
}

async function trash() {
  const names = selectedNames();
  const ok = await confirmAction({
    title: `Move ${plural(names.length, "photo")} to the trash?`,
    text: "They leave your photos, albums and search, and are deleted for good after 30 days unless restored.",
    action: "Move to trash",
  });
  if (!ok) return;
  try {
    await api("/photos:batchDelete", { method: "POST", json: { names } });
  } catch (err) {
    toast(`Could not delete: ${err.message}`, { error: true });
    return;
  }
  clearSelection();
  for (const name of names) forgetPhoto(name);
  toast(`Moved ${plural(names.length, "photo")} to the trash.`);
}

async function add() {
  if (await addToAlbum(selectedNames())) clearSelection();
}

async function remove() {
  if (await removeFromAlbum(selectedNames())) clearSelection();
}

export function initSelection() {
  bar = el("div", { id: "selection-bar", class: "selection-bar", role: "toolbar", "aria-label": "Selected photos",
                    hidden: true },
    el("button", { type: "button", class: "icon-button", "aria-label": "Clear the selection", onclick: clearSelection }, "✕"),
    el("span", { id: "selection-count", role: "status" }),
    el("button", { type: "button", id: "selection-album", class: "button", onclick: add }, "Add to album"),
    el("button", { type: "button", id: "selection-remove", class: "button", onclick: remove, hidden: true },
      "Remove from album"),
    el("button", { type: "button", id: "selection-favorite", class: "button", onclick: favourite }, "Favourite"),
    el("button", { type: "button", id: "selection-delete", class: "button danger", onclick: trash }, "Delete"));
  $("app").append(bar);
  for (const id of GRIDS) {
    const grid = $(id);
    new MutationObserver(() => items(grid).forEach(addCheckbox)).observe(grid, { childList: true, subtree: true });
    grid.addEventListener("click", (event) => {
      const li = event.target.closest("li[data-name]");
      if (!li) return;
      if (event.target.classList.contains("select-box")) {
        choose(grid, li.dataset.name, event.shiftKey); // sets every box it changes, this one too
      } else if ((selected.size && scope === grid) || event.shiftKey) {
        // While selecting, a click on a tile selects it too, rather than opening it.
        event.preventDefault();
        event.stopPropagation();
        choose(grid, li.dataset.name, event.shiftKey);
      }
    }, true);
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && selected.size && !document.querySelector("dialog[open]")) clearSelection();
  });
}

// A photo that left (deleted, purged) leaves the selection.
onPhotoChange((photo) => {
  if (photo.deleted && selected.has(photo.name)) {
    selected.delete(photo.name);
    showBar();
  }
});

