"""The real scale-out engines for tests, started by the project's own deploy/local scripts."""
from __future__ import annotations

import dataclasses
import os
import random
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "deploy" / "local"
START_TIMEOUT_S = 1800  # a first install builds Weaviate (minutes); later starts take seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """n distinct free ports (held together while picked, so no two are the same)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclasses.dataclass
class Engine:
    """One engine process on its own ports and data dir."""
    name: str  # kafka | weaviate | mongodb | s3
    data_dir: Path
    env: dict[str, str]

    def _run(self, command: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPTS / f"{self.name}.sh"), command, str(self.data_dir)],
                              env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout)

    def start(self) -> Engine:
        done = self._run("start", START_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"{self.name} did not start:\n{done.stdout}\n{done.stderr}\n{self.log()}")
        return self

    def stop(self) -> None:
        self._run("stop", 120)

    def running(self) -> bool:
        return self._run("status", 30).returncode == 0

    def log(self) -> str:
        path = self.data_dir / f"{self.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def kafka(data_dir: Path) -> Engine:
    port, controller = free_ports(2)
    return Engine("kafka", data_dir, {"KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(controller)})


def weaviate(data_dir: Path) -> Engine:
    http, grpc_port = free_ports(2)
    # The five cluster ports are consecutive from WEAVIATE_CLUSTER_PORT: pick a free run.
    base = _free_run(5)
    return Engine("weaviate", data_dir, {"WEAVIATE_HTTP_PORT": str(http), "WEAVIATE_GRPC_PORT": str(grpc_port),
                                         "WEAVIATE_CLUSTER_PORT": str(base)})


def mongodb(data_dir: Path) -> Engine:
    return Engine("mongodb", data_dir, {"MONGODB_PORT": str(free_port())})


def s3(data_dir: Path) -> Engine:
    return Engine("s3", data_dir, {"S3_PORT": str(_free_s3_base()), "S3_ACCESS_KEY": "photostore-test",
                                   "S3_SECRET_KEY": "photostore-test-secret"})


# The project's own ports and the engines' defaults, kept clear of test engines.
RESERVED_PORTS = {8000, 8090, 7061, 7062, 7063, 7064, 7071, 7074, 8091, 19092, 19093, 27117, *range(17946, 17951)}


def _s3_ports(base: int) -> list[int]:
    """What deploy/local/s3.sh opens for S3_PORT=base (see its header)."""
    return [*range(base, base + 9), base + 10008]


def _free_s3_base() -> int:
    """An S3_PORT whose ports are all free, all below the ephemeral range (base + 10008 < 32768)."""
    candidates = list(range(10000, 22700, 20))
    random.shuffle(candidates)  # test sessions running side by side rarely pick the same
    for base in candidates:
        ports = _s3_ports(base)
        if RESERVED_PORTS.intersection(ports):
            continue
        socks = []
        try:
            for port in ports:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports for an S3 engine")


def _free_run(n: int) -> int:
    """The first of n consecutive free ports below the ephemeral range."""
    for base in range(21000, 30000, 10):
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")
