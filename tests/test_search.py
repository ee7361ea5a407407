"""SearchService in-process with the real IngestService and EmbedService (tiny random-weight CLIP and
the packaged sentence model, OCR off): vectors of known cosine to the query are written straight
into both vector spaces and keyword text into the rows, and every ranking is checked against the
fusion formula of docs/SEARCH.md computed here with numpy."""
from __future__ import annotations

import dataclasses
import datetime as dt
import io
import threading
import time

import grpc
import numpy as np
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image
from prometheus_client import REGISTRY

from embed_svc.server import serve as serve_embed
from ingest_svc.server import serve as serve_ingest
from photos.v1 import embed_pb2, embed_pb2_grpc, search_pb2, search_pb2_grpc
from photostore.auth import bearer_metadata
from photostore.backends import open_metadata, open_vectors
from photostore.backends.base import SPACE_CLIP, SPACE_TEXT, STATUS_INDEXED, PhotoRecord, VectorObject, utcnow
from photostore.server import GrpcService
from photostore.settings import Settings
from search_svc.server import serve as serve_search
from search_svc import query_filters
from search_svc.calibration import Calibration
from search_svc.calibration import features as calibration_features
from search_svc.service import keyword_terms
from tests.harness import add_user, service_auth
from tests.stack import free_port
from tests.tinyclip import tiny_settings, write_tiny_checkpoint

pytestmark = pytest.mark.timeout(180)

UTC = dt.timezone.utc
QUERY = "a cat asleep on a red sofa"
TERMS = ["cat", "asleep", "red", "sofa"]
PHOTOS_PER_USER = 40
CAMERAS = [("Canon", "EOS R5"), ("FUJIFILM", "X-T4"), ("", "")]
DEFAULTS = Settings()
WEIGHTS = {"clip": DEFAULTS.search_weight_clip, "text": DEFAULTS.search_weight_text,
           "keyword": DEFAULTS.search_weight_keyword}
CUTOFFS = {"clip": DEFAULTS.search_min_clip, "text": DEFAULTS.search_min_text}
CALIBRATION = Calibration.load()
# Keyword text of some photos (filename, labels, OCR text) and the words of it found: the query's
# terms, then their expansions (search_svc/lexicon.py: plurals, "couch" for sofa, "tabby" for cat).
KEYWORD_TEXT = {
    "alice00": ("cat.jpg", [], "", ["cat"]),
    "alice01": ("alice01.jpg", [("studio couch", 0.6)], "RED SOFA", ["red", "sofa", "couch"]),
    "alice02": ("red_cat.png", [("tabby", 0.7)], "Asleep", ["cat", "asleep", "red", "tabby"]),
    "alice03": ("cats.jpg", [("sofas", 0.5)], "", ["cats", "sofas"]),
    "bob00": ("cat.jpg", [], "", ["cat"]),
}
# How many of the query's terms those words stand for.
TERMS_FOUND = {"alice00": 1, "alice01": 2, "alice02": 3, "alice03": 2, "bob00": 1}


@dataclasses.dataclass
class Photo:
    id: str
    owner: str
    clip: np.ndarray | None
    text: np.ndarray | None
    taken_at: dt.datetime | None
    camera_make: str
    camera_model: str
    matched: list[str]

    @property
    def name(self) -> str:
        return f"photos/{self.id}"


@dataclasses.dataclass
class Stack:
    search: search_pb2_grpc.SearchServiceStub
    embed: embed_pb2_grpc.EmbedServiceStub
    models: dict[str, str]  # signal -> model id
    queries: dict[str, np.ndarray]  # signal -> query vector
    alice: list
    bob: list
    photos: dict[str, Photo]  # by id, both users
    unindexed: Photo
    deleted: Photo
    alice_id: str
    bob_id: str
    settings: Settings
    ports: dict[str, int]

    def owned_by(self, owner: str) -> list[Photo]:
        return [p for p in self.photos.values() if p.owner == owner]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def with_cosine(query: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector `query` is `cosine`."""
    other = rng.normal(size=query.size)
    other = unit(other - (other @ query) * query)
    return unit(cosine * query + np.sqrt(1 - cosine ** 2) * other)


def record(photo: Photo, filename: str, labels, ocr_text: str) -> PhotoRecord:
    now = utcnow()
    return PhotoRecord(id=photo.id, owner=photo.owner, filename=filename, sha256=photo.id.ljust(64, "0"),
                       content_type="image/jpeg", size_bytes=100, width=64, height=48,
                       blob_key=f"originals/{photo.owner}/{photo.id}", thumbnail_key=f"thumbnails/{photo.id}",
                       created_at=now, updated_at=now, taken_at=photo.taken_at,
                       camera_make=photo.camera_make, camera_model=photo.camera_model, status=STATUS_INDEXED,
                       labels=labels, ocr_text=ocr_text)


def expected_hits(stack: Stack, photos: list[Photo], available=("clip", "text", "keyword"),
                  min_score: float = 0.0, limit: int = 200, unfiltered: bool = False
                  ) -> list[tuple[str, float, dict, list]]:
    """(name, probability, signals, matched terms) best first, as docs/SEARCH.md describes: photos
    at or above one signal's cut-off (or matching a word) are candidates, each scored by every
    available signal, and the calibration turns those scores into the probability. In an unfiltered
    search of alice's, her deleted photo's lingering vectors are candidates too (they set the best
    scores), never hits."""
    candidates = {}
    lingering = [stack.deleted] if unfiltered and stack.deleted.owner == photos[0].owner else []
    for p in photos + lingering:
        signals = {signal: float(vector @ stack.queries[signal])
                   for signal, vector in (("clip", p.clip), ("text", p.text))
                   if signal in available and vector is not None}
        if "keyword" in available and p.matched:
            signals["keyword"] = TERMS_FOUND[p.id] / len(TERMS)
        if "keyword" in signals or any(signals[s] >= CUTOFFS[s] for s in ("clip", "text") if s in signals):
            candidates[p.id] = (p, signals)
    best = {s: max((signals[s] for _, signals in candidates.values() if s in signals), default=0.0)
            for s in available}
    hits = []
    for p, signals in candidates.values():
        if p in lingering:
            continue
        # Judged by the signals it has a score of (a photo without a text vector: CLIP and keywords).
        has = [s for s in available if s == "keyword" or s in signals]
        probability = CALIBRATION.probability(calibration_features(signals, best, has), has, WEIGHTS)
        if probability >= min_score:
            hits.append((p.name, probability, signals, p.matched))
    return sorted(hits, key=lambda h: (-h[1], h[0]))[:limit]


def actual_hits(response) -> list[tuple[str, float, dict, list]]:
    return [(h.photo.name, h.score,
             {s: getattr(h.signals, s) for s in ("clip", "text", "keyword") if h.signals.HasField(s)},
             list(h.matched_terms)) for h in response.hits]


def assert_same_hits(actual, expected) -> None:
    assert [h[0] for h in actual] == [h[0] for h in expected]
    np.testing.assert_allclose([h[1] for h in actual], [h[1] for h in expected], atol=1e-5)
    for got, want in zip(actual, expected):
        assert got[2].keys() == want[2].keys(), got[0]
        np.testing.assert_allclose(list(got[2].values()), list(want[2].values()), atol=1e-5)
        assert got[3] == want[3]


def wait_until_ready(embed: embed_pb2_grpc.EmbedServiceStub, auth) -> embed_pb2.GetModelInfoResponse:
    deadline = time.monotonic() + 120
    while True:
        info = embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=auth)
        if {m.role for m in info.models if m.ready} >= {
                embed_pb2.MODEL_ROLE_CLIP, embed_pb2.MODEL_ROLE_LABELS, embed_pb2.MODEL_ROLE_SENTENCE}:
            return info
        assert time.monotonic() < deadline, f"models not ready: {info}"
        time.sleep(0.1)


def start_search(settings: Settings, embed_port: int, ingest_port: int) -> GrpcService:
    # The tests change places and makes in the store under the service: none may be read stale.
    # They compare whole rankings of candidates: no default cut-off on the probability.
    return serve_search(settings.model_copy(update={"embed_target": f"127.0.0.1:{embed_port}",
                                                    "ingest_target": f"127.0.0.1:{ingest_port}",
                                                    "search_vocabulary_seconds": 0,
                                                    "search_min_probability": 0.0}), 0)


def query_vector(embed, auth, encoder) -> tuple[np.ndarray, str]:
    response = embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[QUERY], encoder=encoder), metadata=auth)
    return np.asarray(response.embeddings[0].values, np.float32), response.model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def stack(tiny, tmp_path_factory):
    settings = tiny_settings(tiny, tmp_path_factory.mktemp("data"), ocr_enabled=False)
    metadata = open_metadata(settings)
    keys, ids = {}, {}
    for name in ("alice", "bob"):
        ids[name], key = add_user(settings, name)
        keys[name] = bearer_metadata(key)

    ingest_server = serve_ingest(settings, port=0)
    settings = settings.model_copy(update={"ingest_target": f"127.0.0.1:{ingest_server.port}"})
    embed_server = serve_embed(settings, port=0)
    search_server = start_search(settings, embed_server.port, ingest_server.port)
    channels = [grpc.insecure_channel(f"127.0.0.1:{search_server.port}"),
                grpc.insecure_channel(f"127.0.0.1:{embed_server.port}")]
    embed = embed_pb2_grpc.EmbedServiceStub(channels[-1])
    wait_until_ready(embed, keys["alice"])
    queries, models = {}, {}
    for signal, encoder in (("clip", embed_pb2.TEXT_ENCODER_CLIP), ("text", embed_pb2.TEXT_ENCODER_SENTENCE)):
        queries[signal], models[signal] = query_vector(embed, service_auth(settings), encoder)

    # Vectors of known cosine to the query in each space, some photos with one space only; for bob
    # one equal to the query, so a leak would top alice's list.
    rng = np.random.default_rng(7)
    photos: dict[str, Photo] = {}
    for owner in ("alice", "bob"):
        for i in range(PHOTOS_PER_USER):
            pid = f"{owner}{i:02d}"
            make, camera = CAMERAS[i % len(CAMERAS)]
            taken = dt.datetime(2020 + i % 4, 1 + i % 12, 10, tzinfo=UTC) if i % 5 else None
            clip = with_cosine(queries["clip"], rng.uniform(-0.3, 0.9), rng) if i % 7 != 3 else None
            text = with_cosine(queries["text"], rng.uniform(-0.1, 0.8), rng) if i % 7 != 5 else None
            if pid == "bob00":
                clip, text = queries["clip"], queries["text"]
            matched = KEYWORD_TEXT.get(pid, ("", [], "", []))[3]
            photos[pid] = Photo(pid, ids[owner], clip, text, taken, make, camera, matched)
    unindexed = Photo("alice-new", ids["alice"], None, None, None, "", "", [])
    deleted = Photo("alice-gone", ids["alice"], queries["clip"], queries["text"], None, "", "", [])
    for photo in [*photos.values(), unindexed, deleted]:
        filename, labels, ocr_text, _ = KEYWORD_TEXT.get(photo.id, (f"{photo.id}.jpg", [], "", []))
        metadata.insert_photo(record(photo, filename, labels, ocr_text), request_id=photo.id)
    vectors = open_vectors(settings)
    for photo in [*photos.values(), deleted]:
        filename, labels, ocr_text, _ = KEYWORD_TEXT.get(photo.id, (f"{photo.id}.jpg", [], "", []))
        keywords = " ".join([filename, *(label for label, _ in labels), ocr_text])
        for space, signal, vector in ((SPACE_CLIP, "clip", photo.clip), (SPACE_TEXT, "text", photo.text)):
            if vector is not None:
                vectors.upsert(VectorObject(photo.id, photo.owner, models[signal], vector, photo.taken_at,
                                            photo.camera_make, photo.camera_model, space=space,
                                            keywords=keywords))
    metadata.delete_photo(deleted.id)  # its vectors linger, as after a delete racing the worker

    servers = [search_server, ingest_server, embed_server]
    try:
        yield Stack(search_pb2_grpc.SearchServiceStub(channels[0]), embed, models, queries,
                    keys["alice"], keys["bob"], photos, unindexed, deleted, ids["alice"], ids["bob"],
                    settings, {"embed": embed_server.port, "ingest": ingest_server.port})
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop()


def search(stack: Stack, auth=None, stub=None, **kwargs) -> search_pb2.SearchPhotosResponse:
    return (stub or stack.search).SearchPhotos(search_pb2.SearchPhotosRequest(**{"query": QUERY, **kwargs}),
                                               metadata=auth or stack.alice, timeout=30)


def similar(stack: Stack, auth=None, **kwargs) -> search_pb2.FindSimilarResponse:
    return stack.search.FindSimilar(search_pb2.FindSimilarRequest(**kwargs), metadata=auth or stack.alice,
                                    timeout=30)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


def ts(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


# SearchPhotos ---------------------------------------------------------------------------------

def test_keyword_terms_drop_stopwords_and_repeats():
    assert keyword_terms(QUERY) == TERMS
    assert keyword_terms("A photo of the CAFE-Roma, cafe roma!") == ["cafe", "roma"]
    assert keyword_terms("the of a") == []


def test_ranking_is_the_documented_fusion_of_the_callers_photos(stack):
    response = search(stack, page_size=200)
    assert list(response.models) == [stack.models['clip'], stack.models['text']]
    expected = expected_hits(stack, stack.owned_by(stack.alice_id), unfiltered=True)
    # Every kind of hit is there: all three signals, one signal only, and keyword only.
    assert {frozenset(h[2]) for h in expected} >= {frozenset({"clip", "text", "keyword"}),
                                                   frozenset({"clip"}), frozenset({"text"})}
    assert_same_hits(actual_hits(response), expected)
    assert {h.photo.owner for h in response.hits} == {f"users/{stack.alice_id}"}
    assert stack.deleted.name not in {h.photo.name for h in response.hits}


def test_photos_below_every_cut_off_are_left_out(stack):
    names = {h.photo.name for h in search(stack, page_size=200).hits}
    below = [p for p in stack.owned_by(stack.alice_id) if not p.matched
             and (p.clip is None or p.clip @ stack.queries["clip"] < CUTOFFS["clip"])
             and (p.text is None or p.text @ stack.queries["text"] < CUTOFFS["text"])]
    assert len(below) >= 3
    assert not names & {p.name for p in below}


def test_page_size_defaults_to_20_and_deleted_photos_are_made_up_for(stack):
    expected = expected_hits(stack, stack.owned_by(stack.alice_id), unfiltered=True)
    assert len(expected) > 20
    assert_same_hits(actual_hits(search(stack, page_size=3)), expected[:3])
    assert_same_hits(actual_hits(search(stack)), expected[:20])


def test_min_score_applies_to_the_fused_score(stack):
    scores = [h[1] for h in expected_hits(stack, stack.owned_by(stack.alice_id), unfiltered=True)]
    threshold = (scores[5] + scores[6]) / 2
    expected = expected_hits(stack, stack.owned_by(stack.alice_id), min_score=threshold, unfiltered=True)
    assert len(expected) == 6
    assert_same_hits(actual_hits(search(stack, min_score=threshold)), expected)


def test_by_default_hits_below_the_calibrated_threshold_are_left_out(stack):
    settings = stack.settings.model_copy(update={"search_min_probability": None})
    server = serve_search(settings.model_copy(update={"embed_target": f"127.0.0.1:{stack.ports['embed']}",
                                                      "ingest_target": f"127.0.0.1:{stack.ports['ingest']}"}), 0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        every = expected_hits(stack, stack.owned_by(stack.alice_id), unfiltered=True)
        expected = expected_hits(stack, stack.owned_by(stack.alice_id), min_score=CALIBRATION.threshold,
                                 unfiltered=True)
        assert 0 < len(expected) < len(every)
        stub = search_pb2_grpc.SearchServiceStub(channel)
        assert_same_hits(actual_hits(search(stack, stub=stub, page_size=200)), expected)
        # A request's min_score replaces the default.
        assert_same_hits(actual_hits(search(stack, stub=stub, page_size=200, min_score=0)), every)
    finally:
        channel.close()
        server.stop()


def test_each_user_sees_only_their_own_photos(stack):
    bobs = search(stack, auth=stack.bob, page_size=200)
    assert_same_hits(actual_hits(bobs), expected_hits(stack, stack.owned_by(stack.bob_id)))
    top = bobs.hits[0]
    assert top.photo.name == "photos/bob00" and top.matched_terms == ["cat"]
    assert top.signals.clip == pytest.approx(1.0, abs=1e-5) and top.signals.text == pytest.approx(1.0, abs=1e-5)
    alices = search(stack, page_size=200)
    assert not {h.photo.name for h in alices.hits} & {h.photo.name for h in bobs.hits}


def test_date_filter_is_inclusive_start_exclusive_end_for_every_signal(stack):
    start, end = dt.datetime(2021, 1, 1, tzinfo=UTC), dt.datetime(2022, 12, 31, tzinfo=UTC)
    inside = [p for p in stack.owned_by(stack.alice_id) if p.taken_at and start <= p.taken_at < end]
    assert 0 < len(inside) < PHOTOS_PER_USER
    assert any(p.matched for p in inside) and any(p.matched for p in stack.owned_by(stack.alice_id)
                                                  if p not in inside)
    response = search(stack, page_size=200, filter=search_pb2.SearchFilter(start_time=ts(start), end_time=ts(end)))
    assert_same_hits(actual_hits(response), expected_hits(stack, inside))


def test_camera_filter_ignores_case(stack):
    canon = [p for p in stack.owned_by(stack.alice_id) if p.camera_make == "Canon"]
    response = search(stack, page_size=200, filter=search_pb2.SearchFilter(camera_make="canon"))
    assert_same_hits(actual_hits(response), expected_hits(stack, canon))
    response = search(stack, page_size=200, filter=search_pb2.SearchFilter(camera_make="FUJIFILM",
                                                                           camera_model="x-t4"))
    assert_same_hits(actual_hits(response), expected_hits(
        stack, [p for p in stack.owned_by(stack.alice_id) if p.camera_model == "X-T4"]))


def test_favourite_and_place_filters_score_exactly_the_photos_they_let_through(stack):
    """Filters only the ingest service knows: the photos they allow are resolved through it and all
    scored, with the same fusion as unfiltered."""
    metadata = open_metadata(stack.settings)
    alices = stack.owned_by(stack.alice_id)
    favourites, in_lyon = alices[1:12:3], alices[2:30:4]
    try:
        for photo in favourites:
            metadata.update_photo(photo.id, favorite=True)
        for photo in in_lyon:
            metadata.update_photo(photo.id, place_city="Lyon", place_region="Auvergne-Rhone-Alpes",
                                  place_country="France", place_country_code="FR")
        response = search(stack, page_size=200, filter=search_pb2.SearchFilter(favorite=True))
        assert_same_hits(actual_hits(response), expected_hits(stack, favourites))
        response = search(stack, page_size=200, filter=search_pb2.SearchFilter(place="fr"))
        assert_same_hits(actual_hits(response), expected_hits(stack, in_lyon))
        # A place word of the library is read from the query as the same filter.
        response = search(stack, page_size=200, query=f"Lyon {QUERY}")
        assert response.query_filter == search_pb2.SearchFilter(place="Lyon")
        assert_same_hits(actual_hits(response), expected_hits(stack, in_lyon))
    finally:
        for photo in alices:
            metadata.update_photo(photo.id, favorite=False, place_city="", place_region="", place_country="",
                                  place_country_code="")
        metadata.close()


@pytest.mark.parametrize("request_fields, field", [
    ({"query": "   "}, "query"),
    ({"page_size": -1}, "page_size"),
    ({"min_score": 1.5}, "min_score"),
])
def test_bad_requests_are_invalid_argument(stack, request_fields, field):
    err = rpc_error(search, stack, **request_fields)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = next(d for d in rpc_status.from_call(err).details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    violations = error_details_pb2.BadRequest()
    bad.Unpack(violations)
    assert violations.field_violations[0].field == field


def test_a_key_is_required(stack):
    err = rpc_error(stack.search.SearchPhotos, search_pb2.SearchPhotosRequest(query=QUERY))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_without_the_embed_service_keywords_still_answer_and_no_signal_is_unavailable(stack):
    """Search pointed at an EmbedService that is not there: only the keyword signal is left."""
    server = start_search(stack.settings, free_port(), stack.ports["ingest"])
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        response = search(stack, stub=stub, page_size=200)
        assert list(response.models) == []
        assert_same_hits(actual_hits(response), expected_hits(stack, stack.owned_by(stack.alice_id),
                                                              available=("keyword",), unfiltered=True))
        assert [h.photo.name for h in response.hits][0] == "photos/alice02"  # 3 of 4 words

        err = rpc_error(search, stack, stub=stub, query="the of a")
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(err)
        assert info.reason == "NO_SIGNAL_AVAILABLE" and set(info.metadata) == {"clip", "text", "keyword"}
    finally:
        channel.close()
        server.stop()


def test_an_idle_search_service_keeps_its_path_warm_and_answers_as_before(stack):
    settings = stack.settings.model_copy(update={"search_keep_warm_seconds": 0.3})
    server = start_search(settings, stack.ports["embed"], stack.ports["ingest"])
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        first = actual_hits(search(stack, stub=stub))  # alice is the last caller
        warmed = REGISTRY.get_sample_value("search_kept_warm_total") or 0.0
        deadline = time.monotonic() + 60
        while (REGISTRY.get_sample_value("search_kept_warm_total") or 0.0) < warmed + 2:
            assert time.monotonic() < deadline, "no internal query while idle"
            time.sleep(0.05)
        assert actual_hits(search(stack, stub=stub)) == first == actual_hits(search(stack))
    finally:
        channel.close()
        server.stop()


# FindSimilar ----------------------------------------------------------------------------------

def cosine_ranking(photos: list[Photo], space: str, query: np.ndarray, limit: int = 200):
    scored = [(p.name, float(getattr(p, space) @ query)) for p in photos if getattr(p, space) is not None]
    return sorted(scored, key=lambda s: -s[1])[:limit]


def assert_same_ranking(actual: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [name for name, _ in actual] == [name for name, _ in expected]
    np.testing.assert_allclose([s for _, s in actual], [s for _, s in expected], atol=1e-5)


def ranking(response) -> list[tuple[str, float]]:
    return [(h.photo.name, h.score) for h in response.hits]


def test_find_similar_by_name_ranks_by_clip_and_returns_the_photo_first(stack):
    photo = stack.photos["alice01"]
    response = similar(stack, name=photo.name, min_score=-1, page_size=200)
    assert response.hits[0].photo.name == photo.name
    assert response.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert list(response.models) == [stack.models["clip"]]
    assert all(h.signals.HasField("clip") and not h.signals.HasField("text") for h in response.hits)
    assert_same_ranking(ranking(response), cosine_ranking(stack.owned_by(stack.alice_id), "clip", photo.clip))


def test_find_similar_of_a_photo_without_a_clip_vector_uses_the_text_space(stack):
    photo = stack.photos["alice03"]
    assert photo.clip is None and photo.text is not None
    response = similar(stack, name=photo.name, min_score=-1, page_size=200)
    assert list(response.models) == [stack.models["text"]]
    assert response.hits[0].photo.name == photo.name
    assert response.hits[0].signals.text == pytest.approx(1.0, abs=1e-5)
    assert_same_ranking(ranking(response), cosine_ranking(stack.owned_by(stack.alice_id), "text", photo.text))


def test_find_similar_by_image_embeds_the_bytes(stack):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buf, "PNG")
    embedded = stack.embed.EmbedImages(embed_pb2.EmbedImagesRequest(images=[buf.getvalue()]),
                                       metadata=service_auth(stack.settings))
    vector = np.asarray(embedded.embeddings[0].values, np.float32)
    response = similar(stack, image=buf.getvalue(), min_score=-1, page_size=5)
    assert_same_ranking(ranking(response), cosine_ranking(stack.owned_by(stack.alice_id), "clip", vector, 5))


def test_find_similar_of_a_foreign_or_unknown_photo_is_not_found(stack):
    for name in (stack.photos["bob01"].name, "photos/nope"):
        assert rpc_error(similar, stack, name=name).code() == grpc.StatusCode.NOT_FOUND


def test_find_similar_of_a_photo_not_indexed_yet_fails_precondition(stack):
    err = rpc_error(similar, stack, name=stack.unindexed.name)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "photo is not indexed yet"
    info = error_info(err)
    assert info.reason == "PHOTO_NOT_INDEXED" and info.metadata["name"] == stack.unindexed.name


def test_find_similar_needs_a_source(stack):
    assert rpc_error(similar, stack).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert rpc_error(similar, stack, name="not-a-name").code() == grpc.StatusCode.INVALID_ARGUMENT


def test_find_similar_of_an_undecodable_image_passes_on_the_embed_error(stack):
    err = rpc_error(similar, stack, image=b"not an image")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err).reason == "IMAGE_UNDECODABLE"


def test_pages_of_a_search_follow_one_another_and_tokens_are_bound_to_the_query(stack):
    everything = search(stack, page_size=200)
    assert len(everything.hits) > 10 and not everything.next_page_token
    names, token = [], ""
    while True:
        page = search(stack, page_size=7, page_token=token)
        assert len(page.hits) <= 7
        names += [h.photo.name for h in page.hits]
        token = page.next_page_token
        if not token:
            break
    assert names == [h.photo.name for h in everything.hits]

    first = search(stack, page_size=5)
    err = rpc_error(search, stack, query="another query", page_size=5, page_token=first.next_page_token)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err).reason == "PAGE_TOKEN_MISMATCH"
    err = rpc_error(search, stack, page_size=5, page_token=first.next_page_token[:-4] + "AAAA")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err).reason == "INVALID_PAGE_TOKEN"


def test_pages_of_similar_photos(stack):
    source = next(p for p in stack.owned_by(stack.alice_id) if p.clip is not None)
    everything = similar(stack, name=source.name, page_size=200)
    names, token = [], ""
    while True:
        page = similar(stack, name=source.name, page_size=6, page_token=token)
        names += [h.photo.name for h in page.hits]
        if not (token := page.next_page_token):
            break
    assert names == [h.photo.name for h in everything.hits] and names[0] == source.name


def test_vocabulary_cache_answers_a_stale_vocabulary_while_it_refreshes_it():
    asked = []
    released = threading.Event()
    now = [0.0]

    def fetch(value: str, wait: bool = False):
        def ask():
            asked.append(value)
            if wait:
                assert released.wait(30)
            return query_filters.Vocabulary(places={value: value})
        return ask

    cache = query_filters.VocabularyCache(max_age_s=30, clock=lambda: now[0])
    assert cache.get("alice", fetch("paris")).places == {"paris": "paris"}  # the first: asked at once
    now[0] = 29
    assert cache.get("alice", fetch("never")).places == {"paris": "paris"}  # fresh: not asked
    assert asked == ["paris"]
    now[0] = 30
    # Stale: the old one answers at once while one refresh runs; further calls start no other.
    assert cache.get("alice", fetch("lyon", wait=True)).places == {"paris": "paris"}
    assert cache.get("alice", fetch("never")).places == {"paris": "paris"}
    released.set()
    deadline = time.monotonic() + 30
    while cache.get("alice", fetch("never")).places != {"lyon": "lyon"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert asked == ["paris", "lyon"]
    assert cache.get("bob", fetch("nice")).places == {"nice": "nice"}  # per owner
    uncached = query_filters.VocabularyCache(max_age_s=0)
    uncached.get("alice", fetch("a"))
    uncached.get("alice", fetch("b"))
    assert asked[-2:] == ["a", "b"]
    uncached.refresh_if_older("alice", 0)  # nothing kept: nothing to refresh
    assert asked[-2:] == ["a", "b"]


def test_an_idle_service_refreshes_a_vocabulary_before_it_goes_stale():
    now, asked = [0.0], []

    def fetch(value: str):
        def ask():
            asked.append(value)
            return query_filters.Vocabulary(places={value: value})
        return ask

    cache = query_filters.VocabularyCache(max_age_s=300, clock=lambda: now[0])
    cache.get("alice", fetch("paris"))
    now[0] = 149
    cache.refresh_if_older("alice", 150)  # young enough: left alone
    cache.refresh_if_older("bob", 150)  # never searched: nothing to refresh
    assert asked == ["paris"]
    cache.get("alice", fetch("lyon"))  # fresh: answered, not asked; its fetch is kept
    now[0] = 150
    cache.refresh_if_older("alice", 150)  # here and now, with the latest search's fetch
    assert asked == ["paris", "lyon"]
    now[0] = 449  # 299 s after the refresh: the next search finds it fresh
    assert cache.get("alice", fetch("never")).places == {"lyon": "lyon"}
    assert asked == ["paris", "lyon"]
