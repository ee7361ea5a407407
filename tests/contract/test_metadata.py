"""The MetadataStore contract, on the embedded twin (SQLite) and on MongoDB (SecantusDB)."""
import dataclasses
import datetime as dt
import sqlite3
import threading
import time

import pymongo
import pytest

from tests.contract.mongodb import fresh_database
from photostore.backends.base import (STATUS_FAILED, STATUS_INDEXED, STATUS_UPLOADED, AlbumRecord,
                                      MetadataUnavailableError, PhotoFacts, PhotoSummary, PhotoFilter, PhotoRecord, utcnow)
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
        last = page.records[-1]
        trash = filters.get("filter") is not None and filters["filter"].deleted
        assert page.next_after == (last.deleted_at if trash else last.sort_time, last.id)
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


# Albums, trash, favourites, places, previews, perceptual hashes (issue 12).

def placed(photo_id, city="", region="", country="", code="", **fields):
    return dataclasses.replace(record(photo_id, **fields), place_city=city, place_region=region,
                               place_country=country, place_country_code=code)


def album(album_id, owner="u1", title=None, updated=None):
    return AlbumRecord(id=album_id, owner=owner, title=title or f"Album {album_id}", created_at=BASE,
                       updated_at=updated or BASE)


def test_new_fields_round_trip(store):
    full = dataclasses.replace(
        placed("p1", "Zürich", "Zürich", "Switzerland", "CH", taken=BASE), preview_key="renditions/u1/p1.webp",
        favorite=True, deleted_at=BASE + dt.timedelta(days=3), album_ids=["a2", "a1"], phash="c3d2a1b0f0e1d2c3")
    stored, created = store.insert_photo(full, "req")
    assert created and stored == full
    assert store.get_photo("p1") == full and store.photo_by_request("u1", "req") == full
    assert store.list_photos("u1", filter=PhotoFilter(deleted=True)).records == [full]
    # Defaults of a record that sets none of them.
    store.insert_photo(record("p2"), "")
    plain = store.get_photo("p2")
    assert (plain.preview_key, plain.place_city, plain.place_region, plain.place_country, plain.place_country_code,
            plain.favorite, plain.deleted_at, plain.album_ids, plain.phash) == ("", "", "", "", "", False, None, [], "")


def _browsable(store):
    """u1: p0..p5 taken a day apart (p5 in the trash); u2: one photo that matches every filter."""
    day = dt.timedelta(days=1)
    photos = [
        dataclasses.replace(placed("p0", "Paris", "Île-de-France", "France", "FR", taken=BASE),
                            camera_make="Canon", camera_model="EOS R5", favorite=True),
        dataclasses.replace(placed("p1", "Lyon", "Auvergne-Rhône-Alpes", "France", "FR", taken=BASE + day),
                            camera_make="canon", camera_model="eos r5"),
        dataclasses.replace(placed("p2", "Zürich", "Zürich", "Switzerland", "CH", taken=BASE + 2 * day),
                            camera_make="Nikon", camera_model="Z6", favorite=True),
        dataclasses.replace(record("p3", taken=BASE + 3 * day), camera_make="Nikon", camera_model="Z6"),
        dataclasses.replace(placed("p4", "Paris", "Île-de-France", "France", "FR", taken=BASE + 4 * day),
                            camera_make="Canon", camera_model="EOS R6", favorite=True),
        dataclasses.replace(placed("p5", "Paris", "Île-de-France", "France", "FR", taken=BASE + 5 * day),
                            camera_make="Canon", camera_model="EOS R5", favorite=True, deleted_at=BASE),
        dataclasses.replace(placed("x", "Paris", "Île-de-France", "France", "FR", owner="u2", taken=BASE),
                            camera_make="Canon", camera_model="EOS R5", favorite=True),
    ]
    for photo in photos:
        store.insert_photo(photo, "")
    store.create_album(album("a1"), ["p1", "p3", "p5"])
    store.create_album(album("ax", owner="u2"), ["x"])


def test_filters_each_field_and_combined(store):
    _browsable(store)

    def listed(**fields):
        page = store.list_photos("u1", filter=PhotoFilter(**fields), count_total=True)
        assert page.total == len(page.records)
        return ids(page.records)

    assert listed() == ["p4", "p3", "p2", "p1", "p0"]  # p5 is in the trash
    assert listed(camera_make="CANON") == ["p4", "p1", "p0"]
    assert listed(camera_model="EOS r5") == ["p1", "p0"]
    assert listed(camera_make="canon", camera_model="z6") == []
    assert listed(place="paris") == ["p4", "p0"]
    assert listed(place="ÎLE-DE-FRANCE") == ["p4", "p0"]
    assert listed(place="france") == ["p4", "p1", "p0"]
    assert listed(place="fr") == ["p4", "p1", "p0"]
    assert listed(place="ZÜRICH") == ["p2"]
    assert listed(place="ch") == ["p2"]
    assert listed(place="Par") == []  # exact, not a prefix
    assert listed(album_id="a1") == ["p3", "p1"]
    assert listed(album_id="ax") == []  # another owner's album
    assert listed(album_id="nope") == []
    assert listed(favorite=True) == ["p4", "p2", "p0"]
    assert listed(status=STATUS_UPLOADED, camera_make="canon", place="FR", favorite=True) == ["p4", "p0"]
    assert listed(camera_make="Canon", start=BASE + dt.timedelta(hours=1), end=BASE + dt.timedelta(days=4)) == ["p1"]
    assert listed(album_id="a1", camera_make="nikon") == ["p3"]
    # Shorthands and the filter together; the shorthand wins for its field.
    assert ids(store.list_photos("u1", filter=PhotoFilter(camera_make="canon"), start=BASE + dt.timedelta(hours=1)
                                 ).records) == ["p4", "p1"]
    seen, totals = all_pages(store, "u1", 1, filter=PhotoFilter(place="FR"), count_total=True)
    assert seen == ["p4", "p1", "p0"] and totals == [3, 3, 3]
    seen, totals = all_pages(store, "u1", 2, filter=PhotoFilter(album_id="a1", deleted=True), count_total=True)
    assert seen == ["p5"] and totals == [1]


def test_trash_is_left_out_unless_asked_and_listed_newest_deleted_first(store):
    for i in range(6):
        store.insert_photo(record(f"p{i}", taken=BASE + dt.timedelta(days=i)), "")
    trashed_at = {"p1": BASE + dt.timedelta(hours=1), "p3": BASE + dt.timedelta(hours=3),
                  "p4": BASE + dt.timedelta(hours=3), "p2": BASE + dt.timedelta(hours=2)}
    for photo_id, when in trashed_at.items():
        assert store.update_photo(photo_id, deleted_at=when).deleted_at == when
    page = store.list_photos("u1", count_total=True)
    assert ids(page.records) == ["p5", "p0"] and page.total == 2
    assert ids(store.list_photos("u1", status=STATUS_UPLOADED).records) == ["p5", "p0"]
    trash = PhotoFilter(deleted=True)
    seen, totals = all_pages(store, "u1", 1, filter=trash, count_total=True)
    assert seen == ["p4", "p3", "p2", "p1"] and totals == [4] * 4  # ties on deleted_at: by id
    first = store.list_photos("u1", filter=trash, page_size=2)
    assert first.next_after == (trashed_at["p3"], "p3")
    assert ids(store.list_photos("u1", filter=trash, start=BASE + dt.timedelta(days=2)).records) == ["p4", "p3", "p2"]
    assert store.list_photos("u2", filter=trash).records == []
    # Restored: back in the library, out of the trash.
    store.update_photo("p3", deleted_at=None)
    assert ids(store.list_photos("u1").records) == ["p5", "p3", "p0"]
    assert ids(store.list_photos("u1", filter=trash).records) == ["p4", "p2", "p1"]


def test_photo_facts(store):
    _browsable(store)
    store.update_photo("p2", phash="00ff00ff00ff00ff")
    facts = {f.id: f for f in store.photo_facts("u1")}
    assert set(facts) == {"p0", "p1", "p2", "p3", "p4"}
    p2 = store.get_photo("p2")
    assert facts["p2"] == PhotoFacts(id="p2", sort_time=p2.sort_time, created_at=p2.created_at, size_bytes=10,
                                     width=4, height=3, camera_make="Nikon", camera_model="Z6",
                                     place_city="Zürich", place_region="Zürich", place_country="Switzerland",
                                     place_country_code="CH", phash="00ff00ff00ff00ff")
    assert facts["p2"].sort_time == BASE + dt.timedelta(days=2)
    assert {f.id for f in store.photo_facts("u1", PhotoFilter(camera_make="canon"))} == {"p0", "p1", "p4"}
    assert {f.id for f in store.photo_facts("u1", PhotoFilter(album_id="a1", deleted=True))} == {"p5"}
    assert {f.id for f in store.photo_facts("u2", PhotoFilter(favorite=True))} == {"x"}
    assert store.photo_facts("nobody") == []


def test_summarize_photos_counts_what_photo_facts_hold(store):
    _browsable(store)
    store.insert_photo(dataclasses.replace(record("p9", taken=BASE + dt.timedelta(days=40)), camera_make="Canon",
                                           camera_model="R5", place_city="Zürich", place_region="Zürich",
                                           place_country="Switzerland", place_country_code="CH"), "")
    for flt in (PhotoFilter(), PhotoFilter(camera_make="canon"), PhotoFilter(deleted=True),
                PhotoFilter(place="switzerland"), PhotoFilter(album_id="a1")):
        summary = store.summarize_photos("u1", flt)
        assert summary == PhotoSummary.of(store.photo_facts("u1", flt)), flt
    full = store.summarize_photos("u1")
    assert full.months[0] == (2024, 2, 1) and full.total == 6
    assert full.cameras[0] == ("Nikon", "Z6", 2) and full.months[1] == (2024, 1, 5)
    assert store.summarize_photos("nobody") == PhotoSummary(months=[], cameras=[], places=[], total=0)


def test_update_photo_sets_fields(store):
    store.insert_photo(record("p1", taken=BASE), "")
    store.insert_photo(record("p2", taken=BASE + dt.timedelta(days=1)), "")
    before = store.get_photo("p1")
    updated = store.update_photo("p1", favorite=True, preview_key="renditions/p1", place_city="Oslo",
                                 place_country_code="NO", phash="0123456789abcdef", labels=[("dog", 0.5)])
    assert (updated.favorite, updated.preview_key, updated.place_city, updated.place_country_code, updated.phash,
            updated.labels) == (True, "renditions/p1", "Oslo", "NO", "0123456789abcdef", [("dog", 0.5)])
    assert updated.updated_at > before.updated_at and updated.filename == before.filename
    assert store.get_photo("p1") == updated
    assert store.update_photo("p1", favorite=False).favorite is False
    # The order and the time filter follow taken_at, else created_at.
    store.update_photo("p1", taken_at=BASE + dt.timedelta(days=2))
    assert ids(store.list_photos("u1").records) == ["p1", "p2"]
    assert ids(store.list_photos("u1", start=BASE + dt.timedelta(days=2)).records) == ["p1"]
    store.update_photo("p1", taken_at=None, created_at=BASE - dt.timedelta(days=1))
    assert store.get_photo("p1").sort_time == BASE - dt.timedelta(days=1)
    assert ids(store.list_photos("u1").records) == ["p2", "p1"]
    for bad in ({"id": "p9"}, {"owner": "u2"}, {"no_such_field": 1}):
        with pytest.raises(ValueError):
            store.update_photo("p1", **bad)
    assert store.get_photo("p1").owner == "u1"
    assert store.update_photo("gone", favorite=True) is None


def test_expired_trash_of_every_owner_oldest_first(store):
    for photo_id, owner, hours in (("a", "u1", 3), ("b", "u2", 1), ("c", "u1", 2), ("d", "u1", None),
                                   ("e", "u2", 5)):
        deleted = None if hours is None else BASE + dt.timedelta(hours=hours)
        store.insert_photo(dataclasses.replace(record(photo_id, owner=owner), deleted_at=deleted), "")
    assert ids(store.expired_trash(BASE + dt.timedelta(hours=4))) == ["b", "c", "a"]
    assert ids(store.expired_trash(BASE + dt.timedelta(hours=4), limit=2)) == ["b", "c"]
    assert ids(store.expired_trash(BASE + dt.timedelta(hours=3))) == ["b", "c"]  # strictly before
    assert store.expired_trash(BASE) == []
    store.delete_photo("b")
    assert ids(store.expired_trash(BASE + dt.timedelta(days=1))) == ["c", "a", "e"]


def test_album_create_is_idempotent_per_request_id_and_counts_photos_not_in_the_trash(store):
    for photo_id in ("p1", "p2", "p3"):
        store.insert_photo(record(photo_id), "")
    store.insert_photo(record("x", owner="u2"), "")
    made, created = store.create_album(album("a1", title="Trip"), ["p1", "p2", "x", "gone", "p1"], "req-1")
    assert created and (made.id, made.owner, made.title, made.photo_count) == ("a1", "u1", "Trip", 2)
    assert made.created_at == BASE and made.cover_photo_id == ""
    assert store.get_photo("p1").album_ids == ["a1"] and store.get_photo("x").album_ids == []  # not u1's
    again, created = store.create_album(album("a2", title="Other"), ["p3"], "req-1")
    assert not created and again == made
    assert store.get_album("a2") is None and store.get_photo("p3").album_ids == []
    other, created = store.create_album(album("a3", owner="u2"), ["x"], "req-1")  # request ids are per owner
    assert created and other.photo_count == 1
    plain, created = store.create_album(album("a4"))
    assert created and plain.photo_count == 0
    store.update_photo("p2", deleted_at=BASE)
    assert store.get_album("a1").photo_count == 1
    store.update_photo("p2", deleted_at=None)
    assert store.get_album("a1").photo_count == 2
    store.delete_photo("p1")
    assert store.get_album("a1").photo_count == 1


def test_albums_listed_most_recently_updated_first_in_pages(store):
    for i in range(5):
        store.create_album(album(f"a{i}", updated=BASE + dt.timedelta(hours=i)))
    store.create_album(album("b3", updated=BASE + dt.timedelta(hours=3)))  # a tie with a3: by id
    store.create_album(album("x", owner="u2"))
    seen, after = [], None
    for _ in range(10):
        page, after = store.list_albums("u1", page_size=2, after=after)
        seen += ids(page)
        if after is None:
            break
        assert after == (page[-1].updated_at, page[-1].id)
    assert seen == ["a4", "b3", "a3", "a2", "a1", "a0"]
    albums, after = store.list_albums("u1", page_size=6)
    assert len(albums) == 6 and after is None
    store.insert_photo(record("p1"), "")
    store.add_album_photos("a1", ["p1"])  # now the most recently updated
    assert ids(store.list_albums("u1")[0]) == ["a1", "a4", "b3", "a3", "a2", "a0"]
    assert ids(store.list_albums("u2")[0]) == ["x"] and store.list_albums("nobody") == ([], None)


def test_album_rename_cover_add_remove(store):
    for photo_id in ("p1", "p2", "p3"):
        store.insert_photo(record(photo_id), "")
    store.insert_photo(record("x", owner="u2"), "")
    store.create_album(album("a1"), ["p1"])
    store.create_album(album("a2"), ["p1"])
    renamed = store.update_album("a1", title="Summer")
    assert renamed.title == "Summer" and renamed.updated_at > BASE and renamed.photo_count == 1
    covered = store.update_album("a1", cover_photo_id="p1")
    assert (covered.title, covered.cover_photo_id) == ("Summer", "p1") and store.get_album("a1") == covered
    assert store.update_album("gone", title="t") is None

    added = store.add_album_photos("a1", ["p2", "p3", "p2", "x"])
    assert added.photo_count == 3 and added.updated_at >= covered.updated_at
    assert store.add_album_photos("a1", ["p2", "p3"]).photo_count == 3  # idempotent
    assert store.get_photo("p1").album_ids == ["a1", "a2"] and store.get_photo("x").album_ids == []
    assert ids(store.list_photos("u1", filter=PhotoFilter(album_id="a1")).records) == ["p3", "p2", "p1"]

    removed = store.remove_album_photos("a1", ["p1", "p3", "p3"])
    assert removed.photo_count == 1 and removed.cover_photo_id == ""  # the cover went with p1
    assert store.remove_album_photos("a1", ["p1", "gone"]).photo_count == 1  # idempotent
    assert store.get_photo("p1").album_ids == ["a2"]
    store.update_album("a1", cover_photo_id="p2")
    assert store.remove_album_photos("a1", ["p3"]).cover_photo_id == "p2"  # other cover kept
    assert ids(store.list_photos("u1", filter=PhotoFilter(album_id="a1")).records) == ["p2"]
    assert store.add_album_photos("gone", ["p1"]) is None and store.remove_album_photos("gone", ["p1"]) is None


def test_delete_album_keeps_its_photos_and_their_other_albums(store):
    for photo_id in ("p1", "p2"):
        store.insert_photo(record(photo_id), "")
    store.create_album(album("a1"), ["p1", "p2"])
    store.create_album(album("a2"), ["p1"])
    store.update_photo("p2", deleted_at=BASE)
    removed = store.delete_album("a1")
    assert removed.id == "a1" and removed.photo_count == 1
    assert store.get_album("a1") is None and store.delete_album("a1") is None
    assert store.get_photo("p1").album_ids == ["a2"] and store.get_photo("p2").album_ids == []
    assert store.list_photos("u1", filter=PhotoFilter(album_id="a1"), count_total=True).total == 0
    assert ids(store.list_photos("u1").records) == ["p1"] and store.get_album("a2").photo_count == 1
    assert ids(store.list_albums("u1")[0]) == ["a2"]


def test_albums_are_their_owners(store):
    store.insert_photo(record("p1"), "")
    store.insert_photo(record("x", owner="u2"), "")
    store.create_album(album("a1"), ["p1"])
    assert store.get_album("a1", owner="u1").id == "a1"
    assert store.get_album("a1", owner="u2") is None and store.get_album("gone") is None
    assert store.add_album_photos("a1", ["x"]).photo_count == 1  # another owner's photo is not added
    assert store.get_photo("x").album_ids == [] and store.list_albums("u2") == ([], None)


def test_album_membership_survives_photo_writes(store):
    """update_status and the other setters leave album_ids alone; update_photo(album_ids=) sets it."""
    store.insert_photo(record("p1"), "")
    store.create_album(album("a1"), ["p1"])
    store.create_album(album("a2"))
    store.update_status("p1", STATUS_INDEXED, labels=[("cat", 0.5)])
    store.update_photo("p1", favorite=True)
    assert store.get_photo("p1").album_ids == ["a1"]
    store.update_photo("p1", album_ids=["a2"])
    assert store.get_album("a1").photo_count == 0 and store.get_album("a2").photo_count == 1
    assert ids(store.list_photos("u1", filter=PhotoFilter(album_id="a2")).records) == ["p1"]


def test_mongodb_reads_documents_from_before_albums(request):
    """Documents written by the version before issue 12 lack the new fields: reads default them,
    and the library, the trash and albums treat them as photos never trashed."""
    from photostore.backends.mongo_metadata import PHOTOS, MongoMetadataStore, _document
    new_fields = ("preview_key", "place_city", "place_region", "place_country", "place_country_code", "favorite",
                  "deleted_at", "album_ids", "phash")
    with fresh_database(request, "test_metadata") as settings:
        store = MongoMetadataStore(settings)
        try:
            with pymongo.MongoClient(settings.mongodb_uri.get_secret_value()) as client:
                for photo_id in ("p1", "p2"):
                    doc = _document(record(photo_id, taken=BASE), f"r-{photo_id}")
                    for name in new_fields:
                        del doc[name]
                    client[settings.mongodb_database][PHOTOS].insert_one(doc)
            old = store.get_photo("p1")
            assert (old.preview_key, old.place_city, old.favorite, old.deleted_at, old.album_ids, old.phash) == (
                "", "", False, None, [], "")
            assert store.photo_by_request("u1", "r-p1") == old
            assert ids(store.list_photos("u1", count_total=True).records) == ["p2", "p1"]
            assert store.list_photos("u1", filter=PhotoFilter(deleted=True), count_total=True).total == 0
            assert {f.id for f in store.photo_facts("u1")} == {"p1", "p2"}
            assert store.create_album(album("a1"), ["p1", "p2"])[0].photo_count == 2
            store.update_photo("p2", deleted_at=BASE)
            assert store.get_album("a1").photo_count == 1 and ids(store.expired_trash(BASE + MS)) == ["p2"]
        finally:
            store.close()


# The photos table of the version before issue 12 (git show HEAD~:photostore/backends/sqlite_metadata.py).
SCHEMA_BEFORE_ALBUMS = """
CREATE TABLE IF NOT EXISTS photos (
  id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL, size_bytes INTEGER NOT NULL, width INTEGER NOT NULL,
  height INTEGER NOT NULL, blob_key TEXT NOT NULL, thumbnail_key TEXT NOT NULL,
  created_at REAL NOT NULL, updated_at REAL NOT NULL, taken_at REAL, sort_time REAL NOT NULL,
  camera_make TEXT NOT NULL, camera_model TEXT NOT NULL,
  latitude REAL, longitude REAL, altitude REAL,
  status TEXT NOT NULL, status_reason TEXT NOT NULL, embedding_model TEXT NOT NULL,
  index_attempts INTEGER NOT NULL,
  labels TEXT NOT NULL, ocr_text TEXT NOT NULL, embedding_models TEXT NOT NULL,
  text_state TEXT NOT NULL DEFAULT '', text_state_reason TEXT NOT NULL DEFAULT '',
  published INTEGER NOT NULL, reindex_queued_at REAL, reindex_queued_for TEXT NOT NULL DEFAULT '[]',
  UNIQUE (owner, sha256));
CREATE INDEX IF NOT EXISTS photos_by_time ON photos (owner, sort_time DESC, id DESC);
DROP INDEX IF EXISTS photos_unpublished;
CREATE INDEX IF NOT EXISTS photos_outbox ON photos (created_at, id) WHERE published = 0;
CREATE TABLE IF NOT EXISTS upload_requests (
  owner TEXT NOT NULL, request_id TEXT NOT NULL, photo_id TEXT NOT NULL,
  PRIMARY KEY (owner, request_id));
CREATE INDEX IF NOT EXISTS upload_requests_by_photo ON upload_requests (photo_id);
"""


def test_sqlite_store_upgrades_a_database_from_before_albums(tmp_path):
    path = tmp_path / "metadata.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_BEFORE_ALBUMS)
        conn.execute(
            "INSERT INTO photos (id, owner, filename, sha256, content_type, size_bytes, width, height, blob_key,"
            " thumbnail_key, created_at, updated_at, taken_at, sort_time, camera_make, camera_model, status,"
            " status_reason, embedding_model, index_attempts, labels, ocr_text, embedding_models, published)"
            " VALUES ('p1', 'u1', 'p1.jpg', 's1', 'image/jpeg', 10, 4, 3, 'b', 't', ?, ?, NULL, ?, 'Canon', 'R5',"
            " 'indexed', '', 'm', 1, '[]', '', '[\"clip\"]', 1)", (BASE.timestamp(),) * 3)
        conn.execute("INSERT INTO upload_requests VALUES ('u1', 'r1', 'p1')")
    conn.close()
    upgraded = SqliteMetadataStore(path)
    old = upgraded.photo_by_request("u1", "r1")
    assert (old.id, old.camera_make, old.embedding_models, old.published, old.sort_time) == (
        "p1", "Canon", ["clip"], True, BASE)
    assert (old.preview_key, old.place_city, old.favorite, old.deleted_at, old.album_ids, old.phash) == (
        "", "", False, None, [], "")
    assert ids(upgraded.list_photos("u1").records) == ["p1"]
    upgraded.create_album(album("a1"), ["p1"])
    upgraded.update_photo("p1", favorite=True, place_city="Oslo", deleted_at=BASE)
    assert upgraded.get_album("a1").photo_count == 0
    assert ids(upgraded.expired_trash(BASE + MS)) == ["p1"]
    trashed_in_oslo = PhotoFilter(deleted=True, place="oslo", favorite=True)
    assert ids(upgraded.list_photos("u1", filter=trashed_in_oslo).records) == ["p1"]
    upgraded.close()
    assert SqliteMetadataStore(path).get_photo("p1").album_ids == ["a1"]  # opening again changes nothing


def test_sqlite_store_walks_its_indexes(tmp_path):
    """The queries list_photos and the album reads make use the indexes meant for them."""
    store = SqliteMetadataStore(tmp_path / "metadata.sqlite3")
    store.insert_new_photos([record(f"p{i}", taken=BASE + dt.timedelta(hours=i)) for i in range(50)])
    store.create_album(album("a1"), ["p1", "p2"])
    statements = []
    store.db.connection().set_trace_callback(statements.append)

    def plan(call):
        statements.clear()
        call()
        selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        return " | ".join(row["detail"] for s in selects
                          for row in store.db.query(f"EXPLAIN QUERY PLAN {s}"))

    assert "photos_by_time" in plan(lambda: store.list_photos("u1", count_total=True))
    assert "TEMP B-TREE" not in plan(lambda: store.list_photos("u1", filter=PhotoFilter(favorite=True)))
    assert "photos_by_time" in plan(lambda: store.list_photos("u1", start=BASE, end=BASE + dt.timedelta(hours=5)))
    assert "photos_trash" in plan(lambda: store.list_photos("u1", filter=PhotoFilter(deleted=True)))
    assert "photos_trash_by_age" in plan(lambda: store.expired_trash(BASE))
    in_album = PhotoFilter(album_id="a1")
    assert "album_photos USING PRIMARY KEY" in plan(lambda: store.list_photos("u1", filter=in_album))
    assert "SCAN album_photos" not in plan(lambda: store.list_albums("u1"))
