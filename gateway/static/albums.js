// Albums: #/albums lists them (cover, title, count), #/albums/<id> opens one (its photos, rename,
// delete); the selection bar adds photos to one (a picker dialog: an album, or a new one) and, in
// an album, removes them from it.
import { api, thumbnailUrl } from "./api.js";
import { confirmAction, plural } from "./confirm.js";
import { $, el, toast } from "./dom.js";
import { onPhotoChange, photoTile, rememberPhoto } from "./photos.js";

const PAGE_SIZE = 200;
const ALBUM_ROUTE = /^#\/albums\/([^/?#]+)$/;

let shown = null; // the album open in #/albums/<id>
let run = 0; // answers for a view no longer shown are dropped

const albumId = (name) => name.slice("albums/".length);

export const isAlbumsHash = (hash) => hash === "#/albums" || ALBUM_ROUTE.test(hash);

/** Shows the album list or one album, as the hash says. */
export function showAlbums(hash) {
  const match = hash.match(ALBUM_ROUTE);
  $("albums-view").hidden = Boolean(match);
  $("album-view").hidden = !match;
  if (match) openAlbum(`albums/${decodeURIComponent(match[1])}`);
  else listAlbums();
}

export function hideAlbums() {
  run += 1;
  shown = null;
  $("albums-view").hidden = true;
  $("album-view").hidden = true;
  $("album-photos").replaceChildren();
}

/** Photos of the open album in display order (the viewer steps through them). */
export const albumPhotoNames = () => [...$("album-photos").querySelectorAll("li[data-name]")].map((li) => li.dataset.name);

async function allAlbums() {
  const albums = [];
  let token = "";
  do {
    const page = await api(`/albums?${new URLSearchParams({ pageSize: String(PAGE_SIZE), pageToken: token })}`);
    albums.push(...page.albums);
    token = page.nextPageToken;
  } while (token);
  return albums;
}

function albumCard(album) {
  const cover = album.coverPhoto
    ? el("img", { src: thumbnailUrl(album.coverPhoto), alt: "", loading: "lazy" })
    : el("span", { class: "album-cover-empty", "aria-hidden": "true" }, "▢");
  return el("li", { class: "album-card", dataset: { name: album.name } },
    el("a", { href: `#/${album.name}` }, el("span", { class: "album-cover" }, cover),
      el("span", { class: "album-title" }, album.title),
      el("span", { class: "album-count muted small" }, plural(album.photoCount, "photo"))));
}

async function listAlbums() {
  const started = ++run;
  $("albums-status").textContent = "Loading albums…";
  try {
    const albums = await allAlbums();
    if (started !== run) return;
    $("album-list").replaceChildren(...albums.map(albumCard));
    $("albums-status").textContent = albums.length ? ""
      : "No albums yet. Select photos (their check boxes, shift-click for a range) and choose Add to album.";
  } catch (err) {
    if (started === run) $("albums-status").textContent = `Could not load albums: ${err.message}`;
  }
}

function showAlbumHeader(album) {
  shown = album;
  $("album-title").textContent = album.title;
  $("album-count").textContent = plural(album.photoCount, "photo");
}

async function openAlbum(name) {
  const started = ++run;
  $("album-rename-form").hidden = true;
  if (!shown || shown.name !== name) {
    $("album-title").textContent = "";
    $("album-photos").replaceChildren();
  }
  try {
    const { album } = await api(`/${name}`);
    if (started !== run) return;
    showAlbumHeader(album);
    const photos = [];
    let token = "";
    do {
      const params = new URLSearchParams({ album: albumId(name), pageSize: String(PAGE_SIZE), pageToken: token });
      const page = await api(`/photos?${params}`);
      if (started !== run) return;
      photos.push(...page.photos.map(rememberPhoto));
      token = page.nextPageToken;
    } while (token);
    $("album-photos").replaceChildren(...photos.map((photo) => photoTile(photo)));
    $("album-empty").hidden = photos.length > 0;
  } catch (err) {
    if (started !== run) return;
    $("album-title").textContent = "Album";
    $("album-count").textContent = err.status === 404 ? "This album no longer exists." : `Could not load it: ${err.message}`;
  }
}

async function rename(event) {
  event.preventDefault();
  const title = $("album-rename-form").elements.title.value.trim();
  if (!title || !shown) return;
  try {
    const { album } = await api(`/${shown.name}`, { method: "PATCH", json: { title } });
    showAlbumHeader(album);
    $("album-rename-form").hidden = true;
    toast(`Renamed the album to ${album.title}.`);
  } catch (err) {
    toast(`Could not rename the album: ${err.message}`, { error: true });
  }
}

async function deleteAlbum() {
  const album = shown;
  const ok = await confirmAction({ title: "Delete this album?",
    text: `“${album.title}” is deleted; its photos stay in your library.`, action: "Delete album" });
  if (!ok) return;
  try {
    await api(`/${album.name}`, { method: "DELETE" });
  } catch (err) {
    toast(`Could not delete the album: ${err.message}`, { error: true });
    return;
  }
  toast(`Deleted the album ${album.title}.`);
  location.hash = "#/albums";
}

/** Removes photos from the open album; true when done. */
export async function removeFromAlbum(names) {
  if (!shown) return false;
  try {
    const { album } = await api(`/${shown.name}:removePhotos`, { method: "POST", json: { photos: names } });
    showAlbumHeader(album);
  } catch (err) {
    toast(`Could not remove the photos: ${err.message}`, { error: true });
    return false;
  }
  for (const name of names) $("album-photos").querySelector(`li[data-name="${CSS.escape(name)}"]`)?.remove();
  $("album-empty").hidden = albumPhotoNames().length > 0;
  toast(`Removed ${plural(names.length, "photo")} from ${shown.title}.`);
  return true;
}

/** Asks which album (or a new one) and adds the photos to it; true when done. */
export async function addToAlbum(names) {
  const dialog = $("album-picker");
  const form = $("album-picker-form");
  form.reset();
  $("album-picker-heading").textContent = `Add ${plural(names.length, "photo")} to an album`;
  $("album-picker-list").replaceChildren(el("li", { class: "muted" }, "Loading albums…"));
  dialog.returnValue = "";
  dialog.showModal();
  form.elements.title.focus();
  allAlbums().then((albums) => {
    $("album-picker-list").replaceChildren(...albums.map((album) => el("li", {},
      el("button", { type: "submit", class: "button album-choice", value: album.name }, album.title,
        el("span", { class: "muted small" }, ` · ${plural(album.photoCount, "photo")}`)))));
  }, (err) => $("album-picker-list").replaceChildren(el("li", {}, `Could not load albums: ${err.message}`)));
  const choice = await new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true }));
  if (!choice || choice === "cancel") return false;
  try {
    let album;
    if (choice === "new") {
      const title = form.elements.title.value.trim();
      if (!title) return false;
      ({ album } = await api("/albums", { method: "POST", json: { title, photos: names } }));
    } else {
      ({ album } = await api(`/${choice}:addPhotos`, { method: "POST", json: { photos: names } }));
    }
    toast(`Added ${plural(names.length, "photo")} to ${album.title}.`);
    return true;
  } catch (err) {
    toast(`Could not add the photos: ${err.message}`, { error: true });
    return false;
  }
}

export function initAlbums() {
  $("album-rename").addEventListener("click", () => {
    const form = $("album-rename-form");
    form.hidden = false;
    form.elements.title.value = shown ? shown.title : "";
    form.elements.title.select();
  });
  $("album-rename-form").addEventListener("submit", rename);
  $("album-rename-cancel").addEventListener("click", () => { $("album-rename-form").hidden = true; });
  $("album-delete").addEventListener("click", deleteAlbum);
  // "Create" with a title submits as a new album (Enter in the title field too).
  $("album-picker-form").addEventListener("submit", (event) => {
    if (!event.submitter || event.submitter.value === "new") {
      event.preventDefault();
      if ($("album-picker-form").elements.title.value.trim()) $("album-picker").close("new");
    }
  });
}

// A photo moved to the trash (or purged) leaves the open album.
onPhotoChange((photo) => {
  if (!photo.deleted || !shown) return;
  const li = $("album-photos").querySelector(`li[data-name="${CSS.escape(photo.name)}"]`);
  if (li) {
    li.remove();
    showAlbumHeader({ ...shown, photoCount: Math.max(0, shown.photoCount - 1) });
  }
});
