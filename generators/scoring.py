"""Scoring a chunk of candidates: the per-row measurements behind every filter decision.

``measure`` (with the domain that knows the identities: a classifier and real references) is what both
executors run (``generators.filter`` locally, the Ray executor remotely), so their scores are
byte-identical; it never imports either runner."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from registry.core.errors import ManifestError
from registry.core.names import shown
from registry.store.shards import iter_images


class DigitsDomain:
    """Identity classifier and real references for tiny-digits, from the real train split only."""

    name = "tiny-digits"
    identities = frozenset(str(d) for d in range(10))  # what its classifier and stroke medians know

    def __init__(self) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import SVC

        from generators.tiny_digits import data

        train, held_out = data.load_splits()
        self.data = data
        self.train = train.images.reshape(len(train.labels), -1).astype(np.float32) / 255.0
        # Calibrated probabilities are the "confidence" the identity threshold is compared with.
        self.classifier = CalibratedClassifierCV(SVC(), ensemble=False).fit(self.train, train.labels)
        self.classifier_accuracy = float(
            self.classifier.score(held_out.images.reshape(len(held_out.labels), -1) / 255.0, held_out.labels)
        )
        self.thresholds = data.stroke_thresholds(train)
        self.train_digest = train.digest

    def identity(self, flat: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        proba = self.classifier.predict_proba(flat)
        classes = [str(c) for c in self.classifier.classes_]
        return classes, proba, proba.argmax(axis=1)

    def nearest_real(self, flat: np.ndarray) -> np.ndarray:
        """RMS distance to the nearest real train image, by ||a||^2 + ||b||^2 - 2ab in chunks."""
        t2 = (self.train**2).sum(1)
        out = np.empty(len(flat))
        for i in range(0, len(flat), 2048):
            x = flat[i : i + 2048]
            d2 = (x**2).sum(1)[:, None] + t2[None, :] - 2 * x @ self.train.T
            out[i : i + 2048] = np.sqrt(np.maximum(d2.min(1), 0) / flat.shape[1])
        return out

    def observed(self, images: np.ndarray, identities: list[str]) -> list[dict[str, str]]:
        digits = np.array([int(i) for i in identities])
        return [{"stroke": s} for s in self.data.stroke_of(images, digits, self.thresholds)]

    def describe(self) -> dict:
        return {
            "domain": self.name,
            "classifier": "sklearn SVC (RBF) with calibrated probabilities, on the real train split",
            "classifier_held_out_accuracy": round(self.classifier_accuracy, 4),
            "train_split_sha256": self.train_digest,
            "observed_attributes": {"stroke": "ink mass vs the digit's median on the train split"},
        }


DOMAINS = {"tiny-digits": DigitsDomain}


def _pixels(sample_id: str, png: bytes) -> np.ndarray:
    from PIL import Image

    try:
        return np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # its digest matched: an edited record
        raise ManifestError(
            f"sample {shown(sample_id)}: its image is not a readable image ({type(e).__name__}); "
            "regenerate it"
        ) from None


@cache
def load_domain(backend: str) -> DigitsDomain | None:
    """The trained domain for a backend (trained once per process), or None if it has none."""
    cls = DOMAINS.get(backend)
    return cls() if cls else None


@dataclass
class Scores:
    """What the checks measured on one chunk's images, in row order (None where a check did not run)."""

    contrast: list[float]
    pred: list[str | None]
    conf: list[float | None]
    nn: list[float | None]
    observed: list[dict[str, str] | None]


def chunk_rows(table: pa.Table) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """(sample_id, shard, member, image_sha256) rows and identities of a chunk: what measuring needs."""
    cols = [table[c].to_pylist() for c in ("sample_id", "shard", "member", "image_sha256")]
    return list(zip(*cols, strict=True)), table["identity"].to_pylist()


def measure(
    ws: Path, rows: list[tuple[str, str, str, str]], identities: list[str], domain: DigitsDomain | None
) -> Scores:
    """Read one chunk's images (checking their digests) and measure them: the part of filtering that
    needs no other chunk, so the Ray executor runs it on workers."""

    # Images come back shard by shard; key them by sample id so a row always gets its own pixels.
    pixels: dict[str, np.ndarray] = {}
    for sample_id, png in iter_images(ws, rows):
        pixels[sample_id] = _pixels(sample_id, png)
    shape = pixels[rows[0][0]].shape
    odd = next((r[0] for r in rows if pixels[r[0]].shape != shape), None)
    if odd is not None:
        raise ManifestError(
            f"sample {shown(odd)}: its image is {pixels[odd].shape}, not {shape} like {shown(rows[0][0])}; "
            "a manifest holds one image size (regenerate it)"
        )
    images = np.stack([pixels.pop(r[0]) for r in rows])
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    n = len(images)
    scores = Scores([float(c) for c in flat.std(axis=1)], [None] * n, [None] * n, [None] * n, [None] * n)
    if domain is not None:
        classes, proba, top = domain.identity(flat)
        scores.pred = [classes[k] for k in top]
        scores.conf = [
            float(proba[i, classes.index(identities[i])]) if identities[i] in classes else 0.0
            for i in range(n)
        ]
        scores.nn = [float(d) for d in domain.nearest_real(flat)]
        scores.observed = list(domain.observed(images, identities))
    return scores
