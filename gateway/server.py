"""Serves the gateway with gunicorn: `photostore serve gateway` until SIGTERM.

gthread workers: each process (gateway_workers) answers requests on gateway_threads threads, so a
slow upload or an open live-status stream holds one thread, never the process. The app caps the
streams per process (gateway_max_event_streams) below the thread count; what is left serves the
other requests. The app is created in each worker after the fork (gRPC channels do not survive
one).
"""
from __future__ import annotations

import logging
import math

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.http import wsgi as gunicorn_wsgi

from gateway import metrics
from photostore import telemetry
from photostore.server import setup_process
from photostore.settings import Settings, get_settings

log = logging.getLogger("gateway")
# Threads beyond the stream cap, always free for other requests.
MIN_FREE_THREADS = 4
# The Server header of every response, in place of the server software's name (and version).
SERVER_HEADER = "photostore"


class GatewayServer(BaseApplication):
    def __init__(self, settings: Settings):
        if settings.gateway_threads - settings.gateway_max_event_streams < MIN_FREE_THREADS:
            raise SystemExit(f"gateway_threads ({settings.gateway_threads}) must exceed "
                             f"gateway_max_event_streams ({settings.gateway_max_event_streams}) "
                             f"by at least {MIN_FREE_THREADS}")
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        # gunicorn writes its own name as the Server header of every response and has no setting
        # for it; its Response reads this module global per response. Set before the fork.
        gunicorn_wsgi.SERVER = SERVER_HEADER
        s = self.settings
        for name, value in {
            "bind": [f"[{s.host}]:{s.gateway_port}" if ":" in s.host else f"{s.host}:{s.gateway_port}"],
            "workers": s.gateway_workers,
            "worker_class": "gthread",
            "threads": s.gateway_threads,
            # A worker that stops heartbeating this long is restarted; streams do not count.
            "timeout": 60,
            "graceful_timeout": math.ceil(s.shutdown_grace_seconds),
            "keepalive": 5,
            "proc_name": "photostore-gateway",
            "accesslog": None,
            "errorlog": "-",
            "control_socket_disable": True,  # one per user's home: two gateways on a machine would clash
            "forwarded_allow_ips": "*",  # behind an ingress: its X-Forwarded-Proto decides https
            "logger_class": GunicornLogger,
            # Traces are set up in each worker after the fork (the export thread would not survive
            # it), before the worker loads the app, and flushed when it exits.
            "post_fork": lambda server, worker: telemetry.configure_tracing("gateway", s),
            "worker_exit": lambda server, worker: telemetry.disable_tracing(),
            # The workers' metrics, summed, served by the master (gateway/metrics.py).
            "when_ready": lambda server: metrics.serve(s),
            "child_exit": lambda server, worker: metrics.worker_exited(worker.pid),
        }.items():
            self.cfg.set(name, value)

    def load(self):
        from gateway.app import create_app
        return create_app(self.settings)


class GunicornLogger(glogging.Logger):
    """gunicorn's own messages go through the process's handler (setup_process: JSON or text)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            if getattr(handler, "_gunicorn", False):
                self.error_log.removeHandler(handler)
        self.error_log.propagate = True


def main() -> None:
    settings = get_settings()
    metrics.with_multiprocess_dir(settings)  # may start the process over, before anything else
    setup_process("gateway", tracing=False)
    log.info("gateway on http://%s:%d (%d processes x %d threads)", settings.host, settings.gateway_port,
             settings.gateway_workers, settings.gateway_threads)
    GatewayServer(settings).run()
