"""The second signal with the real packaged models (EfficientNet-Lite0 labels, RapidOCR, MiniLM)
through an in-process EmbedService, on real sample photos."""
from __future__ import annotations

import re
import shutil
from itertools import takewhile

import grpc
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from embed_svc.colours import PROTOTYPES
from embed_svc.objects import COCO_CLASSES
from photos.v1 import embed_pb2
from photostore.convert import role_name
from tests.photo_samples import SKIMAGE_DIR, SKLEARN_DIR
from tests.test_embed import (
    SERVING, encode, rotated_with_exif, rpc_error, start_embed_server, stop_embed_server,
    vectors_of, violated_field, wait_for)
from tests.tinyclip import tiny_settings

pytestmark = pytest.mark.timeout(180)

TEXT_MODEL = "efficientnet-lite0+rapidocr-1280px+ssd-mobilenet-v2-coco+all-MiniLM-L6-v2"
SENTENCE_DIM = 384
CAT_LABELS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def png(img: Image.Image) -> bytes:
    return encode(img, "PNG")


def chelsea() -> Image.Image:
    return Image.fromarray(skimage.data.chelsea())


def china() -> bytes:
    return (SKLEARN_DIR / "china.jpg").read_bytes()


def sign(text: str = "CAFE ROMA") -> Image.Image:
    """Big black text on white, as on a shop sign."""
    img = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(img).text((20, 40), text, fill="black", font=ImageFont.load_default(size=64))
    return img


@pytest.fixture(scope="module")
def late_checkpoint(tmp_path_factory):
    """Where the service looks for CLIP weights; missing until the first test copies them there."""
    return tmp_path_factory.mktemp("weights") / "later.pt"


@pytest.fixture(scope="module")
def server(tiny_clip, late_checkpoint, tmp_path_factory):
    server = start_embed_server(tiny_settings(tiny_clip, tmp_path_factory.mktemp("data"), clip_backend="torch",
                                              model_pretrained=str(late_checkpoint)))
    wait_for(lambda: all(m.ready for m in server.info().models if m.role != embed_pb2.MODEL_ROLE_CLIP), timeout_s=120)
    yield server
    stop_embed_server(server)


# Labels after the ImageNet ones: objects ("cat", "2 dogs"), colours, and the OCR tags.
EVIDENCE = set(COCO_CLASSES.values()) | set(PROTOTYPES) | {"text", "document"}
COUNTED = re.compile(r"\d+ ")


def imagenet_labels(labels) -> list:
    """The ImageNet labels, which come first."""
    return list(takewhile(lambda label: label.text not in EVIDENCE and not COUNTED.match(label.text), labels))


def analyze(server, images: list[bytes]) -> embed_pb2.AnalyzeImagesResponse:
    return server.stub.AnalyzeImages(embed_pb2.AnalyzeImagesRequest(images=images), metadata=server.auth)


def sentence_vectors(server, texts: list[str]) -> np.ndarray:
    response = server.stub.EmbedText(
        embed_pb2.EmbedTextRequest(texts=texts, encoder=embed_pb2.TEXT_ENCODER_SENTENCE), metadata=server.auth)
    assert response.model == TEXT_MODEL
    return vectors_of(response)


def text_vectors(response: embed_pb2.AnalyzeImagesResponse) -> np.ndarray:
    return np.array([list(a.text_embedding.values) for a in response.analyses], np.float32)


def test_signals_serve_before_the_clip_weights_arrive(server, tiny_clip, late_checkpoint):
    info = server.info()
    roles = {role_name(m.role): m for m in info.models}
    assert list(roles) == ["clip", "labels", "ocr", "sentence"]
    assert not info.ready and "cannot load" in info.reason and not roles["clip"].ready
    assert roles["clip"].reason == info.reason
    assert [(m.model, m.ready, m.reason, m.dimension) for m in info.models[1:]] == [
        ("efficientnet-lite0", True, "", 0), ("rapidocr-1280px", True, "", 0), (TEXT_MODEL, True, "", SENTENCE_DIM)]
    assert server.health() == SERVING  # useful with the signals alone
    assert rpc_error(server.embed_texts, ["a cat"]).code() == grpc.StatusCode.UNAVAILABLE
    assert analyze(server, [png(chelsea())]).model == TEXT_MODEL

    shutil.copy(tiny_clip.checkpoint_path, late_checkpoint)
    info = wait_for(lambda: (i := server.info()).ready and i)
    assert info.models[0].ready and info.models[0].model == info.model and info.dimension > 0
    assert all(m.ready for m in info.models)


def test_labels_ocr_and_text_vectors_of_real_photos(server):
    response = analyze(server, [png(chelsea()), china(), png(sign())])
    assert response.model == TEXT_MODEL
    cat, temple, text = response.analyses

    for analysis in response.analyses:
        scores = [label.score for label in imagenet_labels(analysis.labels)]
        assert len(scores) <= 5 and all(s >= 0.05 for s in scores)
        assert scores == sorted(scores, reverse=True)
    assert cat.labels[0].text in CAT_LABELS
    assert {label.text for label in temple.labels} & {"palace", "monastery", "bell cote", "stupa", "church"}
    assert text.ocr_text.split() == ["CAFE", "ROMA"]
    assert cat.ocr_text == "" and temple.ocr_text == ""

    vectors = text_vectors(response)
    assert vectors.shape == (3, SENTENCE_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Each query finds its photo first.
    queries = sentence_vectors(server, ["a cat", "a temple", "cafe roma"])
    assert list(np.argmax(queries @ vectors.T, axis=1)) == [0, 1, 2]


def recipe_vector(server, analysis: embed_pb2.ImageAnalysis) -> np.ndarray:
    """normalize(sum over the top 5 ImageNet labels and the objects of sqrt(score) * emb(name), the
    colours at a fifth of that, + emb(ocr_text))."""
    imagenet = imagenet_labels(analysis.labels)
    evidence = [label for label in analysis.labels[len(imagenet):] if label.text not in ("text", "document")]
    weighted = [(label.text, label.score ** 0.5 * (0.2 if label.text in PROTOTYPES else 1.0))
                for label in imagenet[:5] + evidence]
    weighted += [(analysis.ocr_text, 1.0)] if analysis.ocr_text else []
    vectors = sentence_vectors(server, [text for text, _ in weighted])
    total = np.sum([weight * v for (_, weight), v in zip(weighted, vectors)], axis=0)
    return total / np.linalg.norm(total)


def test_text_vector_follows_the_recipe(server):
    cat, text = analyze(server, [png(chelsea()), png(sign())]).analyses
    for analysis in (cat, text):
        np.testing.assert_allclose(np.array(analysis.text_embedding.values), recipe_vector(server, analysis),
                                   atol=1e-4)


def test_analysis_carries_objects_colours_and_text_tags(server):
    """After the ImageNet labels: objects with counts and colours; "text" when OCR read words.
    Without text (skip_text: the searchable-first stage), no objects and no tags."""
    horse = Image.open(SKIMAGE_DIR / "horse.png").convert("RGB")
    horses = Image.new("RGB", (horse.width * 2, horse.height))
    horses.paste(horse, (0, 0))
    horses.paste(horse.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (horse.width, 0))
    photos = [png(horses), png(sign()), png(chelsea())]

    def evidence(analyses) -> list[list[tuple[str, float]]]:
        return [[(label.text, pytest.approx(label.score, abs=0.08))
                 for label in a.labels[len(imagenet_labels(a.labels)):]] for a in analyses]

    assert evidence(analyze(server, photos).analyses) == [
        [("2 horses", 0.95), ("white", 0.65), ("black", 0.3)], [("white", 0.9), ("text", 1.0)],
        [("cat", 0.9), ("brown", 0.77), ("grey", 0.21)]]
    fast = server.stub.AnalyzeImages(embed_pb2.AnalyzeImagesRequest(images=photos, skip_text=True),
                                     metadata=server.auth)
    assert evidence(fast.analyses) == [[("white", 0.65), ("black", 0.3)], [("white", 0.9)],
                                       [("brown", 0.77), ("grey", 0.21)]]


def test_exif_orientation_is_applied_before_analysis(server):
    upright, rotated = analyze(server, [png(sign()), rotated_with_exif(sign())]).analyses
    assert rotated.ocr_text == upright.ocr_text
    assert [label.text for label in rotated.labels] == [label.text for label in upright.labels]


def test_sentence_vectors_are_unit_norm_and_close_for_close_meanings(server):
    vectors = sentence_vectors(server, ["a cat", "a kitten", "a rocket"])
    assert vectors.shape == (3, SENTENCE_DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_undecodable_image_is_invalid_argument_naming_its_index(server):
    good = png(chelsea().resize((90, 60)))
    err = rpc_error(analyze, server, [good, good, b"not an image"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "image 2 " in err.details() and violated_field(err) == "images[2]"


@pytest.mark.parametrize("count", [0, 65])
def test_image_count_limits(server, count):
    err = rpc_error(analyze, server, [b"x"] * count)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_field(err) == "images"


def test_missing_sentence_model_leaves_analysis_unavailable_with_the_reason(tiny_clip, tmp_path):
    missing = tmp_path / "no-such-model"
    server = start_embed_server(tiny_settings(
        tiny_clip, tmp_path / "data", model_pretrained=str(tmp_path / "missing.pt"), ocr_enabled=False,
        sentence_model_path=missing))
    try:
        info = wait_for(lambda: (i := server.info()).models[-1].reason.startswith("cannot load") and i)
        assert [role_name(m.role) for m in info.models] == ["clip", "labels", "sentence"]
        assert info.models[-1].model == "efficientnet-lite0+no-such-model"
        wait_for(lambda: server.info().models[1].ready)
        assert server.health() == SERVING  # the label model is ready
        err = rpc_error(analyze, server, [png(chelsea())])
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "sentence model" in err.details() and str(missing) in err.details()
        err = rpc_error(sentence_vectors, server, ["a cat"])
        assert err.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        stop_embed_server(server)
