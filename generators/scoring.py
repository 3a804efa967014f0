"""Scoring a chunk of candidates: the per-row measurements behind every filter decision.

``measure`` (with the domain that knows the identities: a classifier and real references) is what both
executors run (``generators.filter`` locally, the Ray executor remotely), so their scores are
byte-identical; it never imports either runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from generators.domain import DomainScores, ModelDomain
from registry.core.errors import ManifestError
from registry.core.names import shown
from registry.records.dataset import Recipe
from registry.store.shards import iter_images

EXACT_BELOW = 0.01  # RMS under which nearest_real recomputes the distance directly (no cancellation)
DIGITS = 6  # decimals a score is stored with: the same on every CPU (see stable)


def stable(value: float) -> float:
    """A score rounded to ``DIGITS`` decimals. numpy's exp and a BLAS kernel's sums differ in the last
    bits from one CPU to another (SIMD paths for AVX2 and AVX-512), and the filtered manifest, whose md5
    dvc.lock records and the golden release compares, must be the same bytes on every machine."""
    return round(float(value), DIGITS)


class DigitsDomain:
    """Identity classifier and real references for tiny-digits, from the real train split only: the
    built-in domain of the tiny-digits backend, with the same ``score`` as a recipe's own models
    (``generators.domain.ModelDomain``)."""

    name = "tiny-digits"
    needs_rgb = False
    embeds = False  # no embedding model: near-duplicates by perceptual hash only
    clip_problem = "the tiny-digits domain has no model with a text tower"
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
        """RMS distance to the nearest real train image, by ||a||^2 + ||b||^2 - 2ab in chunks, in float64.

        The sums a BLAS kernel makes depend on the CPU (AVX2 or AVX-512 order them differently): in
        float32 the distances differed from one machine to another in the sixth digit, and an exact
        copy read 0.0001-0.0002 (the expansion cancels). In float64 they differ in the fifteenth, which
        :func:`stable` rounds away; where the expansion says under ``EXACT_BELOW`` the distance to that
        nearest image is computed directly, so a copy is 0 on every machine."""
        train = self.train.astype(np.float64)
        t2 = (train**2).sum(1)
        out = np.empty(len(flat))
        for i in range(0, len(flat), 2048):
            x = flat[i : i + 2048].astype(np.float64)
            d2 = (x**2).sum(1)[:, None] + t2[None, :] - 2 * x @ train.T
            nearest = d2.argmin(1)
            rms = np.sqrt(np.maximum(d2[np.arange(len(x)), nearest], 0) / flat.shape[1])
            close = np.flatnonzero(rms < EXACT_BELOW)
            if len(close):
                rms[close] = np.sqrt(((x[close] - train[nearest[close]]) ** 2).mean(1))
            out[i : i + 2048] = rms
        return out

    def observed(self, images: np.ndarray, identities: list[str]) -> list[dict[str, str]]:
        digits = np.array([int(i) for i in identities])
        return [{"stroke": s} for s in self.data.stroke_of(images, digits, self.thresholds)]

    def score(
        self, grey: np.ndarray, images: list | None, identities: list[str], prompts: list[str]
    ) -> DomainScores:
        """Identity predictions, confidence in the intended identity, RMS distance to the nearest real
        train image and observed stroke, for grey images."""
        flat = grey.reshape(len(grey), -1).astype(np.float32) / 255.0
        classes, proba, top = self.identity(flat)
        conf: list[float | None] = [
            stable(proba[i, classes.index(identities[i])]) if identities[i] in classes else 0.0
            for i in range(len(grey))
        ]
        nn: list[float | None] = [stable(d) for d in self.nearest_real(flat)]
        pred: list[str | None] = [classes[k] for k in top]
        return DomainScores(pred, conf, nn, list(self.observed(grey, identities)))

    def not_checked(self) -> list[str]:
        return [
            "near-duplicate check by embedding: the tiny-digits domain has no embedding model "
            "(the perceptual-hash check ran)",
            f"prompt-image agreement (CLIP score): {self.clip_problem}",
        ]

    def describe(self) -> dict:
        return {
            "domain": self.name,
            "classifier": "sklearn SVC (RBF) with calibrated probabilities, on the real train split",
            "classifier_held_out_accuracy": round(self.classifier_accuracy, 4),
            "train_split_sha256": self.train_digest,
            "observed_attributes": {"stroke": "ink mass vs the digit's median on the train split"},
        }


DOMAINS = {"tiny-digits": DigitsDomain}


def _decoded(sample_id: str, png: bytes, rgb: bool) -> tuple[np.ndarray, Any]:
    """The image's grey pixels, and (``rgb``) its RGB image for a domain's models: decoded once, through
    the bounded, strict decoder (a bad image is a named problem)."""
    from registry.core.images import decode

    image = decode(png, f"sample {shown(sample_id)}")
    return np.asarray(image.convert("L")), image.convert("RGB") if rgb else None


@cache
def builtin_domain(backend: str) -> DigitsDomain | None:
    """The built-in domain of a backend (trained once per process), or None if it has none."""
    cls = DOMAINS.get(backend)
    return cls() if cls else None


# What identifies a domain, picklable for Ray workers: the backend, and the recipe's JSON when the
# recipe names its own models (then they are the domain, whatever the backend).
DomainKey = tuple[str, str | None]


def domain_key(backend: str, recipe: Recipe | None) -> DomainKey:
    return backend, recipe.model_dump_json() if recipe is not None and recipe.domain is not None else None


_LOADED: dict[tuple[str, DomainKey], Any] = {}


def load_domain(ws: Path, key: DomainKey) -> Any:
    """The domain for ``key``, loaded once per process: the recipe's own models, else the backend's
    built-in domain, else None."""
    backend, recipe_json = key
    if recipe_json is None:
        return builtin_domain(backend)
    if (str(ws), key) not in _LOADED:
        recipe = Recipe.model_validate_json(recipe_json)
        assert recipe.domain is not None
        _LOADED[(str(ws), key)] = ModelDomain(ws, recipe, recipe.domain)
    return _LOADED[(str(ws), key)]


def _marking_problem(sample_id: str, png: bytes) -> str | None:
    """Why the image's marking does not say it is this sample's AI-generated image (None when it does):
    a marking copied from another sample is a forged one."""
    from registry.store.marking import read_marking

    found = read_marking(png)
    if found is None:
        return "the image carries no synthetic-media marking (no XMP DigitalSourceType)"
    if found.sample_id != sample_id:
        return f"its XMP marking names sample {shown(found.sample_id)}, not this one"
    return None


@dataclass
class Scores:
    """What the checks measured on one chunk's images, in row order (None where a check did not run)."""

    contrast: list[float]
    pred: list[str | None]
    conf: list[float | None]
    nn: list[float | None]
    observed: list[dict[str, str] | None]
    nn_metric: str = "rms"  # nn: RMS pixel distance (built-in domain), or cosine distance of embeddings
    embedding: np.ndarray | None = None  # unit-length image embeddings (near-duplicates), when measured
    clip: list[float] | None = None  # CLIP score of each image against its prompt, when measured
    # Per row, what is wrong with the image's XMP marking (None: it names this sample); issue 24.
    marking: list[str | None] = field(default_factory=list)


def chunk_rows(table: pa.Table) -> tuple[list[tuple[str, str, str, str]], list[str], list[str]]:
    """(sample_id, shard, member, image_sha256) rows, identities and prompts of a chunk: what measuring
    needs."""
    cols = [table[c].to_pylist() for c in ("sample_id", "shard", "member", "image_sha256")]
    return list(zip(*cols, strict=True)), table["identity"].to_pylist(), table["prompt"].to_pylist()


def measure(
    ws: Path, rows: list[tuple[str, str, str, str]], identities: list[str], prompts: list[str], domain: Any
) -> Scores:
    """Read one chunk's images (checking their digests) and measure them: the part of filtering that
    needs no other chunk, so the Ray executor runs it on workers."""

    # Images come back shard by shard; key them by sample id so a row always gets its own pixels.
    pixels: dict[str, np.ndarray] = {}
    colour: dict[str, Any] = {}
    marks: dict[str, str | None] = {}
    for sample_id, png in iter_images(ws, rows):
        pixels[sample_id], colour[sample_id] = _decoded(
            sample_id, png, domain is not None and domain.needs_rgb
        )
        marks[sample_id] = _marking_problem(sample_id, png)
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
    scores.marking = [marks[r[0]] for r in rows]
    if domain is not None:
        rgb_images = [colour.pop(r[0]) for r in rows] if domain.needs_rgb else None
        got = domain.score(images, rgb_images, identities, prompts)
        scores.pred = got.pred if got.pred is not None else scores.pred
        scores.conf = got.conf if got.conf is not None else scores.conf
        scores.nn = got.nn if got.nn is not None else scores.nn
        scores.observed = got.observed if got.observed is not None else scores.observed
        scores.nn_metric = getattr(domain, "nn_metric", "rms")
        scores.embedding, scores.clip = got.embedding, got.clip
    return scores
