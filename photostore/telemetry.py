"""Logs, request ids and traces of every service process (docs/OPERATIONS.md, "Logs" and "Traces").

Logs: one JSON object per line on stderr (python-json-logger), or plain text for a person at a
terminal (PHOTOSTORE_LOG_FORMAT). Each line carries the request id of the work it belongs to.

Request ids: the gateway takes X-Request-Id from the request (or makes one) and answers with it;
every gRPC server takes `x-request-id` from the call's metadata (or makes one) and serves the call
with it in a contextvar; every channel from make_channel sends the current one on. So one id runs
through gateway -> search -> embed/ingest. Work with no incoming call (an embed worker's batch)
gets an id of its own (batch_scope).

Traces: OpenTelemetry, only when an OTLP endpoint is configured (PHOTOSTORE_OTLP_ENDPOINT or the
standard OTEL_EXPORTER_OTLP_ENDPOINT): then each process exports its spans over OTLP/HTTP as
photostore-<component>, and servers, channels and the gateway's Flask app are instrumented.
Without one nothing of OpenTelemetry is imported and no interceptor is added. The provider is this
module's, never OpenTelemetry's global one, so tests can switch it (enable_tracing) and back.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime as dt
import logging
import os
import re
import sys
import threading
import time
import uuid
from typing import Any, Iterator

import grpc
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from photostore.auth import OPEN_SERVICES
from photostore.interceptors import bracketed
from photostore.metrics import status_code_name

log = logging.getLogger(__name__)
# One line per RPC served and per gateway request, with the request id.
access_log = logging.getLogger("photostore.access")

REQUEST_ID_METADATA = "x-request-id"
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_ENVIRON = "photostore.request_id"
REQUEST_ID_ATTRIBUTE = "photostore.request_id"  # on the spans of served calls and requests
# An id from a caller is passed on as it is when it is this tame (safe in metadata and in logs).
_ACCEPTED_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
# Gateway paths neither logged nor traced: the orchestrator's probes.
PROBE_PATHS = ("/livez", "/readyz")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_provider = None  # this process's opentelemetry TracerProvider; None: tracing is off


# Request ids


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(value: str | None) -> str | None:
    """`value` when it can be passed on as a request id (printable, no spaces, at most 128
    characters), else None (a new one is made)."""
    return value if value and _ACCEPTED_REQUEST_ID.fullmatch(value) else None


def _reset(token: contextvars.Token) -> None:
    try:
        _request_id.reset(token)
    except ValueError:  # a stream closed from another thread: that thread had nothing to restore
        pass


@contextlib.contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Runs the block with `request_id` (default: a new one) as the current request id."""
    request_id = request_id or new_request_id()
    token = _request_id.set(request_id)
    try:
        yield request_id
    finally:
        _reset(token)


@contextlib.contextmanager
def batch_scope(name: str, **attributes: Any) -> Iterator[str]:
    """Work that no call asked for (an embed worker's batch): a request id of its own for its
    logs and the calls it makes, and with tracing a root span that those calls' spans join."""
    with request_id_scope() as request_id:
        if _provider is None:
            yield request_id
            return
        from opentelemetry import trace
        with _provider.get_tracer("photostore").start_as_current_span(
                name, kind=trace.SpanKind.INTERNAL,
                attributes={REQUEST_ID_ATTRIBUTE: request_id, **attributes}):
            yield request_id


# Logs


class _ContextFilter(logging.Filter):
    """Puts the current request id (and with tracing the trace and span ids) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        if _provider is not None:
            from opentelemetry import trace
            span = trace.get_current_span().get_span_context()
            if span.is_valid:
                record.trace_id = format(span.trace_id, "032x")
                record.span_id = format(span.span_id, "016x")
        return True


_CONTEXT_FIELDS = ("request_id", "trace_id", "span_id")


class JsonLogFormatter(JsonFormatter):
    """time (UTC, ISO 8601), level, logger, message; request_id, trace_id and span_id when known;
    exception (the traceback's text) when there is one; then any `extra` fields of the call."""

    def __init__(self, service: str = ""):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "exc_info": "exception", "stack_info": "stack"},
            static_fields={"service": service} if service else None,
            reserved_attrs=[*RESERVED_ATTRS, "taskName", *_CONTEXT_FIELDS],
            json_ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for field in _CONTEXT_FIELDS:
            if value := getattr(record, field, None):
                log_data[field] = value


class TextLogFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message`, for people."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request = f" [{request_id}]" if request_id else ""
        return super().format(record)


def log_handler(log_format: str, service: str = "", stream=None) -> logging.Handler:
    """A handler writing to `stream` (stderr) in `log_format`: json, text, or auto (text when the
    stream is a terminal, else json)."""
    stream = stream or sys.stderr
    if log_format == "auto":
        log_format = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter(service) if log_format == "json" else TextLogFormatter())
    handler.addFilter(_ContextFilter())
    return handler


def configure_logging(log_format: str, service: str = "", access: bool = True) -> None:
    """This process's logs: the root logger at INFO through one handler on stderr (the access
    lines only with `access`); warnings and uncaught exceptions go through it too, so JSON logs
    stay one object per line."""
    handler = log_handler(log_format, service)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    access_log.setLevel(logging.INFO if access else logging.WARNING)
    logging.captureWarnings(True)
    if isinstance(handler.formatter, JsonLogFormatter):
        uncaught = logging.getLogger("photostore.uncaught")
        sys.excepthook = lambda kind, error, tb: uncaught.critical("uncaught exception", exc_info=(kind, error, tb))
        threading.excepthook = lambda args: uncaught.critical(
            "uncaught exception in thread %s", args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


# gRPC


class RequestIdInterceptor(grpc.ServerInterceptor):
    """Serves each RPC but health and reflection with the caller's x-request-id (or a new one) as
    the current request id, and logs one access line when it ends."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        method = handler_call_details.method
        incoming = accepted_request_id(next(
            (v for k, v in handler_call_details.invocation_metadata or () if k == REQUEST_ID_METADATA), None))

        return bracketed(handler, lambda: (_begin(incoming), time.perf_counter()),
                         lambda begun, context, error: _end(*begun, method, context, error))


def _begin(incoming: str | None) -> contextvars.Token:
    request_id = incoming or new_request_id()
    if _provider is not None:
        from opentelemetry import trace
        trace.get_current_span().set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
    return _request_id.set(request_id)


def _end(token: contextvars.Token, started: float, method: str, context, error: BaseException | None) -> None:
    try:
        ms = (time.perf_counter() - started) * 1000
        code = status_code_name(context, error)
        access_log.info("%s %s %.1f ms", method, code, ms,
                        extra={"rpc_method": method, "grpc_code": code, "duration_ms": round(ms, 1)})
    finally:
        _reset(token)


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _ForwardRequestId(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                        grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Sends the current request id as x-request-id metadata (unless the call has one). With
    tracing it also sends the trace context on calls with streamed responses, which
    OpenTelemetry's client interceptor leaves alone (it would replace their Call objects)."""

    @staticmethod
    def _details(details: grpc.ClientCallDetails, streamed: bool) -> grpc.ClientCallDetails:
        metadata = list(details.metadata or ())
        keys = {k for k, _ in metadata}
        request_id = _request_id.get()
        if request_id is not None and REQUEST_ID_METADATA not in keys:
            metadata.append((REQUEST_ID_METADATA, request_id))
        if streamed and _provider is not None:
            from opentelemetry.propagate import inject
            carrier: dict[str, str] = {}
            inject(carrier)
            metadata += [(k, v) for k, v in carrier.items() if k not in keys]
        if len(metadata) == len(details.metadata or ()):
            return details
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, False), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details, False), request_iterator)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, True), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details, True), request_iterator)


def server_interceptors() -> list[grpc.ServerInterceptor]:
    """For start_server, outermost first: OpenTelemetry's (with tracing), then request ids."""
    interceptors: list[grpc.ServerInterceptor] = [RequestIdInterceptor()]
    if _provider is not None:
        from opentelemetry.instrumentation.grpc import server_interceptor
        interceptors.insert(0, server_interceptor(
            tracer_provider=_provider,
            filter_=lambda details: not details.method.startswith(OPEN_SERVICES)))
    return interceptors


def _client_traced(client_info) -> bool:
    return not (client_info.full_method.startswith(OPEN_SERVICES) or getattr(client_info, "is_server_stream", False))


def instrument_channel(channel: grpc.Channel) -> grpc.Channel:
    """`channel` sending the current request id, and with tracing a client span per call."""
    channel = grpc.intercept_channel(channel, _ForwardRequestId())
    if _provider is not None:
        from opentelemetry.instrumentation.grpc import client_interceptor
        from opentelemetry.instrumentation.grpc.grpcext import intercept_channel
        channel = intercept_channel(channel, client_interceptor(tracer_provider=_provider, filter_=_client_traced))
    return channel


# The gateway (WSGI)


def instrument_flask(app) -> None:
    """Request ids for the gateway's Flask app (X-Request-Id in and out, on to the services, and
    an access line per request), and with tracing a server span per request."""
    app.wsgi_app = _RequestIds(app.wsgi_app)
    if _provider is not None:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        FlaskInstrumentor.instrument_app(
            app, tracer_provider=_provider, excluded_urls=",".join(PROBE_PATHS),
            request_hook=lambda span, environ: span.set_attribute(
                REQUEST_ID_ATTRIBUTE, environ.get(REQUEST_ID_ENVIRON, "")))


class _RequestIds:
    """WSGI middleware: the request's id (its X-Request-Id when acceptable, else a new one) is the
    current request id while the app answers and while its body is read, and the response's
    X-Request-Id."""

    def __init__(self, app):
        self._app = app

    def __call__(self, environ, start_response):
        request_id = accepted_request_id(environ.get("HTTP_X_REQUEST_ID")) or new_request_id()
        environ[REQUEST_ID_ENVIRON] = request_id
        started, status = time.perf_counter(), ["500"]

        def start(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            headers = [(k, v) for k, v in headers if k.lower() != REQUEST_ID_METADATA]
            return start_response(status_line, [*headers, (REQUEST_ID_HEADER, request_id)], exc_info)

        def done() -> None:
            path = environ.get("PATH_INFO", "")
            if path not in PROBE_PATHS:
                ms = (time.perf_counter() - started) * 1000
                method = environ.get("REQUEST_METHOD", "")
                access_log.info("%s %s %s %.1f ms", method, path, status[0], ms, extra={
                    "http_method": method, "path": path, "status": int(status[0]), "duration_ms": round(ms, 1)})

        token = _request_id.set(request_id)
        try:
            body = self._app(environ, start)
        except BaseException:
            done()
            raise
        finally:
            _reset(token)
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):  # a file: the server may sendfile() it
            done()
            return body
        return _Body(body, request_id, done)


class _Body:
    """A response body read with its request id current; the access line once it is closed."""

    def __init__(self, body, request_id: str, done):
        self._body, self._request_id, self._done = body, request_id, done
        self._iterator = None

    def __iter__(self):
        return self

    def __next__(self):
        token = _request_id.set(self._request_id)
        try:
            if self._iterator is None:
                self._iterator = iter(self._body)
            return next(self._iterator)
        finally:
            _reset(token)

    def close(self) -> None:
        token = _request_id.set(self._request_id)
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done()
            _reset(token)


# Traces


def otlp_endpoint(settings) -> str | None:
    """Where this process sends spans (OTLP/HTTP): PHOTOSTORE_OTLP_ENDPOINT, else what the
    standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT say; None: no tracing (nor with OTEL_SDK_DISABLED)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if settings.otlp_endpoint:
        return settings.otlp_endpoint.rstrip("/") + "/v1/traces"
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None)


def configure_tracing(component: str, settings):
    """With an OTLP endpoint: a tracer provider exporting this process's spans in batches as
    photostore-<component> (OTEL_SERVICE_NAME overrides), used from now on; without: nothing.
    Call after any fork (the export thread does not survive one). Returns the provider or None."""
    endpoint = otlp_endpoint(settings)
    if endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"photostore-{component}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    # An explicit endpoint is the full URL; otherwise the exporter reads the OTEL_* variables.
    exporter = OTLPSpanExporter(endpoint=endpoint if settings.otlp_endpoint else None)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    enable_tracing(provider)
    log.info("traces to %s as %s", endpoint, provider.resource.attributes.get(SERVICE_NAME))
    return provider


def enable_tracing(provider) -> None:
    """Servers started, channels made and Flask apps created from now on are traced to `provider`."""
    global _provider
    _provider = provider


def disable_tracing() -> None:
    """Back to no tracing (what is already instrumented stays so); flushes the provider's spans."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def tracer_provider():
    return _provider
