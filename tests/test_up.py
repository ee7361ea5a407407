"""`photostore up` as a user runs it, on the embedded default with the tiny test model: it
supervises its services (restarts one that dies), refuses to start beside another `up` or on a
taken port, takes its services down with it even when killed with SIGKILL, stops at once on
Ctrl-C during start-up; and the embed service stops cleanly at any moment of its model loading."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from photostore import cli
from photostore.settings import Settings
from tests.engines import free_ports

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
PHOTOSTORE = str(Path(sys.executable).parent / "photostore")
# Generous: two loaded cores start five Python services and torch.
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
# Every PHOTOSTORE_*_PORT setting: each test gives each its own free port.
PORT_SETTINGS = sorted(f"PHOTOSTORE_{name.upper()}" for name, field in Settings.model_fields.items()
                       if name.endswith("_port") and field.annotation in (int, "int"))


def wait_for(predicate, timeout_s: float, what: str):
    """Polls `predicate` until it returns something true; fails naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g}s: {what}")
        time.sleep(0.1)
    return result


def children_of(pid: int) -> list[int]:
    pids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def descendants(pid: int) -> list[int]:
    found, queue = [], children_of(pid)
    while queue:
        child = queue.pop()
        found.append(child)
        queue += children_of(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def serving(target: str, service: str = "") -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def up_env(workdir: Path, tiny, **extra: str) -> dict[str, str]:
    """The environment of an `up` of its own: data dir, every port free, the tiny CLIP on torch
    (no export), no packaged models (start-up in seconds)."""
    ports = dict(zip(PORT_SETTINGS, map(str, free_ports(len(PORT_SETTINGS)))))
    return {
        **os.environ,
        **ports,
        "PHOTOSTORE_DATA_DIR": str(workdir / "data"),
        "PHOTOSTORE_HOST": "127.0.0.1",
        "PHOTOSTORE_MODEL_NAME": tiny.model_name,
        "PHOTOSTORE_MODEL_CONFIG_DIR": str(tiny.config_dir),
        "PHOTOSTORE_MODEL_PRETRAINED": str(tiny.checkpoint_path),
        "PHOTOSTORE_MODEL_RETRY_SECONDS": "0.5",
        "PHOTOSTORE_CLIP_BACKEND": "torch",
        "PHOTOSTORE_SIGNALS_ENABLED": "false",
        "PHOTOSTORE_SEARCH_WEIGHT_KEYWORD": "0",
        "PHOTOSTORE_TORCH_THREADS": "1",
        "PHOTOSTORE_SHUTDOWN_GRACE_SECONDS": "1",
        "PHOTOSTORE_WORKER_BACKOFF_SECONDS": "0.1",
        "PHOTOSTORE_WORKER_BACKOFF_MAX_SECONDS": "0.5",
        "PHOTOSTORE_SEARCH_KEEP_WARM_SECONDS": "0",
        "PHOTOSTORE_GATEWAY_THREADS": "8",
        "PHOTOSTORE_GATEWAY_MAX_EVENT_STREAMS": "2",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class Up:
    """`photostore up` in its own session (as in a terminal of its own); its output collected."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.lines: list[str] = []
        self._changed = threading.Condition(threading.RLock())
        self._ended = threading.Event()  # its output closed: it and its children exited
        self.proc = subprocess.Popen([PHOTOSTORE, "up"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.seen: dict[int, str] = {}  # every descendant seen, with its command line
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._ended.set()
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def matches(self, pattern: str) -> list[re.Match]:
        with self._changed:
            return [found for line in self.lines if (found := re.search(pattern, line))]

    def wait_for_line(self, pattern: str, timeout_s: float = START_TIMEOUT_S, nth: int = 1) -> re.Match:
        """The nth line of the output that matches, once there is one."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(found := self.matches(pattern)) < nth:
                left = deadline - time.monotonic()
                if left <= 0 or self._ended.is_set():
                    raise AssertionError(f"no line {nth} matching {pattern!r}; output:\n{self.output_tail()}")
                self._changed.wait(min(left, 0.5))
        return found[nth - 1]

    def output_tail(self, n: int = 80) -> str:
        with self._changed:
            return "\n".join(self.lines[-n:])

    def wait_started(self) -> None:
        self.wait_for_line(r"^data in ")

    def services(self) -> dict[str, int]:
        """pid of each running service process, by component (`photostore serve COMPONENT`)."""
        found = {}
        for pid in children_of(self.proc.pid):
            if match := re.search(r"\bserve (\w+)", cmdline(pid)):
                found[match.group(1)] = pid
        self.remember()
        return found

    def remember(self) -> list[int]:
        pids = descendants(self.proc.pid)
        for pid in pids:
            self.seen.setdefault(pid, cmdline(pid))
        return pids

    def port(self, setting: str) -> int:
        return int(self.env[setting])

    def target(self, component: str) -> str:
        return f"127.0.0.1:{self.port(f'PHOTOSTORE_{component.upper()}_PORT')}"

    def stop(self) -> int:
        """SIGTERM, then whatever it left behind is killed (the tests check what it leaves)."""
        if self.proc.poll() is None:
            self.remember()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, line in self.seen.items():
            if alive(pid) and cmdline(pid) == line:
                os.kill(pid, signal.SIGKILL)
        return self.proc.returncode


# The embed service, stopped while its models load

EMBED_SERVICE = "photos.v1.EmbedService"


def health_status(target: str, service: str) -> int | None:
    try:
        with grpc.insecure_channel(target) as channel:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2).status
    except grpc.RpcError:
        return None


def exports_of(pid: int) -> list[int]:
    return [child for child in children_of(pid) if "embed_svc.export" in cmdline(child)]


@pytest.mark.parametrize("loading", ["exports", "torch"])
def test_the_embed_service_stops_cleanly_while_its_models_load(loading, tmp_path, tiny_clip):
    """exports: an empty model cache, so each model is first exported in a subprocess (which must
    not outlive the service); torch: every model loads in the service's own threads, in torch."""
    port, metrics_port = free_ports(2)
    env = {**os.environ, "PHOTOSTORE_DATA_DIR": str(tmp_path / "data"), "PHOTOSTORE_HOST": "127.0.0.1",
           "PHOTOSTORE_EMBED_PORT": str(port), "PHOTOSTORE_EMBED_METRICS_PORT": str(metrics_port),
           "PHOTOSTORE_MODEL_NAME": tiny_clip.model_name, "PHOTOSTORE_MODEL_CONFIG_DIR": str(tiny_clip.config_dir),
           "PHOTOSTORE_MODEL_PRETRAINED": str(tiny_clip.checkpoint_path), "PHOTOSTORE_MODEL_RETRY_SECONDS": "0.5",
           "PHOTOSTORE_TORCH_THREADS": "1", "PHOTOSTORE_SHUTDOWN_GRACE_SECONDS": "1", "PYTHONUNBUFFERED": "1",
           **({"PHOTOSTORE_MODEL_CACHE_DIR": str(tmp_path / "models")} if loading == "exports" else
              {"PHOTOSTORE_CLIP_BACKEND": "torch", "PHOTOSTORE_LABEL_BACKEND": "torch",
               "PHOTOSTORE_SENTENCE_BACKEND": "torch"})}
    log_path = tmp_path / "embed.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([PHOTOSTORE, "serve", "embed"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        target = f"127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None
                 or health_status(target, EMBED_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING,
                 START_TIMEOUT_S, "the embed service serving, its models loading")
        exporting = wait_for(lambda: proc.poll() is not None or exports_of(proc.pid), START_TIMEOUT_S,
                             "a model export under way") if loading == "exports" else []
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert health_status(target, EMBED_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    for sign in ("terminate called", "Aborted", "core dumped", "Fatal Python error"):
        assert sign not in output
    # Its exports ended with it (before it exited), not minutes later.
    assert not [pid for pid in exporting if alive(pid)]


def test_a_model_closed_while_it_loads_starts_no_inference_thread(tiny_clip, tmp_path):
    from embed_svc.model import ClipModel
    from tests.tinyclip import tiny_settings

    model = ClipModel(tiny_settings(tiny_clip, tmp_path, clip_backend="torch"))
    loading, go_on, ready = threading.Event(), threading.Event(), threading.Event()
    open_encoder = model._open_encoder

    def slow_open_encoder(*args):
        loading.set()
        go_on.wait(60)
        return open_encoder(*args)

    model._open_encoder = slow_open_encoder
    before = {t.ident for t in threading.enumerate()}
    loader = model.start_loading(on_ready=ready.set)
    assert loading.wait(60)
    model.close()  # while the weights load
    go_on.set()
    loader.join(120)
    assert not loader.is_alive() and not ready.is_set()
    assert not [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("inference")]
