"""Default settings an operator relies on without reading them."""
from __future__ import annotations

from pathlib import Path

from photostore import deployment
from photostore.settings import Settings

# Linux's default; the machine's own range is read where it exists.
EPHEMERAL_DEFAULT = (32768, 60999)


def ephemeral_range() -> tuple[int, int]:
    path = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if path.exists():
        low, high = map(int, path.read_text().split())
        return min(low, EPHEMERAL_DEFAULT[0]), max(high, EPHEMERAL_DEFAULT[1])
    return EPHEMERAL_DEFAULT


def default_ports(settings: Settings) -> dict[str, int]:
    ports = {name: value for name, value in settings.model_dump().items()
             if name.endswith("_port") and isinstance(value, int) and value}
    ports["vectors.weaviate_http_port"] = settings.vectors.weaviate_http_port
    ports["vectors.weaviate_grpc_port"] = settings.vectors.weaviate_grpc_port
    # The second replicas of `up --scale-out` listen REPLICA_PORT_STEP above the first.
    for process in deployment.services(settings, replicas=2):
        for name, value in process.env.items():
            if name.endswith("_PORT"):
                ports[f"{process.label} {name}"] = int(value)
    return ports


def test_no_default_port_lies_in_the_ephemeral_range(tmp_path):
    """An outgoing connection's local port may be any port of that range: a service listening
    there by default would now and then fail to start."""
    low, high = ephemeral_range()
    ports = default_ports(Settings(data_dir=tmp_path, _env_file=None))
    assert len(ports) >= 8
    inside = {name: port for name, port in ports.items() if low <= port <= high}
    assert not inside, f"default ports inside {low}-{high}: {inside}"
