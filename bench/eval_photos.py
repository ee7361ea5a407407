"""The evaluation photos and queries for search quality (bench/eval_set.json).

  .venv/bin/python bench/eval_photos.py [--cache DIR]

The manifest lists real photographs from pinned Debian packages and from the sample data of Python
packages installed in the venv (scikit-image, scikit-learn), each with its sha256 and a one-sentence
description, and the queries a person would type with every photo that answers them. fetch() brings
the photos into a cache under neutral camera-style names (IMG_0001.jpg, ...) so that no file name
gives away a query: each .deb is downloaded once with `apt-get download PKG=VERSION`, only the
listed members are extracted, and every file is checked against its sha256. The photos are never
committed; the cache defaults to $PHOTOSTORE_EVAL_CACHE or ~/.cache/photostore/eval-photos.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections import defaultdict
from pathlib import Path

MANIFEST = Path(__file__).with_name("eval_set.json")
# Photos of these packages are kept apart for an independent evaluation: never use them here.
FORBIDDEN_DEBS = frozenset({"darknet", "mate-backgrounds", "ukui-wallpapers"})


def default_cache_dir() -> Path:
    env = os.environ.get("PHOTOSTORE_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "photostore" / "eval-photos"


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def queries(part: str | None = None) -> list[dict]:
    """The queries about things in the photos ({query, relevant, part}), of one part or all."""
    return [q for q in load_manifest()["queries"] if part is None or q["part"] == part]


def absent_queries(part: str | None = None) -> list[dict]:
    """The queries about things in no photo ({query, part}), of one part or all."""
    return [q for q in load_manifest()["absent"] if part is None or q["part"] == part]


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch(cache_dir: Path | None = None) -> dict[str, Path]:
    """Every photo of the manifest in the cache: camera-style name -> local file (verified)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    photos_dir = cache / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    missing = [p for p in manifest["photos"]
               if not (photos_dir / p["name"]).exists() or sha256_of(photos_dir / p["name"]) != p["sha256"]]
    by_deb: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for photo in missing:
        source = photo["source"]
        if "deb" in source:
            by_deb[(source["deb"], source["version"])].append(photo)
        else:
            _install(_python_file(source), photos_dir, photo)
    for (package, version), photos in by_deb.items():
        _extract(_deb_file(cache / "debs", package, version), photos_dir, photos)
    return {p["name"]: photos_dir / p["name"] for p in manifest["photos"]}


def _python_file(source: dict) -> Path:
    spec = importlib.util.find_spec(source["python"])
    if spec is None or spec.origin is None:
        raise RuntimeError(f"Python package {source['python']} is not installed in this environment")
    return Path(spec.origin).parent / source["path"]


def _install(src: Path, photos_dir: Path, photo: dict) -> None:
    """Copies `src` into the cache as the photo's name after checking its sha256."""
    if sha256_of(src) != photo["sha256"]:
        raise RuntimeError(f"{src} does not match the sha256 of {photo['name']} in {MANIFEST.name}")
    tmp = photos_dir / (photo["name"] + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(photos_dir / photo["name"])


def _deb_file(debs_dir: Path, package: str, version: str) -> Path:
    """The cached .deb of package=version, downloaded with apt-get on first use."""
    if package in FORBIDDEN_DEBS:
        raise RuntimeError(f"{package} is kept for independent evaluation and must not be used")
    debs_dir.mkdir(parents=True, exist_ok=True)
    # apt names the file PKG_VERSION_ARCH.deb with the epoch's ':' written as %3a
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = sorted(debs_dir.glob(pattern))
    if found:
        return found[0]
    command = ["apt-get", "download", f"{package}={version}"]
    result = subprocess.run(command, cwd=debs_dir, capture_output=True, text=True)
    if result.returncode != 0 and os.geteuid() == 0:
        # a fresh machine has no package lists yet: fetch them once and retry
        subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        result = subprocess.run(command, cwd=debs_dir, capture_output=True, text=True)
    found = sorted(debs_dir.glob(pattern))
    if result.returncode != 0 or not found:
        raise RuntimeError(
            f"could not download {package}={version}: {result.stderr.strip()}\n"
            f"Run `apt-get update` (as root), then `cd {debs_dir} && apt-get download {package}={version}`.")
    return found[0]


def _extract(deb: Path, photos_dir: Path, photos: list[dict]) -> None:
    """Extracts the photos' members from the .deb in one pass and checks each sha256."""
    wanted = {p["source"]["path"].lstrip("/"): p for p in photos}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                photo = wanted.pop(member.name.removeprefix("./"), None)
                if photo is None:
                    continue
                if not member.isfile():
                    raise RuntimeError(f"{member.name} in {deb.name} is not a regular file")
                tmp = photos_dir / (photo["name"] + ".part")
                with tar.extractfile(member) as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if sha256_of(tmp) != photo["sha256"]:
                    tmp.unlink()
                    raise RuntimeError(f"{member.name} in {deb.name} does not match the sha256 of {photo['name']}")
                tmp.replace(photos_dir / photo["name"])
                if not wanted:
                    break
    finally:
        proc.stdout.close()
        proc.kill()  # stops dpkg-deb early once every member was found; no-op after it exited
        proc.wait()
    if wanted:
        raise RuntimeError(f"{deb.name} lacks {sorted(wanted)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: $PHOTOSTORE_EVAL_CACHE or ~/.cache/photostore/eval-photos)")
    args = parser.parse_args()
    started = time.monotonic()
    photos = fetch(args.cache)
    total = sum(p.stat().st_size for p in photos.values())
    folder = next(iter(photos.values())).parent
    print(f"{len(photos)} photos ({total / 1e6:.1f} MB) in {folder}, ready in {time.monotonic() - started:.1f} s")
    print(f"{len(queries())} queries ({len(queries('tune'))} tune, {len(queries('held_out'))} held_out), "
          f"{len(absent_queries())} absent")


if __name__ == "__main__":
    sys.exit(main())
