"""Logs, request ids and traces (docs/OPERATIONS.md, "Logs" and "Traces").

In process: the real ingest, embed (tiny CLIP) and search services and the gateway's Flask app, with
the process's log lines captured as JSON: an id given to the gateway or to a gRPC call reaches the
services behind it. In subprocesses: the same services as `photostore up` runs them (the gateway on
gunicorn with two workers) exporting to an OTLP/HTTP receiver in this test: one search is one trace
across four services, and their JSON logs carry its id.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import logging
import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image

from embed_svc.server import serve as serve_embed
from gateway import create_app
from ingest_svc.server import serve as serve_ingest
from photos.v1 import embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, search_pb2, search_pb2_grpc
from photostore import telemetry, uploads
from photostore.auth import bearer_metadata
from photostore.backends import open_metadata, open_vectors
from photostore.backends.base import SPACE_CLIP, STATUS_INDEXED, PhotoRecord, VectorObject, utcnow
from photostore.server import make_channel
from photostore.settings import Settings
from search_svc.server import serve as serve_search
from tests.harness import add_user, service_auth
from tests.stack import Stack, free_port, wait_serving
from tests.tinyclip import tiny_settings

pytestmark = pytest.mark.timeout(300)

QUERY = "a red rocket at night"
PHOTO_ID = "rocket01"
HEX_ID = re.compile(r"[0-9a-f]{32}")
SERVICES = {"photostore-gateway", "photostore-search", "photostore-embed", "photostore-ingest"}
# Who calls whom in a search (embed and search check keys with ingest).
CALLERS = {"photostore-search": {"photostore-gateway"}, "photostore-embed": {"photostore-search"},
           "photostore-ingest": {"photostore-search", "photostore-embed"}}


class CapturedLogs:
    """This process's log records from INFO up, as the JSON lines a service writes."""

    def __init__(self):
        self.stream = io.StringIO()
        self.handler = telemetry.log_handler("json", "tests", stream=self.stream)

    def lines(self) -> list[dict]:
        with self.handler.lock:
            text = self.stream.getvalue()
        return [json.loads(line) for line in text.splitlines()]

    def with_id(self, request_id: str) -> list[dict]:
        return [line for line in self.lines() if line.get("request_id") == request_id]

    def wait_for(self, request_id: str, *methods: str, timeout: float = 30) -> list[dict]:
        """The lines of `request_id` once it has an access line for each of `methods` (the server
        logs a call's line as the call ends, which may be just after the client has its answer)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.with_id(request_id)
            logged = {line.get("rpc_method") for line in lines}
            if all(m in logged for m in methods) or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture(scope="module")
def logs():
    captured = CapturedLogs()
    root, access = logging.getLogger(), logging.getLogger("photostore.access")
    level = access.level
    access.setLevel(logging.INFO)
    root.addHandler(captured.handler)
    try:
        yield captured
    finally:
        root.removeHandler(captured.handler)
        access.setLevel(level)


@pytest.fixture(scope="module")
def services(tiny_clip, tmp_path_factory, logs):
    """Ingest, embed and search (CLIP only) in process, alice with one photo whose CLIP vector is
    the query's (so every search hydrates it through ingest), and alice's key."""
    settings = tiny_settings(tiny_clip, tmp_path_factory.mktemp("data"), signals_enabled=False,
                             search_weight_text=0, search_keep_warm_seconds=0)
    alice, key = add_user(settings, "alice")
    ingest = serve_ingest(settings, port=0)
    settings = settings.model_copy(update={"ingest_target": f"127.0.0.1:{ingest.port}"})
    embed = serve_embed(settings, port=0)
    settings = settings.model_copy(update={"embed_target": f"127.0.0.1:{embed.port}"})
    search = serve_search(settings, 0)
    settings = settings.model_copy(update={"search_target": f"127.0.0.1:{search.port}"})
    try:
        wait_serving(settings.target("embed"), "photos.v1.EmbedService", timeout=120)
        with grpc.insecure_channel(settings.target("embed")) as channel:
            query = embed_pb2_grpc.EmbedServiceStub(channel).EmbedText(
                embed_pb2.EmbedTextRequest(texts=[QUERY], encoder=embed_pb2.TEXT_ENCODER_CLIP),
                metadata=service_auth(settings), timeout=60)
        now = utcnow()
        open_metadata(settings).insert_photo(PhotoRecord(
            id=PHOTO_ID, owner=alice, filename="rocket.jpg", sha256="0" * 64, content_type="image/jpeg",
            size_bytes=100, width=64, height=48, blob_key=f"originals/{alice}/{PHOTO_ID}",
            thumbnail_key=f"thumbnails/{PHOTO_ID}", created_at=now, updated_at=now, status=STATUS_INDEXED),
            request_id=PHOTO_ID)
        open_vectors(settings).upsert(VectorObject(
            PHOTO_ID, alice, query.model, np.asarray(query.embeddings[0].values, np.float32), space=SPACE_CLIP))
        yield settings, key
    finally:
        for server in (search, embed, ingest):
            server.stop()


def grpc_search(settings, key: str, metadata=()) -> search_pb2.SearchPhotosResponse:
    with grpc.insecure_channel(settings.target("search")) as channel:
        return search_pb2_grpc.SearchServiceStub(channel).SearchPhotos(
            search_pb2.SearchPhotosRequest(query=QUERY, page_size=5),
            metadata=[*bearer_metadata(key), *metadata], timeout=60)


SEARCH = "/photos.v1.SearchService/SearchPhotos"
EMBED_TEXT = "/photos.v1.EmbedService/EmbedText"
HYDRATE = "/photos.v1.IngestService/BatchGetPhotos"


def test_an_id_given_to_a_grpc_call_reaches_the_services_it_calls(services, logs):
    settings, key = services
    response = grpc_search(settings, key, [("x-request-id", "support-ticket-4711")])
    assert [hit.photo.name for hit in response.hits] == [f"photos/{PHOTO_ID}"]
    lines = logs.wait_for("support-ticket-4711", SEARCH, EMBED_TEXT, HYDRATE)
    # One access line each in search, and in embed and ingest, which search called.
    access = {line["rpc_method"]: line for line in lines if line["logger"] == "photostore.access"}
    assert {SEARCH, EMBED_TEXT, HYDRATE} <= set(access), lines
    for method in (SEARCH, EMBED_TEXT, HYDRATE):
        line = access[method]
        assert line["grpc_code"] == "OK" and line["level"] == "INFO" and line["duration_ms"] >= 0, line
        assert line["message"].startswith(f"{method} OK "), line
        assert line["time"].endswith("+00:00"), line


def test_a_call_without_an_id_gets_one_that_its_downstream_calls_share(services, logs):
    settings, key = services
    before = len(logs.lines())
    grpc_search(settings, key)
    deadline = time.monotonic() + 30
    while not (mine := [line for line in logs.lines()[before:] if line.get("rpc_method") == SEARCH]):
        assert time.monotonic() < deadline, "no access line for the search"
        time.sleep(0.05)
    request_id = mine[0]["request_id"]
    assert HEX_ID.fullmatch(request_id)
    methods = {line.get("rpc_method") for line in logs.wait_for(request_id, SEARCH, EMBED_TEXT, HYDRATE)}
    assert {SEARCH, EMBED_TEXT, HYDRATE} <= methods


def test_an_unfit_id_is_replaced(services, logs):
    """An id is passed on only when it is short and printable without spaces: anything else
    could forge log lines."""
    settings, key = services
    before = len(logs.lines())
    grpc_search(settings, key, [("x-request-id", "x" * 129)])
    grpc_search(settings, key, [("x-request-id", "two words")])
    deadline = time.monotonic() + 30
    while len(mine := [line for line in logs.lines()[before:] if line.get("rpc_method") == SEARCH]) < 2:
        assert time.monotonic() < deadline, "no access lines for the searches"
        time.sleep(0.05)
    assert all(HEX_ID.fullmatch(line["request_id"]) for line in mine), mine


def test_the_gateway_takes_returns_and_passes_on_x_request_id(services, logs):
    settings, key = services
    client = create_app(settings).test_client()
    auth = {"Authorization": f"Bearer {key}"}
    answer = client.get("/api/v1/search", query_string={"q": QUERY}, headers={**auth, "X-Request-Id": "web-1234"})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["X-Request-Id"] == "web-1234"
    answer.close()
    lines = logs.wait_for("web-1234", SEARCH, EMBED_TEXT, HYDRATE)
    assert {SEARCH, EMBED_TEXT, HYDRATE} <= {line.get("rpc_method") for line in lines}, lines
    gateway = [line for line in lines if line.get("path") == "/api/v1/search"]
    assert gateway and gateway[0]["status"] == 200 and gateway[0]["http_method"] == "GET", lines

    made = client.get("/api/v1/search", query_string={"q": QUERY}, headers=auth)
    assert HEX_ID.fullmatch(made.headers["X-Request-Id"])
    refused = client.get("/api/v1/search", query_string={"q": QUERY}, headers={"X-Request-Id": "a\tb"})
    assert refused.status_code == 401 and HEX_ID.fullmatch(refused.headers["X-Request-Id"])


def test_json_lines_have_the_fields_and_only_known_ids():
    stream = io.StringIO()
    logger = logging.getLogger("tests.telemetry.fields")
    logger.addHandler(telemetry.log_handler("json", "photostore-test", stream=stream))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.info("outside any request: %s", "ünïcode")
    with telemetry.request_id_scope("job-7"):
        try:
            raise ValueError("broken photo")
        except ValueError:
            logger.exception("could not %s", "index", extra={"photo_id": "p1"})
    outside, failed = map(json.loads, stream.getvalue().splitlines())
    assert outside["message"] == "outside any request: ünïcode" and "request_id" not in outside
    assert outside["level"] == "INFO" and outside["logger"] == "tests.telemetry.fields"
    assert outside["service"] == "photostore-test" and "exception" not in outside
    assert failed["request_id"] == "job-7" and failed["level"] == "ERROR" and failed["photo_id"] == "p1"
    assert failed["message"] == "could not index"
    assert failed["exception"].startswith("Traceback") and "ValueError: broken photo" in failed["exception"]

    text = io.StringIO()
    logger.handlers[0] = telemetry.log_handler("text", stream=text)
    with telemetry.request_id_scope("job-8"):
        logger.warning("plain")
    assert re.fullmatch(r"\S+ \S+ WARNING tests\.telemetry\.fields \[job-8\]: plain\n", text.getvalue())
    with telemetry.batch_scope("a batch") as batch_id:  # tracing off: an id, no span
        assert telemetry.current_request_id() == batch_id and HEX_ID.fullmatch(batch_id)
    assert telemetry.current_request_id() is None


# Traces


@pytest.fixture
def tracing():
    """Tracing on in this process, to memory, for what is started or made in the test; off after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "photostore-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry.enable_tracing(provider)
    try:
        yield exporter, provider
    finally:
        telemetry.disable_tracing()


def test_streams_are_traced_and_keep_their_call_objects(tracing, tmp_path):
    """OpenTelemetry's client interceptor would turn a streamed response into a bare generator
    (no initial_metadata(), no cancel()): such calls keep their Call and still join the trace."""
    exporter, provider = tracing
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", shutdown_grace_seconds=0.5, grpc_max_workers=8,
                        embed_target=f"127.0.0.1:{free_port()}", _env_file=None)
    _, key = add_user(settings, "alice")
    auth = bearer_metadata(key)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(jpeg, "JPEG")
    data = jpeg.getvalue()
    ingest = serve_ingest(settings, port=0)
    try:
        with make_channel(f"127.0.0.1:{ingest.port}", settings) as channel, \
                provider.get_tracer("tests").start_as_current_span("test") as test_span:
            stub = ingest_pb2_grpc.IngestServiceStub(channel)
            photo = stub.UploadPhoto(uploads.upload_requests(
                io.BytesIO(data), filename="red.jpg", content_type="image/jpeg", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), request_id="r1"), metadata=auth, timeout=30).photo
            assert b"".join(part.chunk for part in stub.DownloadPhoto(
                ingest_pb2.DownloadPhotoRequest(name=photo.name), metadata=auth, timeout=30)) == data
            watch = stub.WatchPhotos(ingest_pb2.WatchPhotosRequest(names=[photo.name], send_initial=True),
                                     metadata=auth)
            watch.initial_metadata()  # the watch is live
            assert next(watch).photo.name == photo.name
            watch.cancel()
    finally:
        ingest.stop()
    test_trace = test_span.get_span_context().trace_id
    deadline = time.monotonic() + 30
    while True:
        spans = {(s.name, s.kind.name): s for s in exporter.get_finished_spans()}
        if {("/photos.v1.IngestService/WatchPhotos", "SERVER"), ("/photos.v1.IngestService/UploadPhoto", "SERVER"),
                ("/photos.v1.IngestService/DownloadPhoto", "SERVER")} <= set(spans) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    upload_client = spans["/photos.v1.IngestService/UploadPhoto", "CLIENT"]
    assert spans["/photos.v1.IngestService/UploadPhoto", "SERVER"].parent.span_id == upload_client.context.span_id
    for method in ("DownloadPhoto", "WatchPhotos"):  # no client span: the server's joins the caller's
        server = spans[f"/photos.v1.IngestService/{method}", "SERVER"]
        assert server.parent.span_id == test_span.get_span_context().span_id, method
    assert {s.context.trace_id for s in spans.values()} == {test_trace}
    assert not any(name.startswith("/grpc.health") for name, _ in spans)


# Traces, across processes


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self):
        self.spans: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.add(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, request) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({
                        "service": resource.get("service.name"), "name": span.name,
                        "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(), "kind": span.kind,
                        "attributes": {a.key: a.value.string_value for a in span.attributes}})
        with self.lock:
            self.spans += spans

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.spans)


@pytest.fixture(scope="module")
def receiver():
    receiver = OtlpReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def traced_stack(tiny_clip, tmp_path_factory, receiver):
    """ingest, embed, search and the gateway (gunicorn, two workers) as processes, exporting spans
    to `receiver` and logging JSON."""
    stack = Stack(tmp_path_factory.mktemp("traced"), tiny_clip.checkpoint_path, tiny_clip, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PHOTOSTORE_LOG_FORMAT": "json", "PHOTOSTORE_SIGNALS_ENABLED": "false", "PHOTOSTORE_SEARCH_WEIGHT_TEXT": "0",
        "PHOTOSTORE_SEARCH_KEEP_WARM_SECONDS": "0", "PHOTOSTORE_GATEWAY_WORKERS": "2"})
    try:
        for name in ("ingest", "embed", "search", "gateway"):
            stack.start(name)
        wait_serving(stack.target("ingest"), "photos.v1.IngestService", timeout=120)
        wait_serving(stack.target("search"), "photos.v1.SearchService", timeout=120)
        wait_serving(stack.target("embed"), "photos.v1.EmbedService", timeout=180)  # its model is loaded
        yield stack
    finally:
        stack.stop_all()


def log_lines(path: Path) -> list[dict]:
    """Every line of a service's log, each of which must be one JSON object."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name}:{number} is not JSON: {line!r}")
    return lines


def test_a_search_is_one_trace_across_the_services(traced_stack, receiver):
    stack = traced_stack
    key = stack.add_user("alice")
    url = f"http://127.0.0.1:{stack.ports['gateway']}/api/v1/search"
    deadline = time.monotonic() + 120
    while True:  # the gateway's workers may still be starting
        request_id = f"trace-test-{time.monotonic_ns()}"
        try:
            answer = requests.get(url, params={"q": QUERY}, timeout=30,
                                  headers={"Authorization": f"Bearer {key}", "X-Request-Id": request_id})
            if answer.status_code == 200:
                break
        except requests.ConnectionError:
            answer = None
        assert time.monotonic() < deadline, f"search never answered: {answer and answer.text}\n{stack.logs()}"
        time.sleep(0.5)
    assert answer.headers["X-Request-Id"] == request_id

    # Spans of the calls that served the request carry its id; they are one trace, from the
    # gateway's server span down to each service's.
    deadline = time.monotonic() + 60
    while True:
        ours = [s for s in receiver.snapshot() if s["attributes"].get(telemetry.REQUEST_ID_ATTRIBUTE) == request_id]
        if {s["service"] for s in ours} >= SERVICES or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {s["service"] for s in ours} >= SERVICES, (ours, stack.logs())
    trace_ids = {s["trace_id"] for s in ours}
    assert len(trace_ids) == 1, ours
    trace = [s for s in receiver.snapshot() if s["trace_id"] in trace_ids]
    by_id = {s["span_id"]: s for s in trace}
    roots = [s for s in trace if not s["parent_id"]]
    assert [r["service"] for r in roots] == ["photostore-gateway"], trace
    # Each service's server span is the child of its caller's client span for the same method.
    served = [s for s in ours if s["service"] != "photostore-gateway"]
    assert SEARCH in {s["name"] for s in served if s["service"] == "photostore-search"}
    for span in served:
        assert span["kind"] == Span.SPAN_KIND_SERVER, span
        parent = by_id[span["parent_id"]]
        assert parent["kind"] == Span.SPAN_KIND_CLIENT and parent["name"] == span["name"], (span, parent)
        assert parent["service"] in CALLERS[span["service"]], (span, parent)

    # Each process logged JSON lines only, and its lines of this request carry its id.
    logs = {name: log_lines(stack.workdir / f"{name}.log") for name in ("gateway", "search", "embed", "ingest")}
    for name, lines in logs.items():
        assert any(line.get("request_id") == request_id for line in lines), (name, lines[-20:])
        assert {line["service"] for line in lines} == {f"photostore-{name}"}, name
    # Tracing starts in each gunicorn worker after the fork, not in the master.
    assert sum(line["message"].startswith("traces to ") for line in logs["gateway"]) == 2, logs["gateway"]
