"""The gateway's Prometheus metrics: requests by route, method and status, and their durations.

gunicorn runs several worker processes: they write their metrics to files in
PROMETHEUS_MULTIPROC_DIR, and the master serves the sum on gateway_metrics_port. prometheus_client
reads that variable when it is imported, so `main` starts the process over with it set
(`with_multiprocess_dir`) before anything imports the client.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

from photostore.settings import Settings

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("photostore_http_requests_total", "HTTP requests answered, by route, method and status",
                   ["route", "method", "status"])
SECONDS = Histogram("photostore_http_request_seconds",
                    "Time from a request's arrival to its response's headers, by route and method",
                    ["route", "method"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))


def with_multiprocess_dir(settings: Settings) -> None:
    """Unless it is set already, sets PROMETHEUS_MULTIPROC_DIR to a new directory and starts this
    process over (same pid, same arguments); it is removed when the process exits."""
    if not settings.gateway_metrics_port:
        return
    if os.environ.get(MULTIPROC_DIR):
        directory, master = os.environ[MULTIPROC_DIR], os.getpid()
        # The forked workers inherit this hook: only the master removes the directory.
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(directory, ignore_errors=True))
        return
    os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="photostore-gateway-metrics-")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def serve(settings: Settings) -> None:
    """In the gunicorn master: serves the workers' metrics, summed, on gateway_metrics_port."""
    if settings.gateway_metrics_port and os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(settings.gateway_metrics_port, addr=settings.host, registry=registry)


def worker_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.mark_process_dead(pid)


def instrument(app: Flask) -> None:
    """Counts and times every request of `app`, by its route pattern (never the raw path)."""

    @app.before_request
    def started() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def answered(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        if (start := g.get("metrics_started")) is not None:
            SECONDS.labels(route, request.method).observe(time.perf_counter() - start)
        return response
