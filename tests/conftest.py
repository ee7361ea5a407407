"""Fixtures shared by the suites: the tiny CLIP checkpoint and the real scale-out engines."""
import pytest

from photostore.settings import BlobsSettings, EventsSettings, MetadataSettings, VectorsSettings
from tests import engines
from tests.tinyclip import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))


def _engine(tmp_path_factory, make):
    engine = make(tmp_path_factory.mktemp("engine"))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def kafka_engine(tmp_path_factory):
    yield from _engine(tmp_path_factory, engines.kafka)


@pytest.fixture(scope="session")
def weaviate_engine(tmp_path_factory):
    yield from _engine(tmp_path_factory, engines.weaviate)


@pytest.fixture(scope="session")
def mongodb_engine(tmp_path_factory):
    yield from _engine(tmp_path_factory, engines.mongodb)


@pytest.fixture(scope="session")
def s3_engine(tmp_path_factory):
    yield from _engine(tmp_path_factory, engines.s3)


# Settings of each port pointing at the session's engine (tests pick their own database,
# bucket, collection or topic prefix inside it to stay apart).

@pytest.fixture(scope="session")
def kafka_settings(kafka_engine) -> EventsSettings:
    return EventsSettings(backend="kafka", partitions=4, session_timeout_ms=6000,
                          kafka_bootstrap_servers=f"127.0.0.1:{kafka_engine.env['KAFKA_PORT']}")


@pytest.fixture(scope="session")
def weaviate_settings(weaviate_engine) -> VectorsSettings:
    return VectorsSettings(backend="weaviate", weaviate_host="127.0.0.1",
                           weaviate_http_port=int(weaviate_engine.env["WEAVIATE_HTTP_PORT"]),
                           weaviate_grpc_port=int(weaviate_engine.env["WEAVIATE_GRPC_PORT"]))


@pytest.fixture(scope="session")
def mongodb_settings(mongodb_engine) -> MetadataSettings:
    return MetadataSettings(backend="mongodb",
                            mongodb_uri=f"mongodb://127.0.0.1:{mongodb_engine.env['MONGODB_PORT']}/")


@pytest.fixture(scope="session")
def s3_settings(s3_engine) -> BlobsSettings:
    return BlobsSettings(backend="s3", s3_endpoint=f"127.0.0.1:{s3_engine.env['S3_PORT']}",
                         s3_access_key=s3_engine.env["S3_ACCESS_KEY"],
                         s3_secret_key=s3_engine.env["S3_SECRET_KEY"])
