"""Runs photos.v1.EmbedService; the models load in the background while health already answers."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from embed_svc.model import ClipModel
from embed_svc.service import SERVICE_NAME, EmbedService
from embed_svc.signals import ImageAnalyzer
from photos.v1 import embed_pb2_grpc
from photostore.auth import Authenticator
from photostore.memory import release_memory
from photostore.metrics import serve_metrics
from photostore.server import GrpcService, make_channel, setup_process, start_server
from photostore.settings import Settings, get_settings


def serve(settings: Settings, port: int) -> GrpcService:
    """Starts the server at once; its health for EmbedService says SERVING once any model is ready
    (the labels, OCR and sentence models are useful without CLIP); GetModelInfo tells which."""
    release_memory()  # also caps glibc's arenas before the model threads start
    model = ClipModel(settings)
    analyzer = ImageAnalyzer(settings) if settings.signals_enabled else None
    ingest_channel = make_channel(settings.target("ingest"), settings)  # checks callers' keys
    svc = start_server(
        settings=settings, port=port,
        servicers=[(embed_pb2_grpc.add_EmbedServiceServicer_to_server, EmbedService(model, analyzer))],
        service_names=[SERVICE_NAME],
        authenticator=Authenticator.remote(ingest_channel, settings.auth_cache_seconds))
    svc.on_stop(ingest_channel.close, after_drain=True)
    svc.set_serving(SERVICE_NAME, False)

    def on_ready() -> None:
        svc.set_serving(SERVICE_NAME, True)

    svc.on_stop(model.close, after_drain=True)
    model.start_loading(on_ready=on_ready)
    if analyzer is not None:
        svc.on_stop(analyzer.close, after_drain=True)
        analyzer.start_loading(on_ready=on_ready)
    return svc


class _StopSignals:
    """SIGTERM and SIGINT from the first moment of main(): the models start loading inside
    serve(), before GrpcService.wait() takes the signals over, and a signal in between would kill
    the process (SIGTERM's default) or unwind it through the interpreter's teardown (Ctrl-C) while
    a loader thread is inside native code. A stop asked for before the server runs is done as
    soon as it does."""

    def __init__(self) -> None:
        self.asked = False
        self._svc: GrpcService | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, *_) -> None:
        self.asked = True
        self._stop()

    def hand_over(self, svc: GrpcService) -> None:
        self._svc = svc
        self._stop()

    def _stop(self) -> None:  # on the main thread (signal handlers run there): no race with hand_over
        if self.asked and self._svc is not None:
            threading.Thread(target=self._svc.stop, daemon=True).start()


def _children() -> list[int]:
    """The processes this one started that still run (Linux; none found elsewhere)."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == me and state != "Z":
                found.append(int(stat.parent.name))
    return found


def _end_children(grace_s: float = 5.0) -> None:
    """Ends what this process started and still runs, a model export that loading waits for:
    it would outlive the service (minutes of CPU, for nothing). SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        children = _children()
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while children and time.monotonic() < deadline:
            time.sleep(0.05)
            children = [pid for pid in _children() if pid in children]
        if not children:
            return


def main() -> None:
    """Runs until SIGTERM or SIGINT, then drains and leaves with os._exit: never through the
    interpreter's teardown, which runs the C++ destructors of torch's, OpenVINO's, ONNX
    Runtime's and gRPC's runtimes while their threads (a model still loading in one, say) run:
    std::terminate, "terminate called without an active exception", SIGABRT."""
    signals = _StopSignals()
    code = 1
    try:
        setup_process("embed")
        settings = get_settings()
        serve_metrics(settings.embed_metrics_port, settings.host)
        if not signals.asked:
            svc = serve(settings, settings.embed_port)
            signals.hand_over(svc)
            svc.wait()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException as e:  # noqa: BLE001 - reported as the interpreter would, then os._exit
        sys.excepthook(type(e), e, e.__traceback__)
    finally:
        _end_children()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
