"""`photostore delete`, `trash` and `albums` against a real in-process IngestService (the fixtures
of tests/test_cli.py)."""
from __future__ import annotations

import re

import grpc
import pytest

from photos.v1 import album_pb2, album_pb2_grpc, ingest_pb2, ingest_pb2_grpc
from photostore import cli
from photostore.auth import bearer_metadata
from tests.test_cli import image_bytes, ingest, settings  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_delete_trash_and_albums(settings, ingest, tmp_path, capsys):
    key = ingest
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (folder / f"p{i}.jpg").write_bytes(image_bytes("JPEG", colour))
    assert run(capsys, "import", str(folder), "--key", key)[0] == 0
    with grpc.insecure_channel(cli.get_settings().target("ingest")) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        albums = album_pb2_grpc.AlbumServiceStub(channel)
        auth = bearer_metadata(key)

        def listed(**filters) -> set[str]:
            return {p.name for p in stub.ListPhotos(ingest_pb2.ListPhotosRequest(**filters), metadata=auth).photos}

        names = sorted(listed())
        assert len(names) == 3
        a, b, c = names

        # albums create / list / add / remove / rename / delete
        code, out, _ = run(capsys, "albums", "create", "Summer trip", a, b.removeprefix("photos/"), "--key", key)
        assert code == 0 and "2 photo(s)  Summer trip" in out
        album = re.search(r"albums/\w+", out).group(0)
        assert listed(album=album) == {a, b}
        code, out, _ = run(capsys, "albums", "add", album.removeprefix("albums/"), c, "--key", key)
        assert code == 0 and "3 photo(s)" in out
        assert run(capsys, "albums", "remove", album, a, "--key", key)[0] == 0
        assert listed(album=album) == {b, c}
        assert run(capsys, "albums", "rename", album, "Summer 2026", "--key", key)[0] == 0
        code, out, _ = run(capsys, "albums", "list", "--key", key)
        assert code == 0 and out.split() == [album, "2", "photo(s)", "Summer", "2026"]
        code, _, err = run(capsys, "albums", "add", album, "photos/nobody", "--key", key)
        assert code == 1 and "NOT_FOUND" in err and "photos/nobody" in err
        code, out, _ = run(capsys, "albums", "add", "summer 2026", a, "--key", key)  # by title, any case
        assert code == 0 and "3 photo(s)" in out
        assert run(capsys, "albums", "remove", "Summer 2026", a, "--key", key)[0] == 0
        code, _, err = run(capsys, "albums", "add", "No such album", a, "--key", key)
        assert code == 1 and "no album titled 'No such album'" in err

        # delete -> trash list -> restore -> empty
        code, out, _ = run(capsys, "delete", a, b, "--key", key)
        assert code == 0 and "moved 2 photo(s) to the trash" in out
        assert listed() == {c} and listed(deleted=True) == {a, b}
        code, out, _ = run(capsys, "trash", "list", "--key", key)
        assert code == 0 and "2 photo(s) in the trash" in out
        assert {line.split()[0] for line in out.splitlines()[:-1]} == {a, b}
        assert all("29 days left" in line or "30 days left" in line for line in out.splitlines()[:-1])
        assert run(capsys, "trash", "restore", "--all", "--key", key)[1].strip() == "restored 2 photo(s)"
        assert run(capsys, "delete", b, "--key", key)[0] == 0
        assert listed() == {a, c}
        code, _, err = run(capsys, "trash", "restore", c, "--key", key)
        assert code == 1 and "FAILED_PRECONDITION" in err
        assert run(capsys, "trash", "empty", "--key", key)[1].strip() == "purged 1 photo(s) for good"
        assert listed(deleted=True) == set()
        assert stub.BatchGetPhotos(ingest_pb2.BatchGetPhotosRequest(names=[b], skip_missing=True),
                                   metadata=auth).photos == []
        assert albums.GetAlbum(album_pb2.GetAlbumRequest(name=album), metadata=auth).album.photo_count == 1

        assert run(capsys, "albums", "delete", album, "--key", key)[0] == 0
        assert run(capsys, "albums", "list", "--key", key)[1].startswith("no albums")
        assert listed() == {a, c}
