"""HTTP/JSON and Server-Sent Events in front of the gRPC services, plus a plain web page.

JSON bodies are the services' messages rendered by protobuf's json_format (camelCase), errors a
JSON google.rpc.Status with the HTTP status grpc-gateway would give. The caller's credential goes
on as gRPC metadata: the `Authorization: Bearer` header's, or, for the page, the session token in the
HttpOnly cookie set by POST /api/v1/session (a session of the ingest service: gateway/sessions.py).
A state-changing request that rides on that cookie must come from the gateway's own origin
(Origin, else Referer); a header-authenticated one is not ambient and needs no such check.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import re
import threading
import urllib.parse
import uuid
from typing import Iterator

import grpc
from flask import Flask, Response, jsonify, redirect, request
from google.protobuf import json_format, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from gateway import errors, metrics, openapi, sessions
from photos.v1 import (auth_pb2, auth_pb2_grpc, embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc,
                       photo_pb2, search_pb2, search_pb2_grpc)
from photostore import telemetry, uploads
from photostore.auth import api_key_from_metadata, bearer_metadata, is_session_token
from photostore.convert import photo_id_from_name, photo_name
from photostore.errors import ServiceError, invalid, too_large
from photostore.server import MAX_MESSAGE_BYTES, make_channel
from photostore.settings import MIB, Settings, get_settings

log = logging.getLogger(__name__)

API = "/api/v1"
# The cookie earlier versions kept the API key itself in; sign-in and sign-out delete it.
LEGACY_KEY_COOKIE = "api_key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_FILES_PER_UPLOAD = openapi.MAX_FILES_PER_UPLOAD
RPC_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 600.0
HEALTH_TIMEOUT_S = 2.0
SSE_HEARTBEAT_S = 15.0
SSE_RETRY_MS = 3000
# A client refused a live-status stream (all taken) tries again after this.
STREAMS_FULL_RETRY_S = 5
THUMBNAIL_CACHE = "private, max-age=86400"

SERVICE_NAMES = {
    "ingest": ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    "embed": embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name,
    "search": search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name,
}
STATUS_PARAM = {
    "uploaded": photo_pb2.PHOTO_STATUS_UPLOADED,
    "indexed": photo_pb2.PHOTO_STATUS_INDEXED,
    "failed": photo_pb2.PHOTO_STATUS_FAILED,
}
VARIANTS = {
    "original": ingest_pb2.PHOTO_VARIANT_ORIGINAL,
    "thumbnail": ingest_pb2.PHOTO_VARIANT_THUMBNAIL,
    "preview": ingest_pb2.PHOTO_VARIANT_PREVIEW,
}
# Renditions never change once made (a photo's own key): the browser keeps them.
CACHED_VARIANTS = ("thumbnail", "preview")


class Clients:
    """Channels and stubs to the services, made on first use in each process (so after any fork)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._pid = 0
        self._channels: dict[str, grpc.Channel] = {}

    def channel(self, service: str) -> grpc.Channel:
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._channels = os.getpid(), {}
            if service not in self._channels:
                self._channels[service] = make_channel(self._settings.target(service), self._settings)
            return self._channels[service]

    @property
    def ingest(self) -> ingest_pb2_grpc.IngestServiceStub:
        return ingest_pb2_grpc.IngestServiceStub(self.channel("ingest"))

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel("ingest"))

    @property
    def embed(self) -> embed_pb2_grpc.EmbedServiceStub:
        return embed_pb2_grpc.EmbedServiceStub(self.channel("embed"))

    @property
    def search(self) -> search_pb2_grpc.SearchServiceStub:
        return search_pb2_grpc.SearchServiceStub(self.channel("search"))

    def health(self, service: str) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel(service))

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels = {}


def to_json(message) -> dict:
    # Unset scalars and empty lists are written out, as grpc-gateway's default marshaler does.
    return json_format.MessageToDict(message, preserving_proto_field_name=False,
                                     always_print_fields_with_no_presence=True)


# Request parsing


def normalized_origin(url: str) -> str | None:
    """scheme://host:port of a URL (default port written out), or None when it has none."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}:{port}"


def own_origin() -> str:
    """This gateway's origin as the request sees it (scheme from the server, X-Forwarded-Proto
    behind an ingress; host and port from Host)."""
    return f"{request.scheme}://{request.host}"


def check_same_origin() -> None:
    """A state-changing request on the session cookie must come from this origin: the Origin
    header, else the Referer's origin. Anything else (another site, another port of this host,
    neither header) is PERMISSION_DENIED (403)."""
    if request.method in SAFE_METHODS:
        return
    own = own_origin()
    origin, source = request.headers.get("Origin"), "Origin"
    if origin is None and request.headers.get("Referer"):
        origin, source = request.headers["Referer"], "Referer"
    if not origin:
        raise ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                           f"a {request.method} with the session cookie needs an Origin or Referer "
                           f"header of this site ({own}); API clients send 'Authorization: Bearer <key>'",
                           reason="ORIGIN_MISSING", metadata={"expected": own})
    if normalized_origin(origin) is None or normalized_origin(origin) != normalized_origin(own):
        raise ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                           f"cross-origin request refused: the {source} {origin[:200]} is not this "
                           f"site's origin {own}", reason="CROSS_ORIGIN",
                           metadata={"expected": own, "got": origin[:200]})


def header_key() -> str | None:
    return api_key_from_metadata([("authorization", request.headers.get("Authorization", ""))])


def cookie_token() -> str:
    """The session token of the request's cookie (after the origin check of a write). The services
    check it: an ended session is their UNAUTHENTICATED (SESSION_INVALID)."""
    check_same_origin()
    return sessions.cookie_token(request.cookies)


def caller_metadata() -> list[tuple[str, str]]:
    """The caller's credential as gRPC metadata: the Authorization header's, else the cookie's
    session token."""
    key = header_key()
    if key:
        return bearer_metadata(key)
    if request.cookies.get(sessions.COOKIE):
        return bearer_metadata(cookie_token())
    raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                       "missing API key: send 'Authorization: Bearer <key>' or sign in "
                       f"with POST {API}/session", reason="API_KEY_MISSING")


INT32_MAX = openapi.INT32_MAX
INTEGER = re.compile(r"-?[0-9]+")
NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def query_param(name: str) -> str | None:
    """A query parameter as sent (None when absent). A typed parameter that is present must be
    valid: an empty value is refused, as OpenAPI describes it, rather than read as absent."""
    return request.args.get(name)


def int_param(name: str) -> int:
    """A count (a page size): an integer from 0 to the largest int32; 0 when absent."""
    raw = query_param(name)
    if raw is None:
        return 0
    if not INTEGER.fullmatch(raw):
        raise invalid(f"{name} must be an integer, got '{raw[:100]}'", field=name)
    if len(raw) > len(str(INT32_MAX)) + 1 or not 0 <= int(raw) <= INT32_MAX:
        raise invalid(f"{name} must be between 0 and {INT32_MAX}, got {raw[:100]}", field=name)
    return int(raw)


def float_param(name: str) -> float | None:
    """None when the parameter is absent."""
    raw = query_param(name)
    if raw is None:
        return None
    if not NUMBER.fullmatch(raw):
        raise invalid(f"{name} must be a number, got '{raw[:100]}'", field=name)
    return float(raw)


def time_param(name: str) -> timestamp_pb2.Timestamp | None:
    """An ISO 8601 date or date-time between years 1 and 9999 in UTC; without a zone it is taken
    as UTC."""
    raw = query_param(name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        ts = timestamp_pb2.Timestamp()
        ts.FromDatetime(value.astimezone(dt.timezone.utc))
    except (ValueError, OverflowError):
        # Not ISO 8601, or a time whose UTC equivalent falls outside years 1..9999.
        raise invalid(f"{name} must be an ISO 8601 date-time between 0001-01-01 and 9999-12-31 UTC, "
                      f"got '{raw[:100]}'", field=name) from None
    return ts


def bool_param(name: str) -> bool:
    """true or false; false when absent."""
    raw = query_param(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise invalid(f"{name} must be true or false, got '{raw[:100]}'", field=name)
    return raw == "true"


def album_param() -> str:
    """The album's resource name (albums/{id}; the bare id works too); "" when absent."""
    raw = request.args.get("album", "").strip()
    return raw if not raw or raw.startswith("albums/") else f"albums/{raw}"


def browse_filter() -> dict:
    """The filters ListPhotos, SummarizePhotos and the searches share, as message fields."""
    return dict(start_time=time_param("startTime"), end_time=time_param("endTime"),
                camera_make=request.args.get("cameraMake", "").strip(),
                camera_model=request.args.get("cameraModel", "").strip(),
                place=request.args.get("place", "").strip(), album=album_param(),
                favorite=bool_param("favorite"))


def search_filter() -> search_pb2.SearchFilter:
    return search_pb2.SearchFilter(**browse_filter())


def single_file(field: str = "file") -> FileStorage:
    upload = request.files.get(field)
    if upload is None:
        raise invalid(f"send the image as a multipart form field named '{field}'", field=field)
    return upload


# Streaming helpers


def upload_requests(upload: FileStorage, request_id: str, chunk_bytes: int
                    ) -> Iterator[ingest_pb2.UploadPhotoRequest]:
    """The upload stream of a form file, read from werkzeug's spooled copy twice:
    once to hash it, once to send it."""
    stream = upload.stream
    stream.seek(0)
    sha256, size = uploads.digest(stream)
    stream.seek(0)
    return uploads.upload_requests(stream, filename=upload.filename or "",
                                   content_type=upload.mimetype or "", size=size, sha256=sha256,
                                   request_id=request_id, chunk_bytes=chunk_bytes)


def health_state(call) -> str:
    """A health Check's answer as a ServingStatus name, or why there is none."""
    try:
        return health_pb2.HealthCheckResponse.ServingStatus.Name(call.result().status)
    except grpc.RpcError as err:
        return "SERVICE_UNKNOWN" if err.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"


def sse_event(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_stream(call, heartbeat_s: float) -> Iterator[str]:
    """WatchPhotos messages as SSE `photo` events, a comment line when idle for heartbeat_s.

    A thread drains the gRPC stream so the response can send heartbeats; the stream is cancelled
    when the client goes away (the server notices when a write fails and closes this generator).
    """
    inbox: queue.Queue = queue.Queue()

    def drain() -> None:
        try:
            for message in call:
                inbox.put(message)
            inbox.put(None)
        except grpc.RpcError as err:
            inbox.put(err)

    threading.Thread(target=drain, name="sse-drain", daemon=True).start()
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        while True:
            try:
                item = inbox.get(timeout=heartbeat_s)
            except queue.Empty:
                yield ": heartbeat\n\n"
                continue
            if item is None:
                return
            if isinstance(item, grpc.RpcError):
                if item.code() != grpc.StatusCode.CANCELLED:
                    yield sse_event("rpc_error", errors.rpc_error_json(item)[0])
                return
            yield sse_event("photo", to_json(item))
    finally:
        call.cancel()


def s3_browser_origin(settings: Settings) -> str | None:
    """Where browsers fetch originals from when downloads are redirected to presigned S3 URLs."""
    blobs = settings.blobs
    if blobs.backend != "s3":
        return None
    url = blobs.s3_public_url or f"{'https' if blobs.s3_secure else 'http'}://{blobs.s3_endpoint}"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles, fetches and the event stream from this origin only; images also from the
    S3 service originals are redirected to; no plugins, no <base>, no framing."""
    images = ["'self'", "data:", "blob:", s3_browser_origin(settings)]
    return "; ".join([
        "default-src 'self'",
        f"img-src {' '.join(filter(None, images))}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        # The Referer is the fallback of the origin check, so it goes to this origin (only).
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    # Room for MAX_FILES_PER_UPLOAD files of the largest size, plus multipart framing.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes * MAX_FILES_PER_UPLOAD + MIB
    app.config["SSE_HEARTBEAT_S"] = SSE_HEARTBEAT_S
    app.json.sort_keys = False
    clients = Clients(settings)
    app.extensions["photostore_clients"] = clients
    # A live-status stream holds a server thread as long as the page is open; the rest of the
    # threads stay free for requests.
    event_streams = threading.BoundedSemaphore(settings.gateway_max_event_streams)

    app.register_error_handler(grpc.RpcError, errors.handle_rpc_error)
    app.register_error_handler(ServiceError, errors.handle_service_error)
    app.register_error_handler(HTTPException, errors.handle_http_exception)

    headers = security_headers(content_security_policy(settings))

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        # Every response: pages, static files, JSON, errors, downloads and event streams.
        response.headers.update(headers)
        return response

    def check_key(metadata) -> auth_pb2.GetCallerResponse:
        """The key's user; raises the service's UNAUTHENTICATED error when the key is not valid."""
        return clients.auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=metadata, timeout=RPC_TIMEOUT_S)

    # Page, API description, health

    @app.get("/")
    def index():
        return app.send_static_file("index.html")

    @app.get("/openapi.json")
    def openapi_document():
        return jsonify(openapi.document())

    def check_health(service: str):
        """The service's health Check, started (a future for health_state)."""
        return clients.health(service).Check.future(
            health_pb2.HealthCheckRequest(service=SERVICE_NAMES[service]), timeout=HEALTH_TIMEOUT_S)

    @app.get("/healthz")
    def healthz():
        calls = {SERVICE_NAMES[service]: check_health(service) for service in SERVICE_NAMES}
        states = {name: health_state(call) for name, call in calls.items()}
        return jsonify(states), 503 if "UNREACHABLE" in states.values() else 200

    @app.get("/livez")
    def livez():
        """The process answers (a liveness probe: restart only what is itself stuck)."""
        return jsonify({"status": "SERVING"})

    @app.get("/readyz")
    def readyz():
        """Ready for traffic: the ingest service, which every request's key check needs, answers."""
        state = health_state(check_health("ingest"))
        return jsonify({SERVICE_NAMES["ingest"]: state}), 200 if state == "SERVING" else 503

    # The page's session: an opaque token in an HttpOnly cookie (also what <img> and EventSource,
    # which cannot send headers, authenticate with). The ingest service keeps the session; the API
    # key is used once, to make it.

    def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    def forget_legacy_cookie(response: Response) -> None:
        if LEGACY_KEY_COOKIE in request.cookies:
            response.delete_cookie(LEGACY_KEY_COOKIE, path=API)

    @app.post(f"{API}/session")
    def create_session():
        # No body at all: the Authorization header's key. A body must be a JSON object.
        body = request.get_json(silent=True) if request.get_data() else {}
        if not isinstance(body, dict) or not isinstance(body.get("apiKey", ""), str):
            raise invalid("the body must be a JSON object with the API key as a string in 'apiKey'",
                          field="apiKey")
        key = body.get("apiKey", "").strip()
        if key:
            check_same_origin()  # a sign-in form posted from elsewhere would log the browser in
        else:
            key = header_key() or ""
        if not key:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                               "send the API key as 'apiKey' in a JSON body (or 'Authorization: Bearer <key>')",
                               reason="API_KEY_MISSING")
        old = request.cookies.get(sessions.COOKIE, "")
        if is_session_token(old):  # signing in again rotates the session
            sessions.end(clients.auth, old, RPC_TIMEOUT_S)
        session = sessions.create(clients.auth, key, RPC_TIMEOUT_S)
        response = no_store(jsonify(sessions.as_json(session.user_id, session.display_name,
                                                     session.expire_time)))
        forget_legacy_cookie(response)
        response.set_cookie(sessions.COOKIE, session.token, httponly=True, samesite="Strict",
                            secure=request.is_secure, path="/")
        return response

    @app.get(f"{API}/session")
    def get_session():
        if not request.cookies.get(sessions.COOKIE):
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, f"not signed in: POST {API}/session",
                               reason="SESSION_MISSING")
        caller = sessions.resolve(clients.auth, cookie_token(), RPC_TIMEOUT_S)
        return no_store(jsonify(sessions.as_json(caller.user_id, caller.display_name,
                                                 caller.session_expire_time)))

    @app.delete(f"{API}/session")
    def delete_session():
        token = request.cookies.get(sessions.COOKIE, "")
        if token:
            if not header_key():
                check_same_origin()
            if is_session_token(token):
                sessions.end(clients.auth, token, RPC_TIMEOUT_S)
        response = no_store(jsonify({}))
        forget_legacy_cookie(response)
        response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="Strict",
                               secure=request.is_secure)
        return response

    # Photos

    @app.post(f"{API}/photos")
    def upload_photos():
        metadata = caller_metadata()
        uploads = request.files.getlist("file")
        if not uploads:
            raise invalid("send one or more images as multipart form fields named 'file'", field="file")
        if len(uploads) > MAX_FILES_PER_UPLOAD:
            raise too_large(f"at most {MAX_FILES_PER_UPLOAD} files per request", field="file",
                            reason="TOO_MANY_FILES")
        idempotency_key = request.headers.get("Idempotency-Key", "").strip()
        results, failures = [], []
        for index, upload in enumerate(uploads):
            # A retry with the same Idempotency-Key gives each file its first result again.
            request_id = f"{idempotency_key}/{index}" if idempotency_key else uuid.uuid4().hex
            try:
                response = clients.ingest.UploadPhoto(
                    upload_requests(upload, request_id, settings.max_chunk_bytes),
                    metadata=metadata, timeout=STREAM_TIMEOUT_S)
            except grpc.RpcError as err:
                body, status = errors.rpc_error_json(err)
                results.append({"filename": upload.filename, "error": body})
                failures.append((body, status))
            else:
                results.append({"filename": upload.filename, "photo": to_json(response.photo),
                                "duplicate": response.duplicate,
                                "similarPhotos": [to_json(p) for p in response.similar_photos]})
        if len(failures) < len(results):
            return jsonify(results=results)
        # Nothing stored: the first failure's Status is the body, with every file's result beside it.
        body, status = failures[0]
        return jsonify({**body, "results": results}), status

    @app.get(f"{API}/photos")
    def list_photos():
        metadata = caller_metadata()
        status = query_param("status")
        if status is not None and status not in STATUS_PARAM:
            raise invalid(f"status must be one of {', '.join(STATUS_PARAM)}", field="status")
        response = clients.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(
            page_size=int_param("pageSize"), page_token=request.args.get("pageToken", ""),
            status=STATUS_PARAM.get(status or "", photo_pb2.PHOTO_STATUS_UNSPECIFIED),
            **browse_filter(), deleted=bool_param("deleted"),
        ), metadata=metadata, timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.get(f"{API}/photos:summarize")
    def summarize_photos():
        response = clients.ingest.SummarizePhotos(ingest_pb2.SummarizePhotosRequest(
            filter=ingest_pb2.ListPhotosRequest(**browse_filter())),
            metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.get(f"{API}/duplicateGroups")
    def list_duplicate_groups():
        response = clients.ingest.ListDuplicateGroups(ingest_pb2.ListDuplicateGroupsRequest(
            page_size=int_param("pageSize"), page_token=request.args.get("pageToken", "")),
            metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.get(f"{API}/photos/<photo_id>")
    def get_photo(photo_id: str):
        response = clients.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=photo_name(photo_id)),
                                           metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.delete(f"{API}/photos/<photo_id>")
    def delete_photo(photo_id: str):
        response = clients.ingest.DeletePhoto(ingest_pb2.DeletePhotoRequest(name=photo_name(photo_id)),
                                              metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    def download(photo_id: str, variant: str) -> Response:
        call = clients.ingest.DownloadPhoto(
            ingest_pb2.DownloadPhotoRequest(name=photo_name(photo_id), variant=VARIANTS[variant]),
            metadata=caller_metadata(), timeout=STREAM_TIMEOUT_S)
        # The first message carries type and size; waiting for it lets errors get their status.
        first = next(call, None)
        if first is None:
            raise ServiceError(grpc.StatusCode.INTERNAL, f"the {variant} of photos/{photo_id} came back empty")

        def body() -> Iterator[bytes]:
            # A failure after the headers went out can only cut the response short.
            try:
                yield first.chunk
                for message in call:
                    yield message.chunk
            finally:
                call.cancel()

        response = Response(body(), content_type=first.content_type or "application/octet-stream")
        response.content_length = first.size_bytes
        response.headers["Cache-Control"] = THUMBNAIL_CACHE if variant in CACHED_VARIANTS else "private"
        return response

    @app.get(f"{API}/photos/<photo_id>/original")
    def download_original(photo_id: str):
        # Where the blob store hands out URLs (S3), the browser fetches the original from it
        # directly instead of through ingest and this gateway.
        located = clients.ingest.GetPhotoDownloadUrl(
            ingest_pb2.GetPhotoDownloadUrlRequest(name=photo_name(photo_id),
                                                  variant=VARIANTS["original"]),
            metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        if located.url:
            response = redirect(located.url, code=302)
            response.headers["Cache-Control"] = "private, no-store"
            return response
        return download(photo_id, "original")

    @app.get(f"{API}/photos/<photo_id>/thumbnail")
    def download_thumbnail(photo_id: str):
        return download(photo_id, "thumbnail")

    @app.get(f"{API}/photos/<photo_id>/preview")
    def download_preview(photo_id: str):
        # At most 1440 px, JPEG, whatever the original's type; made on first request for photos
        # stored before previews were.
        return download(photo_id, "preview")

    # Search

    @app.get(f"{API}/search")
    def search_photos():
        response = clients.search.SearchPhotos(search_pb2.SearchPhotosRequest(
            query=request.args.get("q", ""), filter=search_filter(),
            page_size=int_param("pageSize"), min_score=float_param("minScore"),
            page_token=request.args.get("pageToken", ""),
        ), metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.get(f"{API}/photos/<photo_id>/similar")
    def similar_to_photo(photo_id: str):
        response = clients.search.FindSimilar(search_pb2.FindSimilarRequest(
            name=photo_name(photo_id), filter=search_filter(),
            page_size=int_param("pageSize"), min_score=float_param("minScore"),
            page_token=request.args.get("pageToken", ""),
        ), metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    @app.post(f"{API}/similar")
    def similar_to_image():
        metadata = caller_metadata()
        upload = single_file()
        limit = min(settings.max_upload_bytes, MAX_MESSAGE_BYTES - MIB)
        image = upload.stream.read(limit + 1)
        if len(image) > limit:
            raise too_large(f"the image is larger than {limit} bytes", field="file")
        response = clients.search.FindSimilar(search_pb2.FindSimilarRequest(
            image=image, filter=search_filter(),
            page_size=int_param("pageSize"), min_score=float_param("minScore"),
            page_token=request.args.get("pageToken", ""),
        ), metadata=metadata, timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    # Live status

    @app.get(f"{API}/events")
    def watch_photos():
        metadata = caller_metadata()
        # Fail with a proper HTTP status now rather than inside an already started stream.
        check_key(metadata)
        names = [name.strip() for value in request.args.getlist("names")
                 for name in value.split(",") if name.strip()]
        for index, name in enumerate(names):
            photo_id_from_name(name, field=f"names[{index}]")  # a malformed name is a 400 now
        if not event_streams.acquire(blocking=False):
            raise ServiceUnavailable(f"this gateway process already serves {settings.gateway_max_event_streams} "
                                     "live-status streams; try again shortly",
                                     retry_after=STREAMS_FULL_RETRY_S)
        try:
            call = clients.ingest.WatchPhotos(
                ingest_pb2.WatchPhotosRequest(names=names, send_initial=bool(names)), metadata=metadata)
            # IngestService sends initial metadata once the watch is live: nothing after this is
            # missed. A refusal after the key check (too many watchers) comes as an rpc_error event.
            call.initial_metadata()
            if call.done():  # refused before the watch went live: a named photo is not the caller's
                raise call
            response = Response(sse_stream(call, app.config["SSE_HEARTBEAT_S"]),
                                content_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        except BaseException:
            event_streams.release()
            raise
        response.call_on_close(event_streams.release)  # the server closes the response, streamed or not
        return response

    @app.get(f"{API}/model")
    def model_info():
        response = clients.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(),
                                              metadata=caller_metadata(), timeout=RPC_TIMEOUT_S)
        return jsonify(to_json(response))

    from gateway import albums  # albums, trash, favourites; its routes use this module's helpers
    app.register_blueprint(albums.blueprint)

    telemetry.instrument_flask(app)  # X-Request-Id in, out and on to the services; spans when tracing
    metrics.instrument(app)
    return app
