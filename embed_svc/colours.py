"""Dominant colour names of a photo, in the 11 basic colour terms (black, white, grey, red, orange,
yellow, green, blue, purple, pink, brown).

A small copy's pixels go to CIELAB (perceptual: equal distances look about equally different),
and each pixel takes the name of its nearest prototype; a term has several prototypes (light,
mid, dark) because a name covers a region of colours, e.g. sky blue and navy are both "blue".
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

# The copy's longer side: a few thousand pixels, about a millisecond of work.
SAMPLE_PX = 64

# sRGB prototypes of each term, chosen by eye and checked on photos (tests/test_evidence.py).
PROTOTYPES: dict[str, list[tuple[int, int, int]]] = {
    "black": [(0, 0, 0), (35, 35, 35)],
    "grey": [(90, 90, 90), (128, 128, 128), (175, 175, 175)],
    "white": [(255, 255, 255), (225, 225, 225)],
    "red": [(220, 20, 30), (150, 15, 20), (200, 60, 55), (100, 10, 15)],
    "orange": [(255, 140, 0), (230, 120, 50), (250, 175, 90), (225, 105, 65), (195, 80, 35)],
    "yellow": [(255, 230, 0), (235, 210, 100), (250, 245, 170), (200, 180, 40)],
    "green": [(0, 150, 0), (40, 90, 30), (130, 200, 100), (110, 130, 60), (0, 130, 110), (20, 50, 25)],
    "blue": [(0, 0, 230), (30, 60, 150), (100, 150, 220), (160, 200, 240), (0, 160, 200), (20, 30, 70), (10, 20, 120)],
    "purple": [(120, 30, 160), (70, 20, 90), (170, 120, 200), (150, 50, 130)],
    "pink": [(255, 150, 190), (230, 90, 150), (250, 200, 210), (215, 140, 140)],
    "brown": [(120, 70, 30), (80, 50, 30), (160, 110, 70), (190, 150, 110), (60, 35, 25)],
}
_NAMES = list(PROTOTYPES)
_TERM_OF = np.array([i for i, colours in enumerate(PROTOTYPES.values()) for _ in colours])


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of 8-bit sRGB pixels, one row per pixel."""
    return cv2.cvtColor(rgb.reshape(1, -1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab).reshape(-1, 3)


_LAB = _lab(np.array([c for colours in PROTOTYPES.values() for c in colours]))
_LAB_NORMS = (_LAB ** 2).sum(axis=-1)


def colour_shares(image: Image.Image) -> list[tuple[str, float]]:
    """Each basic colour term with the share of the photo it covers, largest first (shares > 0)."""
    small = image.convert("RGB")
    scale = SAMPLE_PX / max(small.size)
    if scale < 1:
        small = small.resize((max(1, round(small.width * scale)), max(1, round(small.height * scale))),
                             Image.Resampling.BOX, reducing_gap=2.0)
    lab = _lab(np.asarray(small))
    # Nearest prototype: argmin of |x - p|^2 = |x|^2 - 2 x.p + |p|^2, the |x|^2 being the same for all.
    nearest = (_LAB_NORMS - 2 * lab @ _LAB.T).argmin(axis=-1)
    counts = np.bincount(_TERM_OF[nearest], minlength=len(_NAMES)) / len(nearest)
    return [(_NAMES[i], float(counts[i])) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]


def colour_labels(image: Image.Image, min_share: float) -> list[tuple[str, float]]:
    """The colours covering at least min_share of the photo, score = share, largest first."""
    return [(name, share) for name, share in colour_shares(image) if share >= min_share]
