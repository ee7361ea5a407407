"""Runtimes without torch: ONNX Runtime and OpenVINO sessions, the export cache (filled once by
`python -m embed_svc.export` in a subprocess), and the process-wide inference gate."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import heapq
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from photostore.memory import release_memory
from photostore.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Gate priorities, lowest first: queries, then indexing, then OCR.
QUERY, INDEX, OCR = 0, 1, 2
# Inference idle this long frees the runtimes' working memory (not after every pass: a burst of
# queries would pay for it each time).
IDLE_RELEASE_S = 2.0

Runner = Callable[..., list[np.ndarray]]  # positional inputs -> outputs


class InferenceGate:
    """Lets one forward pass run at a time in the process (models in parallel on few cores are
    slower than in turn); the waiting job of the lowest priority number goes next, FIFO within one.
    Once no pass ran for `idle_s`, the models registered with on_idle free their working memory and
    the heap is returned to the system; the next pass takes it back (a query: a millisecond)."""

    def __init__(self, idle_s: float = IDLE_RELEASE_S) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[int, int]] = []
        self._order = itertools.count()
        self._idle_s = idle_s
        self._idle_models: weakref.WeakSet = weakref.WeakSet()
        self._passes = 0  # passes begun; only the timer of the last one releases

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def on_idle(self, model: Any) -> None:
        """Calls `model.release_memory()` (under the gate, no pass running) each time inference
        goes idle, for as long as the model lives."""
        with self._changed:
            self._idle_models.add(model)

    @contextlib.contextmanager
    def hold(self, priority: int) -> Iterator[None]:
        ticket = (priority, next(self._order))
        with self._changed:
            heapq.heappush(self._waiting, ticket)
            self._changed.wait_for(lambda: not self._busy and self._waiting[0] == ticket)
            heapq.heappop(self._waiting)
            self._busy = True
            self._passes += 1
            passes = self._passes
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                idle = not self._waiting
                self._changed.notify_all()
            if idle:
                timer = threading.Timer(self._idle_s, self._release_if_idle, args=(passes,))
                timer.daemon = True
                timer.start()

    def _release_if_idle(self, passes: int) -> None:
        with self._changed:
            if self._busy or self._waiting or self._passes != passes:
                return
            self._busy = True  # no pass starts while the models free what passes use
            models = list(self._idle_models)
        try:
            for model in models:
                try:
                    model.release_memory()
                except Exception:  # noqa: BLE001 - memory stays held; inference is unaffected
                    log.exception("freeing idle inference memory failed")
            release_memory()
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()


GATE = InferenceGate()




@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux; empty elsewhere)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    return frozenset(re.search(r"^flags\s*:(.*)$", cpuinfo, re.M).group(1).split())


@functools.cache
def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_runner(path: Path, settings: Settings) -> Runner:
    """An ONNX Runtime session whose threads sleep between calls (spinning slows the next model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False  # the arena would keep a batch's peak for good
    if settings.torch_threads > 0:
        options.intra_op_num_threads = settings.torch_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: session.run(None, dict(zip(names, inputs)))


def openvino_runner(path: Path, settings: Settings, precision: str) -> Runner:
    """An OpenVINO CPU model computing in `precision` ("f32" or "bf16")."""
    import openvino as ov

    # CACHE_DIR: the compiled model is kept, so later starts skip compiling (seconds for CLIP).
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                              "CACHE_DIR": str(cache_root(settings) / "openvino-compiled")}
    if settings.torch_threads > 0:
        config["INFERENCE_NUM_THREADS"] = settings.torch_threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    GATE.on_idle(compiled)  # its intermediate buffers (hundreds of MB for CLIP)
    return lambda *inputs: list(compiled(list(inputs)).to_tuple())


def torch_with_threads(settings: Settings) -> Any:
    """Imports torch (only for a torch backend), with settings.torch_threads when above 0."""
    import torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    return torch


def cache_root(settings: Settings) -> Path:
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return settings.model_cache_dir or cache_home / "photostore" / "models"


def exported(settings: Settings, model_id: str, export_args: list[str]) -> tuple[Path, dict[str, Any]]:
    """The export of `model_id` in the cache, with its manifest; made (or remade, when missing or
    corrupt) by running `python -m embed_svc.export <export_args> <dir>` in a subprocess."""
    directory = cache_root(settings) / re.sub(r"[^\w.@+-]+", "--", model_id)
    if (manifest := _valid_manifest(directory, quiet=True)) is not None:
        return directory, manifest
    directory.parent.mkdir(parents=True, exist_ok=True)
    # One export at a time per model, across processes sharing the cache: the others wait for it.
    with open(directory.with_name(directory.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (manifest := _valid_manifest(directory)) is not None:
            return directory, manifest
        log.info("exporting %s to %s (once; minutes for a large model)", model_id, directory)
        done = subprocess.run([sys.executable, "-m", "embed_svc.export", *export_args, str(directory)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"exporting {model_id} failed: {done.stderr.strip()[-2000:]}")
        if (manifest := _valid_manifest(directory)) is None:
            raise RuntimeError(f"exporting {model_id} left no valid files in {directory}")
        return directory, manifest


def _valid_manifest(directory: Path, quiet: bool = False) -> dict[str, Any] | None:
    """The manifest when every file it names is there with its sha256, else None (with a warning
    when something is there, unless quiet)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        if all(file_sha256(directory / name) == digest for name, digest in manifest["files"].items()):
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if directory.exists() and not quiet:
        log.warning("the exported model in %s is incomplete or corrupt; exporting again", directory)
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
