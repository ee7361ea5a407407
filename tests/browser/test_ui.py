"""The web page in a real headless Chromium, against the real services.

Starts the stack as the end-to-end suite does (without weights, so the page can show that the model
is not ready), then runs tests/browser/ui.test.mjs with node's test runner and playwright-core.
The script prints INSTALL_WEIGHTS when its uploads are waiting; the weights then "arrive" here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image

from tests.stack import ROOT, Stack
from tests.photo_samples import SAMPLE_FILES

pillow_heif.register_heif_opener()

NODE = shutil.which("node")
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = ROOT / "tools" / "node_modules" / "playwright-core"
SCRIPT = Path(__file__).with_name("ui.test.mjs")
# The test leaves the tree alone: screenshots go to tmp_path, or to this folder (`make screenshots`
# sets it to docs/screenshots to refresh the ones the docs show).
SCREENSHOTS_ENV = "PHOTOSTORE_SCREENSHOTS_DIR"
UPLOADED_SAMPLES = ("astronaut.png", "coffee.png", "rocket.jpg")
INSTALL_WEIGHTS = "::install-weights::"
NODE_TIMEOUT_S = 180
GATEWAY_TIMEOUT_S = 30

def exif_photo(path: Path) -> Path:
    """A small JPEG with what a camera writes: time taken, make and model, GPS position."""
    image = Image.open(next(p for p in SAMPLE_FILES if p.name == "chelsea.png")).convert("RGB")
    image.thumbnail((320, 320))
    exif = Image.Exif()
    exif[271] = "Canon"  # Make
    exif[272] = "Canon EOS 5D"  # Model
    exif.get_ifd(0x8769)[36867] = "2024:06:01 14:30:00"  # DateTimeOriginal
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.52)  # 48.8582 N
    gps[3], gps[4] = "E", (2.0, 17.0, 40.2)  # 2.2945 E
    image.save(path, "JPEG", exif=exif, quality=85)
    return path


def large_photos(directory: Path) -> tuple[Path, Path]:
    """A 2400 x 1800 HEIC (which browsers cannot show) and a 2000 x 1500 JPEG: both larger than
    their previews."""
    image = Image.open(next(p for p in SAMPLE_FILES if p.name == "astronaut.png")).convert("RGB")
    heic, jpeg = directory / "phone.heic", directory / "wide.jpg"
    image.resize((2400, 1800)).save(heic, "HEIF", quality=80)
    image.resize((2000, 1500)).save(jpeg, "JPEG", quality=85)
    return heic, jpeg


def wait_http(url: str, timeout: float = GATEWAY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def stack(tmp_path, tiny_clip):
    # CLIP alone, whose weights arrive mid-test: the page's "model not ready" and live-indexing
    # states depend on it. The label/OCR signals are tested through the API (tests/e2e).
    s = Stack(tmp_path, tmp_path / "weights" / "tiny.pt", tiny_clip,
              env={"PHOTOSTORE_SIGNALS_ENABLED": "false", "PHOTOSTORE_SEARCH_WEIGHT_KEYWORD": "0",
                   "PHOTOSTORE_SEARCH_MIN_CLIP": "-1", "PHOTOSTORE_SEARCH_MIN_PROBABILITY": "0"})
    s.checkpoint_path.parent.mkdir()
    try:
        s.start_all()
        yield s
        # Clients first, so the servers need not wait out their open streams at shutdown.
        for client in ("gateway", "worker", "search"):
            s.stop(client)
    finally:
        s.stop_all()


def test_web_page_in_chromium(stack, tiny_clip, tmp_path):
    assert NODE and CHROMIUM.exists() and PLAYWRIGHT.exists(), \
        "needs node, /usr/bin/chromium and tools/node_modules/playwright-core: run make install"
    screenshots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    url = f"http://{stack.target('gateway')}"
    wait_http(f"{url}/healthz")
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("these are words, not pixels\n" * 20)
    heic_photo, large_jpeg = large_photos(tmp_path)
    config = {
        "url": url,
        "key": stack.add_user("browser"),
        "emptyKey": stack.add_user("nobody"),
        "photos": [str(p) for p in SAMPLE_FILES if p.name in UPLOADED_SAMPLES],
        "exifPhoto": str(exif_photo(tmp_path / "cat-in-paris.jpg")),
        "notAPhoto": str(not_a_photo),
        "duplicatesKey": stack.add_user("twins"),  # near-duplicates, apart from the others' photos
        "previewKey": stack.add_user("viewer"),
        "heicPhoto": str(heic_photo),
        "largeJpeg": str(large_jpeg),
        "screenshots": str(screenshots),
        "installWeights": INSTALL_WEIGHTS,
    }
    screenshots.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([NODE, "--test", "--test-reporter=spec", str(SCRIPT)], cwd=ROOT,
                            env={**os.environ, "PHOTOSTORE_UI_TEST": json.dumps(config)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(NODE_TIMEOUT_S, proc.kill)
    timer.start()
    output, weights_installed = [], False
    try:
        for line in proc.stdout:
            output.append(line)
            if line.strip() == INSTALL_WEIGHTS:
                stack.install_checkpoint(tiny_clip.checkpoint_path)
                weights_installed = True
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
    log = "".join(output)
    assert returncode == 0, f"node exited with {returncode}:\n{log}\n{stack.logs()}"
    assert weights_installed, log
    shots = {p.stem: Image.open(p).size for p in screenshots.glob("*.png")}
    assert {"sign-in-desktop", "upload-desktop", "search-desktop", "photo-desktop", "upload-phone"} <= set(shots)
    assert all(width >= 320 and height >= 320 for width, height in shots.values()), shots
