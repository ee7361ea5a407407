"""Prometheus metrics: every gRPC server counts and times its RPCs by method and status code (an
interceptor in the shared server bootstrap), and each process serves /metrics on a port of its own
(PHOTOSTORE_<PROCESS>_METRICS_PORT; docs/OPERATIONS.md lists what each process exports)."""
from __future__ import annotations

import logging
import time

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from photostore.auth import OPEN_SERVICES
from photostore.interceptors import bracketed

log = logging.getLogger(__name__)

RPC_HANDLED = Counter("photostore_grpc_server_handled_total",
                      "RPCs finished, by service, method and status code", ["service", "method", "code"])
RPC_SECONDS = Histogram("photostore_grpc_server_handling_seconds",
                        "Time from the call's arrival to its last message, by service and method",
                        ["service", "method"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RPC_IN_FLIGHT = Gauge("photostore_grpc_server_in_flight", "RPCs being served, by service and method",
                      ["service", "method"])


def serve_metrics(port: int, host: str) -> None:
    """Serves this process's /metrics on host:port from a daemon thread; 0: not at all."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)


def status_code_name(context: grpc.ServicerContext, error: BaseException | None) -> str:
    """The status the call ends with: the one set or aborted with, else OK, or UNKNOWN for an
    exception that carried none; CANCELLED when the client went away mid-stream."""
    if isinstance(error, GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode.UNKNOWN.name if error is not None else grpc.StatusCode.OK.name


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts, times and gauges every RPC but health and reflection (outermost, so refused keys
    count as UNAUTHENTICATED)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        labels = (service, method)
        return bracketed(handler, lambda: _started(labels),
                         lambda started, context, error: _finished(labels, context, started, error))


def _started(labels: tuple[str, str]) -> float:
    RPC_IN_FLIGHT.labels(*labels).inc()
    return time.perf_counter()


def _finished(labels: tuple[str, str], context, started: float, error: BaseException | None) -> None:
    RPC_IN_FLIGHT.labels(*labels).dec()
    RPC_SECONDS.labels(*labels).observe(time.perf_counter() - started)
    RPC_HANDLED.labels(*labels, status_code_name(context, error)).inc()
