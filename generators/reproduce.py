"""Regenerate one image from its manifest record and say whether it is bit-identical."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generators.backends import load_backend
from generators.generate import encode_png
from registry import manifest as mf
from registry.digests import sha256_bytes
from registry.errors import ReproduceError
from registry.marking import Marking
from registry.models import GenerationRequest, GeneratorRef
from registry.workspace import inside


@dataclass(frozen=True)
class ReproduceResult:
    sample_id: str
    manifest: Path
    recorded_sha256: str
    reproduced_sha256: str

    @property
    def match(self) -> bool:
        return self.recorded_sha256 == self.reproduced_sha256


def find_manifest(ws: Path, sample_id: str) -> Path:
    """The first manifest under ``data/*/candidates`` or ``data/*/filtered`` holding ``sample_id``."""
    for path in sorted(ws.glob("data/*/candidates/manifest.parquet")) + sorted(
        ws.glob("data/*/filtered/manifest.parquet")
    ):
        con = mf.connect(path)
        hit = con.execute("SELECT 1 FROM manifest WHERE sample_id = ? LIMIT 1", [sample_id]).fetchone()
        if hit:
            return path
    raise ReproduceError(
        f"sample {sample_id!r} is in no manifest under {ws}/data; check the id or pass --manifest"
    )


def reproduce(
    sample_id: str, ws: Path, manifest: Path | str | None = None, device: str = "cpu"
) -> ReproduceResult:
    path = inside(ws, manifest, "manifest") if manifest else find_manifest(ws, sample_id)
    rec = mf.find_sample(path, sample_id)
    ref = GeneratorRef(
        name=rec.generator_name,
        backend=rec.generator_backend,  # a str; GeneratorRef validates it
        path=rec.generator_source,
        licence=rec.generator_licence,
        weights_digest=rec.weights_digest,  # refuse to "reproduce" with other weights
    )
    backend = load_backend(ref, ws, device)
    request = GenerationRequest(**{k: getattr(rec, k) for k in GenerationRequest.model_fields})
    backend.check(request)
    (image,) = backend.generate([request])
    png = encode_png(image, Marking(rec.sample_id, rec.generator_name, rec.weights_digest))
    return ReproduceResult(sample_id, path, rec.image_sha256, sha256_bytes(png))
