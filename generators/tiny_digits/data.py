"""The real data behind tiny-digits: scikit-learn's handwritten digits, split once, measured once.

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test set (1,797 images, 8x8,
16 grey levels; CC BY 4.0, https://archive.ics.uci.edu/dataset/80). We upsample every image to 16x16
uint8 with PIL's bilinear filter so that real and generated images live in the same pixel space; the
identity classifier, the memorised-copy filter and the stroke measurement all compare like with like.

Stroke weight is the one attribute: an image is ``bold`` when its ink mass (sum of pixel intensities)
is above the median of its digit in the train split, ``thin`` otherwise. The per-digit medians are
stored with the model, so generated images are measured against the same yardstick.
"""

from __future__ import annotations

import numpy as np

# The split itself is the registered real source of the default domain, so downstream training (in
# registry) reads it without importing generators; re-exported here for the generator's own code.
from generators.tiny_digits.real_digits import (
    HELD_OUT,
    IMAGE_SIZE,
    SOURCE_LICENCE,
    SOURCE_NAME,
    SOURCE_URL,
    SPLIT_SEED,
    DigitsSplit,
    load_splits,
)

__all__ = [
    "HELD_OUT",
    "IMAGE_SIZE",
    "SOURCE_LICENCE",
    "SOURCE_NAME",
    "SOURCE_URL",
    "SPLIT_SEED",
    "STROKES",
    "DigitsSplit",
    "ink_mass",
    "load_splits",
    "stroke_of",
    "stroke_thresholds",
]

STROKES = ("thin", "bold")


def ink_mass(images: np.ndarray) -> np.ndarray:
    """Mean intensity in [0, 1] per image: the measurable quantity behind stroke weight."""
    return images.reshape(len(images), -1).astype(np.float64).mean(axis=1) / 255.0


def stroke_thresholds(split: DigitsSplit) -> dict[int, float]:
    """Per-digit median ink mass on the given split (the train split, always)."""
    mass = ink_mass(split.images)
    return {int(d): float(np.median(mass[split.labels == d])) for d in range(10)}


def stroke_of(images: np.ndarray, digits: np.ndarray, thresholds: dict[int, float]) -> list[str]:
    """Observed stroke weight of each image: bold above its digit's median ink mass, else thin."""
    mass = ink_mass(images)
    return [STROKES[int(m > thresholds[int(d)])] for m, d in zip(mass, digits, strict=True)]
