"""Models loaded once in the background, kept warm, and fed by batching inference threads;
the CLIP encoders on their fastest runtime, and the image decoding every model shares.

Torch is imported only where a torch backend is chosen (embed_svc.torch_clip)."""
from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Protocol, Sequence, TypeVar

import numpy as np
from PIL import Image
from prometheus_client import Histogram

from embed_svc.copies import UndecodableImageError, decode
from embed_svc.runtime import (
    GATE, INDEX, QUERY, cpu_flags, exported, file_sha256, onnx_runner, openvino_available, openvino_runner)
from photostore.memory import release_memory
from photostore.settings import Settings

log = logging.getLogger(__name__)

IMAGE = "image"
TEXT = "text"

BATCH_SIZE = Histogram("embed_batch_size", "Items per forward pass", ["kind"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
INFERENCE_SECONDS = Histogram("embed_inference_seconds", "Time of one batch's forward pass, by kind",
                              ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class ModelNotReadyError(Exception):
    """The model is not loaded (yet); the message says why."""


class ImageDecodeError(ValueError):
    """An input image cannot be decoded; `index` is its position in the request."""

    def __init__(self, index: int, detail: str):
        super().__init__(f"image {index} cannot be decoded: {detail}")
        self.index = index
        self.detail = detail


def decode_image(data: bytes, index: int, max_pixels: int, min_short_side: int = 0,
                 min_long_side: int = 0) -> Image.Image:
    """Decodes one encoded image to RGB, EXIF orientation applied; raises ImageDecodeError.

    With min_short_side, a JPEG may decode at 1/2, 1/4 or 1/8 size (in the DCT, much faster)
    while its sides stay at least min_short_side and min_long_side.
    """
    def draft_scale(width: int, height: int) -> float:
        scale = max(min_short_side / min(width, height), min_long_side / max(width, height))
        return scale if min_short_side else 1.0

    try:
        return decode(data, max_pixels, draft_scale)
    except UndecodableImageError as e:
        raise ImageDecodeError(index, str(e)) from None


class InferenceModel(abc.ABC):
    """A model loaded once, in a background thread that retries until the weights load."""

    # The image size it reads, in pixels (short side, or long side for OCR); 0: no image input.
    image_size = 0

    def __init__(self, retry_seconds: float):
        self._retry_seconds = retry_seconds
        self._ready = threading.Event()
        self._closed = threading.Event()
        self.reason = "loading model"
        self._batcher: Batcher | None = None  # the inference thread, started by _load
        self._unloading: list[IdleUnloading] = []

    @property
    @abc.abstractmethod
    def model_id(self) -> str: ...

    @abc.abstractmethod
    def _load(self) -> None:
        """Loads the weights; raises with a human reason when it cannot."""

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def engines_loaded(self) -> bool:
        """Its engines are in memory (False after IdleUnloading dropped one; still ready)."""
        return all(engine.loaded for engine in self._unloading)

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
            if self._closed.is_set():  # closed while it loaded: close what the load started
                self._close_batcher()
                return
            on_ready()
            return

    def close(self) -> None:
        """Stops inference; a load under way (in native code: it cannot be interrupted) finishes
        in its thread and then closes what it started."""
        self._closed.set()
        self._close_batcher()

    def _close_batcher(self) -> None:
        # Called by close() and by a load that ends after it: either sees the other's write (or
        # both close it, which is harmless).
        if self._batcher is not None:
            self._batcher.close()
        for engine in self._unloading:
            engine.close()

    def _unloading_when_idle(self, name: str, load: Callable[[], Engine], ttl_s: float) -> IdleUnloading[Engine]:
        """The engine `load` makes, dropped after ttl_s unused (IdleUnloading); closed with the model."""
        engine = IdleUnloading(name, load, ttl_s)
        self._unloading.append(engine)
        return engine


Engine = TypeVar("Engine")
UNLOAD_CHECK_S = 10.0


class IdleUnloading(Generic[Engine]):
    """A model's loaded engine, dropped once unused for `ttl_s` and loaded again when next wanted:
    what the later text stage runs holds no memory while no photo waits for it. 0 keeps it loaded."""

    def __init__(self, name: str, load: Callable[[], Engine], ttl_s: float):
        self._name = name
        self._load = load
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._engine: Engine | None = load()
        self._last_used = time.monotonic()
        self._closed = threading.Event()
        if ttl_s > 0:
            threading.Thread(target=self._unload_when_idle, name=f"unload-{name}", daemon=True).start()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def ensure_loaded(self) -> None:
        """Loads it again if it was dropped: on the caller's thread, before inference is queued, so
        the reload holds up no query waiting for the inference gate."""
        with self.using():
            pass

    @contextlib.contextmanager
    def using(self) -> Iterator[Engine]:
        with self._lock:
            if self._engine is None:
                started = time.monotonic()
                self._engine = self._load()
                log.info("%s loaded again (%.1fs)", self._name, time.monotonic() - started)
            try:
                yield self._engine
            finally:
                self._last_used = time.monotonic()

    def close(self) -> None:
        self._closed.set()

    def _unload_when_idle(self) -> None:
        while not self._closed.wait(min(self._ttl_s, UNLOAD_CHECK_S)):
            with self._lock:
                unload = self._engine is not None and time.monotonic() - self._last_used >= self._ttl_s
                if unload:
                    self._engine = None
            if unload:
                release_memory()
                log.info("%s unloaded after %.0fs unused", self._name, self._ttl_s)


@dataclasses.dataclass
class _Job:
    kind: str
    item: Any  # one input of that kind, ready for the handler
    future: Future


class Batcher:
    """One inference thread fed by a queue: it gathers the queued items into batches (up to
    batch_size, waiting batch_wait_ms after the first) and calls each kind's handler once per
    batch with that kind's items; the handler returns one result per item. Each call waits for
    the process-wide inference gate at its kind's priority (runtime.QUERY, INDEX or OCR)."""

    def __init__(self, name: str, handlers: dict[str, Callable[[list[Any]], Sequence[Any]]], *,
                 priorities: dict[str, int], batch_size: int, batch_wait_ms: float):
        self._handlers = handlers
        self._priorities = priorities
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
                    with GATE.hold(self._priorities[kind]):
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
            with INFERENCE_SECONDS.labels(kind).time():
                results = handle([j.item for j in jobs])
        except Exception as e:  # noqa: BLE001 - reported to every caller of this batch
            log.exception("%s inference failed for a batch of %d", kind, len(jobs))
            for job in jobs:
                job.future.set_exception(e)
            return
        for job, result in zip(jobs, results):
            job.future.set_result(result)


class ClipEncoder(Protocol):
    """One runtime's CLIP: inputs prepared on callers' threads, features (not normalised) batched."""
    device: str

    def preprocess(self, image: Image.Image) -> np.ndarray: ...

    def tokenize(self, text: str) -> np.ndarray:
        """Token ids, cut after the end token where the text tower allows."""

    def encode_images(self, pixels: np.ndarray) -> np.ndarray: ...

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray: ...


class ExportedClip:
    """CLIP exported by embed_svc.export, on OpenVINO (bf16) or ONNX Runtime (int8); no torch."""
    device = "cpu"

    def __init__(self, directory: Path, manifest: dict[str, Any], backend: str, settings: Settings):
        from tokenizers import Tokenizer

        if backend == "openvino-bf16":
            self._image, self._text = (openvino_runner(directory / f"{tower}.xml", settings, "bf16")
                                       for tower in ("image", "text"))
        else:
            self._image, self._text = (onnx_runner(directory / f"{tower}.onnx", settings)
                                       for tower in ("image", "text"))
        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._end_id = self._tokenizer.token_to_id("<end_of_text>")
        self._context_length = manifest["context_length"]
        self._size = manifest["image_size"]
        self._mean, self._std = manifest["mean"], manifest["std"]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return resize_crop_normalize(image, self._size, Image.Resampling.BICUBIC, self._mean, self._std)

    def tokenize(self, text: str) -> np.ndarray:
        ids = self._tokenizer.encode(text).ids[: self._context_length]
        ids[-1] = self._end_id  # a cut text still ends with the end token
        return np.array(ids, np.int64)

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        return self._image(pixels)[0]

    def encode_texts(self, tokens: np.ndarray) -> np.ndarray:
        return self._text(tokens)[0]


def resize_crop_normalize(image: Image.Image, size: int, resample: Image.Resampling,
                          mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """torchvision's Resize(size) (shortest side), CenterCrop(size), ToTensor and Normalize on a
    PIL image, in PIL and numpy: float32 channels first."""
    width, height = image.size
    short, long = sorted(image.size)
    long = int(size * long / short)
    resized = image.resize((size, long) if width <= height else (long, size), resample)
    left, top = int(round((resized.width - size) / 2.0)), int(round((resized.height - size) / 2.0))
    pixels = np.asarray(resized.crop((left, top, left + size, top + size)), np.float32) / np.float32(255)
    return ((pixels - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


def clip_backend(settings: Settings) -> str:
    """settings.clip_backend with "auto" resolved: OpenVINO bf16 where the CPU has bf16 and
    openvino imports, else ONNX Runtime int8 where the CPU has int8 dot products (VNNI), else torch."""
    if settings.clip_backend != "auto":
        return settings.clip_backend
    flags = cpu_flags()
    if flags & {"amx_bf16", "avx512_bf16"} and openvino_available():
        return "openvino-bf16"
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        return "onnx-int8"
    return "torch"


class ClipModel(InferenceModel):
    """open_clip image and text encoders; vectors are float32 and L2-normalised.

    The torch backend is exact fp32 and keeps the plain model id; the others are exported once
    (cached) and their id ends in @<backend>: their vectors are never mixed with fp32 ones.
    Callers decode and tokenize on their own threads; one Batcher thread runs one forward
    pass per kind and batch.
    """

    def __init__(self, settings: Settings):
        super().__init__(settings.model_retry_seconds)
        self._settings = settings
        self.device = "cpu"
        self.dimension = 0
        self.backend = clip_backend(settings)
        self._model_id = f"{settings.model_name}/{settings.model_pretrained}"
        self._encoder: ClipEncoder | None = None

    @property
    def model_id(self) -> str:
        return self._model_id

    def _checkpoint_path(self) -> Path | None:
        """The local checkpoint `model_pretrained` names, or None for a hub tag (a bare name)."""
        pretrained = Path(self._settings.model_pretrained).expanduser()
        return pretrained if pretrained.exists() or pretrained.suffix or len(pretrained.parts) > 1 else None

    def _load(self) -> None:
        settings = self._settings
        name, pretrained = settings.model_name, settings.model_pretrained
        try:
            checkpoint = self._checkpoint_path()
            if checkpoint is not None:
                if not checkpoint.is_file():
                    raise FileNotFoundError(f"no checkpoint file at {checkpoint}")
                model_id = f"{name}/{checkpoint.stem}-{file_sha256(checkpoint)[:12]}"
                pretrained = str(checkpoint)
            else:
                model_id = f"{name}/{pretrained}"
            encoder = self._open_encoder(model_id, pretrained)
            dimension = encoder.encode_texts(encoder.tokenize("a photo")[None]).shape[-1]  # warm up
            input_size = encoder.preprocess(Image.new("RGB", (8, 8))).shape[-1]
        except Exception as e:
            raise RuntimeError(
                f"cannot load {name} weights '{settings.model_pretrained}': {e}; "
                "set PHOTOSTORE_MODEL_PRETRAINED to a local checkpoint path") from e
        self._encoder, self.device, self.image_size = encoder, encoder.device, input_size
        self._model_id = model_id if self.backend == "torch" else f"{model_id}@{self.backend}"
        self.dimension = int(dimension)
        self._batcher = Batcher(
            "inference-clip",
            {IMAGE: functools.partial(self._encode, encoder.encode_images, np.stack),
             TEXT: functools.partial(self._encode, encoder.encode_texts, _pad_tokens)},
            priorities={IMAGE: INDEX, TEXT: QUERY},
            batch_size=settings.model_batch_size, batch_wait_ms=settings.model_batch_wait_ms)

    def _open_encoder(self, model_id: str, pretrained: str) -> ClipEncoder:
        settings = self._settings
        if self.backend == "torch":
            if settings.model_config_dir:
                import open_clip
                open_clip.add_model_config(settings.model_config_dir)
            from embed_svc.torch_clip import TorchClip
            return TorchClip(settings.model_name, pretrained, settings)
        args = ["clip", "--backend", self.backend, "--name", settings.model_name, "--pretrained", pretrained]
        if settings.model_config_dir:
            args += ["--config-dir", str(settings.model_config_dir)]
        directory, manifest = exported(settings, f"{model_id}@{self.backend}", args)
        return ExportedClip(directory, manifest, self.backend, settings)

    # Inputs, prepared on the caller's thread.

    def preprocess_image(self, data: bytes, index: int = 0) -> np.ndarray:
        """Decodes (EXIF orientation applied) and transforms one image; raises ImageDecodeError."""
        self.require_ready()
        return self._encoder.preprocess(
            decode_image(data, index, self._settings.max_image_pixels, min_short_side=self.image_size))

    def tokenize(self, text: str) -> np.ndarray:
        self.require_ready()
        return self._encoder.tokenize(text)

    # Embedding through the inference thread.

    def embed_images(self, images: Sequence[bytes]) -> list[np.ndarray]:
        """Raises ImageDecodeError naming the first undecodable image, or ModelNotReadyError."""
        return self._run(IMAGE, [self.preprocess_image(data, i) for i, data in enumerate(images)])

    def embed_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._run(TEXT, [self.tokenize(t) for t in texts])

    def _run(self, kind: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
        self.require_ready()
        return self._batcher.run(kind, inputs)

    @staticmethod
    def _encode(encode: Callable[[np.ndarray], np.ndarray], batch: Callable[[list[np.ndarray]], np.ndarray],
                inputs: list[np.ndarray]) -> list[np.ndarray]:
        return list(l2_normalize(encode(batch(inputs))))


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (zero rows stay zero)."""
    features = np.asarray(features, np.float32)
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def _pad_tokens(tokens: list[np.ndarray]) -> np.ndarray:
    """Token rows zero-padded to the longest: the batch stops at its last end token."""
    batch = np.zeros((len(tokens), max(len(t) for t in tokens)), np.int64)
    for row, ids in zip(batch, tokens):
        row[: len(ids)] = ids
    return batch
