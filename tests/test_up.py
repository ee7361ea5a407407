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


def run_up(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PHOTOSTORE, "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def running(tiny_clip, tmp_path_factory):
    """The `up` of the module, started when a test first needs it and again after one ended it."""
    ups: list[Up] = []

    def get() -> Up:
        if not ups or ups[-1].proc.poll() is not None:
            ups.append(Up(up_env(tmp_path_factory.mktemp("up"), tiny_clip)))
            ups[-1].wait_started()
        return ups[-1]

    yield get
    for up in ups:
        up.stop()


# Supervision

def test_a_service_killed_under_up_is_started_again_with_growing_delays(running):
    up = running()
    killed = up.services()["search"]
    os.kill(killed, signal.SIGKILL)
    up.wait_for_line(r"^search exited with code -9; restarting in 1 s$", 60)
    up.wait_for_line(r"^search is serving again$")
    assert up.services()["search"] != killed
    # A search works: through search, embed (the query) and ingest (the key, the photos).
    user = subprocess.run([PHOTOSTORE, "users", "add", "alice"], cwd=ROOT, env=up.env, capture_output=True,
                          text=True, timeout=120)
    key = re.search(r"psk_[\w-]+", user.stdout).group(0)
    search = subprocess.run([PHOTOSTORE, "search", "a cat", "--key", key], cwd=ROOT, env=up.env,
                            capture_output=True, text=True, timeout=120)
    assert (search.returncode, search.stdout.strip()) == (0, "no matches"), search.stderr

    # Dying again soon after: the delay doubles.
    os.kill(up.services()["search"], signal.SIGKILL)
    up.wait_for_line(r"^search exited with code -9; restarting in 2 s$", 60)
    up.wait_for_line(r"^search is serving again$", nth=2)
    assert serving(up.target("search"))
    assert up.proc.poll() is None


def supervised_exits(code: str, exits: int, **delays) -> list[str]:
    """What a Supervisor (with `delays`) said about a process running `code` until it exited
    `exits` times."""
    said: list[str] = []
    supervisor = cli.Supervisor(say=said.append, **delays)
    supervisor.start("child", [sys.executable, "-c", code], dict(os.environ))
    exited = lambda: [s for s in said if "exited" in s]  # noqa: E731
    try:
        wait_for(lambda: supervisor.check() or len(exited()) >= exits, 120, f"{exits} exits")
    finally:
        supervisor.stop(5)
    return said


def test_a_process_that_keeps_exiting_is_retried_with_a_capped_delay():
    said = supervised_exits("import sys; sys.exit(3)", 6, backoff_s=0.05, max_backoff_s=0.2, stable_s=60)
    exits = [s for s in said if "exited" in s]
    assert exits[:6] == [f"child exited with code 3; restarting in {d:g} s" for d in (0.05, 0.1, 0.2, 0.2, 0.2, 0.2)]
    assert len([s for s in said if s.startswith("child started again (pid ")]) >= 5


def test_the_delay_starts_over_once_a_process_stayed_up():
    said = supervised_exits("import time; time.sleep(0.5)", 3, backoff_s=0.05, max_backoff_s=10, stable_s=0.3)
    assert [s for s in said if "exited" in s][:3] == ["child exited with code 0; restarting in 0.05 s"] * 3


# Refusals

def test_a_second_up_on_the_same_data_dir_is_refused(running, tmp_path, tiny_clip):
    up = running()
    second = run_up({**up_env(tmp_path, tiny_clip), "PHOTOSTORE_DATA_DIR": up.env["PHOTOSTORE_DATA_DIR"]})
    assert second.returncode == 1
    assert (f"error: another `photostore up` (pid {up.proc.pid}) runs on the data dir "
            f"{up.env['PHOTOSTORE_DATA_DIR']}") in second.stderr
    assert up.proc.poll() is None and serving(up.target("ingest"))


def test_up_refuses_ports_in_use_naming_the_setting_and_the_process(running, tmp_path, tiny_clip):
    up = running()
    ingest = up.services()["ingest"]
    second = run_up({**up_env(tmp_path, tiny_clip), **{name: up.env[name] for name in PORT_SETTINGS}})
    assert second.returncode == 1
    port = up.port("PHOTOSTORE_INGEST_PORT")
    assert re.search(rf"port {port} of ingest \(PHOTOSTORE_INGEST_PORT\) is in use on 127\.0\.0\.1 "
                     rf"by pid {ingest} \([^)]*photostore serve ingest\)", second.stderr), second.stderr
    assert "another `photostore up`" not in second.stderr  # a data dir of its own
    assert not (tmp_path / "data" / cli.SCALE_OUT_ENV_FILE).exists()


def test_up_checks_every_port_before_it_starts_anything(tmp_path, tiny_clip):
    env = up_env(tmp_path, tiny_clip)
    env["PHOTOSTORE_EMBED_METRICS_PORT"] = env["PHOTOSTORE_INGEST_METRICS_PORT"]
    with socket.socket() as held:
        held.bind(("127.0.0.1", int(env["PHOTOSTORE_GATEWAY_PORT"])))
        held.listen()
        done = run_up(env)
    assert done.returncode == 1
    ingest_metrics = env["PHOTOSTORE_INGEST_METRICS_PORT"]
    assert (f"port {ingest_metrics} of embed (PHOTOSTORE_EMBED_METRICS_PORT) is also port {ingest_metrics} "
            f"of ingest (PHOTOSTORE_INGEST_METRICS_PORT)") in done.stderr
    assert (f"port {env['PHOTOSTORE_GATEWAY_PORT']} of gateway (PHOTOSTORE_GATEWAY_PORT) is in use on "
            f"127.0.0.1 by pid {os.getpid()} (") in done.stderr
    assert done.stdout == ""  # nothing started, nothing listed


# Stopping

def test_killing_up_with_sigkill_takes_every_process_it_started_down(running, tmp_path, tiny_clip):
    up = running()
    assert set(up.services()) == {"ingest", "embed", "worker", "search", "gateway"}
    started = up.remember()  # with the gateway's worker processes
    os.kill(up.proc.pid, signal.SIGKILL)
    wait_for(lambda: not [pid for pid in started if alive(pid)], STOP_TIMEOUT_S,
             f"every process of up gone: {[(pid, cmdline(pid)) for pid in started if alive(pid)]}")
    # Its lock went with it: the next `up` on the data dir gets as far as the ports (one held here).
    env = {**up_env(tmp_path, tiny_clip), "PHOTOSTORE_DATA_DIR": up.env["PHOTOSTORE_DATA_DIR"]}
    with socket.socket() as held:
        held.bind(("127.0.0.1", int(env["PHOTOSTORE_SEARCH_PORT"])))
        held.listen()
        done = run_up(env)
    assert "another `photostore up`" not in done.stderr
    assert f"of search (PHOTOSTORE_SEARCH_PORT) is in use" in done.stderr


@pytest.mark.parametrize("waiting_for", ["health", "model"])
def test_ctrl_c_during_start_up_stops_everything_at_once(waiting_for, tmp_path, tiny_clip):
    """Start-up waits for the search service's health at an address nothing answers, or for a
    model whose weights are not there (up waits cli.MODEL_WAIT_S for it to load)."""
    never = free_ports(1)[0]
    extra = ({"PHOTOSTORE_SEARCH_TARGET": f"127.0.0.1:{never}"} if waiting_for == "health"
             else {"PHOTOSTORE_MODEL_PRETRAINED": str(tmp_path / "not-there-yet.pt")})
    up = Up(up_env(tmp_path, tiny_clip, **extra))
    try:
        if waiting_for == "health":
            wait_for(lambda: len(up.services()) == 5 and serving(up.target("ingest")), START_TIMEOUT_S,
                     "every service started, ingest serving")
        else:
            up.wait_for_line(r"^gateway\s+http://")  # every service answered; the model is next
        started = up.remember()
        asked = time.monotonic()
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(STOP_TIMEOUT_S) == 0
        took = time.monotonic() - asked
        wait_for(lambda: not [pid for pid in started if alive(pid)], STOP_TIMEOUT_S, "every process gone")
        up.wait_for_line(r"^stopped by signal during start-up; stopping the others$", 10)
        assert not up.matches(r"^data in ")
        assert took < cli.MODEL_WAIT_S, up.output_tail()
    finally:
        up.stop()


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
