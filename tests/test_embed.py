"""EmbedService in-process on a free port, loading a tiny random-weight open_clip checkpoint
(CLIP only: tests/test_signals.py covers the labels, OCR and sentence models)."""
from __future__ import annotations

import dataclasses
import functools
import io
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import skimage.data
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from PIL import Image
from prometheus_client import REGISTRY

from embed_svc.server import serve
from embed_svc.service import SERVICE_NAME
from photos.v1 import embed_pb2, embed_pb2_grpc
from photostore.auth import bearer_metadata, new_api_key
from tests.harness import ClipInfo, add_user, clip_info, service_auth, start_auth_service
from photostore.server import GrpcService
from photostore.settings import Settings
from tests.tinyclip import TINY_EMBED_DIM, ReferenceClip, TinyClip, tiny_settings, write_tiny_checkpoint

pytestmark = pytest.mark.timeout(120)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


# Images ---------------------------------------------------------------------------------------

def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


@functools.cache
def sample_images() -> list[Image.Image]:
    """Real photos of different shapes, small enough to keep the tests quick."""
    return [Image.fromarray(skimage.data.chelsea()).resize((150, 100)),
            Image.fromarray(skimage.data.astronaut()).resize((96, 96)),
            Image.fromarray(skimage.data.coffee()).resize((80, 120)),
            Image.fromarray(skimage.data.camera()).resize((70, 70))]  # greyscale


def rotated_with_exif(img: Image.Image) -> bytes:
    """PNG stored rotated, with EXIF orientation 6 saying how to turn it upright again."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    return encode(img.transpose(Image.Transpose.ROTATE_90), "PNG", exif=exif)


# Harness --------------------------------------------------------------------------------------

@dataclasses.dataclass
class EmbedServer:
    settings: Settings
    svc: GrpcService
    channel: grpc.Channel
    auth: list  # the services' key: EmbedService is internal
    auth_svc: GrpcService
    user_auth: list  # user alice's key

    @property
    def stub(self) -> embed_pb2_grpc.EmbedServiceStub:
        return embed_pb2_grpc.EmbedServiceStub(self.channel)

    def info(self) -> ClipInfo:
        return clip_info(self.stub.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=self.auth))

    def health(self, service: str = SERVICE_NAME, timeout: float = 5.0) -> int:
        return health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout).status

    def embed_images(self, images: list[bytes]) -> embed_pb2.EmbedImagesResponse:
        return self.stub.EmbedImages(embed_pb2.EmbedImagesRequest(images=images), metadata=self.auth)

    def embed_texts(self, texts: list[str]) -> embed_pb2.EmbedTextResponse:
        return self.stub.EmbedText(embed_pb2.EmbedTextRequest(texts=texts), metadata=self.auth)


def clip_only_settings(tiny: TinyClip, data_dir, **overrides) -> Settings:
    """tiny_settings with the signal models off, so the service loads quickly, and CLIP on the
    exact torch fp32 backend (tests/test_runtimes.py checks the faster ones against it)."""
    return tiny_settings(tiny, data_dir, **{"signals_enabled": False, "clip_backend": "torch", **overrides})


def start_embed_server(settings: Settings) -> EmbedServer:
    """The service, with the AuthService it checks keys with, and user alice."""
    auth_svc, settings = start_auth_service(settings)
    _, key = add_user(settings, "alice")
    svc = serve(settings, settings.embed_port)
    return EmbedServer(settings, svc, grpc.insecure_channel(f"127.0.0.1:{svc.port}"), service_auth(settings),
                       auth_svc, bearer_metadata(key))


def stop_embed_server(server: EmbedServer) -> None:
    server.channel.close()
    server.svc.stop()
    server.auth_svc.stop()


def wait_for(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return result


def vectors_of(response) -> np.ndarray:
    return np.array([list(e.values) for e in response.embeddings], dtype=np.float32)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def violated_field(err: grpc.RpcError) -> str | None:
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyClip:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tinyclip"))


@pytest.fixture(scope="module")
def reference(tiny):
    return ReferenceClip(tiny)


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    server = start_embed_server(clip_only_settings(tiny, tmp_path_factory.mktemp("data"),
                                              model_batch_wait_ms=20))
    wait_for(lambda: server.info().ready)
    yield server
    stop_embed_server(server)


# Ready service ----------------------------------------------------------------------------------

def test_model_info_names_the_checkpoint(server, tiny):
    info = server.info()
    assert info.ready and info.reason == ""
    assert info.dimension == TINY_EMBED_DIM
    assert info.device == "cpu"
    assert info.model.startswith(f"{tiny.model_name}/{tiny.checkpoint_path.stem}-")
    assert len(info.model.rsplit("-", 1)[1]) == 12
    assert server.health() == SERVING
    assert server.health("") == SERVING
    [clip] = info.models
    assert (clip.role, clip.model, clip.ready, clip.dimension) == (
        embed_pb2.MODEL_ROLE_CLIP, info.model, True, TINY_EMBED_DIM)


def test_signal_calls_are_unavailable_when_the_signals_are_off(server):
    image = encode(sample_images()[0], "PNG")
    calls = ((server.stub.AnalyzeImages, embed_pb2.AnalyzeImagesRequest(images=[image])),
             (server.stub.EmbedText, embed_pb2.EmbedTextRequest(
                 texts=["a cat"], encoder=embed_pb2.TEXT_ENCODER_SENTENCE)))
    for call, request in calls:
        err = rpc_error(call, request, metadata=server.auth)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "PHOTOSTORE_SIGNALS_ENABLED" in err.details()
    # CLIP stays the default encoder, and answers to its explicit name too.
    explicit = server.stub.EmbedText(
        embed_pb2.EmbedTextRequest(texts=["a cat"], encoder=embed_pb2.TEXT_ENCODER_CLIP), metadata=server.auth)
    np.testing.assert_allclose(vectors_of(explicit), vectors_of(server.embed_texts(["a cat"])), atol=1e-6)


def test_text_vectors_match_open_clip(server, reference):
    texts = ["a cat on a sofa", "an astronaut", "a cup of coffee"]
    response = server.embed_texts(texts)
    vectors = vectors_of(response)
    assert response.model == server.info().model
    assert vectors.shape == (3, TINY_EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference.texts(texts), atol=1e-5)


def test_image_vectors_match_open_clip(server, reference):
    images = sample_images()
    payloads = [encode(images[0], "PNG"), encode(images[1], "PNG"), encode(images[2], "WEBP", lossless=True),
                encode(images[3], "PNG")]
    response = server.embed_images(payloads)
    vectors = vectors_of(response)
    assert response.model == server.info().model
    assert vectors.shape == (4, TINY_EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, reference.images(images), atol=1e-5)
    # Different photos, different vectors.
    assert np.max(np.abs(vectors[0] - vectors[1])) > 1e-3


def test_exif_orientation_is_applied_before_embedding(server, reference):
    upright = sample_images()[0]
    vectors = vectors_of(server.embed_images([rotated_with_exif(upright)]))
    np.testing.assert_allclose(vectors, reference.images([upright]), atol=1e-5)


def test_heic_is_decoded(server):
    vectors = vectors_of(server.embed_images([encode(sample_images()[1], "HEIF")]))
    assert vectors.shape == (1, TINY_EMBED_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors), 1.0, atol=1e-5)


def forward_passes(kind: str) -> tuple[float, float]:
    """(forward passes, items embedded) for `kind` so far, from the service's batch histogram."""
    labels = {"kind": kind}
    return (REGISTRY.get_sample_value("embed_batch_size_count", labels) or 0.0,
            REGISTRY.get_sample_value("embed_batch_size_sum", labels) or 0.0)


def test_concurrent_requests_are_batched_to_the_same_vectors(server):
    images = [encode(im, "PNG") for im in sample_images()]
    texts = [f"photo number {i}" for i in range(24)]
    alone_images = vectors_of(server.embed_images(images))
    alone_texts = vectors_of(server.embed_texts(texts))

    passes_before, items_before = forward_passes("text")
    with ThreadPoolExecutor(max_workers=8) as pool:
        image_calls = [pool.submit(server.embed_images, [data]) for data in images]
        text_calls = [pool.submit(server.embed_texts, [text]) for text in texts]
        bad_call = pool.submit(rpc_error, server.embed_images, [b"not an image"])
        together_images = np.concatenate([vectors_of(f.result()) for f in image_calls])
        together_texts = np.concatenate([vectors_of(f.result()) for f in text_calls])
        assert bad_call.result().code() == grpc.StatusCode.INVALID_ARGUMENT
    passes_after, items_after = forward_passes("text")
    np.testing.assert_allclose(together_images, alone_images, atol=1e-5)
    np.testing.assert_allclose(together_texts, alone_texts, atol=1e-5)
    assert items_after - items_before == len(texts)
    assert passes_after - passes_before < len(texts)  # single-text requests shared forward passes


def test_undecodable_image_is_invalid_argument_naming_its_index(server):
    good = encode(sample_images()[0], "PNG")
    truncated = good[: len(good) // 2]
    for bad in (b"not an image at all", truncated):
        err = rpc_error(server.embed_images, [good, bad, good])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "image 1 " in err.details()
        assert violated_field(err) == "images[1]"


@pytest.mark.parametrize("call, request_values, field", [
    ("embed_images", [], "images"),
    ("embed_images", [b"x"] * 65, "images"),
    ("embed_texts", [], "texts"),
    ("embed_texts", ["a cat"] * 257, "texts"),
    ("embed_texts", ["a cat", "  "], "texts[1]"),
])
def test_request_limits(server, call, request_values, field):
    err = rpc_error(getattr(server, call), request_values)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_field(err) == field


def test_formats_uploads_refuse_are_not_decoded_either(server):
    for fmt in ("TIFF", "BMP", "TGA"):
        err = rpc_error(server.embed_images, [encode(sample_images()[0], fmt)])
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, fmt
        assert violated_field(err) == "images[0]"


def test_a_users_key_may_read_model_info_but_not_embed(server):
    """EmbedService is internal: a user's key would buy seconds of CPU per call."""
    stub, image = server.stub, encode(sample_images()[0], "PNG")
    for method, request in ((stub.EmbedText, embed_pb2.EmbedTextRequest(texts=["a cat"])),
                            (stub.EmbedImages, embed_pb2.EmbedImagesRequest(images=[image])),
                            (stub.AnalyzeImages, embed_pb2.AnalyzeImagesRequest(images=[image]))):
        err = rpc_error(method, request, metadata=server.user_auth)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "SearchService" in err.details()
    assert stub.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=server.user_auth).models


def test_embedding_needs_an_api_key(server):
    stub = server.stub
    err = rpc_error(stub.EmbedText, embed_pb2.EmbedTextRequest(texts=["a cat"]))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    err = rpc_error(stub.GetModelInfo, embed_pb2.GetModelInfoRequest(),
                    metadata=bearer_metadata(new_api_key()))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_answers_while_a_long_batch_is_embedded(server):
    big = [encode(Image.fromarray(skimage.data.astronaut()), "PNG")] * 64  # 512x512 each
    done = threading.Event()

    def embed_for_a_while():
        try:
            for _ in range(3):
                server.embed_images(big)
        finally:
            done.set()

    worker = threading.Thread(target=embed_for_a_while)
    worker.start()
    answered_while_busy = 0
    while not done.is_set():
        started = time.monotonic()
        assert server.health(timeout=2.0) == SERVING
        assert time.monotonic() - started < 1.5
        answered_while_busy += not done.is_set()
        time.sleep(0.05)
    worker.join()
    assert answered_while_busy >= 3


# Weights missing, then arriving ---------------------------------------------------------------

def test_missing_weights_leave_the_service_up_until_they_arrive(tiny, tmp_path):
    checkpoint = tmp_path / "weights" / "later.pt"
    server = start_embed_server(clip_only_settings(tiny, tmp_path / "data", model_pretrained=str(checkpoint)))
    try:
        info = wait_for(lambda: "cannot load" in (i := server.info()).reason and i)  # first attempt failed
        assert not info.ready and info.dimension == 0
        assert str(checkpoint) in info.reason and "PHOTOSTORE_MODEL_PRETRAINED" in info.reason
        assert server.health() == NOT_SERVING
        assert server.health("") == SERVING
        for call, values in ((server.embed_texts, ["a cat"]),
                             (server.embed_images, [encode(sample_images()[0], "PNG")])):
            err = rpc_error(call, values)
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert str(checkpoint) in err.details()

        checkpoint.parent.mkdir()
        shutil.copy(tiny.checkpoint_path, checkpoint)
        wait_for(lambda: server.health() == SERVING)
        info = server.info()
        assert info.ready and info.reason == "" and info.dimension == TINY_EMBED_DIM
        assert info.model.startswith(f"{tiny.model_name}/later-")
        vectors = vectors_of(server.embed_texts(["a cat"]))
        np.testing.assert_allclose(np.linalg.norm(vectors), 1.0, atol=1e-5)
    finally:
        stop_embed_server(server)


def test_a_different_checkpoint_gets_a_different_model_id(server, tmp_path):
    other = write_tiny_checkpoint(tmp_path / "other", seed=1)  # same file name, other weights
    other_server = start_embed_server(clip_only_settings(other, tmp_path / "data"))
    try:
        theirs = wait_for(lambda: (i := other_server.info()).ready and i).model
        ours = server.info().model
        assert theirs != ours
        assert theirs.rsplit("-", 1)[0] == ours.rsplit("-", 1)[0]
    finally:
        stop_embed_server(other_server)
