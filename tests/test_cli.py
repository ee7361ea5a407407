"""The photostore CLI: `users add` against the metadata store, `import` against a real in-process
IngestService on a free port, `reindex` and `search` beside real Embed and Search services."""
from __future__ import annotations

import io
import re
import shutil
import threading
import time

import grpc
import pytest
from PIL import Image

from embed_svc.server import serve as serve_embed
from ingest_svc.server import serve as serve_ingest
from photos.v1 import embed_pb2, embed_pb2_grpc
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
    extension, and one more image in a sub-folder."""
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


def summary(out: str) -> tuple[int, int, int]:
    found = re.search(r"uploaded (\d+), duplicates (\d+), rejected (\d+)", out)
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


# import

def test_import_reports_uploads_duplicates_and_rejections(settings, ingest, photo_folder, capsys,
                                                          monkeypatch):
    monkeypatch.setenv("PHOTOSTORE_API_KEY", ingest)
    assert cli.main(["import", str(photo_folder), "--jobs", "3"]) == 1  # bad.jpg was rejected
    out = capsys.readouterr().out
    assert summary(out) == (4, 1, 1)
    rejected = [line for line in out.splitlines() if line.strip().startswith("rejected:")]
    assert len(rejected) == 1 and "bad.jpg" in rejected[0] and "INVALID_ARGUMENT" in rejected[0]
    owner = open_users(settings).user_by_name("alice").id
    page = open_metadata(settings).list_photos(owner, page_size=100, count_total=True)
    assert page.total == 4
    assert {r.filename for r in page.records} <= {"a.jpg", "a copy.jpg", "b.png", "C.JPEG", "d.webp"}

    # A rerun is idempotent; --recursive adds the sub-folder's photo.
    assert cli.main(["import", str(photo_folder), "--recursive", "--key", ingest]) == 1
    assert summary(capsys.readouterr().out) == (1, 5, 1)
    assert open_metadata(settings).list_photos(owner, page_size=100, count_total=True).total == 5


def test_import_succeeds_when_nothing_is_rejected(settings, ingest, photo_folder, capsys):
    (photo_folder / "bad.jpg").unlink()
    assert cli.main(["import", str(photo_folder / "sub"), "--key", ingest]) == 0
    assert summary(capsys.readouterr().out) == (1, 0, 0)


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
        code = cli.main(["import", str(photo_folder), "--key", ingest, "--wait", "--wait-timeout", "30"])
    finally:
        stop.set()
        worker.join()
    out = capsys.readouterr().out
    assert code == 1  # one photo failed to index
    assert summary(out) == (4, 1, 0)
    assert "searchable 3, failed 1; text read 2, text not read 1" in out
    assert re.search(r"text not read \(still searchable\): .*/a[ .].*OCR gave up", out)
    assert re.search(r"not indexed: .*d\.webp .*model gave up", out)


def test_import_needs_a_valid_key(settings, ingest, photo_folder, capsys):
    assert cli.main(["import", str(photo_folder)]) == 1
    assert "no API key" in capsys.readouterr().err
    assert cli.main(["import", str(photo_folder), "--key", "psk_wrong"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


# reindex and search

def test_reindex_follows_progress_and_search_shows_signals(settings, tiny_clip, photo_folder, monkeypatch,
                                                           capsys):
    """A stand-in worker indexes uploads with the text model only, then reindexed photos with both
    models, except d.webp, which fails."""
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
        assert cli.main(["import", str(photo_folder), "--key", key, "--wait", "--wait-timeout", "30"]) == 0
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
        # Only the keyword matches: half its weight of 0.5 out of 2.5 (clip 1, text 1, keyword 0.5).
        assert row.split()[:5] == ["1", "0.200", "-", "-", "1.000"] and "d.webp" in row
        assert row.split()[-1] == "webp"
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
