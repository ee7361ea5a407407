"""The HTTP gateway against the real gRPC services, served in this process on free ports."""
from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import grpc
import pytest
import skimage.data
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from embed_svc.server import serve as serve_embed
from embed_svc.worker import GROUP as WORKER_GROUP
from embed_svc.worker import EmbedWorker, group_backlog
import gateway
from gateway import create_app, errors, openapi, sessions
from ingest_svc.server import serve as serve_ingest
from photos.v1 import auth_pb2, auth_pb2_grpc, embed_pb2, embed_pb2_grpc, search_pb2
from photostore.auth import SESSION_PREFIX, bearer_metadata, hash_key, service_api_key
from photostore.backends import open_blobs, open_events, open_vectors
from photostore.backends.base import TOPIC_PHOTO_UPLOADED
from photostore.errors import ServiceError
from photostore.server import make_channel
from photostore.settings import BlobsSettings, Settings
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
        signals_enabled=False, search_weight_keyword=0, search_min_clip=-1,
        search_min_probability=0)
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


@pytest.fixture(autouse=True)
def empty_trash(request):
    """After each test that used alice's key, her trash is emptied: the tests delete the photos they
    upload, and an upload of bytes still in the trash would bring that photo back instead of
    storing a new one."""
    if "key" not in request.fixturenames:
        yield
        return
    client, key = request.getfixturevalue("client"), request.getfixturevalue("key")
    yield
    emptied = client.post(f"{API}/photos:purge", headers=auth(key), json={"all": True})
    assert emptied.status_code == 200, emptied.json


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


def test_default_session_lifetime_is_12_hours_idle_and_7_days_at_most():
    defaults = Settings()
    assert defaults.session_idle_seconds == 12 * 3600
    assert defaults.session_max_age_seconds == 7 * 24 * 3600


def synthetic_rpc_error(err: ServiceError) -> grpc.RpcError:
    """A failed call as a client sees it, with the google.rpc.Status in its trailers."""
    status = err.to_status()

    class FailedCall(grpc.RpcError, grpc.Call):
        def code(self):
            return status.code

        def details(self):
            return status.details

        def trailing_metadata(self):
            return status.trailing_metadata

        def initial_metadata(self):
            return ()

        is_active = time_remaining = cancel = add_callback = lambda *a: None

    return FailedCall()


def test_storage_full_is_507_with_the_services_message():
    message = "the photo store is full: 0 bytes free of 100 GiB at /var/lib/photostore/blobs"
    full = synthetic_rpc_error(ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason="STORAGE_FULL",
                                            metadata={"free_bytes": "0"}))
    body, status = errors.rpc_error_json(full)
    assert status == 507
    assert body["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and body["message"] == message
    info = next(d for d in body["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["reason"] == "STORAGE_FULL" and info["metadata"] == {"free_bytes": "0"}
    app = create_app(Settings())
    with app.test_request_context():
        response = errors.handle_rpc_error(full)
    assert response.status_code == 507 and response.json["message"] == message
    # Other exhausted resources keep grpc-gateway's 429.
    quota = synthetic_rpc_error(ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many watchers",
                                             reason="TOO_MANY_WATCHERS"))
    assert errors.rpc_error_json(quota)[1] == 429
    assert errors.service_error_json(ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message,
                                                  reason="STORAGE_FULL"))[1] == 507


SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "X-Frame-Options": "DENY"}


def csp_directives(response) -> dict[str, list[str]]:
    policy = response.headers["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


def assert_security_headers(response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.request.path, name)
    csp = csp_directives(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]
    assert {"'self'", "data:", "blob:"} <= set(csp["img-src"])
    assert "script-src" not in csp and "style-src" not in csp  # default-src 'self': no inline code
    assert "Server" not in response.headers or response.headers["Server"] == "photostore"


def test_security_headers_on_pages_static_files_and_errors():
    client = create_app(Settings(max_upload_bytes=1000)).test_client()
    for response in (client.get("/"), client.get("/static/app.js"), client.get("/static/style.css"),
                     client.get("/openapi.json"), client.get("/livez"), client.get(f"{API}/nothing"),
                     client.get(f"{API}/photos"), client.put(f"{API}/photos"),
                     client.post(f"{API}/session", json={"apiKey": "x"}, headers={"Origin": "http://x.example"}),
                     client.get("/static/missing.js")):
        assert_security_headers(response)


def test_csp_lets_images_come_from_the_s3_downloads_are_redirected_to():
    embedded = csp_directives(create_app(Settings()).test_client().get("/livez"))
    assert embedded["img-src"] == ["'self'", "data:", "blob:"]
    public = Settings(blobs=BlobsSettings(backend="s3", s3_public_url="https://s3.example.com"))
    assert csp_directives(create_app(public).test_client().get("/livez"))["img-src"] == \
        ["'self'", "data:", "blob:", "https://s3.example.com"]
    internal = Settings(blobs=BlobsSettings(backend="s3", s3_endpoint="minio:9000"))
    assert "http://minio:9000" in csp_directives(create_app(internal).test_client().get("/livez"))["img-src"]


def test_page_has_no_inline_code_the_csp_would_block():
    static = Path(gateway.__file__).with_name("static")
    html = (static / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b", html)
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)  # inline event handlers
    assert not re.search(r"javascript:", html)
    for js in static.glob("*.js"):
        code = js.read_text()
        assert not re.search(r"\beval\(|new Function\(|innerHTML|insertAdjacentHTML|setAttribute\(\"style", code), js
        assert "sessionStorage.setItem" not in code and "localStorage.setItem" not in code, js


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


ORIGIN = "http://localhost"  # the test client's own origin
SAME_ORIGIN = {"Origin": ORIGIN}


def sign_in(client, key: str, headers: dict | None = None):
    """The page's sign-in: the key in a JSON body, from the page's own origin."""
    return client.post(f"{API}/session", json={"apiKey": key}, headers={**SAME_ORIGIN, **(headers or {})})


def session_token(client) -> str | None:
    cookie = client.get_cookie(sessions.COOKIE)
    return cookie.value if cookie else None


def with_token(app, token: str):
    """A new client (its own cookie jar) holding just this session token."""
    other = app.test_client()
    other.set_cookie(sessions.COOKIE, token)
    return other


def users_store_bytes(stack) -> bytes:
    """The ingest service's users store (SQLite here), WAL included: where sessions live."""
    return b"".join(p.read_bytes() for p in stack.users_path.parent.glob(stack.users_path.name + "*"))


def test_sign_in_keeps_the_key_on_the_server_and_an_opaque_token_in_the_cookie(app, stack, key):
    client = app.test_client()  # its own cookie jar
    bad = sign_in(client, "psk_not-a-key")
    assert bad.status_code == 401
    assert_status_json(bad.json, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID")
    assert session_token(client) is None

    signed_in = sign_in(client, key)
    assert signed_in.status_code == 200, signed_in.json
    assert signed_in.json["userId"] and signed_in.json["displayName"] == "alice"
    assert signed_in.json["expireTime"].endswith("Z")
    assert key not in signed_in.get_data(as_text=True)
    assert signed_in.headers["Cache-Control"] == "no-store"
    [set_cookie] = signed_in.headers.getlist("Set-Cookie")
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}
    assert attributes == {"httponly", "samesite", "path"}  # no Secure over plain http
    assert {"SameSite=Strict", "Path=/", "HttpOnly"} <= {part.strip() for part in set_cookie.split(";")}
    token = session_token(client)
    assert token and key not in token and len(token) >= 40
    assert client.get_cookie("api_key", path=API) is None  # the key itself is never a cookie
    # The session lives in the ingest service's users store, as the token's sha256: neither the
    # token nor the key is there in the clear.
    stored = users_store_bytes(stack)
    assert hash_key(token).encode() in stored
    assert key.encode() not in stored and token.encode() not in stored

    # The cookie alone authenticates reads, the page's own origin writes.
    assert client.get(f"{API}/photos").status_code == 200
    assert client.get(f"{API}/session").json == signed_in.json
    photo = client.post(f"{API}/photos", headers=SAME_ORIGIN, content_type="multipart/form-data",
                        data={"file": [(io.BytesIO(astronaut_jpeg()), "by-cookie.jpg")]})
    assert photo.status_code == 200, photo.json
    stream = client.get(f"{API}/events", buffered=False)  # EventSource sends no headers
    try:
        assert stream.status_code == 200
    finally:
        stream.close()
    assert client.delete(photo_path(photo.json["results"][0]["photo"]), headers=SAME_ORIGIN).status_code == 200


def test_sign_in_over_https_marks_the_cookie_secure(app, key):
    client = app.test_client()
    signed_in = client.post(f"{API}/session", json={"apiKey": key}, base_url="https://localhost",
                            headers={"Origin": "https://localhost"})
    assert signed_in.status_code == 200, signed_in.json
    cookie = client.get_cookie(sessions.COOKIE)
    assert cookie.secure and cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/"


def test_each_sign_in_rotates_the_session(app, key):
    client = app.test_client()
    assert sign_in(client, key).status_code == 200
    first = session_token(client)
    assert sign_in(client, key).status_code == 200
    second = session_token(client)
    assert second != first
    stale = with_token(app, first).get(f"{API}/photos")
    assert stale.status_code == 401
    assert_status_json(stale.json, grpc.StatusCode.UNAUTHENTICATED, "SESSION_INVALID")
    assert client.get(f"{API}/photos").status_code == 200


def test_sign_out_ends_the_session_on_the_server(app, key):
    client = app.test_client()
    assert sign_in(client, key).status_code == 200
    token = session_token(client)
    signed_out = client.delete(f"{API}/session", headers=SAME_ORIGIN)
    assert signed_out.status_code == 200
    assert session_token(client) is None
    # The same token, replayed (a copied cookie), is refused: it was deleted, not just forgotten.
    replayed = with_token(app, token)
    assert replayed.get(f"{API}/photos").status_code == 401
    assert replayed.get(f"{API}/session").status_code == 401
    assert replayed.get(f"{API}/events").status_code == 401
    assert client.get(f"{API}/photos").status_code == 401
    assert_status_json(client.get(f"{API}/session").json, grpc.StatusCode.UNAUTHENTICATED, "SESSION_MISSING")


def test_a_session_made_on_one_gateway_works_and_ends_on_another(stack, key, model_ready, tmp_path):
    """Gateway replicas (the chart's, in separate pods) share no data dir: the session lives in the
    ingest service, so either replica serves a signed-in browser, and signing out on one ends it."""
    gateways = [create_app(stack.model_copy(update={"data_dir": tmp_path / name})) for name in ("one", "two")]
    one, two = gateways
    try:
        browser = one.test_client()
        signed_in = sign_in(browser, key)
        assert signed_in.status_code == 200, signed_in.json
        token = session_token(browser)
        assert token.startswith(SESSION_PREFIX)
        elsewhere = with_token(two, token)
        session = elsewhere.get(f"{API}/session")
        assert session.status_code == 200, session.json
        assert (session.json["userId"], session.json["displayName"]) == \
            (signed_in.json["userId"], "alice")
        assert session.json["expireTime"] >= signed_in.json["expireTime"]
        # Every service takes the token: ingest, search (through GetCaller) and embed.
        photo = elsewhere.post(f"{API}/photos", headers=SAME_ORIGIN, content_type="multipart/form-data",
                               data={"file": [(io.BytesIO(astronaut_jpeg()), "on-two.jpg")]})
        assert photo.status_code == 200, photo.json
        name = photo.json["results"][0]["photo"]
        assert browser.get(photo_path(name)).status_code == 200
        assert elsewhere.get(f"{API}/search", query_string={"q": "an astronaut"}).status_code == 200
        assert browser.get(f"{API}/model").status_code == 200
        assert elsewhere.delete(photo_path(name), headers=SAME_ORIGIN).status_code == 200

        signed_out = elsewhere.delete(f"{API}/session", headers=SAME_ORIGIN)
        assert signed_out.status_code == 200
        for gone in (browser.get(f"{API}/photos"), browser.get(f"{API}/session")):
            assert gone.status_code == 401
            assert_status_json(gone.json, grpc.StatusCode.UNAUTHENTICATED, "SESSION_INVALID")
        # Signing in on one again works; the gateways keep nothing about sessions themselves.
        assert sign_in(browser, key).status_code == 200
        assert with_token(two, session_token(browser)).get(f"{API}/photos").status_code == 200
        assert not [p for p in tmp_path.rglob("*") if "session" in p.name]
    finally:
        for gateway_app in gateways:
            gateway_app.extensions["photostore_clients"].close()


def test_auth_service_sessions(stack, key):
    """CreateSession takes an API key, DeleteSession the session's own token; the token is a
    bearer credential of its user in between."""
    channel = make_channel(stack.target("ingest"))
    try:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        made = stub.CreateSession(auth_pb2.CreateSessionRequest(), metadata=bearer_metadata(key), timeout=30)
        assert made.token.startswith(SESSION_PREFIX) and made.display_name == "alice"
        caller = stub.GetCaller(auth_pb2.GetCallerRequest(), metadata=bearer_metadata(made.token), timeout=30)
        assert (caller.user_id, caller.display_name) == (made.user_id, "alice")
        assert caller.session_expire_time.ToDatetime() >= made.expire_time.ToDatetime()
        keyed = stub.GetCaller(auth_pb2.GetCallerRequest(), metadata=bearer_metadata(key), timeout=30)
        assert not keyed.HasField("session_expire_time")

        with pytest.raises(grpc.RpcError) as refused:  # a session does not make sessions
            stub.CreateSession(auth_pb2.CreateSessionRequest(), metadata=bearer_metadata(made.token), timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as refused:  # nor does a key sign out
            stub.DeleteSession(auth_pb2.DeleteSessionRequest(), metadata=bearer_metadata(key), timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        stub.DeleteSession(auth_pb2.DeleteSessionRequest(), metadata=bearer_metadata(made.token), timeout=30)
        for call, request in ((stub.GetCaller, auth_pb2.GetCallerRequest()),
                              (stub.DeleteSession, auth_pb2.DeleteSessionRequest())):
            with pytest.raises(grpc.RpcError) as ended:
                call(request, metadata=bearer_metadata(made.token), timeout=30)
            assert ended.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stub.GetCaller(auth_pb2.GetCallerRequest(), metadata=bearer_metadata(key), timeout=30).user_id
    finally:
        channel.close()


def test_header_clients_are_unchanged_and_need_no_origin(client, key):
    photo = upload(client, key, (astronaut_jpeg(), "by-header.jpg")).json["results"][0]["photo"]
    # Not ambient: whatever Origin (or none) comes with it.
    assert client.get(photo_path(photo), headers={**auth(key), "Origin": "https://elsewhere.example"}
                      ).status_code == 200
    assert client.delete(photo_path(photo), headers={**auth(key), "Origin": "http://localhost:9999"}
                         ).status_code == 200
    # The header wins over a cookie: a session token is not looked at.
    with_cookie = client.get(f"{API}/photos", headers={**auth(key), "Cookie": f"{sessions.COOKIE}=stale"})
    assert with_cookie.status_code == 200


@pytest.mark.parametrize("headers, reason", [
    ({}, "ORIGIN_MISSING"),
    ({"Origin": "http://localhost:8001"}, "CROSS_ORIGIN"),  # this host, another port
    ({"Origin": "https://localhost"}, "CROSS_ORIGIN"),  # another scheme
    ({"Origin": "http://evil.example"}, "CROSS_ORIGIN"),
    ({"Origin": "null"}, "CROSS_ORIGIN"),  # sandboxed frames, file: pages
    ({"Referer": "http://localhost:8001/"}, "CROSS_ORIGIN"),
    ({"Origin": "http://evil.example", "Referer": "http://localhost/"}, "CROSS_ORIGIN"),
])
def test_cookie_writes_from_another_origin_are_403(app, key, headers, reason):
    client = app.test_client()
    assert sign_in(client, key).status_code == 200
    photo = client.post(f"{API}/photos", headers=SAME_ORIGIN, content_type="multipart/form-data",
                        data={"file": [(io.BytesIO(astronaut_jpeg()), "target.jpg")]}).json["results"][0]["photo"]
    try:
        refused = client.delete(photo_path(photo), headers=headers)
        assert refused.status_code == 403
        assert_status_json(refused.json, grpc.StatusCode.PERMISSION_DENIED, reason)
        assert "this site's origin http://localhost" in refused.json["message"] or \
            "header of this site (http://localhost)" in refused.json["message"]
        assert client.get(photo_path(photo)).status_code == 200  # still there
        total = client.get(f"{API}/photos").json["totalSize"]
        forged_upload = client.post(f"{API}/photos", headers=headers, content_type="multipart/form-data",
                                    data={"file": [(io.BytesIO(b"GIF89a" + b"x" * 64), "forged.gif")]})
        assert forged_upload.status_code == 403
        assert client.get(f"{API}/photos").json["totalSize"] == total
        assert client.post(f"{API}/similar", headers=headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(astronaut_jpeg()), "q.jpg")}).status_code == 403
        # Signing out from elsewhere is refused too; the session stays.
        assert client.delete(f"{API}/session", headers=headers).status_code == 403
        assert client.get(f"{API}/session").status_code == 200
    finally:
        assert client.delete(photo_path(photo), headers=SAME_ORIGIN).status_code == 200


def test_cookie_writes_from_the_page_pass_by_origin_or_referer(app, key):
    client = app.test_client()
    assert sign_in(client, key).status_code == 200
    for headers in ({"Origin": "http://localhost"}, {"Origin": "http://LOCALHOST:80"},
                    {"Referer": "http://localhost/#/photos"}):
        photo = client.post(f"{API}/photos", headers=headers, content_type="multipart/form-data",
                            data={"file": [(io.BytesIO(astronaut_jpeg()), "ok.jpg")]})
        assert photo.status_code == 200, (headers, photo.json)
        assert client.delete(photo_path(photo.json["results"][0]["photo"]), headers=headers).status_code == 200
    # Reads need no Origin (a GET is not state-changing): <img> and EventSource send none.
    assert client.get(f"{API}/photos", headers={"Origin": "http://evil.example"}).status_code == 200


def test_sign_in_from_another_origin_is_403(app, key):
    """A form on another site must not sign the browser in (to the attacker's account)."""
    client = app.test_client()
    forged = client.post(f"{API}/session", json={"apiKey": key}, headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403
    assert_status_json(forged.json, grpc.StatusCode.PERMISSION_DENIED, "CROSS_ORIGIN")
    assert session_token(client) is None
    # An API client signs in with its header (no Origin, not a browser form).
    assert client.post(f"{API}/session", headers=auth(key)).status_code == 200
    assert session_token(client)


def test_sign_in_body_must_be_an_object_with_a_string_key(app):
    client = app.test_client()
    for body in ([1, 2], {"apiKey": 42}, "psk_x", None, "not json"):
        data = body if body == "not json" else json.dumps(body)
        bad = client.post(f"{API}/session", data=data, content_type="application/json", headers=SAME_ORIGIN)
        assert bad.status_code == 400, body
        assert_status_json(bad.json, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    not_json = client.post(f"{API}/session", data="apiKey=psk_x", headers=SAME_ORIGIN,
                           content_type="application/x-www-form-urlencoded")
    assert not_json.status_code == 400
    missing = client.post(f"{API}/session", json={}, headers=SAME_ORIGIN)
    assert missing.status_code == 401
    assert_status_json(missing.json, grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING")


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

    assert photo["hasPreview"] is False  # made after the upload, or on its first request as here
    preview = client.get(f"{photo_path(photo)}/preview", headers=auth(key))
    assert preview.status_code == 200 and preview.mimetype == "image/jpeg"
    assert preview.headers["Cache-Control"] == thumb.headers["Cache-Control"]  # kept like the thumbnail
    assert Image.open(io.BytesIO(preview.data)).size == (128, 128)  # never upscaled

    original = client.get(f"{photo_path(photo)}/original", headers=auth(key))
    assert original.status_code == 200 and original.mimetype == "image/jpeg"
    assert original.content_length == len(data)
    assert original.data == data

    trashed = client.delete(photo_path(photo), headers=auth(key))
    assert trashed.status_code == 200 and trashed.json["photo"]["deleteTime"]  # in the trash
    assert client.post(f"{API}/photos:purge", headers=auth(key), json={"names": [photo["name"]]}).status_code == 200
    gone = client.get(photo_path(photo), headers=auth(key))
    assert gone.status_code == 404
    assert_status_json(gone.json, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert client.get(f"{photo_path(photo)}/thumbnail", headers=auth(key)).status_code == 404
    assert client.get(f"{photo_path(photo)}/preview", headers=auth(key)).status_code == 404


def test_security_headers_on_json_downloads_and_event_streams(client, key):
    photo = upload(client, key, (astronaut_jpeg(), "headers.jpg")).json["results"][0]["photo"]
    try:
        for path in (photo_path(photo), f"{photo_path(photo)}/thumbnail", f"{photo_path(photo)}/original",
                     f"{API}/{'photos/' + '0' * 32}"):
            assert_security_headers(client.get(path, headers=auth(key)))
        stream = client.get(f"{API}/events", headers=auth(key), buffered=False)
        try:
            assert stream.mimetype == "text/event-stream"
            assert_security_headers(stream)
        finally:
            stream.close()
        assert_security_headers(client.get(f"{API}/events", headers=auth("psk_wrong")))
    finally:
        assert client.delete(photo_path(photo), headers=auth(key)).status_code == 200


@pytest.mark.parametrize("path, base", [(f"{API}/photos", {}), (f"{API}/search", {"q": "x"})])
@pytest.mark.parametrize("query, field", [
    ({"pageSize": str(2**31)}, "pageSize"),  # past int32: was a 500 (protobuf's ValueError)
    ({"pageSize": str(2**40)}, "pageSize"),
    ({"pageSize": "9" * 5000}, "pageSize"),  # past Python's int() digit limit
    ({"pageSize": "-1"}, "pageSize"),
    ({"pageSize": "+5"}, "pageSize"),
    ({"pageSize": " 5"}, "pageSize"),
    ({"pageSize": "5.0"}, "pageSize"),
    ({"pageSize": ""}, "pageSize"),  # present but empty is not "absent"
    ({"startTime": "0001-01-01T00:00:00+01:00"}, "startTime"),  # before year 1 in UTC: was a 500
    ({"endTime": "9999-12-31T23:59:59-01:00"}, "endTime"),  # after 9999 in UTC: was a 500
    ({"startTime": ""}, "startTime"),
    ({"startTime": "yesterday"}, "startTime"),
])
def test_out_of_range_parameters_are_400_not_500(client, key, path, base, query, field):
    resp = client.get(path, headers=auth(key), query_string={**base, **query})
    assert resp.status_code == 400, resp.json
    assert_status_json(resp.json, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert resp.json["details"][1]["fieldViolations"][0]["field"] == field


@pytest.mark.parametrize("query, field", [
    ({"minScore": ""}, "minScore"), ({"minScore": "nan"}, "minScore"), ({"minScore": "1_0"}, "minScore"),
])
def test_scores_must_be_plain_numbers(client, key, query, field):
    resp = client.get(f"{API}/search", headers=auth(key), query_string={"q": "x", **query})
    assert resp.status_code == 400
    assert resp.json["details"][1]["fieldViolations"][0]["field"] == field


def test_status_filter_is_one_of_the_documented_values(client, key):
    for status in ("", "INDEXED", " indexed"):
        resp = client.get(f"{API}/photos", headers=auth(key), query_string={"status": status})
        assert resp.status_code == 400, status
    assert client.get(f"{API}/photos", headers=auth(key), query_string={"status": "indexed"}).status_code == 200


def test_in_range_parameters_still_pass(client, key):
    for query in ({"pageSize": str(2**31 - 1)}, {"pageSize": "0"}, {"startTime": "2024-06-01"},
                  {"startTime": "0001-01-01T00:00:00Z", "endTime": "9999-12-31T23:59:59Z"},
                  {"startTime": "2024-06-01T12:00:00+02:00"}):
        assert client.get(f"{API}/photos", headers=auth(key), query_string=query).status_code == 200, query
    assert client.get(f"{API}/search", headers=auth(key),
                      query_string={"q": "x", "minScore": "-1e0", "pageSize": "3"}).status_code == 200


def test_openapi_states_the_limits_the_gateway_enforces():
    doc = openapi.document()
    photos = doc["paths"][f"{API}/photos"]
    page_size = next(p for p in photos["get"]["parameters"] if p["name"] == "pageSize")["schema"]
    assert page_size == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    files = photos["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["file"]
    assert (files["minItems"], files["maxItems"]) == (1, 20)
    q = next(p for p in doc["paths"][f"{API}/search"]["get"]["parameters"] if p["name"] == "q")["schema"]
    assert q["minLength"] == 1 and re.search(q["pattern"], " x ") and not re.search(q["pattern"], "  ")
    # The key may come from the Authorization header instead of the body.
    assert "required" not in doc["components"]["schemas"]["SignIn"]
    assert doc["components"]["securitySchemes"]["cookie"]["name"] == sessions.COOKIE


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


def test_browse_filters_summary_and_query_filters(client, stack):
    """ListPhotos' filters as query parameters, SummarizePhotos as GET photos:summarize, and a search
    of filter words only (no model needed)."""
    browse_key = add_user(stack, "browsing")[1]
    exif = Image.Exif()
    exif[271], exif[272] = "Canon", "Canon EOS 5D"
    exif.get_ifd(0x8769)[36867] = "2019:05:01 10:00:00"
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 23.76), 3: "E", 4: (2.0, 21.0, 7.92)})  # Paris
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, "JPEG", exif=exif)
    paris = upload(client, browse_key, (out.getvalue(), "paris.jpg")).json["results"][0]["photo"]
    assert paris["place"] == {"city": "Paris", "region": "Ile-de-France", "country": "France", "countryCode": "FR"}
    upload(client, browse_key, (astronaut_jpeg(), "plain.jpg"))

    def names(**params):
        response = client.get(f"{API}/photos", headers=auth(browse_key), query_string=params)
        assert response.status_code == 200, response.json
        return [p["name"] for p in response.json["photos"]]

    assert names(cameraMake="canon") == names(place="france") == names(startTime="2019-01-01",
                                                                        endTime="2020-01-01") == [paris["name"]]
    assert len(names()) == 2 and names(favorite="true") == []
    assert client.get(f"{API}/photos", headers=auth(browse_key), query_string={"favorite": "yes"}).status_code == 400
    assert client.get(f"{API}/photos", headers=auth(browse_key), query_string={"album": "nope"}).status_code == 404

    summary = client.get(f"{API}/photos:summarize", headers=auth(browse_key)).json
    assert summary["totalSize"] == 2
    assert summary["cameras"] == [{"cameraMake": "Canon", "cameraModel": "Canon EOS 5D", "count": 1}]
    assert [(p["place"]["city"], p["count"]) for p in summary["places"]] == [("Paris", 1)]
    assert {"year": 2019, "month": 5, "count": 1} in summary["months"]

    found = client.get(f"{API}/search", headers=auth(browse_key), query_string={"q": "Canon 2019"})
    assert found.status_code == 200, found.json
    assert [hit["photo"]["name"] for hit in found.json["hits"]] == [paris["name"]]
    assert found.json["queryFilter"]["cameraMake"] == "Canon"
