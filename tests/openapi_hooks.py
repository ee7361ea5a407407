"""schemathesis hooks for tests/test_gateway_openapi.py (loaded by `schemathesis run` through
SCHEMATHESIS_HOOKS): what the OpenAPI document cannot say about realistic data.

- Uploads carry images that decode (a blank one and a 1x1 one, which have no labels and no text,
  and real photos) instead of random bytes, which the services rightly refuse as undecodable.
- GET requests name a photo that exists half of the time, else a random id only ever meets 404.

Choices follow the generated values, so a run is as reproducible as its seed.
"""
from __future__ import annotations

import ast
import hashlib
import os
import threading
from pathlib import Path

import schemathesis

# Hypothesis describes filtered strategies by parsing their source with ast.parse, in every worker
# thread. On CPython 3.11 the AST constructor's depth counter is one per interpreter, so two
# parses that interleave (a thread switch during one, e.g. in a garbage collection) corrupt it:
# "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905). One at a time.
_parse, _parse_lock = ast.parse, threading.Lock()


def _one_parse_at_a_time(*args, **kwargs):
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _one_parse_at_a_time

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
