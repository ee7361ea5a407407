"""Which processes make up a deployment, with the settings each reads: one place for
`photostore up`, `photostore up --scale-out` and the end-to-end tests."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pydantic import BaseModel

from photostore.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
ENGINES_SCRIPT = ROOT / "deploy" / "local" / "engines.sh"
# Second replicas listen this far above the first (ingest 7061 -> 7071).
REPLICA_PORT_STEP = 10
# Credentials of the local S3 server that `up --scale-out` starts (loopback only).
LOCAL_S3_ACCESS_KEY = "photostore"
LOCAL_S3_SECRET_KEY = "photostore-local-secret"


# `photostore serve COMPONENT` runs MODULE.main(): the command every deployment runs, from `up` to
# the container image (deploy/Dockerfile, deploy/compose.yaml, deploy/helm).
SERVICE_MODULES = {
    "ingest": "ingest_svc.server",
    "embed": "embed_svc.server",
    "worker": "embed_svc.worker",
    "search": "search_svc.server",
    "gateway": "gateway.server",
}

# The settings a deployment over several machines must give every process: their defaults are
# this machine's (loopback addresses, data_dir/service.key) or the embedded backends.
CLUSTER_SETTINGS = (
    "PHOTOSTORE_HOST", "PHOTOSTORE_DATA_DIR",
    "PHOTOSTORE_INGEST_TARGET", "PHOTOSTORE_EMBED_TARGET", "PHOTOSTORE_SEARCH_TARGET",
    "PHOTOSTORE_SERVICE_API_KEY", "PHOTOSTORE_TOKEN_SECRET",
    "PHOTOSTORE_BLOBS__BACKEND", "PHOTOSTORE_BLOBS__S3_ENDPOINT", "PHOTOSTORE_BLOBS__S3_BUCKET",
    "PHOTOSTORE_BLOBS__S3_ACCESS_KEY", "PHOTOSTORE_BLOBS__S3_SECRET_KEY",
    "PHOTOSTORE_METADATA__BACKEND", "PHOTOSTORE_METADATA__MONGODB_URI",
    "PHOTOSTORE_EVENTS__BACKEND", "PHOTOSTORE_EVENTS__KAFKA_BOOTSTRAP_SERVERS",
    "PHOTOSTORE_VECTORS__BACKEND", "PHOTOSTORE_VECTORS__WEAVIATE_HOST",
    "PHOTOSTORE_VECTORS__WEAVIATE_HTTP_PORT", "PHOTOSTORE_VECTORS__WEAVIATE_GRPC_PORT",
)


@dataclasses.dataclass
class ServiceProcess:
    label: str
    component: str  # a SERVICE_MODULES key
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # on top of the caller's
    grpc_target: str = ""  # health-checked before the stack counts as up
    http_url: str = ""

    @property
    def command(self) -> list[str]:
        """The arguments of the `photostore` entry point (the image's ENTRYPOINT)."""
        return ["serve", self.component]

    def argv(self, python: str) -> list[str]:
        """The command line with the `photostore` script installed beside `python`."""
        script = Path(python).parent / "photostore"
        return [str(script), *self.command] if script.exists() else [python, "-m", "photostore", *self.command]

    def ports(self, settings: Settings) -> dict[str, int]:
        """The ports it listens on, by the setting that gives each: PHOTOSTORE_<COMPONENT>_PORT and
        PHOTOSTORE_<COMPONENT>_METRICS_PORT, from its env (a replica's) or else `settings`; 0 is none."""
        ports = {}
        for field in (f"{self.component}_port", f"{self.component}_metrics_port"):
            if field in Settings.model_fields:
                name = f"PHOTOSTORE_{field.upper()}"
                if port := int(self.env.get(name) or getattr(settings, field)):
                    ports[name] = port
        return ports


def setting_names(settings_class: type = Settings) -> set[str]:
    """Every PHOTOSTORE_* environment variable the code reads."""
    names = set()
    for name, field in settings_class.model_fields.items():
        nested = field.annotation if isinstance(field.annotation, type) else None
        if nested is not None and issubclass(nested, BaseModel):
            names |= {f"PHOTOSTORE_{name.upper()}__{sub.upper()}" for sub in nested.model_fields}
        else:
            names.add(f"PHOTOSTORE_{name.upper()}")
    return names


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


def services(settings: Settings, *, replicas: int = 1, ingest_ports: list[int] | None = None,
             worker_ports: list[int] | None = None) -> list[ServiceProcess]:
    """The service processes: with replicas=2, two ingest servers (the second REPLICA_PORT_STEP
    above, unless ingest_ports says) reached through one round-robin target, and two embed workers
    in one group (their health ports likewise)."""
    host = settings.host
    ingest_ports = ingest_ports or [settings.ingest_port + i * REPLICA_PORT_STEP for i in range(replicas)]
    worker_ports = worker_ports or [settings.worker_port + i * REPLICA_PORT_STEP for i in range(replicas)]
    shared = {}
    if replicas > 1 and not settings.ingest_target:
        shared["PHOTOSTORE_INGEST_TARGET"] = "ipv4:" + ",".join(f"{host}:{p}" for p in ingest_ports)

    def numbered(label: str, i: int, sep: str = "") -> str:
        return label if i == 0 else f"{label}{sep}{i + 1}"

    def replica_metrics(name: str, i: int) -> dict[str, str]:
        """A second replica's metrics port, REPLICA_PORT_STEP above the first's."""
        port = getattr(settings, f"{name}_metrics_port")
        return {f"PHOTOSTORE_{name.upper()}_METRICS_PORT": str(port + i * REPLICA_PORT_STEP)} if port and i else {}

    processes = [
        ServiceProcess(numbered("ingest", i), "ingest", {**shared, "PHOTOSTORE_INGEST_PORT": str(port),
                                                         **replica_metrics("ingest", i)},
                       grpc_target=f"{host}:{port}")
        for i, port in enumerate(ingest_ports)]
    processes.append(ServiceProcess("embed", "embed", dict(shared), grpc_target=settings.target("embed")))
    processes += [
        ServiceProcess(numbered("embed worker", i, " "), "worker",
                       {**shared, "PHOTOSTORE_WORKER_PORT": str(port), **replica_metrics("worker", i)},
                       grpc_target=f"{host}:{port}")
        for i, port in enumerate(worker_ports)]
    processes.append(ServiceProcess("search", "search", dict(shared), grpc_target=settings.target("search")))
    processes.append(ServiceProcess("gateway", "gateway", dict(shared),
                                    http_url=f"http://{host}:{settings.gateway_port}"))
    return processes
