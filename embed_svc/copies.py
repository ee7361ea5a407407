"""Model-sized copies of originals, made where the original is read (the worker), so only small
images travel to the EmbedService. No torch here."""
from __future__ import annotations

import contextlib
import functools
import io
import math
from typing import Callable

import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from photostore.image_scale import DECODED_FORMATS, LARGE_IMAGE_PIXELS, reduce_by, scale_down, scale_factor
from photostore.limits import decode_budget


class UndecodableImageError(ValueError):
    """The original cannot be decoded (or has more pixels than allowed); the message says why."""


@functools.cache
def _register_heif() -> None:
    pillow_heif.register_heif_opener()


def decode(data: bytes, max_pixels: int, draft_scale: Callable[[int, int], float] = lambda w, h: 1.0
           ) -> Image.Image:
    """The image decoded once to RGB, EXIF orientation applied: a JPEG at the smallest DCT scale
    (1/2, 1/4, 1/8) still at least draft_scale(width, height) of its size, and a large image
    (LARGE_IMAGE_PIXELS) reduced by a whole factor to at most about twice that. Decodes wait for
    the process's pixel budget. Raises UndecodableImageError."""
    _register_heif()
    try:
        im = Image.open(io.BytesIO(data), formats=DECODED_FORMATS)
        # The budget is given back (and the heap trimmed) after close() has freed the pixels.
        with decode_budget().decoding(*im.size), contextlib.closing(im):
            width, height = im.size
            if width * height > max_pixels:
                raise UndecodableImageError(f"{width}x{height} exceeds the pixel limit")
            scale = draft_scale(width, height)
            if scale < 1:
                im.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            im.load()
            large = width * height >= LARGE_IMAGE_PIXELS
            image = reduce_by(im, math.floor(im.width / (width * scale))) if large else im
            return ImageOps.exif_transpose(image).convert("RGB")
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
    image = decode(data, max_pixels, lambda w, h: scale_factor(w, h, short_side, long_side))
    image = scale_down(image, short_side=short_side, long_side=long_side)
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()

