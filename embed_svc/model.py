"""Models loaded once in the background, kept warm, and fed by batching inference threads;
the CLIP encoders, and the image decoding every model shares."""
from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import io
import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import open_clip
import pillow_heif
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from prometheus_client import Histogram

from photostore.settings import Settings

log = logging.getLogger(__name__)

IMAGE = "image"
TEXT = "text"

BATCH_SIZE = Histogram("embed_batch_size", "Items per forward pass", ["kind"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))


class ModelNotReadyError(Exception):
    """The model is not loaded (yet); the message says why."""


class ImageDecodeError(ValueError):
    """An input image cannot be decoded; `index` is its position in the request."""

    def __init__(self, index: int, detail: str):
        super().__init__(f"image {index} cannot be decoded: {detail}")
        self.index = index
        self.detail = detail


@functools.cache
def _register_heif() -> None:
    pillow_heif.register_heif_opener()


def decode_image(data: bytes, index: int, max_pixels: int) -> Image.Image:
    """Decodes one encoded image to RGB, EXIF orientation applied; raises ImageDecodeError."""
    _register_heif()
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise ImageDecodeError(index, f"{im.width}x{im.height} exceeds the pixel limit")
            return ImageOps.exif_transpose(im).convert("RGB")
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(index, "unknown or unsupported image format") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data, bombs, codec errors
        raise ImageDecodeError(index, str(e) or type(e).__name__) from None


def inference_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_torch_threads(settings: Settings) -> None:
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)


class InferenceModel(abc.ABC):
    """A model loaded once, in a background thread that retries until the weights load."""

    def __init__(self, retry_seconds: float):
        self._retry_seconds = retry_seconds
        self._ready = threading.Event()
        self._closed = threading.Event()
        self.reason = "loading model"
        self._batcher: Batcher | None = None  # the inference thread, started by _load

    @property
    @abc.abstractmethod
    def model_id(self) -> str: ...

    @abc.abstractmethod
    def _load(self) -> None:
        """Loads the weights; raises with a human reason when it cannot."""

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def require_ready(self) -> None:
        """Raises ModelNotReadyError saying why the model cannot be used now."""
        if not self.ready:
            raise ModelNotReadyError(self.reason or "model is not loaded")
        if self._closed.is_set():
            raise ModelNotReadyError("model is shutting down")

    def load(self) -> None:
        """Loads once; on failure keeps the reason for callers and raises."""
        started = time.monotonic()
        try:
            self._load()
        except Exception as e:
            self.reason = str(e)
            raise
        self.reason = ""
        self._ready.set()
        log.info("model %s ready (loaded in %.1fs)", self.model_id, time.monotonic() - started)

    def start_loading(self, on_ready: Callable[[], None] = lambda: None) -> threading.Thread:
        """Loads in a daemon thread, retrying every `retry_seconds`; calls on_ready once loaded."""
        thread = threading.Thread(target=self._load_until_ready, args=(on_ready,),
                                  name=f"load-{type(self).__name__}", daemon=True)
        thread.start()
        return thread

    def _load_until_ready(self, on_ready: Callable[[], None]) -> None:
        logged = ""
        while not self._closed.is_set():
            try:
                self.load()
            except Exception:  # noqa: BLE001 - the service stays up, not ready, and tries again
                if self.reason != logged:
                    log.warning("%s; retrying every %.0fs", self.reason, self._retry_seconds)
                    logged = self.reason
                self._closed.wait(self._retry_seconds)
                continue
            on_ready()
            return

    def close(self) -> None:
        self._closed.set()
        if self._batcher is not None:
            self._batcher.close()


@dataclasses.dataclass
class _Job:
    kind: str
    item: Any  # one input of that kind, ready for the handler
    future: Future


class Batcher:
    """One inference thread fed by a queue: it gathers the queued items into batches (up to
    batch_size, waiting batch_wait_ms after the first) and calls each kind's handler once per
    batch with that kind's items; the handler returns one result per item."""

    def __init__(self, name: str, handlers: dict[str, Callable[[list[Any]], Sequence[Any]]], *,
                 batch_size: int, batch_wait_ms: float):
        self._handlers = handlers
        self._batch_size = batch_size
        self._batch_wait_s = batch_wait_ms / 1000
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()  # no job lands behind the stop sentinel
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, kind: str, items: Sequence[Any]) -> list[Future]:
        futures = []
        with self._submit_lock:
            if self._closed:
                raise ModelNotReadyError("model is shutting down")
            for item in items:
                job = _Job(kind, item, Future())
                self._jobs.put(job)
                futures.append(job.future)
        return futures

    def run(self, kind: str, items: Sequence[Any]) -> list[Any]:
        return [f.result() for f in self.submit(kind, items)]

    def close(self) -> None:
        with self._submit_lock:
            self._closed = True
            self._jobs.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            for kind, handle in self._handlers.items():
                jobs = [j for j in batch if j.kind == kind]
                if jobs:
                    self._handle(kind, handle, jobs)

    def _next_batch(self) -> list[_Job] | None:
        """Blocks for the first job, then gathers more for up to batch_wait_ms; None at close."""
        first = self._jobs.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self._batch_wait_s
        while len(batch) < self._batch_size:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this batch
                break
            batch.append(job)
        return batch

    @staticmethod
    def _handle(kind: str, handle: Callable[[list[Any]], Sequence[Any]], jobs: list[_Job]) -> None:
        BATCH_SIZE.labels(kind).observe(len(jobs))
        try:
            results = handle([j.item for j in jobs])
        except Exception as e:  # noqa: BLE001 - reported to every caller of this batch
            log.exception("%s inference failed for a batch of %d", kind, len(jobs))
            for job in jobs:
                job.future.set_exception(e)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)


class ClipModel(InferenceModel):
    """open_clip image and text encoders; vectors are float32 and L2-normalised.

    Callers decode and tokenize on their own threads; one Batcher thread runs one forward
    pass per kind and batch.
    """

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self.device = inference_device()
        self.dimension = 0
        self._model_id = f"{settings.model_name}/{settings.model_pretrained}"
        self._model: Any = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._tokenizer: Callable[[Sequence[str]], torch.Tensor] | None = None

    @property
    def model_id(self) -> str:
        return self._model_id

    def _checkpoint_path(self) -> Path | None:
        """The local checkpoint `model_pretrained` names, or None for a hub tag."""
        name, pretrained = self._settings.model_name, self._settings.model_pretrained
        if open_clip.get_pretrained_cfg(name, pretrained):
            return None
        return Path(pretrained).expanduser()

    def _load(self) -> None:
        settings = self._settings
        name, pretrained = settings.model_name, settings.model_pretrained
        try:
            if settings.model_config_dir:
                open_clip.add_model_config(settings.model_config_dir)
            apply_torch_threads(settings)
            checkpoint = self._checkpoint_path()
            if checkpoint is not None:
                if not checkpoint.is_file():
                    raise FileNotFoundError(f"no checkpoint file at {checkpoint}")
                model_id = f"{name}/{checkpoint.stem}-{_sha256_prefix(checkpoint)}"
                pretrained = str(checkpoint)
            else:
                model_id = f"{name}/{pretrained}"
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=self.device)
            tokenizer = open_clip.get_tokenizer(name)
            model.eval()
            with torch.inference_mode():  # warm up; also tells the dimension
                dimension = model.encode_text(tokenizer(["a photo"]).to(self.device)).shape[-1]
        except Exception as e:
            raise RuntimeError(
                f"cannot load {name} weights '{settings.model_pretrained}': {e}; "
                "set PHOTOSTORE_MODEL_PRETRAINED to a local checkpoint path") from e
        self._model, self._preprocess, self._tokenizer = model, preprocess, tokenizer
        self._model_id, self.dimension = model_id, int(dimension)
        self._batcher = Batcher(
            "inference-clip",
            {IMAGE: functools.partial(self._encode, model.encode_image),
             TEXT: functools.partial(self._encode, model.encode_text)},
            batch_size=settings.model_batch_size, batch_wait_ms=settings.model_batch_wait_ms)

    # Inputs, prepared on the caller's thread.

    def preprocess_image(self, data: bytes, index: int = 0) -> torch.Tensor:
        """Decodes (EXIF orientation applied) and transforms one image; raises ImageDecodeError."""
        self.require_ready()
        return self._preprocess(decode_image(data, index, self._settings.max_image_pixels))

    def tokenize(self, text: str) -> torch.Tensor:
        self.require_ready()
        return self._tokenizer([text])[0]

    # Embedding through the inference thread.

    def embed_images(self, images: Sequence[bytes]) -> list[np.ndarray]:
        """Raises ImageDecodeError naming the first undecodable image, or ModelNotReadyError."""
        return self._run(IMAGE, [self.preprocess_image(data, i) for i, data in enumerate(images)])

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._run(TEXT, [self.tokenize(t) for t in texts])

    def _run(self, kind: str, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        self.require_ready()
        return self._batcher.run(kind, tensors)

    @torch.inference_mode()
    def _encode(self, encode: Callable[[torch.Tensor], torch.Tensor],
                tensors: list[torch.Tensor]) -> list[np.ndarray]:
        features = encode(torch.stack(tensors).to(self.device))
        vectors = torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
        return list(vectors.astype(np.float32))


def _sha256_prefix(path: Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()[:length]
