"""schemathesis against the OpenAPI document the gateway serves (gateway/openapi.py), on the real
services: every process as `photostore up` runs it (tests/stack.py), the gateway on gunicorn with
two worker processes, the packaged label, OCR and sentence models and the tiny CLIP.

Each operation gets schema-valid and schema-violating requests (query parameters, bodies, headers,
methods, missing auth); no answer may be a 5xx, and every answer must match the document: status,
content type, headers and body schema, and what the document says is invalid must be refused.
"""
from __future__ import annotations

import dataclasses
import http.client
import io
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from gateway import openapi, sessions
from photos.v1 import embed_pb2
from tests.photo_samples import SAMPLE_FILES
from tests.stack import Stack

API = "/api/v1"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).with_name("openapi_hooks.py")
STARTUP_TIMEOUT_S = 90
INDEX_TIMEOUT_S = 120
REQUEST_TIMEOUT_S = 60
FUZZ_TIMEOUT_S = 400
# Test cases per operation and phase (about 16 operations), and a fixed seed: the run is
# reproducible and takes a minute or two on 2 cores.
MAX_EXAMPLES = 30
SEED = 20260
# positive_data_acceptance expects every schema-valid request to succeed, but some constraints are
# beyond a schema: a page token must be one the service minted, startTime must come before
# endTime, and an image must be one the service decodes. Those requests are refused with 400, rightly.
EXCLUDED_CHECKS = ["positive_data_acceptance"]
OPERATIONS = [(path, method) for path, ops in openapi.document()["paths"].items() for method in ops
              if path != f"{API}/events"]
EMBED_SERVICE = embed_pb2.DESCRIPTOR.services_by_name["EmbedService"].full_name


def png(size=(64, 64), color=(255, 255, 255), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


# Images the fuzzer's uploads carry instead of its random bytes (which the services rightly refuse
# as undecodable): a blank one and a tiny one, which have no labels and no text, and real photos.
IMAGES = [("blank.png", png()), ("dot.png", png((1, 1), 0, "L"))] + [
    (p.name, p.read_bytes()) for p in SAMPLE_FILES if p.name in ("camera.png", "text.png")]


@dataclasses.dataclass
class Live:
    stack: Stack
    url: str
    key: str
    photo_ids: list[str]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def wait_until(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not after {timeout}s"
        time.sleep(interval)


def gateway_ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def model_ready(stack: Stack) -> bool:
    with grpc.insecure_channel(stack.target("embed")) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=EMBED_SERVICE), timeout=5).status \
                == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_clip):
    """Starts without CLIP weights (as where no model hub can be reached); `live` installs them."""
    workdir = tmp_path_factory.mktemp("openapi-stack")
    s = Stack(workdir, workdir / "weights" / "tiny.pt", tiny_clip, env={"PHOTOSTORE_GATEWAY_WORKERS": "2"})
    s.checkpoint_path.parent.mkdir()
    try:
        s.start_all()
        wait_until(lambda: gateway_ready(s.processes["gateway"].http_url), STARTUP_TIMEOUT_S, "gateway ready")
        yield s
        for client in ("gateway", "worker", "search"):  # clients first: no server waits on them
            s.stop(client)
    finally:
        s.stop_all()


def labels_ready(url: str, key: str) -> bool:
    models = requests.get(f"{url}{API}/model", headers={"Authorization": f"Bearer {key}"},
                          timeout=REQUEST_TIMEOUT_S).json().get("models", [])
    return any(m["role"] == "MODEL_ROLE_LABELS" and m["ready"] for m in models)


def test_similar_to_an_image_without_labels_or_text_before_clip_loads(stack):
    url, key = stack.processes["gateway"].http_url, stack.add_user("early")
    auth = {"Authorization": f"Bearer {key}"}
    wait_until(lambda: labels_ready(url, key), STARTUP_TIMEOUT_S, "label model loaded")
    # One photo in the index (by its labels' text vector), so the search has something to rank.
    camera = next(p for p in SAMPLE_FILES if p.name == "camera.png")
    assert requests.post(f"{url}{API}/photos", headers=auth, files={"file": (camera.name, camera.read_bytes())},
                         timeout=REQUEST_TIMEOUT_S).status_code == 200
    wait_until(lambda: requests.get(f"{url}{API}/photos", headers=auth, params={"status": "indexed"},
                                    timeout=REQUEST_TIMEOUT_S).json()["totalSize"] == 1,
               INDEX_TIMEOUT_S, "photo indexed", interval=0.5)
    found = requests.post(f"{url}{API}/similar", headers=auth, files={"file": ("blank.png", png())},
                          timeout=REQUEST_TIMEOUT_S)
    # Nothing recognised in a blank image while CLIP is missing: a clear 4xx, not a server error.
    assert found.status_code == 400, found.text
    assert found.json()["details"][0]["reason"] == "IMAGE_HAS_NO_SIGNAL"


@pytest.fixture(scope="module")
def live(stack, tiny_clip) -> Live:
    """CLIP loaded, a user with indexed photos (some without labels or text)."""
    stack.install_checkpoint(tiny_clip.checkpoint_path)
    wait_until(lambda: model_ready(stack), STARTUP_TIMEOUT_S, "CLIP loaded")
    live = Live(stack, stack.processes["gateway"].http_url, stack.add_user("fuzz"), [])
    uploaded = requests.post(f"{live.url}{API}/photos", headers=live.auth, timeout=REQUEST_TIMEOUT_S,
                             files=[("file", image) for image in IMAGES])
    assert uploaded.status_code == 200, uploaded.text
    live.photo_ids = [r["photo"]["name"].split("/")[1] for r in uploaded.json()["results"]]

    def all_indexed() -> bool:
        listed = requests.get(f"{live.url}{API}/photos", headers=live.auth, timeout=REQUEST_TIMEOUT_S,
                              params={"status": "indexed"}).json()
        return listed["totalSize"] == len(IMAGES)

    wait_until(all_indexed, INDEX_TIMEOUT_S, "seeded photos indexed", interval=0.5)
    return live


def test_gateway_answers_as_its_openapi_document_says(live, tmp_path):
    """`schemathesis run` against /openapi.json: examples, coverage of each parameter's edges, and
    fuzzing, in both modes (schema-valid and schema-violating requests); failing checks fail."""
    images = tmp_path / "images"
    images.mkdir()
    for name, data in IMAGES:
        (images / name).write_bytes(data)
    argv = [str(SCHEMATHESIS), "run", f"{live.url}/openapi.json",
            "--header", f"Authorization: Bearer {live.key}",
            # An event stream never ends, so a request for it cannot be judged as a whole; the
            # gateway's own tests (tests/test_gateway.py) cover it.
            "--exclude-path", f"{API}/events",
            "--checks", "all", "--exclude-checks", ",".join(EXCLUDED_CHECKS),
            "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED), "--generation-database", "none", "--workers", "2",
            "--request-timeout", str(REQUEST_TIMEOUT_S), "--suppress-health-check", "all",
            "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "PHOTOSTORE_FUZZ_IMAGES": str(images),
           "PHOTOSTORE_FUZZ_PHOTO_IDS": ",".join(live.photo_ids)}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S)
    report = done.stdout + done.stderr
    # Failures first (the request bodies in them can be long binary: cut every line short).
    first = min((at for at in (report.find("ERRORS"), report.find("FAILURES")) if at >= 0), default=0)
    shown = "\n".join(line[:300] for line in report[first:].splitlines())
    assert done.returncode == 0, shown[:20000] + "\n" + live.stack.logs()[-4000:]
    tested = re.search(r"Tested: (\d+)", report)
    assert tested and int(tested.group(1)) == len(OPERATIONS), report[-4000:]


# The same server, a few things a fuzzer does not look at


def raw_headers(url: str, path: str) -> list[tuple[str, str]]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
    try:
        connection.request("GET", path)
        return connection.getresponse().getheaders()
    finally:
        connection.close()


def test_server_header_names_no_software(live):
    for path in ("/", "/static/app.js", f"{API}/photos", "/nothing-here"):
        servers = [value for name, value in raw_headers(live.url, path) if name.lower() == "server"]
        assert servers == ["photostore"], (path, servers)


def test_session_cookie_is_secure_behind_https_and_shared_by_the_workers(live):
    """gunicorn believes X-Forwarded-Proto (the ingress's): the cookie is then Secure, and the
    Origin to match is https. Every request on a new connection may reach either worker process."""
    client = requests.Session()
    signed_in = client.post(f"{live.url}{API}/session", json={"apiKey": live.key}, timeout=REQUEST_TIMEOUT_S,
                            headers={"X-Forwarded-Proto": "https", "Origin": live.url.replace("http:", "https:")})
    assert signed_in.status_code == 200, signed_in.text
    set_cookie = signed_in.headers["Set-Cookie"]
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in set_cookie.split(";")}
    token = signed_in.cookies[sessions.COOKIE]
    cookie = {"Cookie": f"{sessions.COOKIE}={token}", "Connection": "close"}
    for _ in range(8):
        assert requests.get(f"{live.url}{API}/photos", headers=cookie, timeout=REQUEST_TIMEOUT_S).status_code == 200
    assert requests.delete(f"{live.url}{API}/session", headers={**cookie, "Origin": live.url},
                           timeout=REQUEST_TIMEOUT_S).status_code == 200
    for _ in range(8):
        assert requests.get(f"{live.url}{API}/photos", headers=cookie, timeout=REQUEST_TIMEOUT_S).status_code == 401
