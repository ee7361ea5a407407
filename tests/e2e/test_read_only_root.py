"""The scale-out processes as the Helm chart runs them: each with a read-only root file system and
only its own temp, data and cache dirs writable (the chart's emptyDirs), on the chart's settings.
Every model loads, a photo is uploaded, indexed and found, the gateway serves."""
from __future__ import annotations

import subprocess
import time

import pytest
import requests

from photos.v1 import embed_pb2, ingest_pb2, photo_pb2, search_pb2
from photostore.auth import bearer_metadata
from tests.e2e.conftest import scale_out_backends
from tests.e2e.test_end_to_end import watch_until
from tests.photo_samples import sample_photos, upload
from tests.stack import Stack, read_only_root_argv

pytestmark = pytest.mark.timeout(600)

MODELS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory, tiny_clip):
    workdir = tmp_path_factory.mktemp("read-only-root")
    s = Stack(workdir, tiny_clip.checkpoint_path, tiny_clip, backends=scale_out_backends(request),
              read_only_root=True)
    s.start_all()
    yield s
    s.stop_all()


def test_the_sandbox_is_read_only_but_for_its_dirs(tmp_path):
    writable = tmp_path / "writable"
    writable.mkdir()
    done = subprocess.run(read_only_root_argv([str(writable)], [
        "sh", "-c", f"touch {writable}/ok && touch {tmp_path}/refused"]), capture_output=True, text=True)
    assert done.returncode != 0 and "Read-only file system" in done.stderr
    assert (writable / "ok").exists() and not (tmp_path / "refused").exists()


def test_every_model_loads_on_a_read_only_root(stack):
    key = stack.add_user("models")
    deadline = time.monotonic() + MODELS_TIMEOUT_S
    while True:
        info = stack.embed.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key),
                                        timeout=30)
        if info.models and all(m.ready for m in info.models):
            break
        assert time.monotonic() < deadline, f"models not ready: {info}\n{stack.logs()}"
        time.sleep(1)
    roles = {m.role for m in info.models}
    assert embed_pb2.MODEL_ROLE_CLIP in roles and embed_pb2.MODEL_ROLE_SENTENCE in roles


def test_upload_index_and_search_on_a_read_only_root(stack):
    key = stack.add_user("alice")
    name, data = next((n, d) for n, d in sorted(sample_photos().items()) if n.startswith("astronaut"))
    photo = upload(stack.ingest, key, data, name).photo
    watch_until(stack, key, [photo.name], photo_pb2.PHOTO_STATUS_INDEXED)
    hits = stack.search.SearchPhotos(search_pb2.SearchPhotosRequest(query="an astronaut", page_size=5),
                                     metadata=bearer_metadata(key), timeout=60).hits
    assert photo.name in [hit.photo.name for hit in hits]
    got = stack.ingest.GetPhoto(ingest_pb2.GetPhotoRequest(name=photo.name), metadata=bearer_metadata(key)).photo
    assert got.labels and got.status == photo_pb2.PHOTO_STATUS_INDEXED  # the label model ran too


def test_gateway_serves_on_a_read_only_root(stack):
    key = stack.add_user("bob")
    url = stack.processes["gateway"].http_url
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
    assert "<html" in requests.get(f"{url}/", timeout=30).text.lower()
    listed = requests.get(f"{url}/api/v1/photos", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert listed.status_code == 200, listed.text
