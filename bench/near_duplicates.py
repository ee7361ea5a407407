"""Measures the pHash distances that set `near_duplicate_max_distance`.

For each real sample photo (scikit-image and scikit-learn), hashes it the way ingest does (the one
decode of `ingest_svc.imaging.inspect_image`) and compares it with its own edits (re-saved as JPEG
quality 60, resized to 50 %, cropped 2 % and 5 %) and with every other sample:

    .venv/bin/python -m bench.near_duplicates

With --scale N, times what an upload and ListDuplicateGroups cost for an owner of N photos
(embedded metadata store, random hashes, 1 % of them in near-duplicate pairs).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from ingest_svc import imaging
from photostore import duplicates
from photostore.backends.base import PhotoFilter, PhotoRecord
from photostore.backends.sqlite_metadata import SqliteMetadataStore
from tests.photo_samples import SAMPLE_FILES, SKIMAGE_DIR

EXTRA_SAMPLES = [SKIMAGE_DIR / n for n in ("cell.png", "color.png", "gravel.png", "microaneurysms.png",
                                           "motorcycle_right.png", "phantom.png", "chessboard_RGB.png")]


def encoded(img: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, "JPEG", **save)
    return out.getvalue()


def cropped(img: Image.Image, fraction: float) -> Image.Image:
    """`fraction` of the width and of the height cut off, half from each edge."""
    dx, dy = round(img.width * fraction / 2), round(img.height * fraction / 2)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


EDITS = {
    "jpeg q60": lambda img: encoded(img, quality=60),
    "resized 50%": lambda img: encoded(img.resize((img.width // 2, img.height // 2), Image.LANCZOS), quality=90),
    "cropped 2%": lambda img: encoded(cropped(img, 0.02), quality=90),
    "cropped 5%": lambda img: encoded(cropped(img, 0.05), quality=90),
}


def ingest_phash(data: bytes) -> str:
    """The hash ingest stores for these bytes."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        return imaging.inspect_image(f.name, max_pixels=100_000_000, thumbnail_px=256,
                                     model_copy_px=256).phash


def measure(files: list[Path]) -> tuple[dict[str, list[int]], list[int]]:
    hashes, edited = {}, {name: [] for name in EDITS}
    for path in files:
        data = path.read_bytes()
        hashes[path.name] = h = ingest_phash(data)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            for name, edit in EDITS.items():
                edited[name].append(duplicates.distance(h, ingest_phash(edit(img))))
    different = [duplicates.distance(a, b) for a, b in itertools.combinations(hashes.values(), 2)]
    return edited, different


def measure_scale(n: int) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    hashes[1::100] = hashes[0::100][:len(hashes[1::100])] ^ np.uint64(0b101)  # 1 % near pairs
    now = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteMetadataStore(Path(tmp) / "metadata.sqlite3")
        records = []
        for k, h in enumerate(hashes):
            photo_id = uuid.uuid4().hex
            records.append(PhotoRecord(
                id=photo_id, owner="owner", filename=f"{k}.jpg", sha256=f"{k:064x}",
                content_type="image/jpeg", size_bytes=1000, width=640, height=480,
                blob_key=f"originals/owner/{k}", thumbnail_key=f"thumbnails/owner/{photo_id}.jpg",
                created_at=now - dt.timedelta(seconds=k), updated_at=now, phash=f"{int(h):016x}"))
        store.insert_new_photos(records)
        t0 = time.perf_counter()
        facts = store.photo_facts("owner", PhotoFilter())
        t1 = time.perf_counter()
        duplicates.similar_to(facts[0].phash, facts, 10)
        t2 = time.perf_counter()
        groups = duplicates.group(facts, 10)
        t3 = time.perf_counter()
        store.close()
    print(f"{n} photos: photo_facts {1000 * (t1 - t0):.0f} ms, similar_to {1000 * (t2 - t1):.1f} ms, "
          f"group {1000 * (t3 - t2):.0f} ms ({len(groups)} groups)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, nargs="*", help="owner sizes to time")
    args = parser.parse_args()
    if args.scale:
        for n in args.scale:
            measure_scale(n)
        return
    files = [p for p in SAMPLE_FILES + EXTRA_SAMPLES if p.exists()]
    edited, different = measure(files)
    print(f"{len(files)} sample photos, {len(different)} pairs of different photos")
    for name, d in edited.items():
        print(f"  {name:12s} max {max(d):2d}  mean {np.mean(d):5.2f}  p95 {np.percentile(d, 95):5.1f}")
    d = np.array(different)
    print(f"  different    min {d.min():2d}  p1 {np.percentile(d, 1):5.1f}  mean {d.mean():5.2f}")
    for threshold in (6, 8, 10, 12, 14):
        print(f"  pairs of different photos within {threshold:2d}: {(d <= threshold).sum()}")


if __name__ == "__main__":
    main()
