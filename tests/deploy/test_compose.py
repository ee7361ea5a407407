"""deploy/compose.yaml, loaded by compose-go (the loader of `docker compose`) with the variables of
deploy/docker/env.example filled in."""
from __future__ import annotations

import pytest
import yaml

from photostore import deployment
from tests.deploy.conftest import (CHART, COMPONENTS, ENV_EXAMPLE, RenderError, compose_project)

# Compose service names, the same as the chart's engines.* keys.
ENGINES = {"kafka", "weaviate", "mongodb", "minio"}


def filled_env(tmp_path, leave_out: str = "") -> str:
    """env.example with every empty value filled (as make-env.sh does), but `leave_out`."""
    lines = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and not value and name != leave_out and name.endswith(
                ("KEY", "SECRET", "PASSWORD")) and "WEAVIATE" not in name and "SASL" not in name:
            line = f"{name}=test-{name.lower().replace('_', '-')}"
        lines.append(line)
    path = tmp_path / "compose.env"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return compose_project(filled_env(tmp_path_factory.mktemp("compose")))


def test_services_are_the_engines_and_our_components(project):
    assert set(project["services"]) == ENGINES | set(COMPONENTS)


def test_every_service_has_a_health_check(project):
    for name, service in project["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_every_image_is_pinned_by_version(project):
    for name, service in project["services"].items():
        image = service["image"]
        _, _, tag = image.rpartition(":")
        assert tag and "/" not in tag and tag != "latest", f"{name}: {image}"


def test_engines_match_the_chart():
    """Compose and the chart run the same engine versions."""
    chart = yaml.safe_load((CHART / "values.yaml").read_text())["engines"]
    compose = yaml.safe_load((CHART.parents[1] / "compose.yaml").read_text())["services"]
    for engine in ENGINES:
        image = chart[engine]["image"]
        assert compose[engine]["image"] == f"{image['repository']}:{image['tag']}", engine


def test_components_run_the_command_the_tests_run(project):
    commands = {p.component: p.command for p in deployment.services(deployment.Settings(), replicas=1)}
    for name in COMPONENTS:
        service = project["services"][name]
        assert not service.get("entrypoint"), "the image's ENTRYPOINT (photostore) must stay"
        assert service["command"] == commands[name], name


def test_components_get_every_setting_the_code_needs(project):
    known = deployment.setting_names()
    for name in COMPONENTS:
        env = project["services"][name]["environment"]
        missing = set(deployment.CLUSTER_SETTINGS) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        unknown = {n for n in env if n.startswith("PHOTOSTORE_")} - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which no code reads"
        for service in ("ingest", "embed", "search"):
            host = env[f"PHOTOSTORE_{service.upper()}_TARGET"].removeprefix("dns:///").rsplit(":", 1)[0]
            assert host in project["services"]


def test_replicas_as_the_scale_out_runs_them(project):
    assert project["services"]["ingest"]["deploy"]["replicas"] == 2
    assert project["services"]["worker"]["deploy"]["replicas"] == 2


def test_components_wait_for_healthy_engines(project):
    for name in COMPONENTS:
        needs = project["services"][name].get("depends_on", {})
        for engine in ENGINES & set(needs):
            assert needs[engine]["condition"] == "service_healthy", (name, engine)
    assert ENGINES & set(project["services"]["ingest"]["depends_on"])


@pytest.mark.parametrize("secret", ["PHOTOSTORE_SERVICE_API_KEY", "MONGO_ROOT_PASSWORD"])
def test_no_default_secrets(tmp_path, secret):
    with pytest.raises(RenderError, match=secret):
        compose_project(filled_env(tmp_path, leave_out=secret))
