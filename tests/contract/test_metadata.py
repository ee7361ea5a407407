"""The MetadataStore contract, on the embedded twin (SQLite) and on MongoDB (SecantusDB)."""
import dataclasses
import datetime as dt
import sqlite3
import threading
import time

import pytest

from tests.contract.mongodb import fresh_database
from photostore.backends.base import (STATUS_FAILED, STATUS_INDEXED, STATUS_UPLOADED, MetadataUnavailableError,
                                      PhotoRecord, utcnow)
from photostore.backends.sqlite_metadata import SqliteMetadataStore
from photostore.settings import MetadataSettings
from tests import engines
from tests.engines import free_port

UTC = dt.timezone.utc
MS = dt.timedelta(milliseconds=1)
BASE = dt.datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["embedded", "mongodb"])
def store(request, tmp_path):
    """A store on a fresh database (MongoDB: a new database name, dropped after the test)."""
    if request.param == "embedded":
        opened = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
        yield opened
        opened.close()
        return
    from photostore.backends.mongo_metadata import MongoMetadataStore
    with fresh_database(request, "test_metadata") as settings:
        opened = MongoMetadataStore(settings)
        try:
            yield opened
        finally:
            opened.close()


def record(photo_id, owner="u1", sha=None, taken=None, created=None):
    now = created or BASE
    return PhotoRecord(id=photo_id, owner=owner, filename=f"{photo_id}.jpg", sha256=sha or photo_id * 4,
                       content_type="image/jpeg", size_bytes=10, width=4, height=3,
                       blob_key=f"originals/{owner}/{photo_id}", thumbnail_key=f"t/{photo_id}",
                       created_at=now, updated_at=now, taken_at=taken)


def ids(records):
    return [r.id for r in records]


def all_pages(store, owner, page_size, **filters):
    """Follows next_after until None; returns the ids in order and each page's total."""
    seen, totals, after = [], [], None
    for _ in range(100):
        page = store.list_photos(owner, page_size=page_size, after=after, **filters)
        assert len(page.records) <= page_size
        seen += ids(page.records)
        totals.append(page.total)
        if page.next_after is None:
            return seen, totals
        assert page.next_after == (page.records[-1].sort_time, page.records[-1].id)
        after = page.next_after
    raise AssertionError("pagination did not end")


def test_insert_dedupes_by_sha_and_request_id(store):
    first, created = store.insert_photo(record("p1", sha="s1"), "req-1")
    assert created and first.id == "p1" and first.sha256 == "s1"
    again, created = store.insert_photo(record("p2", sha="s1"), "req-2")
    assert not created and again.id == "p1"
    retry, created = store.insert_photo(record("p3", sha="s3"), "req-1")  # AIP-155: the first result
    assert not created and retry.id == "p1"
    other_owner, created = store.insert_photo(record("p4", owner="u2", sha="s1"), "req-1")
    assert created and other_owner.id == "p4"
    assert store.photo_by_request("u1", "req-1").id == "p1"
    assert store.photo_by_request("u1", "req-2").id == "p1"
    assert store.photo_by_request("u2", "req-1").id == "p4"
    assert store.photo_by_request("u2", "req-2") is None
    assert store.photo_by_sha256("u1", "s1").id == "p1" and store.photo_by_sha256("u1", "s3") is None
    assert store.get_photo("p3") is None and store.get_photo("p2") is None


def test_photos_without_request_ids_and_owner_scoping(store):
    for photo_id in ("a", "b", "c"):
        assert store.insert_photo(record(photo_id), "")[1]
    store.insert_photo(record("x", owner="u2"), "")
    assert store.get_photo("a").owner == "u1"
    assert store.get_photo("a", owner="u1").id == "a"
    assert store.get_photo("a", owner="u2") is None
    assert store.get_photo("nope") is None
    assert ids(store.get_photos("u1", ["c", "x", "nope", "a"])) == ["c", "a"]
    assert store.get_photos("u1", []) == []
    assert store.photo_by_request("u1", "") is None


def test_list_pages_newest_first_with_filters(store):
    for i in range(7):
        store.insert_photo(record(f"p{i}", taken=BASE + dt.timedelta(days=i)), "")
    store.insert_photo(record("other", owner="u2", taken=BASE + dt.timedelta(days=3)), "")
    seen, totals = all_pages(store, "u1", 3)
    assert seen == [f"p{i}" for i in reversed(range(7))]
    assert totals == [None, None, None]  # counted only when asked
    seen, totals = all_pages(store, "u1", 3, count_total=True)
    assert len(seen) == 7 and totals == [7, 7, 7]
    exact = store.list_photos("u1", page_size=7)
    assert len(exact.records) == 7 and exact.next_after is None

    window = store.list_photos("u1", start=BASE + dt.timedelta(days=2), end=BASE + dt.timedelta(days=4),
                               count_total=True)
    assert ids(window.records) == ["p3", "p2"] and window.total == 2 and window.next_after is None
    seen, totals = all_pages(store, "u1", 2, start=BASE + dt.timedelta(days=1), count_total=True)
    assert seen == ["p6", "p5", "p4", "p3", "p2", "p1"] and set(totals) == {6}

    store.update_status("p3", STATUS_INDEXED, embedding_model="m1", attempts=1)
    store.update_status("p5", STATUS_INDEXED, embedding_model="m1", attempts=1)
    indexed = store.list_photos("u1", status=STATUS_INDEXED, count_total=True)
    assert ids(indexed.records) == ["p5", "p3"] and indexed.total == 2
    assert indexed.records[0].embedding_model == "m1"
    seen, _ = all_pages(store, "u1", 1, status=STATUS_UPLOADED)
    assert seen == ["p6", "p4", "p2", "p1", "p0"]
    assert store.list_photos("nobody", count_total=True).total == 0


def test_pages_break_ties_on_sort_time_by_id(store):
    """Same sort_time (taken in a burst, or never taken and uploaded together): ordered by id."""
    for photo_id in ("e", "a", "d", "b", "c"):
        store.insert_photo(record(photo_id, taken=BASE), "")
    store.insert_photo(record("untaken", created=BASE + dt.timedelta(hours=1)), "")  # sort_time: created_at
    seen, _ = all_pages(store, "u1", 2)
    assert seen == ["untaken", "e", "d", "c", "b", "a"]


def test_update_status_sets_fields_and_leaves_the_rest(store):
    store.insert_photo(record("p1"), "")
    before = store.get_photo("p1")
    updated = store.update_status("p1", STATUS_FAILED, reason="bad bytes", attempts=3)
    assert updated.status == STATUS_FAILED and updated.status_reason == "bad bytes"
    assert updated.index_attempts == 3 and updated.embedding_model == ""
    assert updated.updated_at > before.updated_at and updated.created_at == before.created_at
    assert store.get_photo("p1") == updated
    again = store.update_status("p1", STATUS_INDEXED, embedding_model="m2")
    assert again.status == STATUS_INDEXED and again.status_reason == "" and again.index_attempts == 3
    assert again.embedding_model == "m2"
    assert store.update_status("gone", STATUS_INDEXED) is None


def test_outbox_unpublished_oldest_first_and_mark_published_many(store):
    for i in (3, 0, 4, 1, 2):
        store.insert_photo(record(f"p{i}", created=BASE + dt.timedelta(minutes=i)), f"r{i}")
    assert ids(store.unpublished_photos()) == ["p0", "p1", "p2", "p3", "p4"]
    assert ids(store.unpublished_photos(limit=2)) == ["p0", "p1"]
    assert all(not r.published for r in store.unpublished_photos())
    store.mark_published(["p0", "p1", "p3"])
    store.mark_published([])
    store.mark_published(["p1", "gone"])
    assert ids(store.unpublished_photos()) == ["p2", "p4"]
    assert store.get_photo("p0").published and not store.get_photo("p2").published


def test_mark_reindex_queued_many(store):
    for i in range(3):
        store.insert_photo(record(f"p{i}"), f"r{i}")
    at = BASE + dt.timedelta(minutes=5)
    store.mark_reindex_queued(["p0", "p2", "gone"], at, ["clip-1"])
    store.mark_reindex_queued([], at, ["clip-1"])
    assert [(p.reindex_queued_at, p.reindex_queued_for) for p in map(store.get_photo, ("p0", "p1", "p2"))] == [
        (at, ["clip-1"]), (None, []), (at, ["clip-1"])]
    later = at + dt.timedelta(minutes=1)
    store.mark_reindex_queued(["p0"], later, ["clip-2", "text-1"])
    assert (store.get_photo("p0").reindex_queued_at, store.get_photo("p0").reindex_queued_for) == (
        later, ["clip-2", "text-1"])


def test_delete_removes_the_document_and_its_request_ids(store):
    store.insert_photo(record("p1", sha="s1"), "r1")
    store.insert_photo(record("p2", sha="s1"), "r2")  # same bytes: r2 also points at p1
    removed = store.delete_photo("p1")
    assert removed.id == "p1" and removed.sha256 == "s1"
    assert store.get_photo("p1") is None
    assert store.photo_by_request("u1", "r1") is None and store.photo_by_request("u1", "r2") is None
    assert store.photo_by_sha256("u1", "s1") is None
    assert store.delete_photo("p1") is None
    # The bytes and the request id are free again.
    fresh, created = store.insert_photo(record("p3", sha="s1"), "r1")
    assert created and fresh.id == "p3" and store.photo_by_request("u1", "r1").id == "p3"


def test_labels_ocr_and_embedding_models_round_trip(store):
    store.insert_photo(record("p1"), "")
    store.insert_photo(record("p2"), "")
    updated = store.update_status("p1", STATUS_INDEXED, labels=[("tiger cat", 0.4), ("tabby", 0.2)],
                                  ocr_text="CAFE ROMA\nopen daily", embedding_models=["clip", "text"])
    assert updated.labels == [("tiger cat", 0.4), ("tabby", 0.2)]
    assert updated.ocr_text == "CAFE ROMA\nopen daily" and updated.embedding_models == ["clip", "text"]
    assert store.get_photo("p1") == updated
    # None leaves them as they are; empty values clear them.
    kept = store.update_status("p1", STATUS_INDEXED)
    assert kept.labels == [("tiger cat", 0.4), ("tabby", 0.2)] and kept.embedding_models == ["clip", "text"]
    cleared = store.update_status("p1", STATUS_INDEXED, labels=[], ocr_text="", embedding_models=[])
    assert cleared.labels == [] and cleared.ocr_text == "" and cleared.embedding_models == []
    assert store.get_photo("p2").labels == [] and store.get_photo("p2").embedding_models == []


def test_all_fields_round_trip(store):
    full = dataclasses.replace(record("p1", taken=BASE - dt.timedelta(days=400)), camera_make="Canon",
                               camera_model="EOS R5", latitude=48.8584, longitude=2.2945, altitude=35.5,
                               status=STATUS_FAILED, status_reason="r", embedding_model="m", index_attempts=2,
                               labels=[("dog", 0.9)], ocr_text="hi", embedding_models=["clip"], published=True,
                               reindex_queued_at=BASE + dt.timedelta(hours=1), reindex_queued_for=["m", "t"])
    stored, created = store.insert_photo(full, "req")
    assert created and stored == full
    assert store.get_photo("p1") == full
    assert store.photo_by_request("u1", "req") == full
    assert store.list_photos("u1").records == [full]


def test_timestamps_round_trip_aware_in_utc(store):
    paris = dt.timezone(dt.timedelta(hours=2))
    taken = dt.datetime(2023, 7, 14, 22, 30, 15, 250_000, tzinfo=paris)  # whole milliseconds
    created = dt.datetime(2024, 2, 29, 23, 59, 59, 123_456, tzinfo=UTC)  # microseconds
    stored, _ = store.insert_photo(dataclasses.replace(record("p1", taken=taken), created_at=created), "")
    for got in (stored, store.get_photo("p1"), store.list_photos("u1").records[0]):
        assert got.taken_at == taken and got.taken_at.utcoffset() == dt.timedelta(0)
        # Engines keep milliseconds (BSON dates); the embedded twin keeps more.
        assert abs(got.created_at - created) < MS and got.created_at.utcoffset() == dt.timedelta(0)
        assert got.sort_time == taken
    # Filters compare instants, whatever the zone they are given in.
    assert ids(store.list_photos("u1", start=taken.astimezone(UTC), end=taken + MS).records) == ["p1"]
    assert store.list_photos("u1", start=taken + MS).records == []
    assert utcnow() - store.update_status("p1", STATUS_INDEXED).updated_at < dt.timedelta(minutes=5)


def test_bulk_insert_of_new_photos(store):
    store.insert_new_photos([record(f"b{i}", taken=BASE + dt.timedelta(hours=i)) for i in range(250)])
    store.insert_new_photos([])
    page = store.list_photos("u1", page_size=3, count_total=True)
    assert ids(page.records) == ["b249", "b248", "b247"] and page.total == 250
    assert page.records[0].taken_at == BASE + dt.timedelta(hours=249)
    assert store.photo_by_sha256("u1", "b0" * 4).id == "b0"
    assert len(store.unpublished_photos(limit=1000)) == 250


def _race(n, work):
    """Runs work(i) on n threads released together; returns results and errors by i."""
    barrier = threading.Barrier(n)
    results, errors = {}, {}

    def run(i):
        barrier.wait(timeout=60)
        try:
            results[i] = work(i)
        except Exception as e:  # noqa: BLE001 - collected for the assertions
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return results, errors


def test_concurrent_inserts_of_the_same_bytes_make_one_photo(store):
    results, errors = _race(8, lambda i: store.insert_photo(record(f"p{i}", sha="same"), f"req-{i}"))
    assert errors == {}
    winners = [stored.id for stored, created in results.values() if created]
    assert len(winners) == 1
    assert {stored.id for stored, _ in results.values()} == set(winners)
    for i in range(8):
        assert store.photo_by_request("u1", f"req-{i}").id == winners[0]
    assert store.list_photos("u1", count_total=True).total == 1


def test_concurrent_retries_of_one_request_make_one_photo(store):
    results, errors = _race(8, lambda i: store.insert_photo(record(f"p{i}", sha=f"s{i}"), "req"))
    assert errors == {}
    winners = [stored.id for stored, created in results.values() if created]
    assert len(winners) == 1 and {stored.id for stored, _ in results.values()} == set(winners)
    assert store.photo_by_request("u1", "req").id == winners[0]
    assert store.list_photos("u1", count_total=True).total == 1


def test_unreachable_mongodb_raises_metadata_unavailable():
    from photostore.backends.mongo_metadata import MongoMetadataStore, MongoUserStore
    settings = MetadataSettings(backend="mongodb",
                                mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300")
    for open_store in (MongoMetadataStore, MongoUserStore):
        with pytest.raises(MetadataUnavailableError):
            open_store(settings)


def test_mongodb_describe_hides_credentials():
    from photostore.backends.mongo_metadata import _address
    settings = MetadataSettings(mongodb_uri="mongodb://app:s3cret@db1:27017,db2:27017/admin?replicaSet=rs0",
                                mongodb_database="photos")
    assert _address(settings) == "mongodb at db1:27017,db2:27017/photos"


def test_mongodb_outage_raises_metadata_unavailable_and_recovers(tmp_path):
    """A store opened on a running server that then stops: calls raise MetadataUnavailableError,
    and work again once the server is back (same port, same data)."""
    from photostore.backends.mongo_metadata import MongoMetadataStore
    engine = engines.mongodb(tmp_path / "engine").start()
    try:
        settings = MetadataSettings(backend="mongodb", mongodb_uri=(
            f"mongodb://127.0.0.1:{engine.env['MONGODB_PORT']}/?serverSelectionTimeoutMS=1000"))
        store = MongoMetadataStore(settings)
        store.insert_photo(record("p1"), "r1")
        engine.stop()
        with pytest.raises(MetadataUnavailableError):
            store.get_photo("p1")
        with pytest.raises(MetadataUnavailableError):
            store.insert_photo(record("p2"), "r2")
        engine.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                assert store.photo_by_request("u1", "r1").id == "p1"
                break
            except MetadataUnavailableError:
                assert time.monotonic() < deadline
        store.close()
    finally:
        engine.stop()


def test_sqlite_store_upgrades_a_database_from_before_reindex_queued_at(tmp_path):
    path = tmp_path / "metadata.sqlite3"
    SqliteMetadataStore(path).insert_photo(record("p1"), "r1")
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE photos DROP COLUMN reindex_queued_at")
        conn.execute("ALTER TABLE photos DROP COLUMN reindex_queued_for")
    upgraded = SqliteMetadataStore(path)
    assert (upgraded.get_photo("p1").reindex_queued_at, upgraded.get_photo("p1").reindex_queued_for) == (None, [])
    upgraded.mark_reindex_queued(["p1"], BASE, ["m"])
    assert upgraded.get_photo("p1").reindex_queued_for == ["m"]
