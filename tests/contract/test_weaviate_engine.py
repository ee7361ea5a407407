"""WeaviateVectorStore against an engine that goes away and comes back (its own engine instance)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from photostore.backends.base import IndexUnavailableError, VectorFilter, VectorObject
from photostore.settings import VectorsSettings
from tests import engines

DEADLINE_S = 120


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def eventually(check, deadline_s: float = DEADLINE_S):
    """check()'s value once it stops raising IndexUnavailableError (the engine is still starting)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return check()
        except IndexUnavailableError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


@pytest.fixture
def engine(tmp_path):
    engine = engines.weaviate(tmp_path / "weaviate").start()
    try:
        yield engine
    finally:
        engine.stop()


def test_engine_down_then_back(engine):
    from photostore.backends.weaviate_vectors import WeaviateVectorStore

    settings = VectorsSettings(backend="weaviate", weaviate_host="127.0.0.1",
                               weaviate_http_port=int(engine.env["WEAVIATE_HTTP_PORT"]),
                               weaviate_grpc_port=int(engine.env["WEAVIATE_GRPC_PORT"]))
    store = WeaviateVectorStore(settings)
    try:
        store.upsert_many([VectorObject("a", "u", "m", unit([1, 0, 0]), keywords="red kite"),
                           VectorObject("b", "u", "m", unit([0, 1, 0]))])
        assert [p for p, _ in store.search(unit([1, 0, 0]), "m", VectorFilter("u"), 5)] == ["a", "b"]

        engine.stop()
        address = f"127.0.0.1:{settings.weaviate_http_port}"
        for call in (lambda: store.search(unit([1, 0, 0]), "m", VectorFilter("u"), 5),
                     lambda: store.keyword_search(VectorFilter("u"), ["kite"]),
                     lambda: store.upsert(VectorObject("c", "u", "m", unit([0, 0, 1]))),
                     lambda: store.get_many(["a"]), lambda: store.delete("a"), store.count):
            started = time.monotonic()
            with pytest.raises(IndexUnavailableError, match=address):
                call()
            assert time.monotonic() - started < 60  # fails, not hangs

        engine.start()
        hits = eventually(lambda: store.search(unit([1, 0, 0]), "m", VectorFilter("u"), 5))
        assert [p for p, _ in hits] == ["a", "b"]  # persisted across the restart
        assert store.keyword_search(VectorFilter("u"), ["kite"]) == [("a", ["kite"])]
        store.upsert(VectorObject("c", "u", "m", unit([0, 0, 1])))
        assert store.count("m") == 3
    finally:
        store.close()
