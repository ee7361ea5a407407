"""The search index port (VectorStore): the same cases on the embedded twin and on Weaviate.

The embedded twin searches exactly; Weaviate's HNSW index may miss a few of the exact top hits, so
there ranking is judged by recall, and scores must agree to 1e-4 for the hits it finds.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import uuid
from typing import Callable

import numpy as np
import pytest

from photostore.backends.base import SPACE_CLIP, SPACE_TEXT, VectorFilter, VectorObject, VectorStore

UTC = dt.timezone.utc
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


@dataclasses.dataclass
class Index:
    kind: str  # embedded | weaviate
    open: Callable[[], VectorStore]  # another store on the same index, as another process would have

    @property
    def exact(self) -> bool:
        return self.kind == "embedded"


def _drop_collection(settings, name: str) -> None:
    import weaviate
    with weaviate.connect_to_custom(http_host=settings.weaviate_host, http_port=settings.weaviate_http_port,
                                    http_secure=False, grpc_host=settings.weaviate_host,
                                    grpc_port=settings.weaviate_grpc_port, grpc_secure=False) as client:
        client.collections.delete(name)


@pytest.fixture(params=["embedded", "weaviate"])
def index(request, tmp_path):
    opened: list[VectorStore] = []
    if request.param == "embedded":
        from photostore.backends.sqlite_vectors import SqliteVectorStore

        def make() -> VectorStore:
            return SqliteVectorStore(tmp_path / "vectors.sqlite3")
        cleanup = None
    else:
        from photostore.backends.weaviate_vectors import WeaviateVectorStore
        settings = request.getfixturevalue("weaviate_settings").model_copy(
            update={"weaviate_collection": f"T{uuid.uuid4().hex}"})

        def make() -> VectorStore:
            return WeaviateVectorStore(settings)

        def cleanup() -> None:
            _drop_collection(settings, settings.weaviate_collection)

    def open_store() -> VectorStore:
        opened.append(make())
        return opened[-1]

    yield Index(request.param, open_store)
    for store in opened:
        store.close()
    if cleanup is not None:
        cleanup()


@pytest.fixture
def store(index) -> VectorStore:
    return index.open()


def ids(hits) -> list[str]:
    return [photo_id for photo_id, _ in hits]


def test_search_matches_exact_scores_and_filters(index, store):
    rng = np.random.default_rng(0)
    reader = index.open()
    vectors, batch = {}, []
    for i in range(600):
        v = unit(rng.normal(size=32))
        owner = "u1" if i % 3 else "u2"
        vectors[f"p{i}"] = (v, owner)
        batch.append(VectorObject(f"p{i}", owner, "m", v, taken_at=BASE + dt.timedelta(days=i),
                                  camera_make="Canon" if i % 2 else "Nikon", camera_model="X" if i % 4 < 2 else "Y"))
    store.upsert_many(batch)
    assert store.count("m") == 600 and store.count() == 600

    for seed in range(5):
        q = unit(np.random.default_rng(100 + seed).normal(size=32))
        mine = {k: float(v @ q) for k, (v, o) in vectors.items() if o == "u1"}
        expected = sorted(mine, key=lambda k: (-mine[k], k))[:10]
        hits = reader.search(q, "m", VectorFilter(owner="u1"), limit=10)
        assert len(hits) == 10 and all(pid in mine for pid in ids(hits))  # only u1's photos
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
        assert all(abs(score - mine[pid]) < 1e-4 for pid, score in hits)
        if index.exact:
            assert ids(hits) == expected
        else:
            assert len(set(ids(hits)) & set(expected)) >= 9  # top-10 recall >= 0.9

    q = unit(rng.normal(size=32))
    mine = {k: float(v @ q) for k, (v, o) in vectors.items() if o == "u1"}
    assert reader.search(q, "other-model", VectorFilter(owner="u1"), 10) == []
    assert reader.search(q, "m", VectorFilter(owner="nobody"), 10) == []
    assert reader.search(q, "m", VectorFilter(owner="u1"), 0) == []
    canon = reader.search(q, "m", VectorFilter(owner="u1", camera_make="canon"), 500)
    assert sorted(ids(canon)) == sorted(k for k in mine if int(k[1:]) % 2)
    canon_y = reader.search(q, "m", VectorFilter(owner="u1", camera_make="CANON", camera_model="y"), 500)
    assert sorted(ids(canon_y)) == sorted(k for k in mine if int(k[1:]) % 2 and int(k[1:]) % 4 >= 2)
    window = reader.search(q, "m", VectorFilter(owner="u1", start=BASE + dt.timedelta(days=10),
                                                end=BASE + dt.timedelta(days=20)), 500)
    assert sorted(int(p[1:]) for p in ids(window)) == [i for i in range(10, 20) if i % 3]
    high = reader.search(q, "m", VectorFilter(owner="u1"), 500, min_score=0.3)
    above = {k for k, s in mine.items() if s >= 0.3}
    assert high and all(s >= 0.3 for _, s in high) and set(ids(high)) <= above
    assert len(high) == len(above) if index.exact else len(high) >= 0.9 * len(above)


def test_ties_are_ordered_by_photo_id(store):
    v = unit([1, 2, 3])
    store.upsert_many([VectorObject(pid, "u", "m", v) for pid in ("c", "a", "b")])
    hits = store.search(v, "m", VectorFilter("u"), 5)
    assert ids(hits) == ["a", "b", "c"] and all(abs(s - 1.0) < 1e-4 for _, s in hits)


def test_upsert_is_idempotent_and_delete_propagates(index, store):
    reader = index.open()
    store.upsert(VectorObject("a", "u", "m", unit([1, 0, 0])))
    store.upsert(VectorObject("b", "u", "m", unit([0, 1, 0])))
    assert ids(reader.search(unit([1, 0.1, 0]), "m", VectorFilter("u"), 5)) == ["a", "b"]
    store.upsert(VectorObject("a", "u", "m", unit([0, 0, 1])))  # redelivery / re-embed
    store.upsert(VectorObject("a", "u", "m", unit([0, 0, 1])))
    assert store.count() == 2 and store.count("m") == 2
    assert ids(reader.search(unit([0, 0, 1]), "m", VectorFilter("u"), 1)) == ["a"]
    store.delete("b")
    store.delete("b")
    store.delete("never-there")
    assert ids(reader.search(unit([0, 1, 0]), "m", VectorFilter("u"), 5)) == ["a"]
    assert store.get("b") is None and np.allclose(store.get("a").vector, unit([0, 0, 1]), atol=1e-6)
    fresh = index.open()  # a fresh process sees the same index
    assert ids(fresh.search(unit([0, 1, 0]), "m", VectorFilter("u"), 5)) == ["a"]
    assert fresh.count() == 1


def test_spaces_are_independent_and_delete_removes_all(index, store):
    reader = index.open()
    store.upsert(VectorObject("a", "u", "clip-m", unit([1, 0, 0]), keywords="sunset beach"))
    store.upsert(VectorObject("a", "u", "text-m", unit([0, 1, 0, 0]), space=SPACE_TEXT))
    store.upsert(VectorObject("b", "u", "text-m", unit([0, 0, 1, 0]), space=SPACE_TEXT))
    assert store.count() == 2 and store.count("clip-m") == 1 and store.count("text-m") == 2
    assert store.get("a").model == "clip-m" and store.get("a", SPACE_TEXT).model == "text-m"
    assert store.get("b") is None  # b has no clip vector
    assert ids(reader.search(unit([0, 1, 0, 0]), "text-m", VectorFilter("u"), 5)) == ["a", "b"]
    assert ids(reader.search(unit([1, 0, 0]), "clip-m", VectorFilter("u"), 5)) == ["a"]
    store.delete("a")
    assert store.get("a") is None and store.get("a", SPACE_TEXT) is None
    assert ids(reader.search(unit([0, 1, 0, 0]), "text-m", VectorFilter("u"), 5)) == ["b"]
    assert reader.search(unit([1, 0, 0]), "clip-m", VectorFilter("u"), 5) == []
    assert store.keyword_search(VectorFilter("u"), ["sunset"]) == []  # its keywords went too
    assert store.count() == 1 and store.count("clip-m") == 0


def test_upsert_of_one_space_keeps_the_other(store):
    taken = BASE + dt.timedelta(days=3)
    store.upsert_many([
        VectorObject("a", "u", "clip-m", unit([1, 0, 0]), taken_at=taken, camera_make="Canon",
                     keywords="harbour boats"),
        VectorObject("a", "u", "text-m", unit([0, 1, 0, 0]), taken_at=taken, camera_make="Canon",
                     space=SPACE_TEXT),
    ])
    store.upsert(VectorObject("a", "u", "clip-m", unit([0, 1, 0]), taken_at=taken, camera_make="Canon"))
    clip, text = store.get("a"), store.get("a", SPACE_TEXT)
    assert clip.model == "clip-m" and np.allclose(clip.vector, unit([0, 1, 0]), atol=1e-6)
    assert text.model == "text-m" and np.allclose(text.vector, unit([0, 1, 0, 0]), atol=1e-6)
    assert clip.owner == "u" and clip.taken_at == taken and clip.camera_make.lower() == "canon"
    assert store.keyword_search(VectorFilter("u"), ["boats"]) == [("a", ["boats"])]  # keywords kept
    assert ids(store.search(unit([0, 1, 0, 0]), "text-m", VectorFilter("u", camera_make="canon"), 5)) == ["a"]


def test_get_many(store):
    store.upsert_many([VectorObject(f"g{i}", "u", "m", unit([1, i, 0])) for i in range(5)]
                      + [VectorObject("t", "u", "tm", unit([1, 1]), space=SPACE_TEXT)])
    found = store.get_many(["g0", "g3", "t", "missing", "g3"])
    assert set(found) == {"g0", "g3"}
    assert found["g3"].photo_id == "g3" and found["g3"].model == "m" and found["g3"].space == SPACE_CLIP
    assert np.allclose(found["g3"].vector, unit([1, 3, 0]), atol=1e-6)
    assert set(store.get_many(["g0", "t"], SPACE_TEXT)) == {"t"}
    assert store.get_many([]) == {}
    many = [f"g{i}" for i in range(5)] + [f"none{i}" for i in range(600)]  # more than one round trip
    assert set(store.get_many(many)) == {f"g{i}" for i in range(5)}


def test_scores_are_exact_cosines_of_the_model_vectors(index, store):
    rng = np.random.default_rng(7)
    raw = {f"s{i}": rng.normal(size=3).astype(np.float32) * (i + 1) for i in range(6)}  # not unit length
    store.upsert_many([VectorObject(p, "u", "m", v) for p, v in raw.items()]
                      + [VectorObject("old", "u", "m-old", unit([1, 0, 0])),
                         VectorObject("s0", "u", "tm", unit([0, 1]), space=SPACE_TEXT)])
    query = np.array([0.3, -1.2, 2.0], np.float32)
    got = store.scores(query, "m", SPACE_CLIP, ["s5", "s0", "old", "missing", "s3", "s3"])
    assert set(got) == {"s5", "s0", "s3"}  # another model's vector, or none, gets no score
    assert got == pytest.approx({photo_id: cosine(raw[photo_id], query) for photo_id in got}, abs=1e-5)
    assert store.scores(unit([1, 1]), "tm", SPACE_TEXT, ["s0", "s1"]) == {"s0": pytest.approx(unit([1, 1])[1], abs=1e-5)}
    assert store.scores(query, "m", SPACE_TEXT, ["s1"]) == {}  # the space counts too
    assert store.scores(query, "m", SPACE_CLIP, []) == {}
    # Another store on the same index (another process) scores what this one wrote.
    assert index.open().scores(query, "m", SPACE_CLIP, ["s1"]) == pytest.approx({"s1": cosine(raw["s1"], query)},
                                                                                 abs=1e-5)


def cosine(v: np.ndarray, query: np.ndarray) -> float:
    return float(query @ v / np.linalg.norm(query) / np.linalg.norm(v))


def test_reindex_to_a_new_model_keeps_old_vectors_searchable(store):
    store.upsert_many([VectorObject(p, "u", "m1", unit([1, i, 0])) for i, p in enumerate("abc")])
    store.upsert(VectorObject("a", "u", "m2", unit([0, 0, 1])))  # a reindexed, b and c not yet
    assert store.count("m1") == 2 and store.count("m2") == 1 and store.count() == 3
    assert sorted(ids(store.search(unit([1, 0, 0]), "m1", VectorFilter("u"), 5))) == ["b", "c"]
    assert ids(store.search(unit([0, 0, 1]), "m2", VectorFilter("u"), 5)) == ["a"]
    assert store.get("a").model == "m2"


def test_keyword_search_matches_words(store):
    store.upsert_many([
        VectorObject("p1", "u1", "m", unit([1, 0, 0]), taken_at=BASE, camera_make="Canon",
                     keywords="IMG_2024-beach.holiday.jpg\ntiger cat, tabby\nCAFE ROMA open daily"),
        VectorObject("p2", "u1", "m", unit([0, 1, 0]), taken_at=BASE + dt.timedelta(days=5),
                     keywords="catamaran.jpg"),
        VectorObject("p3", "u1", "m", unit([0, 0, 1]), keywords="red car"),
        VectorObject("p4", "u1", "m", unit([1, 1, 0]), keywords="a red car parked on the street"),
        VectorObject("other", "u2", "m", unit([1, 0, 1]), keywords="tabby cat catamaran"),
    ])
    u1 = VectorFilter("u1")
    assert store.keyword_search(u1, ["cat"]) == [("p1", ["cat"])]  # a word, not "catamaran"
    assert store.keyword_search(u1, ["roma", "cafe", "zebra"]) == [("p1", ["roma", "cafe"])]
    for word in ("img", "2024", "beach", "holiday", "jpg"):  # filename words split on _ - .
        assert ("p1", [word]) in store.keyword_search(u1, [word])
    assert store.keyword_search(u1, ["img_2024"]) == []  # "_" separates words
    assert store.keyword_search(u1, ["catamaran"]) == [("p2", ["catamaran"])]
    assert store.keyword_search(VectorFilter("u2"), ["roma"]) == []  # owners apart
    assert store.keyword_search(VectorFilter("nobody"), ["cat"]) == []
    assert store.keyword_search(u1, ["street", "car", "red"]) == [("p4", ["street", "car", "red"]),
                                                                   ("p3", ["car", "red"])]  # most terms first
    assert store.keyword_search(u1, ["the", "a"]) == [("p4", ["the", "a"])]  # no stopwords
    assert store.keyword_search(u1, ["zebra"]) == [] and store.keyword_search(u1, []) == []
    assert len(store.keyword_search(u1, ["red"], limit=1)) == 1
    # The filter applies as in search: date window and camera.
    assert store.keyword_search(VectorFilter("u1", camera_make="CANON"), ["cat", "catamaran"]) == [("p1", ["cat"])]
    assert store.keyword_search(VectorFilter("u1", start=BASE + dt.timedelta(days=1)),
                                ["cat", "catamaran"]) == [("p2", ["catamaran"])]


def test_keywords_none_leaves_them_and_vector_none_writes_only_keywords(store):
    store.upsert(VectorObject("p", "u", "m", unit([1, 0, 0]), keywords="tiger cat"))
    store.upsert(VectorObject("p", "u", "m", unit([0, 1, 0])))  # keywords None: left as they are
    assert store.keyword_search(VectorFilter("u"), ["tiger"]) == [("p", ["tiger"])]
    store.upsert(VectorObject("p", "u", "", None, keywords="lighthouse"))  # keywords only
    assert store.keyword_search(VectorFilter("u"), ["tiger"]) == []  # replaced
    assert store.keyword_search(VectorFilter("u"), ["lighthouse"]) == [("p", ["lighthouse"])]
    assert np.allclose(store.get("p").vector, unit([0, 1, 0]), atol=1e-6) and store.get("p").model == "m"
    # A photo with keywords and no vector yet: found by keywords, in no vector search, no vector to get.
    store.upsert(VectorObject("k", "u", "", None, taken_at=BASE, camera_make="Leica", keywords="old lighthouse"))
    assert store.keyword_search(VectorFilter("u", camera_make="leica"), ["lighthouse"]) == [("k", ["lighthouse"])]
    assert store.get("k") is None and store.get("k", SPACE_TEXT) is None
    assert ids(store.search(unit([0, 1, 0]), "m", VectorFilter("u"), 5)) == ["p"]
    assert store.count("m") == 1 and store.count() == 2
    # Its vector comes later, keywords untouched.
    store.upsert(VectorObject("k", "u", "m", unit([0, 0, 1]), taken_at=BASE, camera_make="Leica"))
    assert ids(store.search(unit([0, 0, 1]), "m", VectorFilter("u", camera_make="LEICA"), 5)) == ["k"]
    assert store.keyword_search(VectorFilter("u"), ["old"]) == [("k", ["old"])]


def test_properties_written_with_one_space_apply_to_the_photo(store):
    store.upsert(VectorObject("a", "u", "tm", unit([1, 0]), camera_make="Nikon", space=SPACE_TEXT))
    store.upsert(VectorObject("a", "u", "cm", unit([1, 0, 0]), camera_make="Canon"))  # corrected EXIF
    assert ids(store.search(unit([1, 0]), "tm", VectorFilter("u", camera_make="canon"), 5)) == ["a"]
    assert store.search(unit([1, 0]), "tm", VectorFilter("u", camera_make="nikon"), 5) == []


def test_stores_opening_at_once_share_one_index(index):
    stores = [index.open() for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # each creates the collection if missing
        assert list(pool.map(lambda s: s.count(), stores)) == [0, 0, 0, 0]
    stores[0].upsert(VectorObject("a", "u", "m", unit([1, 0])))
    assert all(s.count() == 1 for s in stores)
    assert index.kind in stores[0].describe().lower()


def clustered(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """CLIP-like vectors: Gaussian clusters on the unit sphere."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    points = centers[rng.integers(clusters, size=n)] + rng.normal(scale=0.5, size=(n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def ann_store(path, **kwargs):
    """An embedded store on the ANN path from 500 rows (exact below), built in the search."""
    from photostore.backends.sqlite_vectors import SqliteVectorStore
    return SqliteVectorStore(path, **{"exact_below": 500, "background_build": False, **kwargs})


def index_path(index):
    return index.open().db.path


def camera(i: int) -> str:
    return "canon" if i % 3 == 0 else "nikon"


def upsert_clustered(store, vectors, owners=("u1", "u2")) -> None:
    store.upsert_many([VectorObject(f"p{i}", owners[i % len(owners)], "m", v, taken_at=BASE + dt.timedelta(hours=i),
                                    camera_make=camera(i)) for i, v in enumerate(vectors)])


def test_ann_recall_against_exact_and_filters_never_leak(index, store):
    vectors = clustered(4000)
    upsert_clustered(store, vectors)
    reader = ann_store(index_path(index)) if index.exact else index.open()
    queries = clustered(30, seed=1)
    window = (BASE + dt.timedelta(hours=500), BASE + dt.timedelta(hours=3500))
    filters = [VectorFilter("u1"), VectorFilter("u2", camera_make="Nikon"),
               VectorFilter("u1", start=window[0], end=window[1])]
    for flt in filters:
        allowed = [i for i in range(len(vectors)) if f"u{i % 2 + 1}" == flt.owner
                   and (not flt.camera_make or camera(i) == flt.camera_make.lower())
                   and (flt.start is None or window[0] <= BASE + dt.timedelta(hours=i) < window[1])]
        found = 0
        for q in queries:
            scores = vectors[allowed] @ q
            exact = {f"p{allowed[j]}" for j in np.argsort(-scores)[:10]}
            hits = reader.search(q, "m", flt, 10)
            assert len(hits) == 10 and {pid for pid, _ in hits} <= {f"p{i}" for i in allowed}
            assert all(abs(s - float(vectors[int(pid[1:])] @ q)) < 1e-4 for pid, s in hits)  # exact cosines
            found += len(exact & set(ids(hits)))
        assert found / (10 * len(queries)) >= (0.98 if index.exact else 0.9)
    if index.exact:
        assert reader._indexes["m"].ann is not None  # the ANN path answered
        reader.close()


# The embedded store's own ANN index (Weaviate keeps its HNSW index itself).

def test_ann_follows_upserts_and_deletes_of_another_store(tmp_path):
    path = tmp_path / "vectors.sqlite3"
    writer = ann_store(path)
    vectors = clustered(1000)
    upsert_clustered(writer, vectors, owners=("u",))
    reader = ann_store(path)
    q = vectors[7]
    assert ids(reader.search(q, "m", VectorFilter("u"), 1)) == ["p7"]
    ann = reader._indexes["m"].ann
    writer.delete("p7")
    writer.upsert(VectorObject("new", "u", "m", q))
    writer.upsert(VectorObject("p8", "u", "m", -q))  # moved far away
    hits = reader.search(q, "m", VectorFilter("u"), 5)
    assert ids(hits)[0] == "new" and "p7" not in ids(hits) and "p8" not in ids(hits)
    assert ids(reader.search(-q, "m", VectorFilter("u"), 1)) == ["p8"]
    assert reader._indexes["m"].ann is ann and ann.size == 1002  # extended, not rebuilt
    reader.close()


def test_ann_index_is_saved_reloaded_and_rebuilt_when_corrupt(tmp_path, caplog):
    path = tmp_path / "vectors.sqlite3"
    writer = ann_store(path)
    vectors = clustered(1000)
    upsert_clustered(writer, vectors, owners=("u",))
    first = ann_store(path)
    assert ids(first.search(vectors[3], "m", VectorFilter("u"), 1)) == ["p3"]
    first.close()
    [saved] = path.parent.glob("*.ann")
    writer.upsert(VectorObject("late", "u", "m", -vectors[3]))  # after the save: caught up from the log

    reloaded = ann_store(path)
    assert ids(reloaded.search(-vectors[3], "m", VectorFilter("u"), 1)) == ["late"]
    assert reloaded._indexes["m"].ann.size == 1001 and reloaded._indexes["m"].saved_size == 1000
    assert ids(reloaded.search(vectors[3], "m", VectorFilter("u"), 1)) == ["p3"]
    reloaded.close()  # saves the extended index

    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    rebuilt = ann_store(path)
    assert ids(rebuilt.search(vectors[3], "m", VectorFilter("u"), 1)) == ["p3"]
    assert "rebuilding the ANN index" in caplog.text and rebuilt._indexes["m"].ann.size == 1001
    rebuilt.close()


def test_ann_builds_in_the_background_and_exact_meanwhile(tmp_path):
    path = tmp_path / "vectors.sqlite3"
    upsert_clustered(ann_store(path), clustered(800), owners=("u",))
    store = ann_store(path, background_build=True)
    first = store.search(clustered(1, seed=2)[0], "m", VectorFilter("u"), 10)
    store.wait_for_index()
    assert store._indexes["m"].ann is not None and len(first) == 10
    assert ids(store.search(clustered(1, seed=2)[0], "m", VectorFilter("u"), 10)) == ids(first)
    store.close()


# The embedded store's full-text index.

def test_keyword_search_takes_the_newest_matches_with_most_terms_first(tmp_path):
    from photostore.backends.sqlite_vectors import SqliteVectorStore
    store = SqliteVectorStore(tmp_path / "vectors.sqlite3")
    for owner in ("u1", "u2"):  # a common word in many photos of both owners
        store.upsert_many([VectorObject(f"{owner}-{i:03d}", owner, "m", unit([1, i, 0]), keywords=f"cat {i}")
                           for i in range(300)])
    store.upsert(VectorObject("old-tabby", "u1", "m", unit([0, 0, 1]), keywords="tabby cat"))
    store.upsert_many([VectorObject(f"late-{i}", "u1", "m", unit([0, 1, i]), keywords="cat") for i in range(3)])
    u1 = VectorFilter("u1")
    assert store.keyword_search(u1, ["cat"], limit=4) == [(f"late-{i}", ["cat"]) for i in (2, 1, 0)] + [
        ("old-tabby", ["cat"])]  # newest written first
    assert store.keyword_search(u1, ["tabby", "cat"], limit=3) == [
        ("old-tabby", ["tabby", "cat"]), ("late-2", ["cat"]), ("late-1", ["cat"])]  # all terms first
    assert all(photo_id.startswith("u2-") for photo_id, _ in store.keyword_search(VectorFilter("u2"), ["cat"]))
    # A photo that changes owner moves with its keywords.
    store.upsert(VectorObject("old-tabby", "u2", "m", unit([0, 0, 1])))
    assert store.keyword_search(u1, ["tabby"]) == []
    assert store.keyword_search(VectorFilter("u2"), ["tabby"]) == [("old-tabby", ["tabby"])]


def test_keywords_of_the_owner_blind_index_move_to_the_owner_keyed_one(tmp_path):
    import sqlite3
    from photostore.backends.sqlite_vectors import SqliteVectorStore
    path = tmp_path / "vectors.sqlite3"
    store = SqliteVectorStore(path)
    store.upsert_many([VectorObject("a", "u1", "m", unit([1, 0, 0]), keywords="harbour cafe"),
                       VectorObject("b", "u2", "m", unit([0, 1, 0]), keywords="harbour at night")])
    with sqlite3.connect(path) as conn:  # as the index was before the owner joined it
        conn.execute("DROP TABLE photo_words")
        conn.execute("CREATE VIRTUAL TABLE photo_keywords USING fts5(words)")
        conn.execute("INSERT INTO photo_keywords (rowid, words) SELECT id, keywords FROM photos")
    reopened = SqliteVectorStore(path)
    assert reopened.keyword_search(VectorFilter("u1"), ["harbour"]) == [("a", ["harbour"])]
    assert reopened.keyword_search(VectorFilter("u2"), ["harbour", "night"]) == [("b", ["harbour", "night"])]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'photo_keywords'").fetchone()[0] == 0
    assert SqliteVectorStore(path).keyword_search(VectorFilter("u1"), ["cafe"]) == [("a", ["cafe"])]
