"""Search without CLIP weights on real photos (issue 10): the evaluation set of bench/eval_set.json
(139 photos from Debian and PyPI packages, camera-style file names), uploaded through the gRPC API
to a fresh stack. A fixed subset of its held-out queries must find a right photo first through
SearchPhotos, and queries about things absent from the library must find nothing. Then a CLIP
checkpoint the tests make arrives: the fused ranking must do no worse than CLIP alone.

The photos come from the packages' registries (bench/eval_photos.py, cached under
$PHOTOSTORE_EVAL_CACHE or ~/.cache/photostore/eval-photos)."""
from __future__ import annotations

import queue
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from photos.v1 import embed_pb2, ingest_pb2, search_pb2
from photostore.auth import bearer_metadata, service_api_key
from photostore.backends import open_users, open_vectors
from photostore.backends.base import VectorFilter
from tests.e2e.test_hybrid_search import Watch, model_info
from tests.photo_samples import upload

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import eval_photos  # noqa: E402

pytestmark = pytest.mark.timeout(1500)

# Held-out queries (never used to fit the calibration) that the bench ranks right, and absent
# things it returns nothing for (docs/SEARCH.md, figures of bench/retrieval.py).
RIGHT_FIRST = ["a cat", "a squirrel", "boats", "a drum", "a cinema", "a street sign", "a hotel sign",
               "sudoku", "a projector", "copy centre", "a red cup"]
NOTHING = ["a giraffe", "fireworks", "a pizza", "a christmas tree", "a guitar"]


@pytest.fixture(scope="module")
def deployment() -> str:
    """The embedded default only: the scale-out keyword and vector paths have their own tests."""
    return "embedded"


@pytest.fixture(scope="module")
def library(stack):
    """alice's key and photo ids by file name, once every evaluation photo is indexed and read."""
    manifest = eval_photos.load_manifest()
    photos = eval_photos.fetch()
    key = stack.add_user("alice")
    watch = Watch(stack, key)
    ids = {name: upload(stack.ingest, key, path.read_bytes(), name).photo.name for name, path in photos.items()}
    try:
        watch.until_done(list(ids.values()))
    except (AssertionError, queue.Empty):
        print(stack.logs())
        raise
    relevant = {q["query"]: {ids[name] for name in q["relevant"]} for q in manifest["queries"]}
    return key, ids, relevant


def search(stack, key, query: str, **kwargs) -> list:
    return list(stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=50, **kwargs),
                                          metadata=bearer_metadata(key), timeout=60).hits)


@pytest.mark.parametrize("query", RIGHT_FIRST)
def test_a_right_photo_comes_first(stack, library, query):
    key, _, relevant = library
    hits = search(stack, key, query)
    assert hits, f"no hit for {query!r}"
    assert hits[0].photo.name in relevant[query], [(h.photo.filename, round(h.score, 3)) for h in hits[:5]]
    assert not hits[0].signals.HasField("clip")


@pytest.mark.parametrize("query", NOTHING)
def test_a_query_about_nothing_in_the_library_finds_nothing(stack, library, query):
    key, _, _ = library
    hits = search(stack, key, query)
    assert hits == [], [(h.photo.filename, round(h.score, 3), h.photo.labels[:3]) for h in hits[:5]]


def test_with_clip_the_fused_ranking_does_no_worse_than_clip_alone(stack, library, tiny_clip):
    """A checkpoint the tests make (random weights: CLIP alone is at chance here). Every present
    query of the set: top-1 of SearchPhotos against top-1 of CLIP's own ranking of every photo."""
    key, ids, relevant = library
    stack.install_checkpoint(tiny_clip.checkpoint_path)
    deadline = time.monotonic() + 300
    while not model_info(stack, key).ready:
        assert time.monotonic() < deadline and stack.procs["embed"].poll() is None, stack.logs()
        time.sleep(0.2)
    watch = Watch(stack, key)
    names = stack.ingest.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(), metadata=bearer_metadata(key)).names
    assert set(names) == set(ids.values())
    watch.until_done(list(names))

    settings = stack.settings()
    vectors = open_vectors(settings)
    owner = open_users(settings).user_by_name("alice").id
    service = bearer_metadata(service_api_key(settings))
    clip_top1 = fused_top1 = 0
    for query, right in relevant.items():
        embedded = stack.embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[query], encoder=embed_pb2.TEXT_ENCODER_CLIP),
                                         metadata=service, timeout=60)
        ranked = vectors.search(np.asarray(embedded.embeddings[0].values, np.float32), embedded.model,
                                VectorFilter(owner=owner), limit=1)
        clip_top1 += bool(ranked) and f"photos/{ranked[0][0]}" in right
        response = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=1, min_score=0),
                                             metadata=bearer_metadata(key), timeout=60)
        assert embedded.model in response.models
        fused_top1 += bool(response.hits) and response.hits[0].photo.name in right
    assert fused_top1 >= clip_top1, (fused_top1, clip_top1)
