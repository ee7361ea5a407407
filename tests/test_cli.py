"""The photostore CLI: `users add` against the metadata store, `import` against a real in-process
IngestService on a free port, `reindex` and `search` beside real Embed and Search services."""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import threading
import time
from pathlib import Path

import grpc
import pytest
from PIL import Image

from embed_svc.server import serve as serve_embed
from ingest_svc.server import serve as serve_ingest
from photos.v1 import (album_pb2, album_pb2_grpc, auth_pb2, auth_pb2_grpc, embed_pb2, embed_pb2_grpc, ingest_pb2,
                       ingest_pb2_grpc)
from photostore import cli
from photos.v1.events_pb2 import PhotoStatusChangedEvent
from photos.v1.photo_pb2 import PHOTO_STATUS_FAILED as FAILED
from photos.v1.photo_pb2 import PHOTO_STATUS_INDEXED as INDEXED
from photos.v1.photo_pb2 import STAGE_STATE_DONE, STAGE_STATE_FAILED, STAGE_STATE_PENDING, STAGE_STATE_UNSPECIFIED
from photostore.auth import Authenticator, bearer_metadata
from photostore.backends import open_events, open_metadata, open_users, open_vectors
from photostore.backends.base import TOPIC_PHOTO_UPLOADED, VectorObject
from photostore.events import decode, status_record
from photostore.errors import ServiceError
from photostore.settings import Settings, get_settings
from search_svc.calibration import Calibration
from search_svc.server import serve as serve_search
from tests.harness import add_user
from tests.stack import free_port
from tests.tinyclip import tiny_settings

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    """Settings the CLI reads from the environment, with data in tmp_path."""
    monkeypatch.setenv("PHOTOSTORE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PHOTOSTORE_SHUTDOWN_GRACE_SECONDS", "0.5")
    monkeypatch.setenv("PHOTOSTORE_GRPC_MAX_WORKERS", "8")
    monkeypatch.delenv("PHOTOSTORE_API_KEY", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def ingest(settings, monkeypatch):
    """A running IngestService the CLI finds through PHOTOSTORE_INGEST_TARGET; yields alice's key."""
    server = serve_ingest(settings, port=0, max_watchers=2)
    monkeypatch.setenv("PHOTOSTORE_INGEST_TARGET", f"127.0.0.1:{server.port}")
    get_settings.cache_clear()
    _, key = add_user(settings, "alice")
    try:
        yield key
    finally:
        server.stop()


def image_bytes(fmt: str, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def photo_folder(tmp_path):
    """4 distinct images, a byte-for-byte copy of one, a text file posing as bad.jpg, a non-image
    extension, and one more image in a sub-folder (import looks into sub-folders by default)."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.jpg").write_bytes(image_bytes("JPEG", (200, 30, 30)))
    (folder / "b.png").write_bytes(image_bytes("PNG", (30, 200, 30)))
    (folder / "C.JPEG").write_bytes(image_bytes("JPEG", (30, 30, 200)))
    (folder / "d.webp").write_bytes(image_bytes("WEBP", (200, 200, 30)))
    shutil.copy(folder / "a.jpg", folder / "a copy.jpg")
    (folder / "bad.jpg").write_text("this is not a photo\n")
    (folder / "notes.txt").write_text("not even looked at\n")
    (folder / "sub" / "e.png").write_bytes(image_bytes("PNG", (90, 90, 90)))
    return folder


def summary(out: str) -> tuple[int, int, int, int]:
    """(uploaded, already there, skipped, failed) of an import."""
    found = re.search(r"uploaded (\d+), already there (\d+), skipped (\d+), failed (\d+)", out)
    assert found, out
    return tuple(int(n) for n in found.groups())


# users add

def test_users_add_prints_a_key_that_authenticates(settings, capsys):
    assert cli.main(["users", "add", "alice"]) == 0
    keys = re.findall(r"psk_[\w-]+", capsys.readouterr().out)
    assert keys
    user = Authenticator.local(open_users(settings)).user_for_key(keys[0])
    assert user.name == "alice"
    with pytest.raises(ServiceError):
        Authenticator.local(open_users(settings)).user_for_key(keys[0] + "x")


def test_users_add_refuses_a_taken_name(settings, capsys):
    assert cli.main(["users", "add", "alice"]) == 0
    capsys.readouterr()
    assert cli.main(["users", "add", "alice"]) == 1
    captured = capsys.readouterr()
    assert "user 'alice' already exists" in captured.err
    assert "psk_" not in captured.out


def test_users_key_rotates_the_key_and_ends_sessions(settings, capsys):
    """On a running ingest service: after `users key`, the new key works, a browser session made
    with the old key ends at once, and the old key signs no one in although the key cache (30 s)
    still holds it; once that cache lapses (a fresh process here), the old key is refused."""
    assert cli.main(["users", "add", "alice"]) == 0
    [old] = set(re.findall(r"psk_[\w-]+", capsys.readouterr().out))

    def call(server, method: str, credential: str):
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            if method == "CreateSession":
                return auth_pb2_grpc.AuthServiceStub(channel).CreateSession(
                    auth_pb2.CreateSessionRequest(), metadata=bearer_metadata(credential), timeout=30).token
            return ingest_pb2_grpc.IngestServiceStub(channel).ListPhotos(
                ingest_pb2.ListPhotosRequest(), metadata=bearer_metadata(credential), timeout=30)

    def refused(server, method: str, credential: str) -> bool:
        with pytest.raises(grpc.RpcError) as failed:
            call(server, method, credential)
        return failed.value.code() == grpc.StatusCode.UNAUTHENTICATED

    server = serve_ingest(settings, port=0, max_watchers=2)
    try:
        call(server, "ListPhotos", old)  # the old key is in the key cache from now on
        session = call(server, "CreateSession", old)
        call(server, "ListPhotos", session)

        assert cli.main(["users", "key", "alice"]) == 0
        out = capsys.readouterr().out
        [new] = set(re.findall(r"psk_[\w-]+", out))
        assert new != old and "1 browser session(s) ended" in out
        call(server, "ListPhotos", new)
        assert refused(server, "ListPhotos", session)
        assert refused(server, "CreateSession", old)
    finally:
        server.stop()
    server = serve_ingest(settings, port=0, max_watchers=2)
    try:
        assert refused(server, "ListPhotos", old)
        call(server, "ListPhotos", new)
    finally:
        server.stop()
    assert cli.main(["users", "key", "bob"]) == 1
    assert "no user 'bob'" in capsys.readouterr().err
    assert cli.main(["users", "key", "_service"]) == 1  # the services' own key is not a user's


# import

def skipped_lines(out: str, reason: str) -> list[str]:
    """The files the import report lists under `reason` (file_scan.REASONS)."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith(reason + ":"))
    listed = []
    for line in lines[header + 1:]:
        if not line.startswith("    "):
            break
        listed.append(line.strip())
    return listed


def test_import_recurses_and_reports_every_skip(settings, ingest, photo_folder, capsys, monkeypatch):
    """Sub-folders are walked; what is not uploaded is reported by reason: not a photo by content
    (bad.jpg is text; notes.txt), too large, unreadable (a broken link), hidden or system
    (.DS_Store, an AppleDouble ._ file, Thumbs.db, a dot folder, reported once); skips alone
    leave the exit status 0, and a JPEG named .bin is uploaded."""
    monkeypatch.setenv("PHOTOSTORE_API_KEY", ingest)
    monkeypatch.setenv("PHOTOSTORE_MAX_UPLOAD_BYTES", "50000")  # what the CLI checks before sending
    (photo_folder / "sub" / "deeper").mkdir()
    (photo_folder / "sub" / "deeper" / "f.bin").write_bytes(image_bytes("JPEG", (10, 120, 240)))
    (photo_folder / "big.png").write_bytes(_noise_png(200))
    (photo_folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photo_folder / "._a.jpg").write_bytes(b"\0\5\26\7AppleDouble")
    (photo_folder / "sub" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (photo_folder / ".thumbnails").mkdir()
    (photo_folder / ".thumbnails" / "t.jpg").write_bytes(image_bytes("JPEG", (1, 2, 3)))
    (photo_folder / "gone.jpg").symlink_to(photo_folder / "nowhere.jpg")

    assert cli.main(["import", str(photo_folder), "--jobs", "3"]) == 0
    out = capsys.readouterr().out
    # a, b, C, d, sub/e, sub/deeper/f; a copy is already there; 8 skipped.
    assert summary(out) == (6, 1, 8, 0), out
    assert [Path(p).name for p in skipped_lines(out, "not a photo (JPEG, PNG, WebP, GIF or HEIC, by content)")] \
        == ["bad.jpg", "notes.txt"]
    assert skipped_lines(out, "too large for the upload limit")[0].startswith(str(photo_folder / "big.png"))
    assert skipped_lines(out, "unreadable") == [f"{photo_folder / 'gone.jpg'} (broken link)"]
    hidden = skipped_lines(out, "hidden or system file")
    assert hidden == sorted(hidden) and {line.split(" (")[0] for line in hidden} == {
        str(photo_folder / name) for name in (".DS_Store", "._a.jpg", "sub/Thumbs.db", ".thumbnails")}
    assert f"{photo_folder / '.thumbnails'} (folder)" in hidden
    owner = open_users(settings).user_by_name("alice").id
    stored = open_metadata(settings).list_photos(owner, page_size=100, count_total=True)
    assert stored.total == 6 and "f.bin" in {r.filename for r in stored.records}

    # A rerun is idempotent: everything is already there.
    assert cli.main(["import", str(photo_folder), "--key", ingest]) == 0
    assert summary(capsys.readouterr().out) == (0, 7, 8, 0)


def _noise_png(side: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((side, side), 80).convert("RGB").save(out, "PNG")
    return out.getvalue()


def test_import_without_recursion_and_with_files_named(settings, ingest, photo_folder, capsys):
    (photo_folder / "bad.jpg").unlink()
    assert cli.main(["import", str(photo_folder), "--no-recursive", "--key", ingest]) == 0
    assert summary(capsys.readouterr().out) == (4, 1, 1, 0)  # sub/e.png not looked at; notes.txt
    # Files and folders together, a file twice: each file once.
    assert cli.main(["import", str(photo_folder / "sub" / "e.png"), str(photo_folder / "sub"),
                     str(photo_folder / "b.png"), "--key", ingest]) == 0
    assert summary(capsys.readouterr().out) == (1, 1, 0, 0)
    assert cli.main(["import", str(photo_folder / "nothing-here"), "--key", ingest]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_import_fails_when_the_server_refuses_a_file(settings, ingest, photo_folder, capsys):
    """A file that looks like a JPEG but does not decode is sent, refused and counted as failed."""
    (photo_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    assert cli.main(["import", str(photo_folder), "--key", ingest]) == 1
    out = capsys.readouterr().out
    assert summary(out) == (5, 1, 2, 1)
    failed = [line for line in out.splitlines() if line.strip().startswith("failed:")]
    assert len(failed) == 1 and "broken.jpg" in failed[0] and "INVALID_ARGUMENT" in failed[0]


def test_import_wait_follows_indexing(settings, ingest, photo_folder, capsys):
    """A stand-in for the embed worker marks each uploaded photo indexed (d.webp failed)."""
    (photo_folder / "bad.jpg").unlink()
    stop = threading.Event()

    def index_uploads():
        events = open_events(settings)
        consumer, producer = events.consumer("fake-worker", [TOPIC_PHOTO_UPLOADED]), events.producer()
        metadata = open_metadata(settings)
        while not stop.is_set():
            for event in consumer.poll(timeout_s=0.1):
                photo = metadata.get_photo(event.key)
                failed = photo.filename == "d.webp"
                # Searchable first; the text stage's outcome comes after.
                records = [status_record(PhotoStatusChangedEvent(
                    photo_id=event.key, owner=photo.owner, status=FAILED if failed else INDEXED,
                    reason="model gave up" if failed else "", embedding_models=["tiny"], attempts=1,
                    text_state=STAGE_STATE_UNSPECIFIED if failed else STAGE_STATE_PENDING))]
                if not failed:
                    unreadable = photo.filename.startswith("a")  # a.jpg, or its copy
                    records.append(status_record(PhotoStatusChangedEvent(
                        photo_id=event.key, owner=photo.owner, reason="OCR gave up" if unreadable else "",
                        text_state=STAGE_STATE_FAILED if unreadable else STAGE_STATE_DONE, attempts=1)))
                producer.send_many(records)
                consumer.commit([event])

    worker = threading.Thread(target=index_uploads, daemon=True)
    worker.start()
    try:
        code = cli.main(["import", str(photo_folder), "--no-recursive", "--key", ingest, "--wait",
                         "--wait-timeout", "30"])
    finally:
        stop.set()
        worker.join()
    out = capsys.readouterr().out
    assert code == 1  # one photo failed to index
    assert summary(out) == (4, 1, 1, 0)  # notes.txt skipped
    assert "searchable 3, failed 1; text read 2, text not read 1" in out
    assert re.search(r"text not read \(still searchable\): .*/a[ .].*OCR gave up", out)
    assert re.search(r"not indexed: .*d\.webp .*model gave up", out)


def test_import_needs_a_valid_key(settings, ingest, photo_folder, capsys):
    assert cli.main(["import", str(photo_folder)]) == 1
    assert "no API key" in capsys.readouterr().err
    assert cli.main(["import", str(photo_folder), "--key", "psk_wrong"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


# export

def exported(folder: Path) -> dict[str, str]:
    """File name -> sha256 of what an export wrote (its temp files never stay)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def export_summary(out: str) -> tuple[int, int, int]:
    found = re.search(r"exported (\d+), already there (\d+), failed (\d+)", out)
    assert found, out
    return tuple(int(n) for n in found.groups())


def test_export_all_writes_verified_originals_and_resumes(settings, ingest, photo_folder, tmp_path, capsys):
    """Two photos named b.png become b.png and "b (2).png"; a file already in DEST is never
    overwritten; a second run downloads nothing, a third only what was removed."""
    (photo_folder / "sub" / "b.png").write_bytes(image_bytes("PNG", (1, 100, 200)))
    assert cli.main(["import", str(photo_folder), "--key", ingest]) == 0
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "d.webp").write_text("mine, not the photo's\n")
    owner = open_users(settings).user_by_name("alice").id
    records = open_metadata(settings).list_photos(owner, page_size=100).records
    assert len(records) == 6
    capsys.readouterr()

    assert cli.main(["export", str(dest), "--all", "--key", ingest, "--jobs", "3"]) == 0
    assert export_summary(capsys.readouterr().out) == (6, 0, 0)
    files = exported(dest)
    assert (dest / "d.webp").read_text() == "mine, not the photo's\n"
    assert files.pop("d.webp") != files["d (2).webp"]
    assert sorted(files.values()) == sorted(r.sha256 for r in records)
    assert {"b.png", "b (2).png", "C.JPEG", "d (2).webp", "e.png"} < set(files)
    assert set(files) - {"b.png", "b (2).png", "C.JPEG", "d (2).webp", "e.png"} <= {"a.jpg", "a copy.jpg"}
    for record in records:  # each under its own name, or a numbered variant of it
        stem, ext = os.path.splitext(record.filename)
        assert any(name == record.filename or re.fullmatch(re.escape(stem) + r" \(\d+\)" + re.escape(ext), name)
                   for name, sha in files.items() if sha == record.sha256)

    assert cli.main(["export", str(dest), "--all", "--key", ingest]) == 0
    assert export_summary(capsys.readouterr().out) == (0, 6, 0)
    (dest / "b (2).png").unlink()
    assert cli.main(["export", str(dest), "--all", "--key", ingest]) == 0
    assert export_summary(capsys.readouterr().out) == (1, 5, 0)
    assert exported(dest) == {**files, "d.webp": hashlib.sha256(b"mine, not the photo's\n").hexdigest()}


def test_export_an_album_by_title_or_name(settings, ingest, photo_folder, tmp_path, capsys):
    (photo_folder / "bad.jpg").unlink()
    assert cli.main(["import", str(photo_folder), "--key", ingest]) == 0
    owner = open_users(settings).user_by_name("alice").id
    records = {r.filename: r for r in open_metadata(settings).list_photos(owner, page_size=100).records}
    with grpc.insecure_channel(get_settings().target("ingest")) as channel:
        albums = album_pb2_grpc.AlbumServiceStub(channel)
        trip = albums.CreateAlbum(album_pb2.CreateAlbumRequest(
            album=album_pb2.Album(title="Summer trip"),
            photos=[f"photos/{records[name].id}" for name in ("b.png", "e.png")]),
            metadata=bearer_metadata(ingest), timeout=30).album
        albums.CreateAlbum(album_pb2.CreateAlbumRequest(album=album_pb2.Album(title="Empty")),
                           metadata=bearer_metadata(ingest), timeout=30)
    capsys.readouterr()

    assert cli.main(["export", str(tmp_path / "by-title"), "--album", "summer TRIP", "--key", ingest]) == 0
    assert export_summary(capsys.readouterr().out) == (2, 0, 0)
    assert exported(tmp_path / "by-title") == {name: records[name].sha256 for name in ("b.png", "e.png")}
    assert cli.main(["export", str(tmp_path / "by-name"), "--album", trip.name, "--key", ingest]) == 0
    assert exported(tmp_path / "by-name") == exported(tmp_path / "by-title")
    assert cli.main(["export", str(tmp_path / "none"), "--album", "Empty", "--key", ingest]) == 0
    assert "no photos to export" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "none"), "--album", "Winter", "--key", ingest]) == 1
    assert "no album titled 'Winter' (yours: 'Empty', 'Summer trip')" in capsys.readouterr().err


# reindex and search

def test_reindex_follows_progress_and_search_shows_signals(settings, tiny_clip, photo_folder, monkeypatch,
                                                           capsys):
    """A stand-in worker indexes uploads with the text model only, then reindexed photos with both
    models, except d.webp, which fails; then `export --query` downloads what `search` finds."""
    (photo_folder / "bad.jpg").unlink()
    embed_port = free_port()  # ingest asks embed for its models, embed asks ingest about keys
    monkeypatch.setenv("PHOTOSTORE_EMBED_TARGET", f"127.0.0.1:{embed_port}")
    get_settings.cache_clear()
    ingest = serve_ingest(get_settings(), port=0, max_watchers=2)
    monkeypatch.setenv("PHOTOSTORE_INGEST_TARGET", f"127.0.0.1:{ingest.port}")
    get_settings.cache_clear()
    embed = serve_embed(tiny_settings(tiny_clip, settings.data_dir, ocr_enabled=False,
                                      ingest_target=f"127.0.0.1:{ingest.port}"), port=embed_port)
    search = serve_search(get_settings(), port=0)
    monkeypatch.setenv("PHOTOSTORE_SEARCH_TARGET", f"127.0.0.1:{search.port}")
    get_settings.cache_clear()
    _, key = add_user(settings, "alice")
    stop = threading.Event()

    def index_uploads():
        events = open_events(settings)
        consumer, producer = events.consumer("fake-worker", [TOPIC_PHOTO_UPLOADED]), events.producer()
        metadata, vectors = open_metadata(settings), open_vectors(settings)
        while not stop.is_set():
            for event in consumer.poll(timeout_s=0.1):
                photo = metadata.get_photo(event.key)
                reindex = decode(event).WhichOneof("event") == "reindex_requested"
                failed = reindex and photo.filename == "d.webp"
                models = ["tiny-clip", "text"] if reindex else ["text"]
                # As the worker does: the photo's keywords go to the index with its vectors.
                vectors.upsert(VectorObject(photo.id, photo.owner, "", None, keywords=photo.filename))
                producer.send_many([status_record(PhotoStatusChangedEvent(
                    photo_id=event.key, owner=photo.owner, status=FAILED if failed else INDEXED,
                    reason="model gave up" if failed else "", attempts=1,
                    embedding_models=[] if failed else models))])
                consumer.commit([event])

    worker = threading.Thread(target=index_uploads, daemon=True)
    worker.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{embed.port}") as channel:
            stub = embed_pb2_grpc.EmbedServiceStub(channel)
            deadline = time.monotonic() + 60
            while not all(m.ready for m in stub.GetModelInfo(embed_pb2.GetModelInfoRequest(),
                                                             metadata=bearer_metadata(key)).models):
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert cli.main(["import", str(photo_folder), "--no-recursive", "--key", key, "--wait",
                         "--wait-timeout", "30"]) == 0
        capsys.readouterr()
        assert cli.main(["reindex", "--key", key, "--wait-timeout", "30"]) == 1  # d.webp failed
        out = capsys.readouterr().out
        assert re.search(r"queued 4 photo\(s\) for tiny-clip-test/\S+, efficientnet-lite0\+all-MiniLM-L6-v2", out)
        assert "reindexed 3, failed 1" in out
        assert re.search(r"not reindexed: photos/\w+: model gave up", out)

        assert cli.main(["search", "webp photo", "--key", key]) == 0
        out = capsys.readouterr().out
        header, row = out.splitlines()[:2]
        assert header.split()[:5] == ["rank", "score", "clip", "text", "keyword"]
        # Only the keyword matches, and the photo has no vectors: the calibrated keyword-only model
        # judges it (docs/SEARCH.md).
        alone = Calibration.load().probability({"keyword": 1.0}, ["keyword"])
        assert row.split()[:5] == ["1", f"{alone:.3f}", "-", "-", "1.000"] and "d.webp" in row
        assert row.split()[-1] == "webp"

        # export --query: the search's hits, each under its name.
        hits = [line.split()[5] for line in out.splitlines()[1:] if line.split()[0].isdigit()]
        assert cli.main(["export", str(settings.data_dir.parent / "found"), "--query", "webp photo",
                         "--key", key]) == 0
        assert export_summary(capsys.readouterr().out) == (len(hits), 0, 0)
        assert exported(settings.data_dir.parent / "found") == {
            name: hashlib.sha256((photo_folder / name).read_bytes()).hexdigest() for name in hits}
    finally:
        stop.set()
        worker.join()
        for server in (search, ingest, embed):
            server.stop()


# serve, probe: the container image's command and health check

def test_probe_answers_for_grpc_services(settings, capsys):
    server = serve_ingest(settings, port=0, max_watchers=2)
    try:
        target = f"127.0.0.1:{server.port}"
        assert cli.main(["probe", "--grpc", target]) == 0
        assert cli.main(["probe", "--grpc", target, "--service", "photos.v1.IngestService"]) == 0
        assert cli.main(["probe", "--grpc", target, "--service", "photos.v1.Nothing"]) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
        server.set_serving("photos.v1.IngestService", False)
        assert cli.main(["probe", "--grpc", target, "--service", "photos.v1.IngestService"]) == 1
        assert "NOT_SERVING" in capsys.readouterr().err
    finally:
        server.stop()
    assert cli.main(["probe", "--grpc", f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err


def test_probe_answers_for_http(settings, capsys, tmp_path):
    import http.server
    statuses = {"/ok": 200, "/down": 503}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses[self.path])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert cli.main(["probe", "--http", f"{base}/ok"]) == 0
        assert cli.main(["probe", "--http", f"{base}/down"]) == 1
        assert "503" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_what_it_does_not_know(settings, capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "database"])
    assert cli.main(["serve", "search", "--once"]) == 1
    assert "takes no options" in capsys.readouterr().err
