"""deploy/ checked without a cluster or a Docker engine: the real helm renders the chart, the
Kubernetes API schemas (kubernetes-validate) judge every object, compose-go loads the Compose file.
The tools come from `make deploy-tools` (deploy/tools/install.sh)."""
from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "photostore"
PRODUCTION_VALUES = CHART / "values-production.yaml"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
TOOLS_BIN = Path(os.environ.get("PHOTOSTORE_TOOLS_BIN") or Path(
    os.environ.get("PHOTOSTORE_ENGINES_HOME", Path.home() / ".cache" / "photostore-engines")) / "bin")
RELEASE, NAMESPACE = "photos", "photos"
# Our five processes, by the component label the chart and compose give them.
COMPONENTS = ("ingest", "embed", "worker", "search", "gateway")


def tool(name: str) -> str:
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools`")
    return str(path)


def run_tool(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


class RenderError(Exception):
    pass


# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion; grpc probes are GA there) and
# the newest whose API schemas kubernetes-validate ships. helm renders for the cluster it talks to;
# offline, it is told which.
KUBE_VERSIONS = ("1.27.0", "1.37.0")


@functools.lru_cache(maxsize=None)
def render(*args: str, kube_version: str = KUBE_VERSIONS[-1]) -> tuple[dict, ...]:
    """`helm template` of the chart with these extra arguments, as objects."""
    done = run_tool(tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", kube_version, *args)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


VALUE_SETS = {"default": (), "production": ("-f", str(PRODUCTION_VALUES))}


def of_kind(objects, kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def component(obj: dict) -> str:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def workloads(objects) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def deployment_of(objects, name: str) -> dict:
    [found] = [o for o in of_kind(objects, "Deployment") if component(o) == name]
    return found


def containers(workload: dict, *, init: bool = True) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec["containers"] + (spec.get("initContainers", []) if init else [])


def env_names(objects, container: dict) -> dict[str, str | None]:
    """The container's environment: env entries (secret references as None) and the keys of the
    ConfigMaps and Secrets it takes whole (envFrom); a Secret the chart does not render (an
    existing one) counts with the keys the chart's own Secret has."""
    names: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            [config] = [c for c in of_kind(objects, "ConfigMap")
                        if c["metadata"]["name"] == source["configMapRef"]["name"]]
            names.update(config.get("data", {}))
        elif "secretRef" in source:
            secrets = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"] == source["secretRef"]["name"]]
            for secret in secrets or of_kind(render(), "Secret"):
                names.update(dict.fromkeys(secret.get("stringData", {}) | secret.get("data", {})))
    for entry in container.get("env", []):
        names[entry["name"]] = entry.get("value")
    return names


ENV_EXAMPLE = ROOT / "deploy" / "docker" / "env.example"


def compose_project(env_file: Path) -> dict:
    """deploy/compose.yaml as compose-go loads it (schema, interpolation, references), normalized."""
    done = run_tool(tool("composecheck"), "-f", str(COMPOSE_FILE), "--env-file", str(env_file),
                    env={"PATH": os.environ["PATH"]})
    if done.returncode != 0:
        raise RenderError(done.stderr.strip() or done.stdout.strip())
    return json.loads(done.stdout)


def chart_environment(*args: str) -> dict[str, str]:
    """The PHOTOSTORE_* settings the chart gives every process: its ConfigMap and Secret."""
    import base64
    env: dict[str, str] = {}
    for obj in render(*args):
        if obj["kind"] == "ConfigMap":
            env.update(obj.get("data") or {})
        elif obj["kind"] == "Secret":
            env.update(obj.get("stringData") or {})
            env.update({k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()})
    return {k: v for k, v in env.items() if k.startswith("PHOTOSTORE_")}
