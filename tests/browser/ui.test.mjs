// The web page in headless Chromium through playwright-core, run by tests/browser/test_ui.py
// (node --test), which starts the services and passes PHOTOSTORE_UI_TEST as JSON:
// {url, key, emptyKey (a user without photos), photos: [3 paths], exifPhoto, notAPhoto,
//  previewKey (another user), heicPhoto, largeJpeg, screenshots: dir, installWeights: marker}.
// The services start without model weights; printing the marker makes them arrive.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { chromium } = createRequire(import.meta.url)(path.join(repoRoot, "tools/node_modules/playwright-core"));
const config = JSON.parse(process.env.PHOTOSTORE_UI_TEST);

const CONTEXT = { locale: "en-US", timezoneId: "UTC", deviceScaleFactor: 1 };
const DESKTOP = { viewport: { width: 1280, height: 800 } };
const PHONE = { viewport: { width: 375, height: 812 }, isMobile: true, hasTouch: true };
const STEP = { timeout: 30_000 };
const INDEXING = { timeout: 60_000 };
const SCORE = /^-?\d\.\d{3}$/;

let browser;
let page; // the desktop page, signed in once and used throughout
const pageErrors = [];

async function newPage(device) {
  const context = await browser.newContext({ ...CONTEXT, ...device });
  const newOne = await context.newPage();
  newOne.setDefaultTimeout(15_000);
  newOne.on("pageerror", (error) => pageErrors.push(error.message));
  newOne.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) pageErrors.push(message.text());
  });
  return newOne;
}

async function signIn(target, query = "", key = config.key) {
  await target.goto(`${config.url}/${query}`);
  await target.fill("#api-key", key);
  await target.press("#api-key", "Enter");
  await target.waitForSelector("#app:not([hidden])");
}

const screenshot = (target, name) => target.screenshot({
  path: path.join(config.screenshots, `${name}.png`), animations: "disabled" });

const text = (target, selector) => target.locator(selector).first().textContent();

/** Names of the tiles under `scope`, in order. */
const tileNames = (target, scope) => target.$$eval(`${scope} li[data-name]`, (items) => items.map((li) => li.dataset.name));

/** Photo name of the timeline tile whose alt text starts with the file name. */
const tileOf = (target, filename) => target.$eval(`#timeline img[alt^="${filename},"]`, (img) => img.closest("li").dataset.name);

/** Waits until the dialog is closed (a closed dialog is hidden, so waitForSelector cannot). */
const waitClosed = (target, id) => target.waitForFunction((dialog) => !document.getElementById(dialog).open, id);

async function search(target, query) {
  await target.fill("#search-input", query);
  await target.press("#search-input", "Enter");
  await waitForSearch(target);
}

/** Waits until the search in the URL has its answer on screen. */
function waitForSearch(target) {
  return target.waitForFunction(() => location.hash.startsWith("#/search?")
    && !document.getElementById("search-view").hasAttribute("aria-busy")
    && (document.querySelector("#search-results li") || !document.getElementById("search-empty").hidden));
}

async function applyFilters(target, values) {
  for (const [name, value] of Object.entries(values)) await target.fill(`#search-filters [name=${name}]`, value);
  await target.click("#search-filters button[type=submit]");
  await waitForSearch(target);
}

async function assertNoHorizontalScroll(target, selector = "html") {
  const [scrollWidth, clientWidth] = await target.$eval(selector, (node) => [node.scrollWidth, node.clientWidth]);
  assert.ok(scrollWidth <= clientWidth, `${selector} scrolls sideways: ${scrollWidth} > ${clientWidth}`);
}

describe("Photostore web page", () => {
  before(async () => {
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    page = await newPage(DESKTOP);
  });

  after(() => browser && browser.close());

  it("refuses a wrong key with a message, then signs in", STEP, async () => {
    await page.goto(`${config.url}/`);
    await page.fill("#api-key", "psk_not-a-real-key");
    await page.press("#api-key", "Enter");
    await page.waitForSelector("#sign-in-error:not([hidden])");
    assert.match(await text(page, "#sign-in-error"), /not accepted/);
    assert.equal(await page.getAttribute("#api-key", "aria-invalid"), "true");
    await screenshot(page, "sign-in-desktop");

    await page.fill("#api-key", config.key);
    await page.press("#api-key", "Enter");
    await page.waitForSelector("#timeline-empty:not([hidden])");
    // The page holds a session token in an HttpOnly cookie, never the key itself.
    const stored = await page.evaluate(() => [sessionStorage.length, localStorage.length, document.cookie]);
    assert.deepEqual(stored, [0, 0, ""]);
    const cookies = await page.context().cookies();
    assert.deepEqual(cookies.map((c) => [c.name, c.httpOnly, c.sameSite, c.path]),
      [["photostore_session", true, "Strict", "/"]]);
    assert.ok(!cookies[0].value.includes(config.key));
    // A reload goes on with the session, without asking for the key.
    await page.reload();
    await page.waitForSelector("#timeline-empty:not([hidden])");
    assert.ok(await page.isHidden("#sign-in"));
  });

  it("says why search cannot answer before the model is ready", STEP, async () => {
    await search(page, "a cat");
    assert.match(page.url(), /#\/search\?q=a\+cat$/);
    const message = await text(page, "#search-empty");
    assert.match(message, /The search model is not ready/);
    assert.match(message, /model not ready/); // the UNAVAILABLE status message itself
  });

  it("uploads with per-file progress, names rejected and duplicate files, and shows indexing live",
    INDEXING, async () => {
      await page.click(".brand");
      await page.waitForSelector("#timeline-view:not([hidden])");
      await page.evaluate(() => {
        window.notReloaded = true;
        window.uploadWatch = { mostSending: 0, progressShown: false };
        new MutationObserver(() => {
          const sending = document.querySelectorAll(
            ".upload-item[data-state=uploading], .upload-item[data-state=checking]").length;
          window.uploadWatch.mostSending = Math.max(window.uploadWatch.mostSending, sending);
          if (document.querySelector(".upload-item[data-state=uploading] progress:not([hidden])")) {
            window.uploadWatch.progressShown = true;
          }
        }).observe(document.getElementById("upload-list"),
          { subtree: true, childList: true, attributes: true, characterData: true });
      });
      await page.setInputFiles("#file-input", [...config.photos, config.exifPhoto, config.notAPhoto]);
      await page.waitForFunction(() => document.querySelectorAll(".upload-item[data-state=uploaded]").length === 4
        && document.querySelector(".upload-item[data-state=rejected]"));
      const watch = await page.evaluate(() => window.uploadWatch);
      assert.equal(watch.mostSending, 3, "three uploads at once");
      assert.ok(watch.progressShown);
      const rejected = await text(page, ".upload-item[data-state=rejected]");
      assert.match(rejected, /^notes\.jpg/);
      assert.match(rejected, /Rejected: the data is not a JPEG, PNG, WebP, GIF or HEIC image/);
      await page.waitForFunction(() => document.querySelectorAll("#timeline .tile[data-status=uploaded]").length === 4);
      assert.match(await text(page, "#timeline .badge"), /Indexing/);
      await screenshot(page, "upload-desktop");

      // The same bytes again, dropped on the page under another name.
      const astronaut = await tileOf(page, "astronaut.png");
      await page.evaluate(async (name) => {
        const blob = await (await fetch(`/api/v1/${name}/original`)).blob();
        const files = new DataTransfer();
        files.items.add(new File([blob], "astronaut-again.png", { type: blob.type }));
        for (const type of ["dragover", "drop"]) {
          document.body.dispatchEvent(new DragEvent(type, { dataTransfer: files, bubbles: true, cancelable: true }));
        }
      }, astronaut);
      await page.waitForSelector(".upload-item[data-state=duplicate]");
      assert.match(await text(page, ".upload-item[data-state=duplicate]"),
        /^astronaut-again\.pngAlready stored as astronaut\.png$/);
      assert.ok(await page.isHidden("#drop-overlay"));

      // The sidebar says what search can use now: not the image model, which has no weights yet.
      assert.match(await text(page, "#model-state"), /^Search uses .*file names\. Not ready yet: what photos show \(image model\)/);
      console.log(config.installWeights); // the weights arrive; the photos get indexed
      await page.waitForFunction(() => document.querySelectorAll(".upload-item[data-state=indexed]").length === 4,
        null, INDEXING);
      await page.waitForFunction(() => [...document.querySelectorAll("#timeline .tile")]
        .every((tile) => tile.dataset.status === "indexed"));
      assert.ok(await page.evaluate(() => window.notReloaded), "no reload");
      assert.equal(await text(page, "#upload-summary"), "4 searchable · 1 already stored · 1 not stored");
      await page.waitForFunction(() => document.getElementById("model-state").textContent
        .startsWith("Search uses what photos show (image model)"));
    });

  it("groups the timeline by day taken, newest first, with thumbnails only", STEP, async () => {
    await page.click("#upload-close");
    assert.ok(await page.isHidden("#upload-panel"));
    const days = await page.$$eval("#timeline section.day", (sections) => sections.map((section) => ({
      day: section.dataset.day,
      heading: section.querySelector("h2").textContent,
      photos: [...section.querySelectorAll("img")].map((img) => img.alt).sort(),
      sources: [...section.querySelectorAll("img")].map((img) => new URL(img.src).pathname),
    })));
    assert.equal(days.length, 2);
    assert.equal(days[0].heading, "Today");
    assert.deepEqual(days[0].photos.map((alt) => alt.split(",")[0]), ["astronaut.png", "coffee.png", "rocket.jpg"]);
    assert.deepEqual([days[1].day, days[1].heading, days[1].photos],
      ["2024-06-01", "Sat, Jun 1, 2024", ["cat-in-paris.jpg, June 1, 2024"]]);
    for (const source of days.flatMap((day) => day.sources)) assert.match(source, /^\/api\/v1\/photos\/\w+\/thumbnail$/);
    assert.equal(await text(page, "#photo-count"), "4 photos");
    await screenshot(page, "timeline-desktop");
  });

  it("browses by year and by camera without a query", STEP, async () => {
    const timelineFiles = () => page.$$eval("#timeline img", (imgs) => imgs.map((img) => img.alt.split(",")[0]).sort());
    const waitTiles = (count) => page.waitForFunction(
      (n) => document.querySelectorAll("#timeline li[data-name]").length === n, count);
    // The bar's counts follow the uploads.
    await page.waitForFunction(() => document.querySelector("#browse-when option[value='2024']")
      && document.querySelector("#browse-camera option:not([value=''])"));
    assert.equal(await text(page, "#browse-when option[value='2024']"), "2024 (1)");
    await page.selectOption("#browse-when", "2024");
    await waitTiles(1);
    assert.deepEqual(await timelineFiles(), ["cat-in-paris.jpg"]);
    await page.waitForFunction(() => document.getElementById("photo-count").textContent === "1 photo");
    await page.click("#browse-clear");
    await waitTiles(4);
    await page.selectOption("#browse-camera", { label: "Canon EOS 5D (1)" });
    await waitTiles(1);
    assert.deepEqual(await timelineFiles(), ["cat-in-paris.jpg"]);
    assert.doesNotMatch(page.url(), /#\/search/); // no query was made
    await page.selectOption("#browse-camera", "");
    await waitTiles(4);
    assert.ok(await page.isHidden("#browse-clear"));
  });

  it("ranks search results with scores, filters them, and explains an empty result", STEP, async () => {
    await search(page, "a cat in paris");
    const hits = await page.$$eval("#search-results li", (items) => items.map((li) => ({
      score: li.querySelector(".score").textContent, whatMatched: Boolean(li.querySelector(".what-matched")) })));
    assert.equal(hits.length, 4);
    for (const hit of hits) assert.match(hit.score, SCORE);
    const scores = hits.map((hit) => Number(hit.score));
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a), "best first");
    assert.ok(hits.every((hit) => !hit.whatMatched), "no labels or OCR text in the API yet");
    assert.match(await text(page, "#search-summary"), /^4 photos, best match first/);
    await screenshot(page, "search-desktop");

    const paris = await tileOf(page, "cat-in-paris.jpg");
    await page.click("#search-filter-box summary");
    await applyFilters(page, { cameraMake: "canon" });
    assert.match(page.url(), /cameraMake=canon/);
    assert.deepEqual(await tileNames(page, "#search-results"), [paris]);
    await applyFilters(page, { cameraMake: "", from: "2024-06-01", to: "2024-06-01" });
    assert.deepEqual(await tileNames(page, "#search-results"), [paris]);
    await applyFilters(page, { from: "2024-06-02", to: "" });
    assert.match(await text(page, "#search-empty"), /Nothing matched these filters.*EXIF/);
    await applyFilters(page, { from: "", minScore: "0.999" });
    assert.match(await text(page, "#search-empty"), /Nothing matched above the cut-off/);
    await applyFilters(page, { minScore: "", cameraModel: "canon eos 5d" });
    assert.deepEqual(await tileNames(page, "#search-results"), [paris]);
  });

  it("opens a result with its details, its preview and a download", STEP, async () => {
    const [paris] = await tileNames(page, "#search-results");
    await page.click("#search-results .tile");
    await page.waitForSelector("#viewer[open]");
    assert.ok(page.url().endsWith(`#/${paris}`));
    assert.equal(await text(page, "#viewer-title"), "cat-in-paris.jpg");
    await page.waitForFunction(() => {
      const image = document.getElementById("viewer-image");
      return image.complete && image.naturalWidth === 320 && !image.classList.contains("loading");
    });
    // The preview, not the original (a 320 px photo: the preview is as large, no full resolution).
    assert.ok((await page.getAttribute("#viewer-image", "src")).endsWith(`/${paris}/preview`));
    assert.ok(await page.isHidden("#viewer-full"));
    assert.equal(await page.getAttribute("#viewer-image", "alt"), "cat-in-paris.jpg, June 1, 2024");
    const detail = (field) => text(page, `#viewer-details [data-field=${field}] dd`);
    assert.match(await detail("taken"), /^Jun 1, 2024, 2:30\sPM$/);
    assert.equal(await detail("camera"), "Canon EOS 5D");
    assert.match(await detail("place"), /^Neuilly-sur-Seine, Ile-de-France, France48\.85820, 2\.29450/);
    assert.match(await page.getAttribute("#viewer-details [data-field=place] a", "href"),
      /^https:\/\/www\.openstreetmap\.org\/\?mlat=48\.85820&mlon=2\.29450/);
    assert.equal(await detail("dimensions"), "320 × 213 px (0.1 MP)");
    assert.match(await detail("size"), /^\d+\.\d KB$/);
    assert.equal(await detail("type"), "image/jpeg");
    assert.equal(await detail("status"), "Searchable");
    assert.match(await detail("model"), /tiny-clip/);

    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#viewer-download")]);
    assert.equal(download.suggestedFilename(), "cat-in-paris.jpg");
    assert.ok(download.url().endsWith(`/${paris}/original`));
  });

  it("finds similar photos from the viewer, the photo itself first, and opens them in turn", STEP, async () => {
    const paris = page.url().split("#/")[1];
    await page.click("#viewer-similar");
    await page.waitForFunction(() => document.querySelectorAll("#similar-strip li").length === 4);
    const strip = await tileNames(page, "#similar-strip");
    assert.equal(strip[0], paris);
    assert.equal(await text(page, "#similar-strip li .similar-score"), "This photo");
    for (const score of (await page.$$eval("#similar-strip .similar-score", (s) => s.map((n) => n.textContent))).slice(1)) {
      assert.match(score, SCORE);
    }
    await page.waitForFunction(() => [...document.querySelectorAll("#similar-strip img")].every((img) => img.complete));
    await screenshot(page, "photo-desktop");
    await page.click("#similar-strip li:nth-child(2) .tile");
    await page.waitForFunction((name) => location.hash === `#/${name}`, strip[1]);
    await page.waitForFunction(() => document.querySelector("#similar-strip li")?.dataset.name
      === location.hash.slice(2), null); // the strip follows the photo shown
    await page.goBack();
    await page.waitForFunction((name) => location.hash === `#/${name}`
      && document.getElementById("viewer-title").textContent === "cat-in-paris.jpg", paris);
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => location.hash.startsWith("#/search?") && !document.getElementById("viewer").open);
  });

  it("deletes a photo only after a confirm dialog", STEP, async () => {
    await page.click(".brand");
    const coffee = await tileOf(page, "coffee.png");
    await page.click(`#timeline li[data-name="${coffee}"] .tile`);
    await page.waitForSelector("#viewer[open]");
    await page.click("#viewer-delete");
    await page.waitForSelector("#confirm-delete[open]");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Cancel");
    await page.keyboard.press("Escape");
    await waitClosed(page, "confirm-delete");
    assert.ok(await page.isVisible("#viewer[open]"), "cancelling keeps the photo open");

    await page.click("#viewer-delete");
    await page.click("#confirm-delete button[value=delete]");
    await page.waitForFunction(() => location.hash === "#/photos" && !document.getElementById("viewer").open);
    await page.waitForSelector(`#timeline li[data-name="${coffee}"]`, { state: "detached" });
    assert.equal(await text(page, "#toast"), "Moved coffee.png to the trash.");
    const trashed = await page.evaluate((name) => fetch(`/api/v1/${name}`).then((r) => r.json()), coffee);
    assert.ok(trashed.photo.deleteTime && trashed.photo.purgeTime, "in the trash, until its purge time");
    await page.waitForFunction(() => document.getElementById("photo-count").textContent === "3 photos");
  });

  it("restores a deleted photo from the trash, and empties the trash", STEP, async () => {
    await page.click("[data-nav=trash]");
    await page.waitForSelector("#trash-list li[data-name]");
    const [coffee] = await tileNames(page, "#trash-list");
    assert.match(await page.getAttribute(`#trash-list li[data-name="${coffee}"] img`, "alt"), /^coffee\.png,/);
    assert.match(await text(page, "#trash-list .trash-days"), /^(29|30) days left$/);
    await screenshot(page, "trash-desktop");
    await page.click(`#trash-list li[data-name="${coffee}"] .trash-restore`);
    await page.waitForSelector("#trash-empty:not([hidden])");
    assert.equal(await text(page, "#toast"), "Restored coffee.png.");
    await page.click("[data-nav=photos]");
    await page.waitForSelector(`#timeline li[data-name="${coffee}"]`);
    await page.waitForFunction(() => document.getElementById("photo-count").textContent === "4 photos");

    // Deleted again, from a selection this time, then gone for good with the rest of the trash.
    await page.check(`#timeline li[data-name="${coffee}"] .select-box`);
    assert.equal(await text(page, "#selection-count"), "1 photo selected");
    await page.click("#selection-delete");
    await page.click("#confirm-delete button[value=delete]");
    await page.waitForSelector(`#timeline li[data-name="${coffee}"]`, { state: "detached" });
    assert.equal(await text(page, "#toast"), "Moved 1 photo to the trash.");
    await page.click("[data-nav=trash]");
    await page.waitForSelector(`#trash-list li[data-name="${coffee}"]`);
    await page.click("#trash-empty-all");
    await page.click("#confirm-delete button[value=delete]");
    await page.waitForSelector("#trash-empty:not([hidden])");
    assert.equal(await page.evaluate((name) => fetch(`/api/v1/${name}`).then((r) => r.status), coffee), 404);
    await page.click("[data-nav=photos]");
    await page.waitForFunction(() => document.getElementById("photo-count").textContent === "3 photos");
  });

  it("makes an album from a multi-selection (a check box, then shift-click), and edits it", STEP, async () => {
    const names = await tileNames(page, "#timeline");
    assert.equal(names.length, 3);
    await page.check(`#timeline li[data-name="${names[0]}"] .select-box`);
    await page.click(`#timeline li[data-name="${names[2]}"] .tile`, { modifiers: ["Shift"] });
    assert.equal(await text(page, "#selection-count"), "3 photos selected");
    assert.ok(!(await page.evaluate(() => document.getElementById("viewer").open)), "selecting opens nothing");
    await screenshot(page, "selection-desktop");
    await page.click("#selection-album");
    await page.waitForSelector("#album-picker[open]");
    await page.fill("#album-picker-title", "Trip");
    await page.press("#album-picker-title", "Enter");
    await waitClosed(page, "album-picker");
    await page.waitForFunction(() => document.getElementById("toast").textContent === "Added 3 photos to Trip.");
    assert.ok(await page.isHidden("#selection-bar"));

    await page.click("[data-nav=albums]");
    await page.waitForSelector("#album-list li[data-name]");
    assert.match(await text(page, "#album-list .album-card"), /^Trip3 photos$/);
    assert.equal(await page.getAttribute("[data-nav=albums]", "aria-current"), "page");
    await screenshot(page, "albums-desktop");
    await page.click("#album-list .album-card a");
    await page.waitForFunction(() => document.querySelectorAll("#album-photos li[data-name]").length === 3);
    assert.deepEqual(await tileNames(page, "#album-photos"), names);
    await page.click("#album-rename");
    await page.fill("#album-rename-title", "Summer trip");
    await page.press("#album-rename-title", "Enter");
    await page.waitForFunction(() => document.getElementById("album-title").textContent === "Summer trip");
    await page.check(`#album-photos li[data-name="${names[1]}"] .select-box`);
    await page.click("#selection-remove");
    await page.waitForSelector(`#album-photos li[data-name="${names[1]}"]`, { state: "detached" });
    assert.equal(await text(page, "#album-count"), "2 photos");

    // A photo opened from the album: the viewer's favourite toggle.
    await page.click(`#album-photos li[data-name="${names[0]}"] .tile`);
    await page.waitForSelector("#viewer[open]");
    await page.click("#viewer-favorite");
    await page.waitForSelector("#viewer-favorite[aria-pressed=true]");
    const favourites = await page.evaluate(() => fetch("/api/v1/photos?favorite=true").then((r) => r.json()));
    assert.deepEqual(favourites.photos.map((p) => p.name), [names[0]]);
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => location.hash.startsWith("#/albums/") && !document.getElementById("viewer").open);
    await page.click("[data-nav=photos]");
    await page.waitForSelector("#timeline-view:not([hidden]) #timeline li[data-name]");
  });

  it("works by keyboard: Tab to a photo, Enter opens it, arrows step, Escape closes", STEP, async () => {
    await page.focus("#search-input");
    let focused = null;
    for (let press = 0; press < 30 && !focused; press += 1) {
      await page.keyboard.press("Tab");
      focused = await page.evaluate(() => document.activeElement.closest(".tile")?.dataset.name || null);
    }
    assert.ok(focused, "a photo tile takes focus");
    assert.notEqual(await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle), "none");
    const tiles = await tileNames(page, "#timeline");
    assert.equal(focused, tiles[0]);

    await page.keyboard.press("Enter");
    await page.waitForSelector("#viewer[open]");
    assert.ok(page.url().endsWith(`#/${focused}`));
    await page.keyboard.press("ArrowRight");
    await page.waitForFunction((name) => location.hash === `#/${name}`, tiles[1]);
    await page.keyboard.press("Escape");
    await page.waitForFunction(() => location.hash === "#/photos" && !document.getElementById("viewer").open);
    assert.equal(await page.evaluate(() => document.activeElement.closest(".tile")?.dataset.name), focused);

    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement.id), "search-input");
  });

  it("fits a phone screen, and pages the timeline in as it scrolls", { timeout: 60_000 }, async () => {
    const phone = await newPage(PHONE);
    await signIn(phone, "?pageSize=2", config.emptyKey);
    await phone.waitForSelector("#timeline-empty:not([hidden])");
    await search(phone, "anything");
    assert.match(await text(phone, "#search-empty"), /No photos yet/);
    await phone.click("#sign-out");
    await phone.waitForSelector("#sign-in:not([hidden])");

    const pages = [];
    phone.on("request", (request) => {
      if (request.url().includes("/api/v1/photos?pageSize=2")) pages.push(request.url());
    });
    await phone.fill("#api-key", config.key);
    await phone.press("#api-key", "Enter");
    await phone.waitForFunction(() => document.querySelectorAll("#timeline .tile").length === 3);
    assert.ok(pages.length >= 2, `pages fetched: ${pages}`);
    assert.ok(pages.slice(1).every((url) => url.includes("pageToken=")));
    await assertNoHorizontalScroll(phone);
    await screenshot(phone, "timeline-phone");

    await search(phone, "a rocket");
    assert.equal((await tileNames(phone, "#search-results")).length, 3);
    await assertNoHorizontalScroll(phone);
    await screenshot(phone, "search-phone");

    await phone.click("#search-results .tile");
    await phone.waitForFunction(() => {
      const image = document.getElementById("viewer-image");
      return image.complete && image.naturalWidth > 0 && !image.classList.contains("loading");
    });
    await assertNoHorizontalScroll(phone, "#viewer");
    await screenshot(phone, "photo-phone");
    await phone.keyboard.press("Escape");
    await waitClosed(phone, "viewer");

    // A slow uplink, so the upload's progress bar can be seen part way.
    await phone.click(".brand");
    const network = await phone.context().newCDPSession(phone);
    const uplink = (bytesPerSecond) => network.send("Network.emulateNetworkConditions",
      { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: bytesPerSecond });
    await network.send("Network.enable");
    await uplink(200_000);
    const coffee = config.photos.find((file) => file.endsWith("coffee.png")); // deleted above: new again
    await phone.setInputFiles("#file-input", [coffee, config.notAPhoto]);
    await phone.waitForFunction(() => {
      const progress = document.querySelector(".upload-item[data-state=uploading] progress");
      return progress && progress.value > 0.2 && progress.value < 0.8
        && document.querySelector(".upload-item[data-state=rejected]");
    });
    assert.match(await text(phone, ".upload-item[data-state=uploading] .upload-state"), /^Uploading \d+%$/);
    await assertNoHorizontalScroll(phone);
    await screenshot(phone, "upload-phone");
    await uplink(-1);
    await phone.waitForSelector(".upload-item[data-state=indexed]", INDEXING);
    await phone.context().close();
  });

  it("signs out: the session ends on the server, not just in the browser", STEP, async () => {
    const [session] = await page.context().cookies();
    await page.click("#sign-out");
    await page.waitForSelector("#sign-in:not([hidden])");
    assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0);
    assert.deepEqual(await page.context().cookies(), []);
    assert.equal(await page.evaluate(() => fetch("/api/v1/photos").then((r) => r.status)), 401);
    // The token the browser held, replayed from elsewhere, is refused too.
    const replayed = await fetch(`${config.url}/api/v1/photos`, { headers: { Cookie: `${session.name}=${session.value}` } });
    assert.equal(replayed.status, 401);
    assert.equal((await replayed.json()).details[0].reason, "SESSION_INVALID");
  });

  it("refuses a cookie-authenticated write from another origin", STEP, async () => {
    await signIn(page);
    const [session] = await page.context().cookies();
    await page.waitForSelector("#timeline li[data-name]");
    const name = await page.$eval("#timeline li[data-name]", (li) => li.dataset.name);
    const forged = await fetch(`${config.url}/api/v1/${name}`, {
      method: "DELETE", headers: { Cookie: `${session.name}=${session.value}`, Origin: "http://127.0.0.1:1" } });
    assert.equal(forged.status, 403);
    assert.equal((await forged.json()).details[0].reason, "CROSS_ORIGIN");
    assert.equal(await page.evaluate((photo) => fetch(`/api/v1/${photo}`).then((r) => r.status), name), 200);
  });

  it("shows a HEIC photo at preview size, and a large JPEG's original on demand", STEP, async () => {
    const viewer = await newPage(DESKTOP);
    await signIn(viewer, "", config.previewKey);
    await viewer.setInputFiles("#file-input", [config.heicPhoto, config.largeJpeg]);
    await viewer.waitForFunction(() => document.querySelectorAll(
      ".upload-item[data-state=uploaded], .upload-item[data-state=indexed]").length === 2);
    await viewer.click("#upload-close");
    const shown = () => viewer.waitForFunction(() => {
      const image = document.getElementById("viewer-image");
      return image.complete && image.naturalWidth > 0 && !image.classList.contains("loading");
    });
    const natural = () => viewer.$eval("#viewer-image", (image) => [image.naturalWidth, image.naturalHeight]);

    // HEIC (2400 x 1800), which browsers cannot decode: its JPEG preview, at full preview size.
    const heic = await tileOf(viewer, "phone.heic");
    await viewer.click(`#timeline li[data-name="${heic}"] .tile`);
    await viewer.waitForSelector("#viewer[open]");
    await shown();
    assert.deepEqual(await natural(), [1440, 1080]);
    assert.ok((await viewer.getAttribute("#viewer-image", "src")).endsWith(`/${heic}/preview`));
    assert.ok(await viewer.isHidden("#viewer-error"));
    assert.ok(await viewer.isHidden("#viewer-note"));
    assert.ok(await viewer.isHidden("#viewer-full"), "a HEIC original is never offered to the browser");
    assert.ok(await viewer.isHidden("#toast.error"));
    await screenshot(viewer, "photo-heic-desktop");
    await viewer.keyboard.press("Escape");
    await waitClosed(viewer, "viewer");

    // A JPEG larger than the preview: the preview first, the original when asked for.
    const jpeg = await tileOf(viewer, "wide.jpg");
    await viewer.click(`#timeline li[data-name="${jpeg}"] .tile`);
    await viewer.waitForSelector("#viewer[open]");
    await shown();
    assert.deepEqual(await natural(), [1440, 1080]);
    await viewer.click("#viewer-full");
    await viewer.waitForFunction(() => document.getElementById("viewer-image").naturalWidth === 2000);
    assert.ok((await viewer.getAttribute("#viewer-image", "src")).endsWith(`/${jpeg}/original`));
    assert.ok(await viewer.isHidden("#viewer-full"));
    assert.ok(await viewer.isHidden("#viewer-error"));
    await viewer.context().close();
  });

  it("flags a near-duplicate at upload, and keeps one of a group from the Duplicates view", STEP, async () => {
    const twins = await newPage(DESKTOP);
    await signIn(twins, "", config.duplicatesKey);
    const astronaut = config.photos.find((file) => file.endsWith("astronaut.png"));
    await twins.setInputFiles("#file-input", [astronaut]);
    await twins.waitForSelector("#upload-list .upload-name a");
    // The same picture at half size, re-encoded as JPEG in the page, dropped under another name.
    await twins.evaluate(async () => {
      const name = document.querySelector("#upload-list .upload-name a").getAttribute("href").slice(2);
      const bitmap = await createImageBitmap(await (await fetch(`/api/v1/${name}/original`)).blob());
      const canvas = new OffscreenCanvas(bitmap.width / 2, bitmap.height / 2);
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      const files = new DataTransfer();
      files.items.add(new File([await canvas.convertToBlob({ type: "image/jpeg", quality: 0.7 })], "small.jpg",
        { type: "image/jpeg" }));
      for (const type of ["dragover", "drop"]) {
        document.body.dispatchEvent(new DragEvent(type, { dataTransfer: files, bubbles: true, cancelable: true }));
      }
    });
    await twins.waitForSelector(".upload-item[data-similar=true]");
    assert.match(await text(twins, ".upload-item[data-similar=true] .upload-similar"),
      /^Looks like an existing photo: astronaut\.png · Review duplicates$/);
    assert.match(await twins.getAttribute(".upload-similar .similar-link img", "src"), /^\/api\/v1\/photos\/\w+\/thumbnail$/);

    await twins.click(".upload-similar a[href='#/duplicates']");
    await twins.click("#upload-close");
    await twins.waitForSelector("#duplicates-view:not([hidden]) .duplicate-group");
    const group = () => twins.$$eval(".duplicate-group figure", (figures) => figures.map((f) => f.querySelector(".duplicate-name").textContent));
    assert.deepEqual(await group(), ["astronaut.png", "small.jpg"]); // the larger first
    assert.equal(await twins.getAttribute("[data-nav=duplicates]", "aria-current"), "page");
    await screenshot(twins, "duplicates-desktop");
    await twins.click(".duplicate-group figure:first-child button");
    await twins.waitForFunction(() => !document.querySelector(".duplicate-group"));
    const trash = await twins.evaluate(() => fetch("/api/v1/photos?deleted=true").then((r) => r.json()));
    assert.deepEqual(trash.photos.map((p) => p.filename), ["small.jpg"]);
    await twins.context().close();
  });

  it("raised no script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
