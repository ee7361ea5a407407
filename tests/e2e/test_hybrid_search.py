"""Hybrid search on a fresh install that reaches no model hub: no CLIP weights, so labels, OCR text
and the sentence model carry search; then CLIP weights arrive and ReindexPhotos adds their vectors.
Real processes, real sample photos, the gRPC API."""
from __future__ import annotations

import io
import queue
import threading
import time
from pathlib import Path

import grpc
import pytest
from PIL import Image, ImageDraw, ImageFont

from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from photostore.convert import role_name
from tests.harness import ClipInfo, clip_info
from tests.photo_samples import sample_photos, upload

pytestmark = pytest.mark.timeout(420)

INDEX_TIMEOUT_S = 240
TEXT_PHOTO = "sign.png"
# Query -> the sample photo that must come first.
EXPECTED_FIRST = {
    "a cat": "chelsea.png",
    "a cup of coffee": "coffee.png",
    "an astronaut": "astronaut.png",
    "a rocket": "rocket.jpg",
    "a flower": "flower.jpg",
    "a temple": "china.jpg",
    "a motorcycle": "motorcycle_left.png",
}


def text_photo(text: str = "CAFE ROMA") -> bytes:
    image = Image.new("RGB", (640, 200), "white")
    ImageDraw.Draw(image).text((40, 60), text, fill="black", font=ImageFont.load_default(size=64))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


class Watch:
    """Every change of the caller's photos from now on, collected on a thread."""

    def __init__(self, stack, key: str):
        self.call = stack.ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=bearer_metadata(key),
                                             timeout=INDEX_TIMEOUT_S + 60)
        self.call.initial_metadata()  # live from here on
        self.changes: queue.Queue = queue.Queue()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        try:
            for change in self.call:
                self.changes.put(change)
        except grpc.RpcError:
            pass

    def until_done(self, names, on_change=lambda change: None) -> dict[str, list[ingest_pb2.WatchPhotosResponse]]:
        """Each name's changes up to the one where it is searchable and its text read; fails on a
        FAILED one."""
        pending, seen = set(names), {name: [] for name in names}
        try:
            while pending:
                change = self.changes.get(timeout=INDEX_TIMEOUT_S)
                on_change(change)
                photo = change.photo
                assert photo.status != photo_pb2.PHOTO_STATUS_FAILED, (photo.name, photo.status_reason)
                assert photo.text_state != photo_pb2.STAGE_STATE_FAILED, (photo.name, photo.text_state_reason)
                if photo.name in pending:
                    seen[photo.name].append(change)
                    if photo.status == photo_pb2.PHOTO_STATUS_INDEXED and \
                            photo.text_state != photo_pb2.STAGE_STATE_PENDING:
                        pending.discard(photo.name)
        finally:
            self.call.cancel()
        return seen


@pytest.fixture(scope="module")
def indexing(stack):
    """alice's key and the changes of her photos, once every sample and a photo of a sign are
    indexed without CLIP weights and their text is read."""
    key = stack.add_user("alice")
    photos = {**sample_photos(), TEXT_PHOTO: text_photo()}
    watch = Watch(stack, key)
    names = [upload(stack.ingest, key, data, filename).photo.name for filename, data in photos.items()]
    try:
        return key, watch.until_done(names)
    except (AssertionError, queue.Empty):
        print(stack.logs())
        raise


@pytest.fixture(scope="module")
def alice(indexing):
    return indexing[0]


def test_photos_are_searchable_before_their_text_is_read(indexing):
    _, changes = indexing
    for name, seen in changes.items():
        states = [(c.photo.status, c.photo.text_state) for c in seen]
        searchable = states.index((photo_pb2.PHOTO_STATUS_INDEXED, photo_pb2.STAGE_STATE_PENDING))
        assert states[searchable + 1:] == [(photo_pb2.PHOTO_STATUS_INDEXED, photo_pb2.STAGE_STATE_DONE)], states
        assert seen[searchable].photo.labels or seen[searchable].photo.filename != "chelsea.png"
        assert seen[searchable].photo.ocr_text == ""


def search(stack, key, query: str, **kwargs) -> search_pb2.SearchPhotosResponse:
    return stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, **kwargs),
                                     metadata=bearer_metadata(key), timeout=60)


def model_info(stack, key) -> ClipInfo:
    return clip_info(stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key)))


def test_photos_are_indexed_with_labels_and_ocr_text_but_no_clip(stack, alice):
    info = model_info(stack, alice)
    assert not info.ready and "tiny.pt" in info.reason
    text_model = next(m.model for m in info.models if m.role == embed_pb2.MODEL_ROLE_SENTENCE)
    photos = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=100),
                                     metadata=bearer_metadata(alice)).photos
    assert {p.status for p in photos} == {photo_pb2.PHOTO_STATUS_INDEXED}
    assert all(list(p.embedding_models) == [text_model] for p in photos)
    by_file = {p.filename: p for p in photos}
    assert "ROMA" in by_file[TEXT_PHOTO].ocr_text.upper()
    assert any("cat" in label.text for label in by_file["chelsea.png"].labels)


@pytest.mark.parametrize("query, filename", EXPECTED_FIRST.items())
def test_the_right_photo_comes_first(stack, alice, query, filename):
    # The ranking, every candidate: the calibrated cut-off may leave out a weak match ("a temple":
    # the labels say palace and monastery; tests/e2e/test_search_quality.py checks the cut-off).
    response = search(stack, alice, query, min_score=0)
    assert response.hits, f"no hits for {query!r}"
    top = response.hits[0]
    assert top.photo.filename == filename, [(h.photo.filename, round(h.score, 3)) for h in response.hits[:5]]
    assert top.signals.HasField("text") and not top.signals.HasField("clip")
    assert top.photo.labels  # why it matched travels with the hit


def test_words_in_a_photo_find_it(stack, alice):
    top = search(stack, alice, "roma").hits[0]
    assert top.photo.filename == TEXT_PHOTO
    assert list(top.matched_terms) == ["roma"] and top.signals.keyword == 1.0
    assert "ROMA" in top.photo.ocr_text.upper()


def test_nonsense_finds_little_or_nothing(stack, alice):
    hits = search(stack, alice, "zebra crossing underwater").hits
    assert len(hits) <= 3, [(h.photo.filename, h.score) for h in hits]
    assert len(search(stack, alice, "a cat").hits) < len(sample_photos())


def test_clip_weights_arrive_and_reindex_adds_their_vectors(stack, alice, tiny_clip):
    stack.install_checkpoint(tiny_clip.checkpoint_path)
    while not (info := model_info(stack, alice)).ready:
        assert stack.procs["embed"].poll() is None, stack.logs()
        time.sleep(0.2)
    models = {role_name(m.role): m.model for m in info.models}
    everything = {p.name for p in stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=100),
                                                          metadata=bearer_metadata(alice)).photos}

    watch = Watch(stack, alice)
    response = stack.ingest.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(), metadata=bearer_metadata(alice))
    assert set(response.names) == everything
    assert list(response.models) == [models["clip"], models["sentence"]]

    answers = []

    def search_meanwhile(change) -> None:  # photos stay searchable while they are reindexed
        answers.append(search(stack, alice, "roma").hits[0].photo.filename)

    done = watch.until_done(response.names, on_change=search_meanwhile)
    assert answers and set(answers) == {TEXT_PHOTO}
    for seen in done.values():
        assert list(seen[-1].photo.embedding_models) == [models["clip"], models["sentence"]]

    # Up to date now: nothing left to reindex; the hits carry both vector signals.
    again = stack.ingest.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(), metadata=bearer_metadata(alice))
    assert list(again.names) == []
    response = search(stack, alice, "roma", min_score=-1)
    assert list(response.models) == [models["clip"], models["sentence"]]
    assert response.hits[0].photo.filename == TEXT_PHOTO


def test_no_process_loads_torch_on_the_default_backends(stack, alice):
    """The models run on OpenVINO and ONNX Runtime, exported by a subprocess: torch is mapped in no
    service, the embed service included (CLIP is loaded by now)."""
    assert model_info(stack, alice).ready
    for name, proc in stack.procs.items():
        assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text(), name
