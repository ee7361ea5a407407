"""Places and browsing without a query, over gRPC on the real stack: reverse geocoding at upload,
ListPhotos filters, SummarizePhotos counts, and query words read as filters by SearchPhotos."""
from __future__ import annotations

import datetime as dt
import io

import grpc
import pytest
from google.protobuf import field_mask_pb2
from PIL import Image

from photos.v1 import ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from tests.photo_samples import upload

pytestmark = pytest.mark.timeout(420)

PARIS = (48.8566, 2.3522)
TOKYO = (35.6895, 139.6917)
# filename -> (make, model, taken, GPS fix)
PHOTOS = {
    "canon-2019-paris.jpg": ("Canon", "Canon EOS 5D", dt.datetime(2019, 5, 1, 10), PARIS),
    "canon-2019-home.jpg": ("Canon", "Canon EOS 5D", dt.datetime(2019, 11, 2, 9), None),
    "canon-2020-tokyo.jpg": ("Canon", "Canon EOS R5", dt.datetime(2020, 3, 1, 8), TOKYO),
    "nikon-2019-paris.jpg": ("NIKON CORPORATION", "NIKON D750", dt.datetime(2019, 7, 14, 12), (48.853, 2.349)),
}


def dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees, minutes = int(value), int(value * 60) % 60
    return float(degrees), float(minutes), round((value * 3600) % 60, 4)


def exif_jpeg(index: int, make: str, model: str, taken: dt.datetime, fix) -> bytes:
    exif = Image.Exif()
    exif[271], exif[272] = make, model
    exif.get_ifd(0x8769)[36867] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if fix is not None:
        lat, lon = fix
        exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: dms(lat),
                                     3: "E" if lon >= 0 else "W", 4: dms(lon)})
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (40 * index, 200 - 30 * index, 90)).save(out, "JPEG", exif=exif)
    return out.getvalue()


@pytest.fixture(scope="module")
def library(stack):
    """A user with the four photos: (key, {filename: photo name})."""
    key = stack.add_user("browser")
    names = {}
    for index, (filename, (make, model, taken, fix)) in enumerate(PHOTOS.items()):
        response = upload(stack.ingest, key, exif_jpeg(index, make, model, taken, fix), filename)
        names[filename] = response.photo.name
    return key, names


def listed(stack, key, **fields) -> set[str]:
    response = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=100, **fields),
                                       metadata=bearer_metadata(key), timeout=30)
    assert response.total_size == len(response.photos)
    return {p.filename for p in response.photos}


def year(value: int) -> dict:
    start, end = dt.datetime(value, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(value + 1, 1, 1, tzinfo=dt.timezone.utc)
    return {"start_time": _ts(start), "end_time": _ts(end)}


def _ts(value: dt.datetime):
    from photostore.convert import to_timestamp
    return to_timestamp(value)


def test_upload_reverse_geocodes_the_gps_fix(stack, library):
    key, names = library
    photo = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=names["canon-2019-paris.jpg"]),
                                  metadata=bearer_metadata(key), timeout=30).photo
    assert photo.place == photo_pb2.Place(city="Paris", region="Ile-de-France", country="France",
                                          country_code="FR")
    tokyo = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=names["canon-2020-tokyo.jpg"]),
                                  metadata=bearer_metadata(key), timeout=30).photo
    assert (tokyo.place.city, tokyo.place.country, tokyo.place.country_code) == ("Tokyo", "Japan", "JP")
    home = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=names["canon-2019-home.jpg"]),
                                 metadata=bearer_metadata(key), timeout=30).photo
    assert not home.HasField("place") and not home.HasField("location")


def test_list_photos_by_camera_year_place_and_favourite(stack, library):
    key, names = library
    assert listed(stack, key, camera_make="canon") == {
        "canon-2019-paris.jpg", "canon-2019-home.jpg", "canon-2020-tokyo.jpg"}
    assert listed(stack, key, camera_model="nikon d750") == {"nikon-2019-paris.jpg"}
    assert listed(stack, key, **year(2019)) == {
        "canon-2019-paris.jpg", "canon-2019-home.jpg", "nikon-2019-paris.jpg"}
    for place in ("paris", "France", "fr", "ile-de-france"):
        assert listed(stack, key, place=place) == {"canon-2019-paris.jpg", "nikon-2019-paris.jpg"}, place
    assert listed(stack, key, camera_make="canon", place="paris", **year(2019)) == {"canon-2019-paris.jpg"}

    stack.ingest.UpdatePhoto(ingest_pb2.UpdatePhotoRequest(
        photo=photo_pb2.Photo(name=names["canon-2020-tokyo.jpg"], favorite=True),
        update_mask=field_mask_pb2.FieldMask(paths=["favorite"])), metadata=bearer_metadata(key), timeout=30)
    assert listed(stack, key, favorite=True) == {"canon-2020-tokyo.jpg"}

    with pytest.raises(grpc.RpcError) as err:
        listed(stack, key, album="albums/not-one-of-mine")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_page_tokens_are_bound_to_the_filter(stack, library):
    key, _ = library
    metadata = bearer_metadata(key)
    first = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=2, camera_make="canon"),
                                    metadata=metadata, timeout=30)
    assert len(first.photos) == 2 and first.next_page_token and first.total_size == 3
    second = stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(
        page_size=2, camera_make="canon", page_token=first.next_page_token), metadata=metadata, timeout=30)
    assert [p.filename for p in second.photos] == ["canon-2019-paris.jpg"]  # the oldest Canon
    with pytest.raises(grpc.RpcError) as err:
        stack.ingest.ListPhotos(ingest_pb2.ListPhotosRequest(
            page_size=2, camera_make="canon", place="paris", page_token=first.next_page_token),
            metadata=metadata, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_summarize_counts_months_cameras_and_places(stack, library):
    key, _ = library
    summary = stack.ingest.SummarizePhotos(ingest_pb2.SummarizePhotosRequest(),
                                           metadata=bearer_metadata(key), timeout=30)
    assert summary.total_size == 4
    assert [(m.year, m.month, m.count) for m in summary.months] == [
        (2020, 3, 1), (2019, 11, 1), (2019, 7, 1), (2019, 5, 1)]
    assert [(c.camera_make, c.camera_model, c.count) for c in summary.cameras] == [
        ("Canon", "Canon EOS 5D", 2), ("Canon", "Canon EOS R5", 1), ("NIKON CORPORATION", "NIKON D750", 1)]
    assert [(p.place.city, p.place.country_code, p.count) for p in summary.places] == [
        ("Paris", "FR", 2), ("Tokyo", "JP", 1)]
    canon_2019 = stack.ingest.SummarizePhotos(ingest_pb2.SummarizePhotosRequest(
        filter=ingest_pb2.ListPhotosRequest(camera_make="CANON", **year(2019))),
        metadata=bearer_metadata(key), timeout=30)
    assert canon_2019.total_size == 2
    assert [(p.place.city, p.count) for p in canon_2019.places] == [("Paris", 1)]


def search(stack, key, query: str, **filters) -> search_pb2.SearchPhotosResponse:
    return stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(
        query=query, filter=search_pb2.SearchFilter(**filters), page_size=50),
        metadata=bearer_metadata(key), timeout=60)


def test_query_words_naming_a_camera_year_or_place_become_filters(stack, library):
    key, _ = library
    response = search(stack, key, "canon 2019")
    assert {hit.photo.filename for hit in response.hits} == {"canon-2019-paris.jpg", "canon-2019-home.jpg"}
    assert [hit.photo.filename for hit in response.hits] == ["canon-2019-home.jpg", "canon-2019-paris.jpg"]  # newest first
    assert all(hit.score == 1.0 for hit in response.hits)
    assert response.query_filter.camera_make == "Canon"
    assert response.query_filter.start_time.ToDatetime() == dt.datetime(2019, 1, 1)
    assert response.query_filter.end_time.ToDatetime() == dt.datetime(2020, 1, 1)

    paris = search(stack, key, "Paris")
    assert {hit.photo.filename for hit in paris.hits} == {"canon-2019-paris.jpg", "nikon-2019-paris.jpg"}
    assert paris.query_filter.place == "Paris"
    assert {h.photo.filename for h in search(stack, key, "photos from nikon in july 2019").hits} == {
        "nikon-2019-paris.jpg"}
    assert not search(stack, key, "nikon 2020").hits
    # The request's own filter wins: the word stays a word, and the photos come from the filter.
    assert {h.photo.filename for h in search(stack, key, "2019", camera_make="nikon corporation").hits} == {
        "nikon-2019-paris.jpg"}
    assert {h.photo.filename for h in search(stack, key, "japan", favorite=True).hits} == {
        "canon-2020-tokyo.jpg"}
