"""The end-to-end suites' stack, started once per module and deployment, with NO weights at first.

Every module runs twice: on the embedded default, and scaled out on the real engines (Kafka,
Weaviate, MongoDB-wire, S3) with two ingest replicas and two embed workers."""
import os
import re
import uuid

import pytest

from tests.deploy.conftest import chart_environment
from tests.stack import Stack

DEPLOYMENTS = ["embedded", "scale-out"]


# What the Helm chart's settings say that differs per machine: where things listen and are found,
# credentials of the engines, names of shared things (each stack gets its own), and the model (the
# tiny test checkpoint). tests/stack.py gives the ports, targets, data dir and model.
PER_MACHINE = re.compile(r"PHOTOSTORE_(HOST|DATA_DIR|\w+_PORT|\w+_TARGET|MODEL_\w+|VECTORS__WEAVIATE_API_KEY)")


def scale_out_backends(request) -> dict[str, str]:
    """The settings the Helm chart gives every process (deploy/helm, default values), with the
    session's engines in place of the chart's, in a database, bucket, collection and topic
    prefix of this stack's own."""
    kafka, weaviate = request.getfixturevalue("kafka_settings"), request.getfixturevalue("weaviate_settings")
    mongodb, s3 = request.getfixturevalue("mongodb_settings"), request.getfixturevalue("s3_settings")
    run = uuid.uuid4().hex[:10]
    chart = {k: v for k, v in chart_environment().items() if not PER_MACHINE.fullmatch(k)}
    return {
        **chart,
        "PHOTOSTORE_BLOBS__BACKEND": "s3",
        "PHOTOSTORE_BLOBS__S3_ENDPOINT": s3.s3_endpoint,
        "PHOTOSTORE_BLOBS__S3_ACCESS_KEY": s3.s3_access_key.get_secret_value(),
        "PHOTOSTORE_BLOBS__S3_SECRET_KEY": s3.s3_secret_key.get_secret_value(),
        "PHOTOSTORE_BLOBS__S3_BUCKET": f"e2e-{run}",
        "PHOTOSTORE_METADATA__BACKEND": "mongodb",
        "PHOTOSTORE_METADATA__MONGODB_URI": mongodb.mongodb_uri.get_secret_value(),
        "PHOTOSTORE_METADATA__MONGODB_DATABASE": f"e2e_{run}",
        "PHOTOSTORE_EVENTS__BACKEND": "kafka",
        "PHOTOSTORE_EVENTS__KAFKA_BOOTSTRAP_SERVERS": kafka.kafka_bootstrap_servers,
        "PHOTOSTORE_EVENTS__TOPIC_PREFIX": f"e2e-{run}.",
        "PHOTOSTORE_EVENTS__SESSION_TIMEOUT_MS": "6000",
        "PHOTOSTORE_VECTORS__BACKEND": "weaviate",
        "PHOTOSTORE_VECTORS__WEAVIATE_HOST": weaviate.weaviate_host,
        "PHOTOSTORE_VECTORS__WEAVIATE_HTTP_PORT": str(weaviate.weaviate_http_port),
        "PHOTOSTORE_VECTORS__WEAVIATE_GRPC_PORT": str(weaviate.weaviate_grpc_port),
        "PHOTOSTORE_VECTORS__WEAVIATE_COLLECTION": f"E2e{run}",
    }


@pytest.fixture(scope="module")
def stack_env() -> dict[str, str]:
    """Extra PHOTOSTORE_* settings of a module's stack (a module overrides this fixture)."""
    return {}


@pytest.fixture(scope="module", params=DEPLOYMENTS)
def deployment(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, tiny_clip, stack_env, deployment):
    """Starts with NO CLIP weights at the configured path, as on a machine that reaches no hub."""
    backends = scale_out_backends(request) if deployment == "scale-out" else None
    workdir = tmp_path_factory.mktemp(f"stack-{deployment}")
    s = Stack(workdir, workdir / "weights" / "tiny.pt", tiny_clip, env=stack_env, backends=backends)
    s.checkpoint_path.parent.mkdir()
    s.start_all()
    yield s
    s.stop_all()
    if os.environ.get("PHOTOSTORE_TEST_KEEP_LOGS"):
        print(s.logs())
