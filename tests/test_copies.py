"""Model-sized copies of originals, made in the worker: one decode, EXIF orientation applied,
scaled down (never up) to the size each model reads."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from embed_svc.copies import UndecodableImageError, model_copy

MAX_PIXELS = 100_000_000


def jpeg(width: int, height: int, orientation: int = 1) -> bytes:
    """A noisy photo (so JPEG sizes are realistic) with an EXIF orientation tag."""
    rng = np.random.default_rng(width * height)
    pixels = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
    image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return image.size


def test_a_12_megapixel_photo_becomes_a_copy_of_the_size_the_models_read():
    photo = jpeg(4000, 3000)
    assert size_of(model_copy(photo, max_pixels=MAX_PIXELS, short_side=224)) == (299, 224)
    assert size_of(model_copy(photo, max_pixels=MAX_PIXELS, long_side=1280)) == (1280, 960)


def test_exif_orientation_is_applied():
    rotated = jpeg(4000, 3000, orientation=6)  # stored landscape, shown portrait
    assert size_of(model_copy(rotated, max_pixels=MAX_PIXELS, short_side=224)) == (224, 299)


def test_small_images_are_never_upscaled_and_keep_their_pixels():
    small = Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 150, 3), np.uint8))
    out = io.BytesIO()
    small.save(out, "PNG")
    copy = model_copy(out.getvalue(), max_pixels=MAX_PIXELS, short_side=224, long_side=1280)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(copy))), np.asarray(small))


def test_a_panorama_is_bounded_on_its_long_side_too():
    width, height = size_of(model_copy(jpeg(8000, 1000), max_pixels=MAX_PIXELS, short_side=224))
    assert width <= 4 * 224 and height <= 224


@pytest.mark.parametrize("data, why", [
    (b"not an image", "unknown or unsupported image format"),
    (jpeg(400, 300)[:3000], "truncated"),
])
def test_undecodable_originals_say_why(data, why):
    with pytest.raises(UndecodableImageError, match=why):
        model_copy(data, max_pixels=MAX_PIXELS, short_side=224)


def test_more_pixels_than_allowed_is_refused_before_decoding():
    with pytest.raises(UndecodableImageError, match="exceeds the pixel limit"):
        model_copy(jpeg(4000, 3000), max_pixels=4000 * 3000 - 1, short_side=224)
