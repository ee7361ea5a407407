"""Real sample photos shipped by scikit-image and scikit-learn, and helpers to upload them."""
from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

import skimage
import sklearn.datasets
from PIL import Image

from photos.v1 import ingest_pb2
from photostore import uploads
from photostore.auth import bearer_metadata
from photostore.uploads import CHUNK_BYTES

SKIMAGE_DIR = Path(skimage.__file__).parent / "data"
SKLEARN_DIR = Path(sklearn.datasets.__file__).parent / "images"
SAMPLE_FILES = [
    SKIMAGE_DIR / name for name in (
        "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "horse.png",
        "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "page.png", "rocket.jpg",
        "text.png", "brick.png", "grass.png", "retina.jpg", "ihc.png", "logo.png", "clock_motion.png")
] + [SKLEARN_DIR / "china.jpg", SKLEARN_DIR / "flower.jpg"]


def sample_photos() -> dict[str, bytes]:
    """filename -> bytes of every sample photo."""
    return {p.name: p.read_bytes() for p in SAMPLE_FILES}


def jpeg_bytes(size=(64, 48), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def upload_requests(data: bytes, filename: str, *, sha256: str | None = None,
                    size: int | None = None, request_id: str | None = None,
                    content_type: str = "image/jpeg", chunk: int = CHUNK_BYTES):
    """The upload stream of `data`; size and sha256 may be set wrong on purpose."""
    return uploads.upload_requests(
        io.BytesIO(data), filename=filename, content_type=content_type,
        size=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        request_id=request_id or uuid.uuid4().hex, chunk_bytes=chunk)


def upload(stub, key: str, data: bytes, filename: str, **kwargs) -> ingest_pb2.UploadPhotoResponse:
    return stub.UploadPhoto(upload_requests(data, filename, **kwargs), metadata=bearer_metadata(key),
                            timeout=60)
