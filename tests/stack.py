"""The real service processes on free ports, as `photostore up` (or `up --scale-out`) runs them:
the same entry points and settings (photostore/deployment.py)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from photos.v1 import embed_pb2_grpc, ingest_pb2_grpc, search_pb2_grpc
from photostore import deployment
from photostore.settings import Settings
from tests.engines import free_port  # noqa: F401 - the suites import it from here too

ROOT = Path(__file__).resolve().parents[1]
# Short names of the processes, by deployment.services() label.
SHORT_NAMES = {"ingest": "ingest", "ingest2": "ingest2", "embed": "embed", "embed worker": "worker",
               "embed worker 2": "worker2", "search": "search", "gateway": "gateway"}


_ENVIRON_SWAP = threading.Lock()
# Process -> the name of its metrics port in Stack.ports.
METRICS_PORTS = {name: f"{name}-metrics" for name in SHORT_NAMES.values()}


def wait_serving(target: str, service: str = "", timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status \
                        == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} {service!r} not SERVING after {timeout}s")
            time.sleep(0.2)


# In a mount namespace of its own: the writable dirs bound onto themselves, then / remounted
# read-only (the binds stay writable), then the command in the same process (signals reach it).
READ_ONLY_ROOT_SCRIPT = ('for d in $WRITABLE; do mount --bind "$d" "$d" || exit 1; done; '
                         'mount -o remount,bind,ro / || exit 1; exec "$@"')


def read_only_root_argv(writable: list[str], argv: list[str]) -> list[str]:
    user_namespace = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", "--propagation", "private", *user_namespace, "--",
            "env", f"WRITABLE={' '.join(writable)}", "sh", "-c", READ_ONLY_ROOT_SCRIPT, "sh", *argv]


class Stack:
    """One process per service. `backends` (PHOTOSTORE_* settings of each port) selects the
    scale-out engines; then two ingest replicas and two embed workers run, as `up --scale-out`."""

    def __init__(self, workdir: Path, checkpoint_path: Path, tiny, env: dict[str, str] | None = None,
                 backends: dict[str, str] | None = None, read_only_root: bool = False):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.tiny = tiny
        self.checkpoint_path = checkpoint_path
        self.scale_out = bool(backends)
        # Each process as in its container: the whole file system read-only but for a temp dir,
        # a data dir and a cache dir of its own (the chart's emptyDirs).
        self.read_only_root = read_only_root
        ports = {name: free_port() for name in ("ingest", "ingest2", "embed", "worker", "worker2", "search",
                                                "gateway", *METRICS_PORTS.values())}
        self.ports = ports
        self.env = {
            **os.environ,
            "PHOTOSTORE_DATA_DIR": str(self.data_dir),
            "PHOTOSTORE_INGEST_PORT": str(ports["ingest"]),
            "PHOTOSTORE_EMBED_PORT": str(ports["embed"]),
            "PHOTOSTORE_SEARCH_PORT": str(ports["search"]),
            "PHOTOSTORE_GATEWAY_PORT": str(ports["gateway"]),
            "PHOTOSTORE_MODEL_NAME": tiny.model_name,
            "PHOTOSTORE_MODEL_CONFIG_DIR": str(tiny.config_dir),
            "PHOTOSTORE_MODEL_PRETRAINED": str(checkpoint_path),
            "PHOTOSTORE_MODEL_RETRY_SECONDS": "0.5",
            "PHOTOSTORE_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
            "PHOTOSTORE_WORKER_BACKOFF_SECONDS": "0.1",
            "PHOTOSTORE_WORKER_BACKOFF_MAX_SECONDS": "0.5",
            "PHOTOSTORE_TORCH_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **(backends or {}),
            **(env or {}),
        }
        settings = Settings(host="127.0.0.1", ingest_port=ports["ingest"], embed_port=ports["embed"],
                            search_port=ports["search"], gateway_port=ports["gateway"])
        replicas = 2 if self.scale_out else 1
        self.processes = {SHORT_NAMES[p.label]: p for p in deployment.services(
            settings, replicas=replicas, ingest_ports=[ports["ingest"], ports["ingest2"]][:replicas],
            worker_ports=[ports["worker"], ports["worker2"]][:replicas])}
        # Prometheus metrics of each process on a port of its own (see METRICS_PORTS).
        for name, metrics in METRICS_PORTS.items():
            if name in self.processes:
                component = self.processes[name].component
                self.processes[name].env[f"PHOTOSTORE_{component.upper()}_METRICS_PORT"] = str(ports[metrics])
        self.procs: dict[str, subprocess.Popen] = {}
        self.channels: dict[str, grpc.Channel] = {}

    def target(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def start(self, name: str) -> None:
        process = self.processes[name]
        log = open(self.workdir / f"{name}.log", "ab")
        argv, env = process.argv(sys.executable), {**self.env, **process.env}
        if self.read_only_root:
            argv, env = self._read_only_root(name, argv, env)
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def writable_dirs(self, name: str) -> dict[str, Path]:
        """The dirs a process may write with a read-only root: the image's /tmp,
        /var/lib/photostore and /var/cache/photostore."""
        base = self.workdir / "writable" / name
        return {kind: base / kind for kind in ("tmp", "data", "cache")}

    def _read_only_root(self, name: str, argv: list[str], env: dict[str, str]):
        dirs = self.writable_dirs(name)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        env = {**env, "TMPDIR": str(dirs["tmp"]), "PHOTOSTORE_DATA_DIR": str(dirs["data"]),
               "HOME": str(dirs["data"]), "XDG_CACHE_HOME": str(dirs["cache"]),
               "HF_HOME": str(dirs["cache"] / "huggingface"), "TORCH_HOME": str(dirs["cache"] / "torch")}
        return read_only_root_argv(list(map(str, dirs.values())), argv), env

    def start_all(self) -> None:
        for name in self.processes:
            self.start(name)
        for name in self.processes:
            if self.processes[name].grpc_target:
                wait_serving(self.processes[name].grpc_target)

    def stop(self, name: str, sig=signal.SIGTERM, timeout: float = 30) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(timeout)

    def stop_all(self) -> None:
        for name in list(self.procs):
            try:
                self.stop(name)
            except subprocess.TimeoutExpired:
                self.procs.get(name, None) and self.procs[name].kill()
        for channel in self.channels.values():
            channel.close()

    def channel(self, service: str) -> grpc.Channel:
        if service not in self.channels:
            self.channels[service] = grpc.insecure_channel(self.target(service))
        return self.channels[service]

    @property
    def ingest(self):
        return ingest_pb2_grpc.IngestServiceStub(self.channel("ingest"))

    @property
    def ingest2(self):
        """The second ingest replica (scale-out only)."""
        return ingest_pb2_grpc.IngestServiceStub(self.channel("ingest2"))

    @property
    def search(self):
        return search_pb2_grpc.SearchServiceStub(self.channel("search"))

    @property
    def embed(self):
        return embed_pb2_grpc.EmbedServiceStub(self.channel("embed"))

    def settings(self) -> Settings:
        """The settings the services read (to open the same backends from a test). Settings read
        os.environ, which is swapped for the services' environment meanwhile: one thread at a
        time, or one thread's swap would become another's 'saved' environment for good."""
        with _ENVIRON_SWAP:
            saved = dict(os.environ)
            try:
                os.environ.clear()
                os.environ.update(self.env)
                return Settings(_env_file=None)
            finally:
                os.environ.clear()
                os.environ.update(saved)

    def add_user(self, name: str) -> str:
        out = subprocess.run([str(Path(sys.executable).parent / "photostore"), "users", "add", name],
                             cwd=ROOT, env=self.env, capture_output=True, text=True, check=True)
        key = re.search(r"psk_[A-Za-z0-9_-]+", out.stdout)
        assert key, out.stdout
        return key.group(0)

    def stored_blobs(self) -> list[str]:
        """Keys of every blob the photo store holds (files on disk, or objects in the bucket)."""
        if not self.scale_out:
            root = self.data_dir / "blobs"
            return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                          if p.is_file() and not p.name.startswith("."))
        from minio import Minio
        blobs = self.settings().blobs
        client = Minio(blobs.s3_endpoint, access_key=blobs.s3_access_key.get_secret_value(),
                       secret_key=blobs.s3_secret_key.get_secret_value(), secure=False)
        if not client.bucket_exists(blobs.s3_bucket):
            return []
        return sorted(o.object_name for o in client.list_objects(blobs.s3_bucket, recursive=True))

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def install_checkpoint(self, source: Path) -> None:
        """The weights 'arrive': copy them to where the embed service looks."""
        tmp = self.checkpoint_path.with_suffix(".partial")
        shutil.copy(source, tmp)
        tmp.rename(self.checkpoint_path)
