"""Each embed model on torch versus its shipped runtime, side by side in one table.

    .venv/bin/python bench/runtimes.py [--images 32] [--repeats 3]

CLIP is ViT-B-32 with random weights (the compute of the real one), saved to a checkpoint so
the real loading and export path runs; exports go to a temporary cache.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embed_svc.model import ClipModel, clip_backend, decode_image  # noqa: E402
from embed_svc.signals import LABEL_INPUT_PX, LabelModel, OcrModel, SentenceModel  # noqa: E402
from photostore.settings import Settings  # noqa: E402
from tests.photo_samples import SAMPLE_FILES  # noqa: E402
from tests.test_signals import sign  # noqa: E402

QUERY = "a photo of a cat on a sofa"


def best_seconds(call, repeats: int) -> float:
    call()  # warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def jpeg(image: Image.Image) -> bytes:
    import io
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def loaded(model):
    model.load()
    return model


def clip_rows(settings: Settings, images: list[bytes], repeats: int) -> list[tuple[str, str, str, str]]:
    exact = loaded(ClipModel(settings.model_copy(update={"clip_backend": "torch"})))
    fast = loaded(ClipModel(settings))
    rows = []
    exact_vectors, fast_vectors = np.array(exact.embed_images(images)), np.array(fast.embed_images(images))
    cosine = np.sum(exact_vectors * fast_vectors, axis=1).min()
    exact_s = best_seconds(lambda: exact.embed_images(images), repeats)
    fast_s = best_seconds(lambda: fast.embed_images(images), repeats)
    rows.append(("CLIP image, images/s", f"{len(images) / exact_s:.1f}", f"{len(images) / fast_s:.1f}",
                 f"{exact_s / fast_s:.2f}x, min cosine {cosine:.5f} ({fast.backend})"))

    model = exact._encoder._model  # today's query path: all 77 positions
    tokens = open_clip.get_tokenizer(settings.model_name)([QUERY])
    with torch.inference_mode():
        full_s = best_seconds(lambda: model.encode_text(tokens), repeats * 5)
    cut_s = best_seconds(lambda: exact.embed_texts([QUERY]), repeats * 5)
    fast_text_s = best_seconds(lambda: fast.embed_texts([QUERY]), repeats * 5)
    text_cosine = float(np.dot(exact.embed_texts([QUERY])[0], fast.embed_texts([QUERY])[0]))
    rows.append(("CLIP query, ms (77 tokens)", f"{full_s * 1e3:.1f}", f"{fast_text_s * 1e3:.1f}",
                 f"{full_s / fast_text_s:.1f}x; torch cut at end token {cut_s * 1e3:.1f} ms "
                 f"({full_s / cut_s:.1f}x); cosine {text_cosine:.5f}"))
    exact.close()
    fast.close()
    return rows


def label_rows(settings: Settings, repeats: int) -> list[tuple[str, str, str, str]]:
    photos = [decode_image(p.read_bytes(), i, 10**9, min_short_side=LABEL_INPUT_PX)
              for i, p in enumerate(SAMPLE_FILES[:16])]
    seconds, tops = {}, {}
    for backend in ("torch", "onnx"):
        model = loaded(LabelModel(settings.model_copy(update={"label_backend": backend})))
        run = lambda: [f.result() for f in model.submit(photos)]  # noqa: E731
        tops[backend] = [[name for name, _ in labels] for labels in run()]
        seconds[backend] = best_seconds(run, repeats)
        model.close()
    same = "identical" if tops["torch"] == tops["onnx"] else "DIFFERENT"
    return [("labels, images/s", f"{len(photos) / seconds['torch']:.1f}", f"{len(photos) / seconds['onnx']:.1f}",
             f"{seconds['torch'] / seconds['onnx']:.1f}x, top-5 {same}")]


def sentence_rows(settings: Settings, repeats: int) -> list[tuple[str, str, str, str]]:
    texts = ["tabby", "tiger cat", "Egyptian cat", "CAFE ROMA\nopen daily"] * 4
    seconds, vectors = {}, {}
    for backend in ("torch", "onnx"):
        model = loaded(SentenceModel(settings.model_copy(update={"sentence_backend": backend})))
        vectors[backend] = np.array(model.embed_texts(texts))
        seconds[backend] = best_seconds(lambda: model.embed_texts(texts), repeats)
        model.close()
    cosine = np.sum(vectors["torch"] * vectors["onnx"], axis=1).min()
    return [("sentences, texts/s", f"{len(texts) / seconds['torch']:.0f}", f"{len(texts) / seconds['onnx']:.0f}",
             f"{seconds['torch'] / seconds['onnx']:.1f}x, min cosine {cosine:.6f}")]


def ocr_rows(settings: Settings, repeats: int) -> list[tuple[str, str, str, str]]:
    from rapidocr_onnxruntime import RapidOCR

    big = Image.new("RGB", (4000, 3000), (120, 140, 110))
    big.paste(sign().resize((1920, 480)), (900, 1700))
    photos = {"12 MP": big, "small": Image.open(SAMPLE_FILES[2]).convert("RGB")}  # chelsea, 451x300
    today = RapidOCR(text_score=settings.ocr_min_confidence)  # copy <= 2000, detector upscales to 736
    rows = []
    for label, photo in photos.items():
        copy = photo.copy()
        copy.thumbnail((2000, 2000))
        today_s = best_seconds(lambda: today(copy), repeats)
        today_text = " ".join(t for _, t, _ in today(copy)[0] or ())
        for backend in ("onnxruntime", "openvino"):
            for side in (1280, 2000):
                model = loaded(OcrModel(settings.model_copy(update={"ocr_backend": backend, "ocr_max_side": side})))
                small = photo.copy()
                small.thumbnail((side, side))
                text = model.submit([small])[0].result().replace("\n", " ")
                seconds = best_seconds(lambda: model.submit([small])[0].result(), repeats)
                model.close()
                rows.append((f"OCR {label}, s/image, {backend} {side}px", f"{today_s:.2f}", f"{seconds:.2f}",
                             f"{today_s / seconds:.1f}x; text {text!r} (today {today_text!r})"))
    return rows


def idle_rss_mb(settings: Settings, **backends: str) -> float:
    """RSS of a fresh process holding every embed model loaded (after one call each)."""
    script = textwrap.dedent(f"""
        import re, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from photostore.settings import Settings
        from embed_svc.model import ClipModel
        from embed_svc.signals import ImageAnalyzer
        settings = Settings.model_validate_json({settings.model_copy(update=backends).model_dump_json()!r})
        clip, analyzer = ClipModel(settings), ImageAnalyzer(settings)
        for model in [clip] + [r.model for r in analyzer.roles]:
            model.load()
        photo = Path({str(SAMPLE_FILES[2])!r}).read_bytes()
        clip.embed_images([photo]); clip.embed_texts(["a cat"]); analyzer.analyze([photo])
        rss = re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
        print(int(rss) / 1024, "torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rss, torch_loaded = done.stdout.split()[-2:]  # after what the models' packages print
    return float(rss), torch_loaded == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="checkpoint and export cache (kept); default a new temp dir")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    checkpoint = work / "vit-b-32-random.pt"
    torch.save(model.state_dict(), checkpoint)
    del model
    settings = Settings(data_dir=work, model_name="ViT-B-32", model_pretrained=str(checkpoint))
    sources = [Image.open(p).convert("RGB") for p in SAMPLE_FILES]
    images = [jpeg(sources[i % len(sources)].resize((640, 480))) for i in range(args.images)]

    rows = clip_rows(settings, images, args.repeats) + label_rows(settings, args.repeats)
    rows += sentence_rows(settings, args.repeats) + ocr_rows(settings, args.repeats)
    before, before_torch = idle_rss_mb(settings, clip_backend="torch", label_backend="torch",
                                       sentence_backend="torch", ocr_backend="onnxruntime")
    after, after_torch = idle_rss_mb(settings)
    rows.append(("embed process RSS after load, MB", f"{before:.0f}", f"{after:.0f}",
                 f"torch imported: {before_torch} -> {after_torch}"))

    print(f"shipped CLIP backend here: {clip_backend(settings)}; {torch.get_num_threads()} torch threads")
    header = ("measure", "torch / today", "shipped", "ratio, agreement")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(3)]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])


if __name__ == "__main__":
    main()
