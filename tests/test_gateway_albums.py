"""The gateway's album, trash and favourite routes (gateway/albums.py) against a real IngestService
served in this process."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway import create_app
from ingest_svc.server import serve as serve_ingest
from photostore.settings import Settings
from tests.harness import add_user

pytestmark = pytest.mark.timeout(120)
API = "/api/v1"


@pytest.fixture
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, host="127.0.0.1", grpc_max_workers=8, shutdown_grace_seconds=0.5)
    ingest = serve_ingest(settings, 0, max_watchers=2)
    app = create_app(settings.model_copy(update={"ingest_target": f"127.0.0.1:{ingest.port}"}))
    try:
        yield app.test_client(), {"Authorization": f"Bearer {add_user(settings, 'alice')[1]}"}
    finally:
        app.extensions["photostore_clients"].close()
        ingest.stop()


def jpeg(colour) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, "JPEG")
    return out.getvalue()


def upload(client, auth, *colours) -> list[str]:
    response = client.post(f"{API}/photos", headers=auth, content_type="multipart/form-data",
                           data={"file": [(io.BytesIO(jpeg(c)), f"{i}.jpg") for i, c in enumerate(colours)]})
    assert response.status_code == 200, response.json
    return [r["photo"]["name"] for r in response.json["results"]]


def listed(client, auth, **params) -> list[str]:
    response = client.get(f"{API}/photos", headers=auth, query_string=params)
    assert response.status_code == 200, response.json
    return [p["name"] for p in response.json["photos"]]


def test_albums_over_http(client):
    client, auth = client
    a, b = upload(client, auth, (200, 0, 0), (0, 200, 0))
    create = dict(headers={**auth, "Idempotency-Key": "album-1"}, json={"title": "Trip", "photos": [a]})
    album = client.post(f"{API}/albums", **create).json["album"]
    assert (album["title"], album["photoCount"], album["coverPhoto"]) == ("Trip", 1, a)
    assert client.post(f"{API}/albums", **create).json["album"] == album  # the retry: the same album
    album_id = album["name"].removeprefix("albums/")
    assert [x["name"] for x in client.get(f"{API}/albums", headers=auth).json["albums"]] == [album["name"]]

    added = client.post(f"{API}/albums/{album_id}:addPhotos", headers=auth, json={"photos": [b]})
    assert added.status_code == 200 and added.json["album"]["photoCount"] == 2
    assert sorted(listed(client, auth, album=album_id)) == sorted([a, b])
    missing = client.post(f"{API}/albums/{album_id}:addPhotos", headers=auth, json={"photos": ["photos/nope"]})
    assert missing.status_code == 404 and missing.json["details"][0]["metadata"]["missing"] == "photos/nope"
    for body in ({"photos": "photos/x"}, {"photos": [1]}, [b]):
        assert client.post(f"{API}/albums/{album_id}:addPhotos", headers=auth, json=body).status_code == 400
    assert client.post(f"{API}/albums", headers=auth, json={"title": "x" * 201}).status_code == 400

    renamed = client.patch(f"{API}/albums/{album_id}", headers=auth, json={"title": "Summer", "coverPhoto": b})
    assert (renamed.json["album"]["title"], renamed.json["album"]["coverPhoto"]) == ("Summer", b)
    assert client.patch(f"{API}/albums/{album_id}", headers=auth, json={}).status_code == 400
    removed = client.post(f"{API}/albums/{album_id}:removePhotos", headers=auth, json={"photos": [b]})
    assert (removed.json["album"]["photoCount"], removed.json["album"]["coverPhoto"]) == (1, a)
    assert client.get(f"{API}/albums/{album_id}", headers=auth).json["album"]["title"] == "Summer"
    assert client.delete(f"{API}/albums/{album_id}", headers=auth).status_code == 200
    assert client.get(f"{API}/albums/{album_id}", headers=auth).status_code == 404
    assert sorted(listed(client, auth)) == sorted([a, b])


def test_trash_and_favourites_over_http(client):
    client, auth = client
    a, b, c = upload(client, auth, (200, 0, 0), (0, 200, 0), (0, 0, 200))
    favourite = client.patch(f"{API}/{a}", headers=auth, json={"favorite": True})
    assert favourite.status_code == 200 and favourite.json["photo"]["favorite"] is True
    assert listed(client, auth, favorite="true") == [a]
    assert client.patch(f"{API}/{a}", headers=auth, json={"favorite": "yes"}).status_code == 400
    assert client.patch(f"{API}/{a}", headers=auth, json={"filename": "x"}).status_code == 400
    assert client.get(f"{API}/photos", headers=auth, query_string={"deleted": "maybe"}).status_code == 400

    trashed = client.delete(f"{API}/{a}", headers=auth).json["photo"]
    assert trashed["deleteTime"] and trashed["purgeTime"]
    batch = client.post(f"{API}/photos:batchDelete", headers=auth, json={"names": [b]})
    assert batch.status_code == 200 and [p["name"] for p in batch.json["photos"]] == [b]
    assert listed(client, auth) == [c] and sorted(listed(client, auth, deleted="true")) == sorted([a, b])
    assert client.get(f"{API}/{a}", headers=auth).json["photo"]["deleteTime"] == trashed["deleteTime"]

    restored = client.post(f"{API}/photos:undelete", headers=auth, json={"names": [a]})
    assert restored.status_code == 200 and "deleteTime" not in restored.json["photos"][0]
    not_trashed = client.post(f"{API}/photos:undelete", headers=auth, json={"names": [c]})
    assert not_trashed.status_code == 400 and not_trashed.json["details"][0]["reason"] == "NOT_IN_TRASH"
    assert client.post(f"{API}/photos:purge", headers=auth, json={}).status_code == 400
    purged = client.post(f"{API}/photos:purge", headers=auth, json={"all": True})
    assert purged.status_code == 200 and purged.json["names"] == [b]
    assert client.get(f"{API}/{b}", headers=auth).status_code == 404
    assert listed(client, auth, deleted="true") == [] and sorted(listed(client, auth)) == sorted([a, c])
    assert client.post(f"{API}/photos:batchDelete", headers=auth, data="names",
                       content_type="text/plain").status_code == 400
