"""The filter stage: score every candidate, record a decision and a reason, keep rejected rows.

Checks, in the order a reason is chosen (the first failing check names the reason):

``low_contrast``       pixel standard deviation / 255 below ``min_contrast``: blank or washed-out
``identity_mismatch``  an identity classifier trained on the real train split predicts another identity
``low_confidence``     ... or predicts the intended one below ``identity_threshold`` (Diff-Person's re-ID
                       confidence filter, arXiv 2406.06045)
``memorised_copy``     RMS pixel distance to the nearest real train image below ``memorised_distance``
``near_duplicate``     perceptual-hash Hamming distance to an earlier accepted image of the same identity
                       at most ``duplicate_distance`` (-1 disables)

The identity and memorised-copy checks need a domain: a classifier and real reference images. The
embedded tiny-digits generator has one (``DigitsDomain``); for other backends those checks are not
run, their scores stay empty, and the summary says so instead of pretending they passed.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from registry import audit
from registry import manifest as mf
from registry.digests import sha256_file
from registry.errors import ManifestError
from registry.fsio import atomic_write_text
from registry.locks import folder_lock
from registry.models import FilterParams
from registry.names import check_table, shown
from registry.shards import iter_images
from registry.workspace import inside, relative

Progress = Callable[[int, int], None]


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


@dataclass(frozen=True)
class FilterResult:
    manifest: Path
    total: int
    accepted: int
    reasons: dict[str, int]


def filter_manifest(
    candidates: Path | str,
    ws: Path,
    out: Path | str,
    params: FilterParams | None = None,
    progress: Progress | None = None,
) -> FilterResult:
    """Score ``candidates/manifest.parquet``; write ``out/manifest.parquet`` and ``out/filter.json``."""
    params = params or FilterParams()
    in_dir, out_dir = inside(ws, candidates, "candidates folder"), inside(ws, out, "output folder")
    in_path = in_dir / "manifest.parquet"
    audit.log_path(ws)  # refused before anything is written
    table = mf.read_table(in_path)
    check_table(table, f"manifest {in_path}")  # before any name becomes a path
    if table.num_rows == 0:
        raise ManifestError(f"manifest {in_path} has no rows; nothing to filter")
    with folder_lock(ws, out_dir, "filter"):  # a second run into out_dir refuses (registry.locks)
        return _filter(ws, table, in_path, out_dir, params, progress)


def _filter(
    ws: Path,
    table: pa.Table,
    in_path: Path,
    out_dir: Path,
    params: FilterParams,
    progress: Progress | None,
) -> FilterResult:

    backends = sorted(set(table["generator_backend"].to_pylist()))
    domain = load_domain(backends[0]) if len(backends) == 1 else None
    if domain is not None:  # an edited manifest may name identities the generator never makes
        unknown = sorted(set(pc.unique(table["identity"]).to_pylist()) - domain.identities, key=str)
        if unknown:
            first = table["sample_id"][pc.index(table["identity"], unknown[0]).as_py()].as_py()
            raise ManifestError(
                f"manifest {in_path}: sample {shown(first)} has identity {shown(unknown[0])}, which "
                f"{domain.name} does not make ({len(unknown)} unknown identities); regenerate it"
            )

    cols = table.select(["sample_id", "shard", "member", "image_sha256"]).to_pylist()
    rows = [(r["sample_id"], r["shard"], r["member"], r["image_sha256"]) for r in cols]
    # Images come back shard by shard; key them by sample id so a row always gets its own pixels.
    pixels: dict[str, np.ndarray] = {}
    for n, (sample_id, png) in enumerate(iter_images(ws, rows), 1):
        pixels[sample_id] = _pixels(sample_id, png)
        if progress and n % 256 == 0:
            progress(n, len(rows))
    if progress:
        progress(len(rows), len(rows))
    ids = table["sample_id"].to_pylist()
    shape = pixels[ids[0]].shape
    odd = next((i for i in ids if pixels[i].shape != shape), None)
    if odd is not None:
        raise ManifestError(
            f"sample {shown(odd)}: its image is {pixels[odd].shape}, not {shape} like {shown(ids[0])}; "
            "a manifest holds one image size (regenerate it)"
        )
    images = np.stack([pixels[i] for i in ids])
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    n = len(images)
    identities = table["identity"].to_pylist()

    contrast = flat.std(axis=1)
    pred: list[str | None] = [None] * n
    conf: list[float | None] = [None] * n
    nn: list[float | None] = [None] * n
    observed: list[dict[str, str] | None] = [None] * n
    if domain is not None:
        classes, proba, top = domain.identity(flat)
        pred = [classes[k] for k in top]
        conf = [
            float(proba[i, classes.index(identities[i])]) if identities[i] in classes else 0.0
            for i in range(n)
        ]
        nn = [float(d) for d in domain.nearest_real(flat)]
        observed = list(domain.observed(images, identities))

    reasons: list[str] = []
    for i in range(n):
        c, d = conf[i], nn[i]
        if contrast[i] < params.min_contrast:
            reasons.append(f"low_contrast: pixel std {contrast[i]:.3f} < {params.min_contrast}")
        elif pred[i] is not None and pred[i] != identities[i]:
            reasons.append(f"identity_mismatch: classifier says {pred[i]}, not {identities[i]}")
        elif c is not None and c < params.identity_threshold:
            reasons.append(f"low_confidence: {c:.3f} < {params.identity_threshold}")
        elif d is not None and d < params.memorised_distance:
            reasons.append(f"memorised_copy: RMS {d:.4f} to a real train image < {params.memorised_distance}")
        else:
            reasons.append("")

    # Near-duplicates among images that passed so far, per identity, in plan order: the first stays.
    duplicate_of: list[str | None] = [None] * n
    if params.duplicate_distance >= 0:
        bits = np.array([list(bytes.fromhex(h)) for h in table["phash"].to_pylist()], dtype=np.uint8)
        kept: dict[str, list[int]] = {}
        for i in range(n):
            if reasons[i]:
                continue
            earlier = kept.setdefault(identities[i], [])
            if earlier:
                dist = np.unpackbits(bits[earlier] ^ bits[i], axis=1).sum(axis=1)
                k = int(dist.argmin())
                if dist[k] <= params.duplicate_distance:
                    duplicate_of[i] = ids[earlier[k]]
                    reasons[i] = f"near_duplicate: of {ids[earlier[k]]} (phash distance {dist[k]})"
                    continue
            earlier.append(i)

    decision = ["rejected" if r else "accepted" for r in reasons]
    reasons = [r or "ok: passed every check" for r in reasons]
    updates = {
        "identity_pred": pa.array(pred, pa.string()),
        "identity_confidence": pa.array(conf, pa.float64()),
        "contrast": pa.array(contrast.astype(float), pa.float64()),
        "nn_distance": pa.array(nn, pa.float64()),
        "duplicate_of": pa.array(duplicate_of, pa.string()),
        "observed_attributes": pa.array(
            [list(o.items()) if o is not None else None for o in observed],
            mf.SCHEMA.field("observed_attributes").type,
        ),
        "decision": pa.array(decision, pa.string()),
        "reason": pa.array(reasons, pa.string()),
    }
    for name, values in updates.items():
        table = table.set_column(table.schema.get_field_index(name), mf.SCHEMA.field(name), values)
    out_path = out_dir / "manifest.parquet"
    mf.write_table(table, out_path)

    counts = dict(sorted(Counter(r.split(":")[0] for r in reasons).items()))
    accepted = decision.count("accepted")
    summary = {
        "candidates": relative(ws, in_path),
        "candidates_sha256": sha256_file(in_path),
        "params": params.model_dump(),
        "total": n,
        "accepted": accepted,
        "rejected": n - accepted,
        "accepted_share": round(accepted / n, 4),
        "reasons": counts,
        "domain": domain.describe() if domain is not None else None,
        "not_checked": []
        if domain is not None
        else [f"identity and memorised-copy checks: no domain for backend(s) {backends}"],
    }
    atomic_write_text(out_dir / "filter.json", json.dumps(summary, indent=2) + "\n")
    audit.append(
        ws,
        "filter",
        relative(ws, out_dir),
        {
            "candidates_sha256": summary["candidates_sha256"],
            "manifest_sha256": sha256_file(out_path),
            "accepted": accepted,
            "total": n,
            "reasons": counts,
            "params": summary["params"],
        },
    )
    return FilterResult(out_path, n, accepted, counts)
