"""Checks that uploaded bytes are a supported, sane image; reads its EXIF; makes its thumbnail and
the copy the image models read from the one decode, and its preview from a later one."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import logging
import math
import warnings
from typing import Any, Iterator

import pillow_heif
from PIL import Image, ImageOps

from photostore import duplicates
from photostore.errors import invalid, too_large
from photostore.image_scale import DECODED_FORMATS, reduce_by, scale_down
from photostore.limits import decode_budget

log = logging.getLogger(__name__)

pillow_heif.register_heif_opener()

# Pillow format -> stored content type. A JPEG carrying extra frames (many cameras) opens as MPO.
CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "HEIF": "image/heic",
}
SUPPORTED_NAMES = "JPEG, PNG, WebP, GIF or HEIC"
# Long side of the preview (PHOTO_VARIANT_PREVIEW): what a browser shows in the viewer, whatever
# the original's format. The API promises at most this.
PREVIEW_PX = 1440
JPEG_QUALITY = 85

# EXIF tags and IFDs.
IFD_EXIF = 0x8769
IFD_GPS = 0x8825
TAG_MAKE = 271
TAG_ORIENTATION = 274
TAG_MODEL = 272
TAG_DATETIME = 306
TAG_DATETIME_ORIGINAL = 36867
TAG_OFFSET_TIME = 36880
TAG_OFFSET_TIME_ORIGINAL = 36881
GPS_LATITUDE_REF, GPS_LATITUDE, GPS_LONGITUDE_REF, GPS_LONGITUDE = 1, 2, 3, 4
GPS_ALTITUDE_REF, GPS_ALTITUDE = 5, 6
EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"


@dataclasses.dataclass
class ExifInfo:
    taken_at: dt.datetime | None = None
    camera_make: str = ""
    camera_model: str = ""
    latitude: float | None = None
    longitude: float | None = None
    altitude: float | None = None


@dataclasses.dataclass
class ImageInfo:
    content_type: str
    # Pixel size with EXIF orientation applied.
    width: int
    height: int
    exif: ExifInfo
    thumbnail_jpeg: bytes
    # RGB, short side model_copy_px (never upscaled): what the index stage reads.
    model_copy_jpeg: bytes
    # Perceptual hash (photostore.duplicates.phash) of the decode, upright.
    phash: str = ""


def configure_pillow(max_pixels: int) -> None:
    """Process-wide: makes Pillow's own decompression-bomb guard use our limit and raise, not warn."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def inspect_image(path: str, *, max_pixels: int, thumbnail_px: int, model_copy_px: int) -> ImageInfo:
    """Sniffs, bounds and fully decodes the image at `path`; raises ServiceError when it is unfit.
    The preview is left to make_preview: its larger decode would hold up the upload."""
    with _opened(path, max_pixels) as img:
        width, height = img.size
        # The decode must still cover the thumbnail (long side) and the model copy (short side);
        # a JPEG is decoded at the smallest DCT scale that does.
        _load(img, thumbnail_px, model_copy_px)
        exif = read_exif(img)
        # A large decode is made smaller before it is turned and copied: no full-size copy of it.
        reduced = reduce_by(img, _cover_factor(img.size, thumbnail_px, model_copy_px))
        oriented = _apply_orientation(reduced)
        if oriented.size != reduced.size or _quarter_turned(img):  # the size as shown
            width, height = height, width
        model_copy = make_model_copy(oriented, model_copy_px)
        return ImageInfo(content_type=CONTENT_TYPES[img.format], width=width, height=height,
                         exif=exif, thumbnail_jpeg=make_thumbnail(oriented, thumbnail_px),
                         model_copy_jpeg=model_copy,
                         # From the model copy, as the backfill of older photos hashes them.
                         phash=duplicates.phash_of(model_copy))


def make_preview(path: str, *, max_pixels: int, preview_px: int = PREVIEW_PX) -> bytes:
    """The preview of the stored original at `path`, decoded under the same pixel limit and budget
    as the upload. Raises ServiceError when unfit."""
    with _opened(path, max_pixels) as img:
        _load(img, preview_px, 1)
        reduced = reduce_by(img, _cover_factor(img.size, preview_px, 1))
        preview = _preview_pixels(_apply_orientation(reduced), preview_px)
        return make_thumbnail(preview, preview_px, optimize=False)


@contextlib.contextmanager
def _opened(path: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image at `path`, opened (not decoded) and bounded, while its pixels are held in the
    process's decode budget."""
    try:
        img = Image.open(path, formats=DECODED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _pixel_bomb(str(e)) from e
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for non-images
        raise invalid(f"the data is not a {SUPPORTED_NAMES} image", field="chunk",
                      reason="UNSUPPORTED_IMAGE_TYPE") from e
    # The budget is given back (and the heap trimmed) after close() has freed the pixels.
    with decode_budget().decoding(*img.size), contextlib.closing(img):
        width, height = img.size
        if width * height > max_pixels:
            raise _pixel_bomb(f"image is {width}x{height} = {width * height} pixels; "
                              f"the limit is {max_pixels}")
        yield img


def _load(img: Image.Image, long_side: int, short_side: int) -> None:
    """Decodes `img`; a JPEG at the smallest DCT scale that keeps `long_side` and `short_side`
    (every byte is read and checked all the same, at a fraction of a full decode's cost)."""
    width, height = img.size
    box = (long_side, short_side) if width >= height else (short_side, long_side)
    try:
        img.draft("RGB", box)
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _pixel_bomb(str(e)) from e
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError...
        raise invalid("image data is truncated or corrupt", field="chunk",
                      reason="CORRUPT_IMAGE") from e


def _preview_pixels(img: Image.Image, preview_px: int) -> Image.Image:
    """`img` in RGB (RGBA where it has transparency), long side at most preview_px."""
    working_mode = "RGBA" if _has_alpha(img) else "RGB"
    # Bilinear: for the small reductions left after the DCT scale (12 MP: 2000 -> 1440 px) as
    # sharp to the eye as bicubic, at 0.65 of its cost.
    return scale_down(img if img.mode == working_mode else img.convert(working_mode),
                      long_side=preview_px, resample=Image.Resampling.BILINEAR)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info


def _cover_factor(size: tuple[int, int], long_side: int, short_side: int) -> int:
    """The largest whole factor an image of `size` can be reduced by and still keep `long_side`
    and `short_side` (1: not at all)."""
    return max(1, min(max(size) // long_side, min(size) // short_side))


def _quarter_turned(img: Image.Image) -> bool:
    """Its EXIF orientation turns it a quarter (width and height swap when shown)."""
    try:
        return img.getexif().get(TAG_ORIENTATION) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - bad EXIF never fails an upload
        return False


def _pixel_bomb(message: str):
    return too_large(message, field="pixels", reason="IMAGE_TOO_MANY_PIXELS")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - bad EXIF never fails an upload
        log.warning("ignoring unreadable EXIF orientation", exc_info=True)
        return img


def make_thumbnail(img: Image.Image, longest_side: int, *, optimize: bool = True) -> bytes:
    """RGB JPEG whose longest side is at most `longest_side` (the thumbnail, and the preview);
    transparency becomes white."""
    has_alpha = _has_alpha(img)
    working_mode = "RGBA" if has_alpha else "RGB"
    thumb = img.convert(working_mode) if img.mode != working_mode else img.copy()
    thumb.thumbnail((longest_side, longest_side))
    if has_alpha:
        background = Image.new("RGB", thumb.size, "white")
        background.paste(thumb, mask=thumb.getchannel("A"))
        thumb = background
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=optimize)
    return out.getvalue()


def make_model_copy(img: Image.Image, short_side: int) -> bytes:
    """RGB JPEG (quality 95, no chroma subsampling) whose short side is `short_side`, never
    upscaled; as the worker's own copies, transparency is dropped, not blended."""
    copy = scale_down(img.convert("RGB"), short_side=short_side, reducing_gap=2.0)
    out = io.BytesIO()
    copy.save(out, "JPEG", quality=95, subsampling=0)
    return out.getvalue()


def read_exif(img: Image.Image) -> ExifInfo:
    """What EXIF says about time, camera and place; anything unreadable is left empty."""
    info = ExifInfo()
    try:
        exif = img.getexif()
        exif_ifd = exif.get_ifd(IFD_EXIF)
        gps_ifd = exif.get_ifd(IFD_GPS)
    except Exception:  # noqa: BLE001 - bad EXIF never fails an upload
        log.warning("ignoring unreadable EXIF", exc_info=True)
        return info
    info.camera_make = _text(exif.get(TAG_MAKE))
    info.camera_model = _text(exif.get(TAG_MODEL))
    info.taken_at = (
        _exif_time(exif_ifd.get(TAG_DATETIME_ORIGINAL), exif_ifd.get(TAG_OFFSET_TIME_ORIGINAL))
        or _exif_time(exif.get(TAG_DATETIME), exif_ifd.get(TAG_OFFSET_TIME)))
    latitude = _gps_degrees(gps_ifd.get(GPS_LATITUDE), gps_ifd.get(GPS_LATITUDE_REF), "S", 90)
    longitude = _gps_degrees(gps_ifd.get(GPS_LONGITUDE), gps_ifd.get(GPS_LONGITUDE_REF), "W", 180)
    if latitude is not None and longitude is not None:
        info.latitude, info.longitude = latitude, longitude
        info.altitude = _gps_altitude(gps_ifd.get(GPS_ALTITUDE), gps_ifd.get(GPS_ALTITUDE_REF))
    return info


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.strip("\x00 \t\r\n") if isinstance(value, str) else ""


def _exif_time(value: Any, offset: Any) -> dt.datetime | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" at its "+HH:MM" offset (UTC when it has none), in UTC."""
    try:
        naive = dt.datetime.strptime(_text(value), EXIF_TIME_FORMAT)
    except ValueError:
        return None
    try:
        tz = dt.datetime.strptime(_text(offset), "%z").tzinfo
    except ValueError:
        tz = dt.timezone.utc
    return naive.replace(tzinfo=tz).astimezone(dt.timezone.utc)


def _gps_degrees(dms: Any, ref: Any, negative_ref: str, bound: float) -> float | None:
    try:
        degrees, minutes, seconds = (float(v) for v in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if not math.isfinite(value) or value > bound:
        return None
    return -value if _text(ref).upper() == negative_ref else value


def _gps_altitude(altitude: Any, ref: Any) -> float | None:
    try:
        metres = float(altitude)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not math.isfinite(metres):
        return None
    below_sea_level = ref in (1, b"\x01")
    return -metres if below_sea_level else metres
