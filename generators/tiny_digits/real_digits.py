"""The registered real source of the default domain: scikit-learn's handwritten digits, split once.

scikit-learn ships the UCI "Optical Recognition of Handwritten Digits" test set (1,797 images, 8x8,
16 grey levels; CC BY 4.0, https://archive.ics.uci.edu/dataset/80). Every image is upsampled to 16x16
uint8 with PIL's bilinear filter so that real and generated images live in the same pixel space. The
fixed split names who may see what: the generator and the filters see the train split only; the held-out
split is kept for downstream evaluation (``registry.downstream.train``). Both splits' digests are recorded
wherever
they are used. scikit-learn and PIL are imported inside ``load_splits``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 16
HELD_OUT = 360  # images kept for downstream evaluation, never seen by the generator
SPLIT_SEED = 0
SOURCE_NAME = "sklearn-digits"
SOURCE_URL = "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits"
SOURCE_LICENCE = "CC-BY-4.0"


@dataclass(frozen=True)
class DigitsSplit:
    images: np.ndarray  # (N, 16, 16) uint8
    labels: np.ndarray  # (N,) int64

    @property
    def digest(self) -> str:
        """sha256 over the pixels and labels, in order: names this split in every record."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.images, dtype=np.uint8).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return h.hexdigest()


def _upsample(raw8: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(raw8), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, img in enumerate(raw8):
        small = Image.fromarray(np.round(img * (255.0 / 16.0)).astype(np.uint8), mode="L")
        out[i] = np.asarray(small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR))
    return out


@lru_cache(maxsize=1)
def load_splits() -> tuple[DigitsSplit, DigitsSplit]:
    """The fixed (train, held_out) split: stratified by digit, seed 0, 360 held out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = _upsample(bunch.images)
    labels = bunch.target.astype(np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=HELD_OUT, stratify=labels, random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return (
        DigitsSplit(images[train_idx], labels[train_idx]),
        DigitsSplit(images[test_idx], labels[test_idx]),
    )
