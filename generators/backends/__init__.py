"""Generator backends: turn a batch of GenerationRequests into uint8 images and say what ran.

A backend exposes ``spec`` (a GeneratorSpec: weights digest, pipeline class, scheduler ...),
``device``, ``check(request)`` (refuse what it cannot make, before any image exists) and
``generate(requests) -> list[np.ndarray]``. It never writes files or provenance: the generate runner
does that, so every backend's records are alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from registry.core.errors import GeneratorError
from registry.core.workspace import inside
from registry.records.dataset import GenerationRequest, GeneratorRef, GeneratorSpec


class Backend(Protocol):
    spec: GeneratorSpec
    device: str

    def check(self, req: GenerationRequest) -> None: ...

    def generate(self, requests: list[GenerationRequest]) -> list[np.ndarray]: ...


def load_backend(ref: GeneratorRef, ws: Path, device: str = "cpu") -> Backend:
    """Load the generator a recipe names; refuse a missing folder or weights that differ from the pin."""
    check_device(device)
    folder = inside(ws, ref.path, "generator path")
    if not folder.is_dir():
        raise GeneratorError(
            f"generator folder {ref.path} does not exist (resolved to {folder}); "
            "fix generator.path in the recipe"
        )
    backend: Backend
    if ref.backend == "synthetic-pattern":  # no model, no diffusers import: a load test starts at once
        from generators.backends.synthetic_pattern import SyntheticPatternBackend

        backend = SyntheticPatternBackend(ref, folder, device)
    elif ref.backend == "tiny-digits":
        _quiet_diffusers()
        from generators.backends.tiny_digits import TinyDigitsBackend

        backend = TinyDigitsBackend(ref, folder, device)
    elif ref.backend == "diffusers":
        _quiet_diffusers()
        from generators.backends.diffusers_pipeline import DiffusersBackend

        backend = DiffusersBackend(ref, folder, device)
    else:  # the Recipe model's Literal makes this unreachable from YAML
        raise GeneratorError(f"unknown backend {ref.backend!r}")
    if ref.weights_digest and ref.weights_digest != backend.spec.weights_digest:
        raise GeneratorError(
            f"generator {ref.name}: weights in {ref.path} have digest {backend.spec.weights_digest}, "
            f"but {ref.name} pins {ref.weights_digest} (in the recipe, or the record being reproduced); "
            "restore the pinned weights or update the pin"
        )
    return backend


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have, before any model is loaded (torch would
    fail deep inside the first ``.to()`` with an AssertionError or a RuntimeError). Every machine has
    the CPU: that needs no torch, which the load-test backend never imports (issue 22: 2 s of a run)."""
    if device == "cpu":
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda" and (index == "" or index.isdigit()):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= n:
            raise GeneratorError(
                f"device {device!r} is not available: this machine has {n} CUDA device(s); "
                "set generate.device in params.yaml (or --device) to cpu or an existing cuda:N"
            )
    elif kind == "mps" and not index:
        if not torch.backends.mps.is_available():
            raise GeneratorError(f"device {device!r} is not available on this machine; use cpu")
    elif device != "cpu":
        raise GeneratorError(
            f"device {device[:40]!r} is not a torch device synthreg knows: use cpu, cuda:N or mps"
        )


def _quiet_diffusers() -> None:
    # diffusers warns on every load that `accelerate` is absent; it is not needed for inference here.
    from diffusers.utils import logging

    logging.set_verbosity_error()


__all__ = ["Backend", "check_device", "load_backend"]
