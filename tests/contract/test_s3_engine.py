"""The S3 blob store against an engine of its own that the tests stop and start."""
from __future__ import annotations

import time

import pytest

from photostore.backends.base import BlobError, BlobUnavailableError
from photostore.backends.s3_blobs import S3BlobStore
from photostore.settings import BlobsSettings
from tests import engines

UNAVAILABLE_WITHIN_S = 30
RESTART_DEADLINE_S = 60


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = engines.s3(tmp_path_factory.mktemp("s3-own")).start()
    try:
        yield engine
    finally:
        engine.stop()


def settings_of(engine, **update) -> BlobsSettings:
    fields = dict(backend="s3", s3_endpoint=f"127.0.0.1:{engine.env['S3_PORT']}",
                  s3_access_key=engine.env["S3_ACCESS_KEY"], s3_secret_key=engine.env["S3_SECRET_KEY"],
                  s3_bucket="engine-test")
    return BlobsSettings(**{**fields, **update})


def raises_unavailable_quickly(call) -> None:
    started = time.monotonic()
    with pytest.raises(BlobUnavailableError) as raised:
        call()
    elapsed = time.monotonic() - started
    assert elapsed < UNAVAILABLE_WITHIN_S, f"took {elapsed:.1f}s"
    assert engines_port_named(raised.value)


def engines_port_named(error: Exception) -> bool:
    return "127.0.0.1:" in str(error)


def test_stopped_engine_is_unavailable_and_data_survives_restart(engine):
    store = S3BlobStore(settings_of(engine))
    store.put_bytes("kept/one", b"survives a restart", "text/plain")
    with store.open("kept/one") as reader:
        assert reader.read(8) == b"survives"  # the connection is back in the pool, idle

    engine.stop()
    assert not engine.running()
    raises_unavailable_quickly(lambda: store.open("kept/one"))
    raises_unavailable_quickly(lambda: store.put_bytes("kept/two", b"x", "text/plain"))
    raises_unavailable_quickly(lambda: store.delete("kept/one"))
    fresh = S3BlobStore(settings_of(engine, s3_bucket="engine-test-2"))  # creates its bucket on first put
    raises_unavailable_quickly(lambda: fresh.put_bytes("k", b"x", "text/plain"))

    engine.start()
    deadline = time.monotonic() + RESTART_DEADLINE_S
    while True:
        try:
            store.put_bytes("kept/two", b"after restart", "text/plain")
            break
        except BlobUnavailableError:
            assert time.monotonic() < deadline, f"not writable {RESTART_DEADLINE_S}s after restart"
            time.sleep(0.2)
    assert store.read_bytes("kept/one") == b"survives a restart"
    assert store.read_bytes("kept/two") == b"after restart"
    fresh.put_bytes("k", b"x", "text/plain")
    assert fresh.read_bytes("k") == b"x"


def test_wrong_credentials_are_refused_not_unavailable(engine):
    engine.start()  # no-op when running
    good = S3BlobStore(settings_of(engine))
    good.put_bytes("secret", b"x", "text/plain")
    for update in ({"s3_secret_key": "wrong-secret"}, {"s3_access_key": "nobody"}):
        bad = S3BlobStore(settings_of(engine, **update))
        for call in (lambda: bad.open("secret"), lambda: bad.put_bytes("other", b"x", "text/plain"),
                     lambda: bad.delete("secret")):
            with pytest.raises(BlobError) as raised:
                call()
            assert not isinstance(raised.value, BlobUnavailableError), raised.value
            assert any(code in str(raised.value)
                       for code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")), raised.value
            assert "wrong-secret" not in str(raised.value)
    assert good.read_bytes("secret") == b"x"
