"""The synthetic-pattern backend: deterministic test patterns for load tests. NOT data, no model.

Each image is a sine grating whose frequencies come from the request's identity and whose phase comes
from its attributes, plus Gaussian noise drawn from ``numpy.random.default_rng(seed)``: it depends only
on the request and on ``pattern.json``, costs microseconds, and exercises every stage (shards,
manifests, filters, policies, releases, DVC) at scale without a GPU.

The output is named so that nobody mistakes it for data: backend ``synthetic-pattern``, pipeline class
``LoadTestPattern``, licence ``LicenseRef-synthreg-load-test`` (policies/licenses.yaml: it forbids
training a model on the images, and the licence rule refuses a dataset declared for training), and the
dataset card and ``synthreg validate`` print :data:`registry.records.dataset.LOAD_TEST_WARNING`.

Its "weights digest" is the sha256 over a ``sha256sum``-style listing of the two things that decide its
pixels: the generator folder's ``pattern.json`` and this file's source. Editing either changes the
digest, so a pinned recipe refuses to run on a changed algorithm.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from registry.core.digests import sha256_bytes, sha256_file
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerationRequest, GeneratorRef, GeneratorSpec

PIPELINE_CLASS = "LoadTestPattern"
CONFIG = "pattern.json"
VERSION = 1
MIN_SIZE, MAX_SIZE = 8, 512


def _unit(text: str) -> int:
    """A stable 64-bit integer from text (Python's hash() is salted per process)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:16], 16)


class SyntheticPatternBackend:
    def __init__(self, ref: GeneratorRef, folder: Path, device: str = "cpu") -> None:
        config_path = folder / CONFIG
        if not config_path.is_file():
            raise GeneratorError(
                f"{folder} has no {CONFIG}, so it is not a synthetic-pattern folder; "
                "point generator.path at generators/synthetic_pattern"
            )
        try:
            config = json.loads(config_path.read_text())
            version, amplitude, noise = (
                config["version"],
                float(config["amplitude"]),
                float(config["noise_std"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise GeneratorError(
                f"{config_path} is not a valid pattern config ({e!r}); restore it from git"
            ) from e
        if version != VERSION:
            raise GeneratorError(
                f"{config_path} asks for pattern version {version!r}; this backend draws version {VERSION}"
            )
        self.amplitude, self.noise = amplitude, noise
        source = Path(__file__)
        listing = f"{sha256_file(config_path)}  {CONFIG}\n{sha256_file(source)}  {source.name}\n"
        self.device = "cpu"  # numpy only, whatever params.yaml asks
        self.spec = GeneratorSpec.loaded(ref, sha256_bytes(listing.encode()), PIPELINE_CLASS, "none", {})

    def check(self, req: GenerationRequest) -> None:
        for side, value in (("width", req.width), ("height", req.height)):
            if not MIN_SIZE <= value <= MAX_SIZE:
                raise GeneratorError(
                    f"synthetic-pattern draws {MIN_SIZE} to {MAX_SIZE} pixels a side; "
                    f"got {side} {value}: change the recipe's size"
                )

    def draw(self, req: GenerationRequest) -> np.ndarray:
        """One uint8 grayscale image of the request's size."""
        h = _unit(req.identity)
        fx, fy = 1 + h % 5, 1 + (h >> 8) % 5
        phase = (_unit(json.dumps(req.attributes, sort_keys=True)) % 360) * np.pi / 180
        y, x = np.mgrid[0 : req.height, 0 : req.width] / max(req.width, req.height)
        base = 0.5 + self.amplitude * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
        pixels = base + np.random.default_rng(req.seed).normal(0, self.noise, base.shape)
        return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)

    def generate(self, requests: list[GenerationRequest]) -> list[np.ndarray]:
        return [self.draw(r) for r in requests]
