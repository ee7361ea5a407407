"""Which image formats are decoded at all, and how far an image is scaled down for a model: one
rule for ingest's copy, the worker's and the embed service's."""
from __future__ import annotations

from PIL import Image

# The only decoders ever tried on photo bytes (uploads, originals, EmbedService inputs).
DECODED_FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "HEIF"]

# A decode this large is reduced at once (and its memory handed back after): smaller ones are
# left as decoded, so what a model sees does not depend on what else read the same decode.
LARGE_IMAGE_PIXELS = 16_000_000
# Modes Image.reduce works on; others are converted first.
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "I", "F"}
# Before the long side is bounded, a copy keeps at most this aspect ratio's worth of pixels:
# the image models crop the centre square anyway.
MAX_ASPECT = 4


def scale_factor(width: int, height: int, short_side: int = 0, long_side: int = 0) -> float:
    """Factor (≤ 1) that brings the short side to `short_side` (the long side to at most
    MAX_ASPECT times that), or the long side to at most `long_side`."""
    if short_side:
        long_side = min(long_side or MAX_ASPECT * short_side, MAX_ASPECT * short_side)
        return min(1.0, short_side / min(width, height), long_side / max(width, height))
    return min(1.0, long_side / max(width, height)) if long_side else 1.0


def scale_down(image: Image.Image, *, short_side: int = 0, long_side: int = 0,
               resample: Image.Resampling = Image.Resampling.BICUBIC,
               reducing_gap: float | None = None) -> Image.Image:
    """The image resized (bicubic unless told) by scale_factor; the image itself when that is 1.
    With reducing_gap, a large reduction first averages whole blocks (Pillow's resize option)."""
    factor = scale_factor(*image.size, short_side, long_side)
    if factor >= 1:
        return image
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, resample, reducing_gap=reducing_gap)


def reduce_by(image: Image.Image, factor: int) -> Image.Image:
    """`image` made `factor` times smaller by averaging, right after its decode, so a large
    decode's memory is freed at once; its info (EXIF: the orientation) is kept."""
    if factor < 2:
        return image
    if image.mode not in REDUCIBLE_MODES:
        transparent = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    reduced = image.reduce(factor)
    reduced.info = dict(image.info)
    return reduced
