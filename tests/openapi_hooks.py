"""schemathesis hooks for tests/test_gateway_openapi.py (loaded by `schemathesis run` through
SCHEMATHESIS_HOOKS): what the OpenAPI document cannot say about realistic data.

- Uploads carry images that decode (a blank one and a 1x1 one, which have no labels and no text,
  and real photos) instead of random bytes, which the services rightly refuse as undecodable.
- GET requests name a photo that exists half of the time, else a random id only ever meets 404.

Choices follow the generated values, so a run is as reproducible as its seed.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import schemathesis

IMAGES = [p.read_bytes() for p in sorted(Path(os.environ["PHOTOSTORE_FUZZ_IMAGES"]).iterdir())]
PHOTO_IDS = os.environ["PHOTOSTORE_FUZZ_PHOTO_IDS"].split(",")


def pick(options: list, seed: object):
    return options[int(hashlib.sha256(repr(seed).encode()).hexdigest(), 16) % len(options)]


@schemathesis.hook
def map_case(context, case):
    if isinstance(case.body, dict) and "file" in case.body:
        files = case.body["file"]
        if isinstance(files, list):
            case.body["file"] = [pick(IMAGES, (i, f)) for i, f in enumerate(files)]
        elif isinstance(files, (bytes, str)):
            case.body["file"] = pick(IMAGES, files)
    photo_id = (case.path_parameters or {}).get("photo_id")
    if isinstance(photo_id, str) and case.method == "GET" and pick([True, False], photo_id):
        case.path_parameters["photo_id"] = pick(PHOTO_IDS, photo_id)
    return case
