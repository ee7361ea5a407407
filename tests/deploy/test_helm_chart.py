"""The Helm chart, linted and rendered by helm v3.22.0 with the default (self-contained) and the
production (managed engines) values; properties of what it renders."""
from __future__ import annotations

import copy

import kubernetes_validate
import pytest
import yaml

from photostore import deployment
from photostore.settings import Settings
from tests.deploy.conftest import (CHART, COMPONENTS, KUBE_VERSIONS, NAMESPACE, PRODUCTION_VALUES, VALUE_SETS, RenderError,
                                   component, containers, deployment_of, env_names, of_kind, render, run_tool,
                                   tool, workloads)

GRPC_COMPONENTS = ("ingest", "embed", "worker", "search")


def values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


@pytest.fixture(params=list(VALUE_SETS), scope="module")
def rendered(request):
    return render(*VALUE_SETS[request.param])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_chart_lints_clean(value_set, kube_version):
    done = run_tool(tool("helm"), "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", kube_version, *VALUE_SETS[value_set])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", list(VALUE_SETS))
def test_every_object_is_valid_for_the_kubernetes_api(value_set, kube_version):
    rendered = render(*VALUE_SETS[value_set], kube_version=kube_version)
    assert rendered
    for obj in rendered:
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_older_clusters_are_refused():
    with pytest.raises(RenderError, match="kubeVersion"):
        render(kube_version="1.26.0")


def test_the_schema_check_catches_a_misspelt_field():
    deployment_obj = copy.deepcopy(deployment_of(render(), "worker"))
    deployment_obj["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment_obj, KUBE_VERSIONS[-1], strict=True)


def test_values_schema_rejects_unknown_values():
    with pytest.raises(RenderError, match="workerz|additional"):
        render("--set", "workerz.replicas=3")


def test_each_component_runs_the_command_the_tests_run(rendered):
    """`photostore serve COMPONENT` (the image's ENTRYPOINT plus args), as photostore/deployment.py
    starts the processes of `up --scale-out` and the scale-out end-to-end tests."""
    commands = {p.component: p.command for p in deployment.services(Settings(), replicas=1)}
    assert set(commands) == set(COMPONENTS)
    for name in COMPONENTS:
        [container] = containers(deployment_of(rendered, name), init=False)
        assert container["name"] == name
        assert "command" not in container, "the image's ENTRYPOINT (photostore) must stay"
        assert container["args"] == commands[name]


def test_grpc_components_have_grpc_probes_on_their_port(rendered):
    for name in GRPC_COMPONENTS:
        [container] = containers(deployment_of(rendered, name), init=False)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == Settings.model_fields[f"{name}_port"].default
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports["grpc"], (name, probe)
        # Liveness asks about the process; readiness about the service it serves.
        assert container["livenessProbe"]["grpc"].get("service", "") == ""
        if name != "worker":
            assert container["readinessProbe"]["grpc"]["service"] == f"photos.v1.{name.capitalize()}Service"


def test_gateway_has_http_probes(rendered):
    [container] = containers(deployment_of(rendered, "gateway"), init=False)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == Settings.model_fields["gateway_port"].default
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert container[probe]["httpGet"]["port"] in ("http", ports["http"])


def test_no_container_runs_as_root(rendered):
    for workload in workloads(rendered):
        pod = workload["spec"]["template"]["spec"]
        pod_context = pod.get("securityContext", {})
        for container in containers(workload):
            context = {**pod_context, **container.get("securityContext", {})}
            where = f"{workload['kind']} {workload['metadata']['name']} container {container['name']}"
            assert context.get("runAsNonRoot") is True, where
            assert context.get("runAsUser", 1) != 0, where
            assert container.get("securityContext", {}).get("allowPrivilegeEscalation") is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where


def test_our_containers_have_a_read_only_root(rendered):
    for name in COMPONENTS:
        workload = deployment_of(rendered, name)
        [container] = containers(workload, init=False)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        # ... and somewhere to write what they must: uploads being received, caches, temp files.
        mounted = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/photostore", "/var/cache/photostore"} <= mounted, name


def test_every_container_has_requests_and_limits(rendered):
    for workload in workloads(rendered):
        for container in containers(workload):
            resources = container.get("resources", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), where
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where


def test_every_setting_the_code_needs_is_supplied(rendered):
    """Each process gets the settings a multi-machine deployment needs, and no PHOTOSTORE_* name
    that the code does not read (a typo would silently fall back to a default)."""
    known = deployment.setting_names()
    for name in COMPONENTS:
        [container] = containers(deployment_of(rendered, name), init=False)
        env = env_names(rendered, container)
        missing = set(deployment.CLUSTER_SETTINGS) - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        unknown = {n for n in env if n.startswith("PHOTOSTORE_")} - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which no code reads"


def test_targets_name_headless_services_of_the_right_port(rendered):
    """Clients balance over the replicas themselves (round robin over DNS answers), so each target
    is a dns:/// name of a headless Service that selects that component's pods on its port."""
    [config] = [c for c in of_kind(rendered, "ConfigMap") if "PHOTOSTORE_INGEST_TARGET" in c.get("data", {})]
    services = of_kind(rendered, "Service")
    for name in ("ingest", "embed", "search"):
        target = config["data"][f"PHOTOSTORE_{name.upper()}_TARGET"]
        assert target.startswith("dns:///"), target
        host, port = target.removeprefix("dns:///").rsplit(":", 1)
        service_name, namespace = host.split(".")[:2]
        assert namespace == NAMESPACE
        [service] = [s for s in services if s["metadata"]["name"] == service_name]
        assert service["spec"]["clusterIP"] == "None"
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        pods = deployment_of(rendered, name)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pods.items()


def test_selectors_match_their_pods(rendered):
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads(rendered)]
    for obj in of_kind(rendered, "Service") + of_kind(rendered, "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        selector = selector.get("matchLabels", selector) if obj["kind"] == "PodDisruptionBudget" else selector
        assert any(selector.items() <= labels.items() for labels in pod_labels), obj["metadata"]["name"]
    for workload in workloads(rendered):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_worker_replicas_follow_the_values():
    assert deployment_of(render(), "worker")["spec"]["replicas"] == values()["worker"]["replicas"]
    assert deployment_of(render("--set", "worker.replicas=3"), "worker")["spec"]["replicas"] == 3
    scaled = render("--set", "worker.autoscaling.enabled=true", "--set", "worker.autoscaling.minReplicas=2",
                    "--set", "worker.autoscaling.maxReplicas=4")
    worker = deployment_of(scaled, "worker")
    assert "replicas" not in worker["spec"]  # the autoscaler owns the count
    [hpa] = of_kind(scaled, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": worker["metadata"]["name"]}
    assert not of_kind(render(), "HorizontalPodAutoscaler")


def test_more_workers_than_partitions_is_refused():
    """A worker without a partition of photos.uploaded sits idle."""
    with pytest.raises(RenderError, match=r"maxReplicas \(6\) must not exceed events.partitions"):
        render("--set", "worker.autoscaling.enabled=true", "--set", "events.partitions=4",
               "--set", "worker.autoscaling.maxReplicas=6")
    with pytest.raises(RenderError, match=r"worker.replicas \(3\) must not exceed events.partitions"):
        render("--set", "events.partitions=2", "--set", "worker.replicas=3")
    assert deployment_of(render("--set", "events.partitions=3", "--set", "worker.replicas=3"), "worker")


def test_disruption_budgets_for_replicated_components(rendered):
    budgets = {component(b) for b in of_kind(rendered, "PodDisruptionBudget")}
    for workload in of_kind(rendered, "Deployment"):
        if workload["spec"].get("replicas", 2) > 1:
            assert component(workload) in budgets, component(workload)


def test_engines_in_the_chart_or_managed():
    """Default values install the engines as StatefulSets; the production values point at managed
    services, whose addresses then reach the processes."""
    assert {component(s) for s in of_kind(render(), "StatefulSet")} == {"kafka", "weaviate", "mongodb", "minio"}
    production = render(*VALUE_SETS["production"])
    assert not of_kind(production, "StatefulSet")
    external = yaml.safe_load(PRODUCTION_VALUES.read_text())["external"]
    env = env_names(production, containers(deployment_of(production, "ingest"), init=False)[0])
    assert env["PHOTOSTORE_EVENTS__KAFKA_BOOTSTRAP_SERVERS"] == external["kafka"]["bootstrapServers"]
    assert env["PHOTOSTORE_VECTORS__WEAVIATE_HOST"] == external["weaviate"]["host"]
    assert env["PHOTOSTORE_BLOBS__S3_ENDPOINT"] == external["s3"]["endpoint"]


def test_a_managed_engine_needs_its_address():
    with pytest.raises(RenderError, match="(?i)kafka"):
        render("--set", "engines.kafka.enabled=false")


def test_images_are_pinned(rendered):
    for workload in workloads(rendered):
        for container in containers(workload):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and "/" not in tag and tag != "latest", image


def test_generated_secrets_are_random_per_install():
    first, second = ({k: v for s in of_kind(render("--set", f"fullnameOverride=ps{i}"), "Secret")
                      for k, v in s.get("stringData", {}).items() | s.get("data", {}).items()}
                     for i in (1, 2))
    assert first["PHOTOSTORE_SERVICE_API_KEY"] != second["PHOTOSTORE_SERVICE_API_KEY"]
    assert first["PHOTOSTORE_TOKEN_SECRET"] != second["PHOTOSTORE_TOKEN_SECRET"]
