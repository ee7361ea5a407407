"""Which processes make up a deployment, with the settings each reads: one place for
`photostore up`, `photostore up --scale-out` and the end-to-end tests."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from photostore.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ENGINES_SCRIPT = ROOT / "deploy" / "local" / "engines.sh"
# Second replicas listen this far above the first (ingest 50061 -> 50071).
REPLICA_PORT_STEP = 10
# Credentials of the local S3 server that `up --scale-out` starts (loopback only).
LOCAL_S3_ACCESS_KEY = "photostore"
LOCAL_S3_SECRET_KEY = "photostore-local-secret"


@dataclasses.dataclass
class ServiceProcess:
    label: str
    module: str  # run as `python -m MODULE`
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # on top of the caller's
    grpc_target: str = ""  # health-checked before the stack counts as up
    http_url: str = ""

    def argv(self, python: str) -> list[str]:
        return [python, "-m", self.module]


def _s3_credentials() -> tuple[str, str]:
    return (os.environ.get("PHOTOSTORE_BLOBS__S3_ACCESS_KEY", LOCAL_S3_ACCESS_KEY),
            os.environ.get("PHOTOSTORE_BLOBS__S3_SECRET_KEY", LOCAL_S3_SECRET_KEY))


def engines_env() -> dict[str, str]:
    """What deploy/local/engines.sh needs to start the engines as scale_out_env expects them."""
    access, secret = _s3_credentials()
    return {"S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}


def scale_out_env(settings: Settings) -> dict[str, str]:
    """Every port on its engine, at the engines' default addresses (settings.py)."""
    access, secret = _s3_credentials()
    return {
        "PHOTOSTORE_BLOBS__BACKEND": "s3",
        "PHOTOSTORE_BLOBS__S3_ACCESS_KEY": access,
        "PHOTOSTORE_BLOBS__S3_SECRET_KEY": secret,
        "PHOTOSTORE_METADATA__BACKEND": "mongodb",
        "PHOTOSTORE_EVENTS__BACKEND": "kafka",
        "PHOTOSTORE_VECTORS__BACKEND": "weaviate",
    }


def services(settings: Settings, *, replicas: int = 1,
             ingest_ports: list[int] | None = None) -> list[ServiceProcess]:
    """The service processes: with replicas=2, two ingest servers (the second REPLICA_PORT_STEP
    above, unless ingest_ports says) reached through one round-robin target, and two embed workers
    in one group."""
    host = settings.host
    ingest_ports = ingest_ports or [settings.ingest_port + i * REPLICA_PORT_STEP for i in range(replicas)]
    shared = {}
    if replicas > 1 and not settings.ingest_target:
        shared["PHOTOSTORE_INGEST_TARGET"] = "ipv4:" + ",".join(f"{host}:{p}" for p in ingest_ports)
    processes = [
        ServiceProcess(f"ingest{'' if i == 0 else i + 1}", "ingest_svc",
                       {**shared, "PHOTOSTORE_INGEST_PORT": str(port)}, grpc_target=f"{host}:{port}")
        for i, port in enumerate(ingest_ports)]
    processes.append(ServiceProcess("embed", "embed_svc", dict(shared), grpc_target=settings.target("embed")))
    processes += [ServiceProcess("embed worker" + ("" if i == 0 else f" {i + 1}"), "embed_svc.worker",
                                 dict(shared)) for i in range(replicas)]
    processes.append(ServiceProcess("search", "search_svc", dict(shared), grpc_target=settings.target("search")))
    processes.append(ServiceProcess("gateway", "gateway", dict(shared),
                                    http_url=f"http://{host}:{settings.gateway_port}"))
    return processes
