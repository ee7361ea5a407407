"""Model-sized copies of originals, made where the original is read (the worker), so only small
images travel to the EmbedService. No torch here."""
from __future__ import annotations

import functools
import io
import math
from typing import Callable

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

# Before the long side is bounded, a copy keeps at most this aspect ratio's worth of pixels:
# the image models crop the centre square anyway.
MAX_ASPECT = 4


class UndecodableImageError(ValueError):
    """The original cannot be decoded (or has more pixels than allowed); the message says why."""


@functools.cache
def _register_heif() -> None:
    pillow_heif.register_heif_opener()


def decode(data: bytes, max_pixels: int, draft_scale: Callable[[int, int], float] = lambda w, h: 1.0
           ) -> Image.Image:
    """The image decoded once to RGB, EXIF orientation applied; a JPEG at the smallest DCT scale
    (1/2, 1/4, 1/8) still at least draft_scale(width, height) of its size. Raises
    UndecodableImageError."""
    _register_heif()
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise UndecodableImageError(f"{width}x{height} exceeds the pixel limit")
            if (scale := draft_scale(width, height)) < 1:
                im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            return ImageOps.exif_transpose(im).convert("RGB")
    except UndecodableImageError:
        raise
    except UnidentifiedImageError:
        raise UndecodableImageError("unknown or unsupported image format") from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data, bombs, codec errors
        raise UndecodableImageError(str(e) or type(e).__name__) from None


def model_copy(data: bytes, *, max_pixels: int, short_side: int = 0, long_side: int = 0) -> bytes:
    """The image decoded once (JPEGs at a reduced scale, via draft()), EXIF orientation applied,
    RGB, scaled down (never up) so its short side is `short_side` or its long side at most
    `long_side`; as PNG. Raises UndecodableImageError."""
    image = decode(data, max_pixels, lambda w, h: _scale(w, h, short_side, long_side))
    scale = _scale(*image.size, short_side, long_side)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def _scale(width: int, height: int, short_side: int, long_side: int) -> float:
    """Factor (≤ 1) that brings the image to the wanted size."""
    if short_side:
        long_side = min(long_side or MAX_ASPECT * short_side, MAX_ASPECT * short_side)
        return min(1.0, short_side / min(width, height), long_side / max(width, height))
    return min(1.0, long_side / max(width, height)) if long_side else 1.0
