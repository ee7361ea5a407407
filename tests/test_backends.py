"""The embedded backends: durability across instances (as across processes), semantics the
scale-out twins share."""
import datetime as dt
import multiprocessing

import numpy as np
import pytest

from photostore.backends.base import (SPACE_TEXT, STATUS_INDEXED, PhotoRecord, VectorFilter, VectorObject,
                                      utcnow)
from photostore.backends.local_blobs import LocalBlobStore
from photostore.backends.sqlite_events import SqliteEventLog
from photostore.backends.sqlite_metadata import SqliteMetadataStore
from photostore.backends.sqlite_vectors import SqliteVectorStore

UTC = dt.timezone.utc


def record(photo_id, owner="u1", sha=None, taken=None, created=None):
    now = created or utcnow()
    return PhotoRecord(id=photo_id, owner=owner, filename=f"{photo_id}.jpg", sha256=sha or photo_id * 4,
                       content_type="image/jpeg", size_bytes=10, width=4, height=3,
                       blob_key=f"originals/{owner}/{photo_id}", thumbnail_key=f"t/{photo_id}",
                       created_at=now, updated_at=now, taken_at=taken)


# Blobs
def test_blob_roundtrip_and_delete(tmp_path):
    store = LocalBlobStore(tmp_path / "b")
    store.put_bytes("a/b/c", b"x" * 3000, "image/jpeg")
    assert store.size("a/b/c") == 3000
    assert b"".join(store.iter_chunks("a/b/c", 1024)) == b"x" * 3000
    src = tmp_path / "src"
    src.write_bytes(b"hello")
    store.put_file("k", str(src), "text/plain")
    assert store.read_bytes("k") == b"hello"
    store.delete("k")
    store.delete("k")
    with pytest.raises(KeyError):
        store.open("k")
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"", "x")
    assert not [p for p in (tmp_path / "b").rglob(".tmp-*")]


# Metadata
def test_insert_dedupes_by_sha_and_request_id(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    first, created = store.insert_photo(record("p1", sha="s1"), "req-1")
    assert created and first.id == "p1"
    again, created = store.insert_photo(record("p2", sha="s1"), "req-2")
    assert not created and again.id == "p1"
    retry, created = store.insert_photo(record("p3", sha="s3"), "req-1")
    assert not created and retry.id == "p1"
    other_owner, created = store.insert_photo(record("p4", owner="u2", sha="s1"), "req-1")
    assert created and other_owner.id == "p4"
    assert store.photo_by_request("u1", "req-2").id == "p1"
    assert store.get_photo("p1", owner="u2") is None
    assert [r.id for r in store.get_photos("u1", ["p4", "p1", "nope"])] == ["p1"]


def test_list_pages_newest_first_with_filters(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    for i in range(7):
        store.insert_photo(record(f"p{i}", taken=base + dt.timedelta(days=i)), "")
    store.insert_photo(record("other", owner="u2"), "")
    seen, cursor = [], ""
    while True:
        page = store.list_photos("u1", page_size=3, cursor=cursor)
        assert page.total == 7
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if not cursor:
            break
    assert seen == [f"p{i}" for i in reversed(range(7))]
    window = store.list_photos("u1", start=base + dt.timedelta(days=2), end=base + dt.timedelta(days=4))
    assert [r.id for r in window.records] == ["p3", "p2"] and window.total == 2
    store.update_status("p3", STATUS_INDEXED, embedding_model="m1", attempts=1)
    indexed = store.list_photos("u1", status=STATUS_INDEXED)
    assert [r.id for r in indexed.records] == ["p3"]
    assert indexed.records[0].embedding_model == "m1"
    with pytest.raises(ValueError):
        store.list_photos("u1", cursor="garbage!")


def test_outbox_and_delete(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    store.insert_photo(record("p1"), "r1")
    assert [r.id for r in store.unpublished_photos()] == ["p1"]
    store.mark_published("p1")
    assert store.unpublished_photos() == []
    assert store.delete_photo("p1").id == "p1"
    assert store.get_photo("p1") is None and store.photo_by_request("u1", "r1") is None
    assert store.delete_photo("p1") is None


def test_users_and_keys(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    user = store.create_user("alice", "h1")
    with pytest.raises(ValueError):
        store.create_user("alice", "h2")
    store.add_api_key(user.id, "h3")
    assert store.user_by_key_hash("h1").id == user.id == store.user_by_key_hash("h3").id
    assert store.user_by_key_hash("nope") is None


# Event log
def test_events_at_least_once_until_committed(tmp_path):
    log = SqliteEventLog(tmp_path / "e.db")
    producer = log.producer()
    for i in range(5):
        producer.send("t", f"k{i}", {"i": i})
    producer.send("other", "x", {})
    consumer = log.consumer("g", ["t"])
    first = consumer.poll(max_records=3, timeout_s=0)
    assert [e.value["i"] for e in first] == [0, 1, 2]
    consumer.commit(first[:2])
    assert consumer.lag() == 3
    # A crash before committing the third: a new consumer of the group gets it again.
    again = SqliteEventLog(tmp_path / "e.db").consumer("g", ["t"])
    assert [e.value["i"] for e in again.poll(timeout_s=0)] == [2, 3, 4]
    # Groups are independent.
    assert len(log.consumer("g2", ["t"]).poll(timeout_s=0)) == 5
    consumer.rewind_to_committed()
    assert [e.value["i"] for e in consumer.poll(timeout_s=0)] == [2, 3, 4]
    # Commits never move backwards.
    consumer.commit(first[:1])
    assert consumer.lag() == 3


def _produce(path, n):
    producer = SqliteEventLog(path).producer()
    for i in range(n):
        producer.send("t", str(i), {"i": i})


def test_events_from_another_process_wake_a_waiting_poll(tmp_path):
    path = tmp_path / "e.db"
    consumer = SqliteEventLog(path).consumer("g", ["t"])
    proc = multiprocessing.get_context("spawn").Process(target=_produce, args=(path, 20))
    proc.start()
    got = []
    deadline = utcnow() + dt.timedelta(seconds=30)
    while len(got) < 20 and utcnow() < deadline:
        got += consumer.poll(timeout_s=1)
    proc.join()
    assert [e.value["i"] for e in got] == list(range(20))


# Vectors
def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_vector_search_matches_numpy_and_filters(tmp_path):
    rng = np.random.default_rng(0)
    writer = SqliteVectorStore(tmp_path / "v.db")
    reader = SqliteVectorStore(tmp_path / "v.db")  # as in another process
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    vectors, batch = {}, []
    for i in range(300):
        v = unit(rng.normal(size=16))
        owner = "u1" if i % 3 else "u2"
        vectors[f"p{i}"] = (v, owner)
        batch.append(VectorObject(f"p{i}", owner, "m", v, taken_at=base + dt.timedelta(days=i),
                                  camera_make="Canon" if i % 2 else "Nikon", camera_model="X"))
    writer.upsert_many(batch)
    assert writer.count("m") == 300
    q = unit(rng.normal(size=16))
    mine = {k: float(v @ q) for k, (v, o) in vectors.items() if o == "u1"}
    expected = sorted(mine, key=lambda k: -mine[k])[:10]
    hits = reader.search(q, "m", VectorFilter(owner="u1"), limit=10)
    assert [h[0] for h in hits] == expected
    assert np.allclose([h[1] for h in hits], [mine[k] for k in expected], atol=1e-5)
    assert reader.search(q, "other-model", VectorFilter(owner="u1"), 10) == []
    assert reader.search(q, "m", VectorFilter(owner="nobody"), 10) == []
    canon = reader.search(q, "m", VectorFilter(owner="u1", camera_make="canon"), 500)
    assert canon and all(int(pid[1:]) % 2 for pid, _ in canon)
    window = reader.search(q, "m", VectorFilter(owner="u1", start=base + dt.timedelta(days=10),
                                                end=base + dt.timedelta(days=20)), 500)
    assert sorted(int(p[1:]) for p, _ in window) == [i for i in range(10, 20) if i % 3]
    high = reader.search(q, "m", VectorFilter(owner="u1"), 500, min_score=0.3)
    assert all(s >= 0.3 for _, s in high) and len(high) == sum(s >= 0.3 for s in mine.values())


def test_vector_upsert_is_idempotent_and_delete_propagates(tmp_path):
    writer = SqliteVectorStore(tmp_path / "v.db")
    reader = SqliteVectorStore(tmp_path / "v.db")
    writer.upsert(VectorObject("a", "u", "m", unit([1, 0, 0])))
    writer.upsert(VectorObject("b", "u", "m", unit([0, 1, 0])))
    assert [h[0] for h in reader.search(unit([1, 0.1, 0]), "m", VectorFilter("u"), 5)] == ["a", "b"]
    writer.upsert(VectorObject("a", "u", "m", unit([0, 0, 1])))  # redelivery / re-embed
    assert writer.count() == 2
    assert [h[0] for h in reader.search(unit([0, 0, 1]), "m", VectorFilter("u"), 1)] == ["a"]
    writer.delete("b")
    writer.delete("b")
    assert [h[0] for h in reader.search(unit([0, 1, 0]), "m", VectorFilter("u"), 5)] == ["a"]
    assert writer.get("b") is None and np.allclose(writer.get("a").vector, unit([0, 0, 1]))
    # A fresh process rebuilds the same index from disk.
    fresh = SqliteVectorStore(tmp_path / "v.db")
    assert [h[0] for h in fresh.search(unit([0, 1, 0]), "m", VectorFilter("u"), 5)] == ["a"]


def test_bulk_load_of_new_photos(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    base = dt.datetime(2024, 5, 1, tzinfo=UTC)
    store.insert_new_photos([record(f"b{i}", taken=base + dt.timedelta(hours=i)) for i in range(3)])
    page = store.list_photos("u1")
    assert [r.id for r in page.records] == ["b2", "b1", "b0"] and page.total == 3
    assert page.records[0].taken_at == base + dt.timedelta(hours=2)


def test_prune_drops_only_old_events_every_group_committed(tmp_path):
    log = SqliteEventLog(tmp_path / "e.db")
    producer = log.producer()
    for i in range(4):
        producer.send("t", str(i), {"i": i})
    producer.send("u", "x", {})  # no group has read topic u
    fast, slow = log.consumer("fast", ["t"]), log.consumer("slow", ["t"])
    fast.commit(fast.poll(timeout_s=0))
    slow.commit(slow.poll(max_records=2, timeout_s=0))
    assert log.prune(utcnow() - dt.timedelta(hours=1)) == 0  # nothing old enough
    assert log.prune(utcnow() + dt.timedelta(seconds=1)) == 2  # what both groups committed
    assert [e.value["i"] for e in log.consumer("slow", ["t"]).poll(timeout_s=0)] == [2, 3]
    assert len(log.consumer("new", ["u"]).poll(timeout_s=0)) == 1


def test_vectors_per_space_and_delete_removes_all(tmp_path):
    writer = SqliteVectorStore(tmp_path / "v.db")
    reader = SqliteVectorStore(tmp_path / "v.db")
    writer.upsert(VectorObject("a", "u", "clip-m", unit([1, 0, 0])))
    writer.upsert(VectorObject("a", "u", "text-m", unit([0, 1, 0, 0]), space=SPACE_TEXT))
    writer.upsert(VectorObject("b", "u", "text-m", unit([0, 0, 1, 0]), space=SPACE_TEXT))
    assert writer.count() == 3
    assert writer.get("a").model == "clip-m" and writer.get("a", SPACE_TEXT).model == "text-m"
    assert [h[0] for h in reader.search(unit([0, 1, 0, 0]), "text-m", VectorFilter("u"), 5)] == ["a", "b"]
    assert [h[0] for h in reader.search(unit([1, 0, 0]), "clip-m", VectorFilter("u"), 5)] == ["a"]
    writer.delete("a")
    assert writer.get("a") is None and writer.get("a", SPACE_TEXT) is None
    assert [h[0] for h in reader.search(unit([0, 1, 0, 0]), "text-m", VectorFilter("u"), 5)] == ["b"]
    assert reader.search(unit([1, 0, 0]), "clip-m", VectorFilter("u"), 5) == []


def test_labels_ocr_and_keyword_search(tmp_path):
    store = SqliteMetadataStore(tmp_path / "m.db")
    store.insert_photo(record("p1"), "")
    store.insert_photo(record("p2"), "")
    store.insert_photo(record("other", owner="u2"), "")
    updated = store.update_status("p1", STATUS_INDEXED, labels=[("tiger cat", 0.4), ("tabby", 0.2)],
                                  ocr_text="CAFE ROMA\nopen daily", embedding_models=["clip", "text"])
    assert updated.labels == [("tiger cat", 0.4), ("tabby", 0.2)]
    assert updated.ocr_text == "CAFE ROMA\nopen daily" and updated.embedding_models == ["clip", "text"]
    store.update_status("p2", STATUS_INDEXED, labels=[("catamaran", 0.9)], ocr_text="")
    store.update_status("other", STATUS_INDEXED, labels=[("tabby", 0.9)])
    assert store.update_status("p1", STATUS_INDEXED).labels == [("tiger cat", 0.4), ("tabby", 0.2)]
    assert store.keyword_search("u1", ["cat"]) == [("p1", ["cat"])]  # a word, not "catamaran"
    assert store.keyword_search("u1", ["roma", "cafe", "zebra"]) == [("p1", ["roma", "cafe"])]
    assert store.keyword_search("u1", ["p2"]) == [("p2", ["p2"])]  # filename p2.jpg
    assert store.keyword_search("u2", ["cat"]) == []
