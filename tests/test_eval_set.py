"""The search-quality evaluation manifest (bench/eval_set.json) is complete and consistent.

Reads the manifest only: nothing is downloaded (bench/eval_photos.py fetches the photos on demand).
"""
from __future__ import annotations

import re

from bench import eval_photos

PARTS = {"tune", "held_out"}


def test_manifest_sizes_and_parts():
    manifest = eval_photos.load_manifest()
    assert len(manifest["photos"]) >= 120
    assert len(manifest["queries"]) >= 60
    assert len(manifest["absent"]) >= 10
    for kind in ("queries", "absent"):
        parts = [q["part"] for q in manifest[kind]]
        assert set(parts) == PARTS, kind
        assert abs(parts.count("tune") - parts.count("held_out")) <= 1, kind
    assert {q["query"] for q in eval_photos.queries("held_out")} | {q["query"] for q in eval_photos.queries("tune")} \
        == {q["query"] for q in eval_photos.queries()}


def test_photos_are_named_neutrally_and_uniquely():
    photos = eval_photos.load_manifest()["photos"]
    names = [p["name"] for p in photos]
    assert all(re.fullmatch(r"IMG_\d{4}\.(jpg|png)", n) for n in names)
    assert len(set(names)) == len(names)
    assert len({p["sha256"] for p in photos}) == len(photos)
    assert all(re.fullmatch(r"[0-9a-f]{64}", p["sha256"]) for p in photos)
    assert all(p["description"].strip() for p in photos)


def test_sources_are_pinned_and_allowed():
    for photo in eval_photos.load_manifest()["photos"]:
        source = photo["source"]
        assert source["path"].lower().endswith((".jpg", ".jpeg", ".png"))
        if "deb" in source:
            assert source["deb"] not in eval_photos.FORBIDDEN_DEBS
            assert source["version"] and source["path"].startswith("/usr/share/")
        else:
            assert source["python"] in {"skimage", "sklearn.datasets", "matplotlib"}
    manifest = eval_photos.load_manifest()
    used = {p["source"].get("deb") or p["source"]["python"] for p in manifest["photos"]}
    assert used <= set(manifest["licences"])


def test_queries_name_existing_photos():
    manifest = eval_photos.load_manifest()
    names = {p["name"] for p in manifest["photos"]}
    texts = [q["query"] for q in manifest["queries"]] + [q["query"] for q in manifest["absent"]]
    assert len({t.lower() for t in texts}) == len(texts)
    for query in manifest["queries"]:
        assert query["relevant"], query["query"]
        assert len(set(query["relevant"])) == len(query["relevant"])
        assert set(query["relevant"]) <= names, query["query"]
    assert all("relevant" not in q for q in manifest["absent"])
