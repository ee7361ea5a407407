"""The ingest service as its own process: its memory around uploads at the pixel limit (bounded
while they and their previews decode, given back afterwards), and its answer when its disk is full."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import numpy as np
from PIL import Image

from photos.v1 import ingest_pb2, ingest_pb2_grpc
from photostore import uploads
from photostore.auth import bearer_metadata
from tests.test_ingest import error_info, wait_for
from tests.stack import ROOT, free_port, wait_serving

pytestmark = pytest.mark.timeout(600)

MIB = 1024 * 1024
SIDE = 10_000  # 100 megapixels: the default pixel limit
CONCURRENT = 4
# Stated bounds: one pixel-limit decode at a time (RGB, 3 bytes a pixel, plus the decoder's
# working rows), and what stays once the uploads are done.
PEAK_GROWTH_LIMIT = 600 * MIB
KEPT_LIMIT = 150 * MIB


def pixel_limit_png(colour: tuple[int, int, int]) -> bytes:
    """A few KB that decode to 300 MB."""
    out = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), colour).save(out, "PNG", compress_level=9)
    return out.getvalue()


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}


def reset_peak(pid: int) -> None:
    """Makes VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


PHOTOSTORE = str(Path(sys.executable).parent / "photostore")
# A data dir on a tmpfs of its own (a mount namespace; no root needed), with user alice.
SMALL_DISK_SCRIPT = ('mount -t tmpfs -o size=$DISK_SIZE tmpfs "$PHOTOSTORE_DATA_DIR" || exit 1; '
                     '"$PHOTOSTORE" users add alice || exit 1; exec "$PHOTOSTORE" serve ingest')


@contextlib.contextmanager
def running_ingest(tmp_path: Path, disk_size: str = ""):
    """(process, stub, alice's auth) of `photostore serve ingest` on a data dir of its own, on a
    tmpfs of disk_size when given."""
    port, data = free_port(), tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "PHOTOSTORE_DATA_DIR": str(data), "PHOTOSTORE_INGEST_PORT": str(port),
           "PHOTOSTORE_EMBED_TARGET": f"127.0.0.1:{free_port()}", "PYTHONUNBUFFERED": "1",
           "PHOTOSTORE": PHOTOSTORE, "DISK_SIZE": disk_size}
    log_path = tmp_path / "ingest.log"
    if disk_size:
        user_namespace = [] if os.geteuid() == 0 else ["--map-root-user"]
        argv = ["unshare", "--mount", "--propagation", "private", *user_namespace, "--",
                "sh", "-c", SMALL_DISK_SCRIPT]
    else:
        subprocess.run([PHOTOSTORE, "users", "add", "alice"], env=env, cwd=ROOT, stdout=open(log_path, "ab"),
                       check=True)
        argv = [PHOTOSTORE, "serve", "ingest"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_serving(f"127.0.0.1:{port}", "photos.v1.IngestService")
        key = re.search(r"psk_[A-Za-z0-9_-]+", log_path.read_text()).group(0)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield proc, ingest_pb2_grpc.IngestServiceStub(channel), bearer_metadata(key)
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.fixture
def ingest_process(tmp_path):
    with running_ingest(tmp_path) as running:
        yield running


def upload(stub, auth, data: bytes, name: str) -> ingest_pb2.UploadPhotoResponse:
    return stub.UploadPhoto(uploads.upload_requests(io.BytesIO(data), filename=name, content_type="image/png",
                                                    size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                                    request_id=name),
                            metadata=auth, timeout=300)


def test_pixel_limit_uploads_decode_within_a_bound_and_give_the_memory_back(ingest_process):
    proc, stub, auth = ingest_process
    upload(stub, auth, pixel_limit_png((1, 2, 3)), "warm-up.png")  # code and buffers in place
    before = memory_kib(proc.pid)["VmRSS"] * 1024
    reset_peak(proc.pid)

    photos = [pixel_limit_png((40 * i, 90, 200 - 40 * i)) for i in range(CONCURRENT)]
    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(lambda i: upload(stub, auth, photos[i], f"big-{i}.png"), range(CONCURRENT)))
    assert [(a.photo.width, a.photo.height) for a in answers] == [(SIDE, SIDE)] * CONCURRENT
    # Their previews (a full decode each, in the background, under the same budget) come next.
    for answer in answers:
        wait_for(lambda: stub.GetPhoto(ingest_pb2.GetPhotoRequest(name=answer.photo.name), metadata=auth,
                                       timeout=30).photo.has_preview, timeout_s=120)

    memory = {k: v * 1024 for k, v in memory_kib(proc.pid).items()}
    peak_growth, kept = memory["VmHWM"] - before, memory["VmRSS"] - before
    print(f"RSS before {before / MIB:.0f} MiB, peak +{peak_growth / MIB:.0f} MiB, kept +{kept / MIB:.0f} MiB")
    assert peak_growth < PEAK_GROWTH_LIMIT, f"peak grew by {peak_growth / MIB:.0f} MiB"
    assert kept < KEPT_LIMIT, f"kept {kept / MIB:.0f} MiB after the uploads"


def test_a_full_disk_answers_storage_full_and_keeps_serving(tmp_path):
    with running_ingest(tmp_path, disk_size="6m") as (proc, stub, auth):
        small = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 120, 30)).save(small, "PNG")
        kept = upload(stub, auth, small.getvalue(), "small.png").photo
        noise = io.BytesIO()  # incompressible: more than the disk has left
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (1400, 1400, 3), np.uint8)).save(noise, "PNG")
        with pytest.raises(grpc.RpcError) as failed:
            upload(stub, auth, noise.getvalue(), "noise.png")
        assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, failed.value.details()
        assert error_info(failed.value).reason == "STORAGE_FULL"
        assert "out of disk space" in failed.value.details()
        listed = stub.ListPhotos(ingest_pb2.ListPhotosRequest(), metadata=auth, timeout=30).photos
        assert [p.name for p in listed] == [kept.name]


def test_data_files_are_readable_by_their_owner_only(ingest_process, tmp_path):
    proc, stub, auth = ingest_process
    small = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 20, 30)).save(small, "JPEG")
    upload(stub, auth, small.getvalue(), "small.jpg")
    data_files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    for made in ("metadata.sqlite3", "users.sqlite3"):  # by ingest, and by `photostore users add`
        assert made in {p.name for p in data_files}
    assert any("originals" in p.parts for p in data_files)
    opened_to_others = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
                        for p in data_files if p.stat().st_mode & 0o077}
    assert not opened_to_others
