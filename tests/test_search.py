"""SearchService in-process with the real IngestService and EmbedService (tiny random-weight CLIP):
vectors of known photos are written straight into the embedded vector store, and every ranking is
checked against numpy's cosine ranking."""
from __future__ import annotations

import dataclasses
import datetime as dt
import io
import time

import grpc
import numpy as np
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from embed_svc.server import serve as serve_embed
from ingest_svc.server import serve as serve_ingest
from photos.v1 import embed_pb2, embed_pb2_grpc, search_pb2, search_pb2_grpc
from photostore.auth import bearer_metadata, hash_key, new_api_key
from photostore.backends import open_metadata, open_vectors
from photostore.backends.base import STATUS_INDEXED, PhotoRecord, VectorObject, utcnow
from photostore.server import GrpcService
from search_svc.server import serve as serve_search
from tests.tinyclip import TINY_EMBED_DIM, tiny_settings, write_tiny_checkpoint

pytestmark = pytest.mark.timeout(120)

UTC = dt.timezone.utc
QUERY = "a cat asleep on a red sofa"
PHOTOS_PER_USER = 24
CAMERAS = [("Canon", "EOS R5"), ("FUJIFILM", "X-T4"), ("", "")]


@dataclasses.dataclass
class Photo:
    id: str
    owner: str
    vector: np.ndarray
    taken_at: dt.datetime | None
    camera_make: str
    camera_model: str

    @property
    def name(self) -> str:
        return f"photos/{self.id}"


@dataclasses.dataclass
class Stack:
    search: search_pb2_grpc.SearchServiceStub
    embed: embed_pb2_grpc.EmbedServiceStub
    model: str
    alice: list
    bob: list
    photos: dict[str, Photo]  # by id, both users, indexed ones only
    unindexed: Photo
    deleted: Photo
    alice_id: str
    bob_id: str
    servers: list[GrpcService]

    def owned_by(self, owner: str) -> list[Photo]:
        return [p for p in self.photos.values() if p.owner == owner]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def record(photo: Photo, filename: str) -> PhotoRecord:
    now = utcnow()
    return PhotoRecord(id=photo.id, owner=photo.owner, filename=filename, sha256=photo.id.ljust(64, "0"),
                       content_type="image/jpeg", size_bytes=100, width=64, height=48,
                       blob_key=f"originals/{photo.owner}/{photo.id}", thumbnail_key=f"thumbnails/{photo.id}",
                       created_at=now, updated_at=now, taken_at=photo.taken_at,
                       camera_make=photo.camera_make, camera_model=photo.camera_model, status=STATUS_INDEXED)


def expected_ranking(photos: list[Photo], query: np.ndarray, min_score: float = -1.0,
                     limit: int = 200) -> list[tuple[str, float]]:
    scored = [(f"photos/{p.id}", float(p.vector @ query)) for p in photos]
    scored = [s for s in scored if s[1] >= min_score]
    return sorted(scored, key=lambda s: -s[1])[:limit]


def ranking(response) -> list[tuple[str, float]]:
    return [(h.photo.name, h.score) for h in response.hits]


def assert_same_ranking(actual: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [name for name, _ in actual] == [name for name, _ in expected]
    np.testing.assert_allclose([s for _, s in actual], [s for _, s in expected], atol=1e-5)


def wait_until_ready(embed: embed_pb2_grpc.EmbedServiceStub, auth) -> embed_pb2.GetModelInfoResponse:
    deadline = time.monotonic() + 60
    while not (info := embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=auth)).ready:
        assert time.monotonic() < deadline, f"model not ready: {info.reason}"
        time.sleep(0.1)
    return info


def start_search(settings, embed_port: int, ingest_port: int) -> GrpcService:
    return serve_search(settings.model_copy(update={"embed_target": f"127.0.0.1:{embed_port}",
                                                    "ingest_target": f"127.0.0.1:{ingest_port}"}), 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def stack(tiny, tmp_path_factory):
    settings = tiny_settings(tiny, tmp_path_factory.mktemp("data"))
    metadata = open_metadata(settings)
    keys, ids = {}, {}
    for name in ("alice", "bob"):
        key = new_api_key()
        ids[name] = metadata.create_user(name, hash_key(key)).id
        keys[name] = bearer_metadata(key)

    embed_server = serve_embed(settings, port=0)
    ingest_server = serve_ingest(settings, port=0)
    search_server = start_search(settings, embed_server.port, ingest_server.port)
    channels = [grpc.insecure_channel(f"127.0.0.1:{search_server.port}"),
                 grpc.insecure_channel(f"127.0.0.1:{embed_server.port}")]
    embed = embed_pb2_grpc.EmbedServiceStub(channels[-1])
    model = wait_until_ready(embed, keys["alice"]).model

    # Known unit vectors: random ones, plus for bob one equal to the query, so a leak would top alice's list.
    rng = np.random.default_rng(7)
    query = np.asarray(embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[QUERY]), metadata=keys["alice"])
                       .embeddings[0].values, np.float32)
    vectors = open_vectors(settings)
    photos: dict[str, Photo] = {}
    for owner in ("alice", "bob"):
        for i in range(PHOTOS_PER_USER):
            make, camera = CAMERAS[i % len(CAMERAS)]
            taken = dt.datetime(2020 + i % 4, 1 + i % 12, 10, tzinfo=UTC) if i % 5 else None
            vector = query if (owner, i) == ("bob", 0) else unit(rng.normal(size=TINY_EMBED_DIM))
            photos[f"{owner}{i:02d}"] = Photo(f"{owner}{i:02d}", ids[owner], vector, taken, make, camera)
    unindexed = Photo("alice-new", ids["alice"], unit(rng.normal(size=TINY_EMBED_DIM)), None, "", "")
    deleted = Photo("alice-gone", ids["alice"], unit(query + 0.01), None, "", "")
    for photo in [*photos.values(), unindexed, deleted]:
        metadata.insert_photo(record(photo, f"{photo.id}.jpg"), request_id=photo.id)
    for photo in [*photos.values(), deleted]:
        vectors.upsert(VectorObject(photo.id, photo.owner, model, photo.vector, photo.taken_at,
                                    photo.camera_make, photo.camera_model))
    metadata.delete_photo(deleted.id)  # its vector lingers, as after a delete racing the worker

    servers = [search_server, ingest_server, embed_server]
    try:
        yield Stack(search_pb2_grpc.SearchServiceStub(channels[-2]), embed, model, keys["alice"], keys["bob"],
                    photos, unindexed, deleted, ids["alice"], ids["bob"], servers)
    finally:
        for channel in channels:
            channel.close()
        for server in servers:
            server.stop()


def embed_text(stack: Stack, text: str) -> np.ndarray:
    response = stack.embed.EmbedText(embed_pb2.EmbedTextRequest(texts=[text]), metadata=stack.alice)
    return np.asarray(response.embeddings[0].values, np.float32)


def search(stack: Stack, auth=None, **kwargs) -> search_pb2.SearchPhotosResponse:
    return stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(**{"query": QUERY, **kwargs}),
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

def test_ranking_is_the_cosine_ranking_of_the_callers_photos(stack):
    query = embed_text(stack, QUERY)
    response = search(stack, min_score=-1, page_size=200)
    assert response.model == stack.model
    assert_same_ranking(ranking(response), expected_ranking(stack.owned_by(stack.alice_id), query))
    assert {h.photo.owner for h in response.hits} == {stack.alice_id}
    assert stack.deleted.name not in {h.photo.name for h in response.hits}
    assert response.hits[0].photo.filename == response.hits[0].photo.name.removeprefix("photos/") + ".jpg"


def test_page_size_defaults_to_20_and_deleted_photos_are_made_up_for(stack):
    query = embed_text(stack, QUERY)
    expected = expected_ranking(stack.owned_by(stack.alice_id), query)
    # The deleted photo's lingering vector ranks first; the page is still full.
    assert float(stack.deleted.vector @ query) > expected[0][1]
    assert_same_ranking(ranking(search(stack, min_score=-1, page_size=3)), expected[:3])
    assert_same_ranking(ranking(search(stack, min_score=-1)), expected[:20])


def test_min_score_leaves_out_lower_hits(stack):
    query = embed_text(stack, QUERY)
    scores = sorted(float(p.vector @ query) for p in stack.owned_by(stack.alice_id))
    threshold = (scores[len(scores) // 2] + scores[len(scores) // 2 + 1]) / 2
    expected = expected_ranking(stack.owned_by(stack.alice_id), query, min_score=threshold)
    assert len(expected) == len(scores) - len(scores) // 2 - 1
    assert_same_ranking(ranking(search(stack, min_score=threshold)), expected)


def test_each_user_sees_only_their_own_photos(stack):
    bobs = search(stack, auth=stack.bob, min_score=-1, page_size=200)
    query = embed_text(stack, QUERY)
    assert_same_ranking(ranking(bobs), expected_ranking(stack.owned_by(stack.bob_id), query))
    assert bobs.hits[0].photo.name == "photos/bob00" and bobs.hits[0].score == pytest.approx(1.0, abs=1e-5)
    alices = search(stack, min_score=-1, page_size=200)
    assert not {h.photo.name for h in alices.hits} & {h.photo.name for h in bobs.hits}


def test_date_filter_is_inclusive_start_exclusive_end(stack):
    start, end = dt.datetime(2021, 1, 1, tzinfo=UTC), dt.datetime(2022, 12, 31, tzinfo=UTC)
    inside = [p for p in stack.owned_by(stack.alice_id) if p.taken_at and start <= p.taken_at < end]
    assert 0 < len(inside) < PHOTOS_PER_USER
    response = search(stack, min_score=-1,
                      filter=search_pb2.SearchFilter(start_time=ts(start), end_time=ts(end)))
    assert_same_ranking(ranking(response), expected_ranking(inside, embed_text(stack, QUERY)))

    only_start = search(stack, min_score=-1, filter=search_pb2.SearchFilter(start_time=ts(start)))
    after = [p for p in stack.owned_by(stack.alice_id) if p.taken_at and p.taken_at >= start]
    assert {h.photo.name for h in only_start.hits} == {p.name for p in after}


def test_camera_filter_ignores_case(stack):
    canon = [p for p in stack.owned_by(stack.alice_id) if p.camera_make == "Canon"]
    response = search(stack, min_score=-1, filter=search_pb2.SearchFilter(camera_make="canon"))
    assert_same_ranking(ranking(response), expected_ranking(canon, embed_text(stack, QUERY)))
    response = search(stack, min_score=-1, filter=search_pb2.SearchFilter(camera_make="FUJIFILM",
                                                                          camera_model="x-t4"))
    assert {h.photo.name for h in response.hits} == {
        p.name for p in stack.owned_by(stack.alice_id) if p.camera_model == "X-T4"}


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


# FindSimilar ----------------------------------------------------------------------------------

def test_find_similar_by_name_returns_the_photo_first(stack):
    photo = stack.photos["alice03"]
    response = similar(stack, name=photo.name, min_score=-1, page_size=200)
    assert response.hits[0].photo.name == photo.name
    assert response.hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert response.model == stack.model
    assert_same_ranking(ranking(response), expected_ranking(stack.owned_by(stack.alice_id), photo.vector))


def test_find_similar_by_image_embeds_the_bytes(stack):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buf, "PNG")
    embedded = stack.embed.EmbedImages(embed_pb2.EmbedImagesRequest(images=[buf.getvalue()]),
                                       metadata=stack.alice)
    vector = np.asarray(embedded.embeddings[0].values, np.float32)
    response = similar(stack, image=buf.getvalue(), min_score=-1, page_size=5)
    assert_same_ranking(ranking(response), expected_ranking(stack.owned_by(stack.alice_id), vector, limit=5))


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


# Downstream failures --------------------------------------------------------------------------

def test_model_not_ready_is_passed_on_as_unavailable(stack, tiny, tmp_path):
    settings = tiny_settings(tiny, tmp_path, model_pretrained=str(tmp_path / "missing.pt"))
    metadata = open_metadata(settings)
    key = new_api_key()
    metadata.create_user("carol", hash_key(key))
    embed_server = serve_embed(settings, port=0)
    ingest_server = serve_ingest(settings, port=0)
    search_server = start_search(settings, embed_server.port, ingest_server.port)
    channels = [grpc.insecure_channel(f"127.0.0.1:{search_server.port}")]
    try:
        stub = search_pb2_grpc.SearchServiceStub(channels[-1])
        err = rpc_error(stub.SearchPhotos, search_pb2.SearchPhotosRequest(query=QUERY),
                        metadata=bearer_metadata(key), timeout=30)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "not ready" in err.details()
        assert error_info(err).reason == "MODEL_NOT_READY"
    finally:
        for channel in channels:
            channel.close()
        for server in (search_server, ingest_server, embed_server):
            server.stop()
