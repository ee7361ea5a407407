"""The HTTP gateway against the real gRPC services, served in this process on free ports."""
from __future__ import annotations

import io
import json
import re
import time

import grpc
import pytest
import skimage.data
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from embed_svc.server import serve as serve_embed
from embed_svc.worker import GROUP as WORKER_GROUP
from embed_svc.worker import EmbedWorker, group_backlog
from gateway import create_app, errors, openapi
from ingest_svc.server import serve as serve_ingest
from photos.v1 import embed_pb2, embed_pb2_grpc, search_pb2
from photostore.auth import service_api_key
from photostore.backends import open_blobs, open_events, open_vectors
from photostore.backends.base import TOPIC_PHOTO_UPLOADED
from photostore.server import make_channel
from photostore.settings import Settings
from search_svc.server import serve as serve_search
from tests.engines import free_port
from tests.harness import add_user
from tests.tinyclip import write_tiny_checkpoint

API = "/api/v1"
SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
STARTUP_TIMEOUT_S = 60
SSE_TIMEOUT_S = 20
MAX_WATCHERS = 4

# grpc-gateway's runtime.HTTPStatusFromCode, written out independently of gateway/errors.py.
GRPC_GATEWAY_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Real ingest, embed (tiny random-weight CLIP) and search services; yields gateway settings."""
    tiny = write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("data"), host="127.0.0.1", grpc_max_workers=8,
        shutdown_grace_seconds=1, max_upload_bytes=8 * 1024 * 1024, torch_threads=1,
        model_name=tiny.model_name, model_config_dir=tiny.config_dir,
        model_pretrained=str(tiny.checkpoint_path), model_retry_seconds=0.5,
        # CLIP alone: the gateway passes search through; the hybrid ranking is tested elsewhere.
        signals_enabled=False, search_weight_keyword=0, search_min_clip=-1)
    ingest = serve_ingest(settings, 0, max_watchers=MAX_WATCHERS)
    settings = settings.model_copy(update={"ingest_target": f"127.0.0.1:{ingest.port}"})
    embed = serve_embed(settings, 0)
    settings = settings.model_copy(update={"embed_target": f"127.0.0.1:{embed.port}"})
    search = serve_search(settings, 0)
    settings = settings.model_copy(update={"search_target": f"127.0.0.1:{search.port}"})
    yield settings
    for svc in (search, embed, ingest):
        svc.stop()


@pytest.fixture(scope="module")
def model_ready(stack):
    """Waits until EmbedService has loaded the tiny model."""
    service = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with grpc.insecure_channel(stack.target("embed")) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status \
                != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "the tiny model did not load"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def index_uploads(stack, model_ready):
    """Runs the real embed worker until every upload so far is indexed (as `--once` does)."""
    events = open_events(stack)
    consumer, producer = events.consumer(WORKER_GROUP, [TOPIC_PHOTO_UPLOADED]), events.producer()
    channel = make_channel(stack.target("embed"))
    worker = EmbedWorker(stack, consumer=consumer, producer=producer, blobs=open_blobs(stack),
                         vectors=open_vectors(stack), stub=embed_pb2_grpc.EmbedServiceStub(channel),
                         api_key=service_api_key(stack), backlog=group_backlog(events))
    yield worker.run_until_idle
    channel.close()
    consumer.close()
    producer.close()


@pytest.fixture(scope="module")
def app(stack):
    app = create_app(stack)
    app.config["SSE_HEARTBEAT_S"] = 0.2
    yield app
    app.extensions["photostore_clients"].close()


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def key(stack):
    return add_user(stack, "alice")[1]


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()).resize((128, 128)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def upload(client, key: str, *files: tuple[bytes, str], headers: dict | None = None):
    return client.post(f"{API}/photos", headers={**auth(key), **(headers or {})},
                       data={"file": [(io.BytesIO(data), name) for data, name in files]},
                       content_type="multipart/form-data")


def photo_path(photo: dict) -> str:
    return f"{API}/{photo['name']}"


def assert_status_json(body: dict, code: grpc.StatusCode, reason: str) -> None:
    assert set(body) >= {"code", "message", "details"}
    assert body["code"] == code.value[0]
    assert body["message"]
    infos = [d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo")]
    assert infos and infos[0]["reason"] == reason, body


# Unit


@pytest.mark.parametrize("name, expected", sorted(GRPC_GATEWAY_STATUS.items()))
def test_grpc_codes_map_to_grpc_gateway_http_statuses(name, expected):
    assert errors.http_status(grpc.StatusCode[name]) == expected


def test_every_grpc_code_has_a_mapping():
    assert {code.name for code in grpc.StatusCode} == set(GRPC_GATEWAY_STATUS)


def test_openapi_describes_exactly_the_api_routes():
    app = create_app(Settings())  # no services needed: only the url map is read
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(API + "/"):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    doc = openapi.document()
    documented = {(path, method) for path, ops in doc["paths"].items() if path.startswith(API + "/")
                  for method in ops}
    assert routes == documented
    assert doc["openapi"].startswith("3.")
    photo = doc["components"]["schemas"]["Photo"]["properties"]
    assert photo["sizeBytes"] == {"type": "string", "format": "int64"}
    assert "PHOTO_STATUS_INDEXED" in photo["status"]["enum"]
    assert doc["components"]["schemas"]["Status"]["required"] == ["code", "message", "details"]
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["responses"]["default"]["content"]["application/json"]["schema"] == \
                {"$ref": "#/components/schemas/Status"}, path
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path


def test_flask_errors_have_the_status_shape():
    app = create_app(Settings(max_upload_bytes=1000))
    client = app.test_client()
    missing = client.get(f"{API}/nothing-here")
    assert missing.status_code == 404
    assert_status_json(missing.json, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    wrong_method = client.put(f"{API}/photos")
    assert wrong_method.status_code == 405
    assert "GET" in wrong_method.headers["Allow"]
    assert_status_json(wrong_method.json, grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED")
    too_big = client.post(f"{API}/photos", headers=auth("psk_any"),
                          data={"file": [(io.BytesIO(b"x" * (2 * 1024 * 1024)), "big.jpg")]},
                          content_type="multipart/form-data")
    assert too_big.status_code == 413
    assert_status_json(too_big.json, grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_ENTITY_TOO_LARGE")


# Against the services


def test_healthz_reports_each_service(client, model_ready):
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json == {"photos.v1.IngestService": "SERVING", "photos.v1.EmbedService": "SERVING",
                           "photos.v1.SearchService": "SERVING"}


def test_livez_and_readyz(client, stack):
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json == {"photos.v1.IngestService": "SERVING"}
    # Without ingest (every key check needs it) the gateway is alive but not ready.
    cut_off = create_app(stack.model_copy(update={"ingest_target": f"127.0.0.1:{free_port()}"}))
    try:
        probe = cut_off.test_client()
        assert probe.get("/livez").status_code == 200
        unready = probe.get("/readyz")
        assert unready.status_code == 503 and unready.json == {"photos.v1.IngestService": "UNREACHABLE"}
    finally:
        cut_off.extensions["photostore_clients"].close()


def test_event_streams_per_process_are_capped(stack, key):
    """A live-status stream holds a server thread while the page is open: past the cap the gateway
    answers 503 with Retry-After, and a closed stream frees its place."""
    capped = create_app(stack.model_copy(update={"gateway_max_event_streams": 1}))
    client = capped.test_client()
    try:
        refused = client.get(f"{API}/events", headers=auth(key), query_string={"names": "bogus"})
        assert refused.status_code == 400  # refused before it took a place
        first = client.get(f"{API}/events", headers=auth(key), buffered=False)
        assert first.status_code == 200
        full = client.get(f"{API}/events", headers=auth(key))
        assert full.status_code == 503 and full.headers["Retry-After"] == "5"
        assert_status_json(full.json, grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE")
        assert client.get(f"{API}/photos", headers=auth(key)).status_code == 200  # others still served
        first.close()
        again = client.get(f"{API}/events", headers=auth(key), buffered=False)
        try:
            assert again.status_code == 200
        finally:
            again.close()
    finally:
        capped.extensions["photostore_clients"].close()


def test_page_is_served_with_the_key_form(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<form id="key-form"' in html and 'id="api-key"' in html
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/openapi.json").json["paths"]


def test_missing_or_wrong_key_is_401_status_json(client):
    missing = client.get(f"{API}/photos")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert_status_json(missing.json, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")
    wrong = client.get(f"{API}/photos", headers=auth("psk_not-a-key"))
    assert wrong.status_code == 401
    assert_status_json(wrong.json, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert client.get(f"{API}/events", headers=auth("psk_not-a-key")).status_code == 401


def test_events_reject_malformed_names_up_front(client, key):
    resp = client.get(f"{API}/events", headers=auth(key), query_string={"names": "photos/a,bogus"})
    assert resp.status_code == 400
    assert_status_json(resp.json, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert resp.json["details"][1]["fieldViolations"][0]["field"] == "names[1]"


def test_events_for_a_photo_that_is_not_the_callers_are_not_found(client, key):
    resp = client.get(f"{API}/events", headers=auth(key), query_string={"names": "photos/" + "0" * 32})
    assert resp.status_code == 404
    assert_status_json(resp.json, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")


def test_session_cookie_stands_in_for_the_header(app, key):
    client = app.test_client()  # its own cookie jar
    bad = client.post(f"{API}/session", json={"apiKey": "psk_not-a-key"})
    assert bad.status_code == 401
    assert_status_json(bad.json, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert client.get_cookie("api_key", path=API) is None
    assert client.post(f"{API}/session", json={"apiKey": key}).status_code == 200
    cookie = client.get_cookie("api_key", path=API)
    assert cookie.value == key and cookie.http_only and cookie.same_site == "Strict"
    assert client.get(f"{API}/photos").status_code == 200
    assert client.delete(f"{API}/session").status_code == 200
    assert client.get(f"{API}/photos").status_code == 401


def test_upload_list_download_delete(client, key):
    data = astronaut_jpeg()
    resp = upload(client, key, (data, "astronaut.jpg"))
    assert resp.status_code == 200, resp.json
    [result] = resp.json["results"]
    assert result["filename"] == "astronaut.jpg" and result["duplicate"] is False
    photo = result["photo"]
    assert photo["name"].startswith("photos/")
    assert photo["contentType"] == "image/jpeg" and photo["sizeBytes"] == str(len(data))
    assert (photo["width"], photo["height"]) == (128, 128)
    assert photo["status"] == "PHOTO_STATUS_UPLOADED"

    listed = client.get(f"{API}/photos", headers=auth(key), query_string={"status": "uploaded"})
    assert listed.status_code == 200
    assert photo["name"] in [p["name"] for p in listed.json["photos"]]
    assert listed.json["totalSize"] >= 1 and "nextPageToken" in listed.json
    assert client.get(photo_path(photo), headers=auth(key)).json["photo"]["sha256"] == photo["sha256"]

    thumb = client.get(f"{photo_path(photo)}/thumbnail", headers=auth(key))
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert thumb.headers["Cache-Control"].startswith("private")
    assert thumb.content_length == len(thumb.data)
    assert Image.open(io.BytesIO(thumb.data)).format == "JPEG"

    original = client.get(f"{photo_path(photo)}/original", headers=auth(key))
    assert original.status_code == 200 and original.mimetype == "image/jpeg"
    assert original.content_length == len(data)
    assert original.data == data

    assert client.delete(photo_path(photo), headers=auth(key)).status_code == 200
    gone = client.get(photo_path(photo), headers=auth(key))
    assert gone.status_code == 404
    assert_status_json(gone.json, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert client.get(f"{photo_path(photo)}/thumbnail", headers=auth(key)).status_code == 404


def test_bad_upload_is_400_with_status_details(client, key):
    total_before = client.get(f"{API}/photos", headers=auth(key)).json["totalSize"]
    resp = upload(client, key, (b"this is plain text, not a photo\n" * 4, "x.jpg"))
    assert resp.status_code == 400
    body = resp.json
    assert_status_json(body, grpc.StatusCode.INVALID_ARGUMENT, body["details"][0]["reason"])
    assert any(d["@type"].endswith("google.rpc.BadRequest") and d["fieldViolations"]
               for d in body["details"])
    assert body["results"] == [{"filename": "x.jpg", "error": {k: body[k] for k in ("code", "message", "details")}}]
    assert client.get(f"{API}/photos", headers=auth(key)).json["totalSize"] == total_before


def test_mixed_upload_reports_each_file(client, key):
    data = Image.new("RGB", (40, 30), (20, 120, 200))
    buf = io.BytesIO()
    data.save(buf, "PNG")
    png = buf.getvalue()
    headers = {"Idempotency-Key": "batch-1"}
    resp = upload(client, key, (png, "blue.png"), (png, "blue-again.png"), (b"nope", "bad.png"),
                  headers=headers)
    assert resp.status_code == 200
    stored, duplicate, rejected = resp.json["results"]
    assert stored["duplicate"] is False and stored["photo"]["contentType"] == "image/png"
    assert duplicate["duplicate"] is True and duplicate["photo"]["name"] == stored["photo"]["name"]
    assert rejected["filename"] == "bad.png" and rejected["error"]["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # A retry with the same Idempotency-Key answers with the first result.
    retry = upload(client, key, (png, "blue.png"), headers=headers)
    assert retry.json["results"][0]["photo"]["name"] == stored["photo"]["name"]
    assert retry.json["results"][0]["duplicate"] is False
    assert client.delete(photo_path(stored["photo"]), headers=auth(key)).status_code == 200


def read_sse(response, until, timeout_s: float = SSE_TIMEOUT_S) -> list[tuple[str, str]]:
    """(event, data) pairs of a streamed SSE response until `until(event, data)` holds;
    a comment line comes as (":", comment)."""
    deadline = time.monotonic() + timeout_s
    events, buffer = [], ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            if block.startswith(":"):
                events.append((":", block[1:].strip()))
            else:
                fields = dict(line.split(": ", 1) for line in block.splitlines())
                if "event" not in fields:
                    continue
                events.append((fields["event"], fields.get("data", "")))
            if until(*events[-1]):
                return events
        assert time.monotonic() < deadline, f"no matching event in {timeout_s}s: {events}"
    raise AssertionError(f"stream ended: {events}")


def test_events_stream_the_photo_after_an_upload(client, key):
    stream = client.get(f"{API}/events", headers=auth(key), buffered=False)
    try:
        assert stream.status_code == 200 and stream.mimetype == "text/event-stream"
        photo = upload(client, key, (astronaut_jpeg(), "watched.jpg")).json["results"][0]["photo"]
        events = read_sse(stream, lambda event, data: event == "photo"
                          and json.loads(data)["photo"]["name"] == photo["name"])
    finally:
        stream.close()
    event, data = events[-1]
    change = json.loads(data)
    assert event == "photo"
    assert change["photo"]["status"] == "PHOTO_STATUS_UPLOADED"
    assert change["changeType"] == "PHOTO_CHANGE_TYPE_CREATED"
    assert change["photo"]["filename"] == "watched.jpg" and change["eventTime"]

    # Named watches start with the current state of those photos.
    named = client.get(f"{API}/events", headers=auth(key), query_string={"names": photo["name"]},
                       buffered=False)
    try:
        events = read_sse(named, lambda event, data: event == ":")
    finally:
        named.close()
    (event, data), heartbeat = events
    assert event == "photo" and json.loads(data)["photo"]["name"] == photo["name"]
    assert heartbeat == (":", "heartbeat")
    assert client.delete(photo_path(photo), headers=auth(key)).status_code == 200


def test_closing_an_event_stream_ends_its_watch(client, key):
    """Ingest allows MAX_WATCHERS watches at once; each closed stream must give its watch back."""
    photo = upload(client, key, (astronaut_jpeg(), "watched-often.jpg")).json["results"][0]["photo"]
    for _ in range(MAX_WATCHERS * 2):
        deadline = time.monotonic() + SSE_TIMEOUT_S
        while True:
            stream = client.get(f"{API}/events", headers=auth(key), query_string={"names": photo["name"]},
                                buffered=False)
            try:
                assert stream.status_code == 200
                [(event, data)] = read_sse(stream, lambda event, data: event != ":")
            finally:
                stream.close()
            if event == "photo":
                break
            # The previous watch is still being torn down on the server.
            assert event == "rpc_error"
            assert_status_json(json.loads(data), grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS")
            assert time.monotonic() < deadline, "closed event streams keep their watches"
            time.sleep(0.05)
        assert json.loads(data)["photo"]["name"] == photo["name"]
    assert client.delete(photo_path(photo), headers=auth(key)).status_code == 200


def test_model_search_and_similar(client, key, model_ready):
    info = client.get(f"{API}/model", headers=auth(key))
    assert info.status_code == 200
    [clip] = info.json["models"]
    assert clip["role"] == "MODEL_ROLE_CLIP" and clip["ready"] is True and clip["dimension"] == 32

    found = client.get(f"{API}/search", headers=auth(key), query_string={"q": "an astronaut", "pageSize": 5})
    assert found.status_code == 200
    assert found.json["models"] == [clip["model"]] and isinstance(found.json["hits"], list)
    bad = client.get(f"{API}/search", headers=auth(key), query_string={"q": "x", "minScore": "high"})
    assert bad.status_code == 400
    assert bad.json["details"][1]["fieldViolations"][0]["field"] == "minScore"
    assert client.get(f"{API}/search", headers=auth(key)).status_code == 400  # empty query

    by_image = client.post(f"{API}/similar", headers=auth(key), data={"file": (io.BytesIO(astronaut_jpeg()), "q.jpg")},
                           content_type="multipart/form-data")
    assert by_image.status_code == 200 and by_image.json["models"] == [clip["model"]]

    photo = upload(client, key, (astronaut_jpeg(), "fresh.jpg")).json["results"][0]["photo"]
    not_indexed = client.get(f"{photo_path(photo)}/similar", headers=auth(key))
    assert not_indexed.status_code == 400  # FAILED_PRECONDITION: no vector without the embed worker
    assert_status_json(not_indexed.json, grpc.StatusCode.FAILED_PRECONDITION, "PHOTO_NOT_INDEXED")
    assert client.delete(photo_path(photo), headers=auth(key)).status_code == 200


def test_indexed_photos_update_live_and_are_found(client, key, index_uploads):
    astronaut, cat = astronaut_jpeg(), io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).resize((96, 64)).save(cat, "PNG")
    stream = client.get(f"{API}/events", headers=auth(key), buffered=False)
    try:
        results = upload(client, key, (astronaut, "astronaut.jpg"), (cat.getvalue(), "cat.png")).json["results"]
        names = {r["photo"]["name"] for r in results}
        assert index_uploads().indexed >= 2
        indexed: set[str] = set()

        def all_indexed(event, data):
            change = json.loads(data) if event == "photo" else {}
            if change.get("photo", {}).get("status") == "PHOTO_STATUS_INDEXED":
                indexed.add(change["photo"]["name"])
                assert change["photo"]["embeddingModels"]
            return names <= indexed

        read_sse(stream, all_indexed)
    finally:
        stream.close()

    listed = client.get(f"{API}/photos", headers=auth(key), query_string={"status": "indexed"}).json
    assert names <= {p["name"] for p in listed["photos"]}

    found = client.get(f"{API}/search", headers=auth(key), query_string={"q": "an astronaut", "minScore": -1}).json
    scores = [hit["score"] for hit in found["hits"]]
    assert names <= {hit["photo"]["name"] for hit in found["hits"]}
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)

    astronaut_photo = results[0]["photo"]
    by_name = client.get(f"{photo_path(astronaut_photo)}/similar", headers=auth(key),
                         query_string={"minScore": -1}).json
    assert by_name["hits"][0]["photo"]["name"] == astronaut_photo["name"]
    assert by_name["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    by_image = client.post(f"{API}/similar", headers=auth(key), query_string={"minScore": -1},
                           data={"file": (io.BytesIO(astronaut), "query.jpg")},
                           content_type="multipart/form-data").json
    assert by_image["hits"][0]["photo"]["name"] == astronaut_photo["name"]
    assert by_image["hits"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    for name in names:
        assert client.delete(f"{API}/{name}", headers=auth(key)).status_code == 200
