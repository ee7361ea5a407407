"""Each fast runtime agrees with the exact torch model on fixed inputs; exports are cached and
redone when corrupt; the embed process runs without torch on the defaults."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from embed_svc import runtime
from embed_svc.model import ClipModel, clip_backend, decode_image
from embed_svc.runtime import INDEX, OCR, QUERY, InferenceGate
from embed_svc.signals import LABEL_INPUT_PX, ImageAnalyzer, LabelModel, OcrModel, SentenceModel
from embed_svc.torch_clip import TextUntilEot
from photostore.settings import Settings
from tests.photo_samples import SAMPLE_FILES
from tests.test_embed import encode, sample_images
from tests.test_signals import sign
from tests.tinyclip import ReferenceClip, tiny_settings

pytestmark = pytest.mark.timeout(600)

QUERIES = ["a cat on a sofa", "an astronaut", "a cup of coffee", "CAFE ROMA", "photo number 12"]
FAST_CLIP_BACKENDS = ["openvino-bf16", "onnx-int8"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: each model is exported once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def reference(tiny_clip):
    return ReferenceClip(tiny_clip)


def loaded(model):
    model.load()
    return model


def cosines(a, b) -> np.ndarray:
    return np.sum(np.asarray(a) * np.asarray(b), axis=1)


# CLIP ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", FAST_CLIP_BACKENDS)
def test_fast_clip_backends_agree_with_torch_fp32(backend, tiny_clip, cache, reference, tmp_path):
    model = loaded(ClipModel(tiny_settings(tiny_clip, tmp_path, clip_backend=backend, model_cache_dir=cache)))
    try:
        images = sample_images()
        image_vectors = model.embed_images([encode(im, "PNG") for im in images])
        text_vectors = model.embed_texts(QUERIES)
    finally:
        model.close()
    assert model.model_id.startswith(f"{tiny_clip.model_name}/{tiny_clip.checkpoint_path.stem}-")
    assert model.model_id.endswith(f"@{backend}")  # never mixed with fp32 vectors
    assert cosines(image_vectors, reference.images(images)).min() >= 0.999
    assert cosines(text_vectors, reference.texts(QUERIES)).min() >= 0.999


def test_torch_backend_keeps_the_exact_model_id(tiny_clip, tmp_path):
    model = loaded(ClipModel(tiny_settings(tiny_clip, tmp_path, clip_backend="torch")))
    model.close()
    assert "@" not in model.model_id and len(model.model_id.rsplit("-", 1)[1]) == 12


@torch.no_grad()
def test_text_cut_at_the_end_token_gives_the_full_context_vector(tiny_clip):
    model = open_clip.create_model(tiny_clip.model_name, pretrained=str(tiny_clip.checkpoint_path)).eval()
    tokens = open_clip.get_tokenizer(tiny_clip.model_name)(QUERIES)
    cut = tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]
    assert cut.shape[1] < tokens.shape[1]
    np.testing.assert_allclose(TextUntilEot(model)(cut).numpy(), model.encode_text(tokens).numpy(), atol=1e-5)


def test_auto_backend_follows_the_cpu(monkeypatch):
    auto = Settings(clip_backend="auto")
    for flags, backend in (({"amx_bf16"}, "openvino-bf16"), ({"avx512_vnni"}, "onnx-int8"), (set(), "torch")):
        monkeypatch.setattr("embed_svc.model.cpu_flags", lambda flags=flags: frozenset(flags))
        assert clip_backend(auto) == backend
    assert clip_backend(Settings(clip_backend="torch")) == "torch"


def test_export_is_cached_and_a_corrupt_export_is_redone(tiny_clip, tmp_path, monkeypatch):
    settings = tiny_settings(tiny_clip, tmp_path, clip_backend="onnx-int8", model_cache_dir=tmp_path / "models")
    first = loaded(ClipModel(settings))
    expected = first.embed_texts(QUERIES)
    first.close()
    [directory] = [p for p in (tmp_path / "models").iterdir() if p.is_dir()]  # beside its .lock
    assert directory.name.endswith("@onnx-int8")
    manifest = json.loads((directory / runtime.MANIFEST).read_text())
    assert {"image.onnx", "text.onnx", "tokenizer.json"} <= set(manifest["files"])

    real_run = subprocess.run
    with monkeypatch.context() as patched:  # a second load exports nothing
        patched.setattr(runtime.subprocess, "run", lambda *a, **k: pytest.fail("exported again"))
        second = loaded(ClipModel(settings))
        np.testing.assert_allclose(second.embed_texts(QUERIES), expected, atol=1e-6)
        second.close()

    (directory / "text.onnx").write_bytes(b"not a model")
    exports = []
    monkeypatch.setattr(runtime.subprocess, "run", lambda *a, **k: exports.append(a) or real_run(*a, **k))
    third = loaded(ClipModel(settings))
    np.testing.assert_allclose(third.embed_texts(QUERIES), expected, atol=1e-6)
    third.close()
    assert len(exports) == 1


# Labels, sentences, OCR ---------------------------------------------------------------------------

def sample_photos() -> list[Image.Image]:
    return [decode_image(path.read_bytes(), i, 10**9, min_short_side=LABEL_INPUT_PX)
            for i, path in enumerate(SAMPLE_FILES)]


def test_label_onnx_gives_the_top5_of_torch(cache, tmp_path):
    photos = sample_photos()
    labels = {}
    for backend in ("onnx", "torch"):
        model = loaded(LabelModel(Settings(data_dir=tmp_path, model_cache_dir=cache, label_backend=backend,
                                           label_min_score=0.0, torch_threads=1)))
        labels[backend] = [f.result() for f in model.submit(photos)]
        model.close()
    for onnx_labels, torch_labels in zip(labels["onnx"], labels["torch"]):
        assert [name for name, _ in onnx_labels] == [name for name, _ in torch_labels]
        np.testing.assert_allclose([p for _, p in onnx_labels], [p for _, p in torch_labels], atol=1e-4)


def test_sentence_onnx_matches_sentence_transformers(cache, tmp_path):
    texts = ["a cat", "tabby, tiger cat", "CAFE ROMA\nopen daily", "a rocket " * 200]  # the last is truncated
    vectors = {}
    for backend in ("onnx", "torch"):
        model = loaded(SentenceModel(Settings(data_dir=tmp_path, model_cache_dir=cache, sentence_backend=backend,
                                              torch_threads=1)))
        vectors[backend] = model.embed_texts(texts)
        model.close()
    assert cosines(vectors["onnx"], vectors["torch"]).min() >= 0.9999


def sign_in_a_big_photo() -> Image.Image:
    """The shop sign at three times its size, somewhere in a 12 MP photo."""
    photo = Image.new("RGB", (4000, 3000), (120, 140, 110))
    big_sign = sign()
    photo.paste(big_sign.resize((big_sign.width * 3, big_sign.height * 3)), (900, 1700))
    return photo


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_ocr_reads_the_sign_at_the_max_side(backend, tmp_path):
    model = loaded(OcrModel(Settings(data_dir=tmp_path, ocr_backend=backend, torch_threads=1)))
    try:
        big = sign_in_a_big_photo()
        big.thumbnail((model._settings.ocr_max_side,) * 2)
        texts = [f.result() for f in model.submit([sign(), big])]
    finally:
        model.close()
    assert model.model_id == "rapidocr-1280px"
    assert [t.split() for t in texts] == [["CAFE", "ROMA"]] * 2


def test_analyze_without_reading_text_runs_no_ocr(tiny_clip, cache, tmp_path):
    analyzer = ImageAnalyzer(Settings(data_dir=tmp_path, model_cache_dir=cache, torch_threads=1))
    for role in analyzer.roles:
        role.model.load()
    photos = [encode(sign(), "PNG"), (SAMPLE_FILES[0]).read_bytes()]
    try:
        with_text = analyzer.analyze(photos)
        analyzer.ocr.submit = lambda images: pytest.fail("OCR ran")
        analyzer.objects.submit = lambda images: pytest.fail("object detection ran")
        without_text = analyzer.analyze(photos, read_text=False)
    finally:
        analyzer.close()
    assert with_text[0].ocr_text.split() == ["CAFE", "ROMA"]
    assert [a.ocr_text for a in without_text] == ["", ""]
    # The same ImageNet labels and colours, without the objects and OCR tags.
    assert [a.labels for a in without_text] == [[label for label in a.labels if label in without.labels]
                                                for a, without in zip(with_text, without_text)]
    assert ("person", pytest.approx(0.77, abs=0.1)) in with_text[1].labels and ("text", 1.0) in with_text[0].labels
    assert without_text[1].text_vector is not None  # from the photo's labels alone


def test_embed_process_on_the_defaults_never_imports_torch(tiny_clip, cache, tmp_path):
    """Every model loaded on the defaults and used, in a fresh interpreter; the exports it needs
    run in their own subprocesses."""
    script = f"""
import sys
from pathlib import Path
from photostore.settings import Settings
from embed_svc.model import ClipModel
from embed_svc.signals import ImageAnalyzer
settings = Settings(data_dir=Path({str(tmp_path)!r}), model_cache_dir=Path({str(cache)!r}),
                    model_name={tiny_clip.model_name!r}, model_config_dir=Path({str(tiny_clip.config_dir)!r}),
                    model_pretrained={str(tiny_clip.checkpoint_path)!r})
clip, analyzer = ClipModel(settings), ImageAnalyzer(settings)
for model in [clip] + [r.model for r in analyzer.roles]:
    model.load()
photo = Path({str(SAMPLE_FILES[0])!r}).read_bytes()
clip.embed_images([photo]); clip.embed_texts(["a cat"]); analyzer.analyze([photo])
print(clip.model_id, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    model_id, torch_imported = done.stdout.split()
    assert model_id.endswith("@" + clip_backend(Settings()))
    assert torch_imported == "False"


# The inference gate ---------------------------------------------------------------------------------

def test_gate_runs_one_job_at_a_time_highest_priority_first():
    gate = InferenceGate()
    order = []

    def job(priority: int, name: str) -> threading.Thread:
        def run():
            with gate.hold(priority):
                order.append(name)
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    with gate.hold(INDEX):
        threads = []
        for priority, name in ((OCR, "ocr"), (INDEX, "image"), (QUERY, "query"), (OCR, "ocr 2")):
            threads.append(job(priority, name))
            while gate.waiting < len(threads):  # until it queues behind the held gate
                pass
    for thread in threads:
        thread.join()
    assert order == ["query", "image", "ocr", "ocr 2"]


def test_gate_frees_the_models_working_memory_once_inference_idles():
    class Model:
        def __init__(self):
            self.released = 0

        def release_memory(self):
            assert gate._busy  # no pass runs meanwhile
            self.released += 1

    gate = InferenceGate(idle_s=0.2)
    model, dropped = Model(), Model()
    gate.on_idle(model)
    gate.on_idle(dropped)
    del dropped  # a model that is gone is not kept alive by the gate
    for _ in range(3):  # a burst: released once, after the last pass
        with gate.hold(QUERY):
            pass
    deadline = time.monotonic() + 30
    while model.released == 0:
        assert time.monotonic() < deadline, "the idle gate released nothing"
        time.sleep(0.02)
    with gate.hold(QUERY):  # a pass after the release still runs
        pass
    while model.released == 1:
        assert time.monotonic() < deadline, "the idle gate released nothing after the next pass"
        time.sleep(0.02)
    assert model.released == 2 and len(gate._idle_models) == 1
