"""Regenerate one image from its manifest record and say whether it is bit-identical.

An image signed with C2PA content credentials cannot be: c2pa-rs salts its manifest at random
(registry.trust.credentials). For one, what must match is everything else: the recorded image with
its C2PA chunk removed is compared, bit for bit, with the regenerated image before signing (pixels,
XMP marking and all other chunks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from generators.backends import load_backend
from generators.shard import encode_png
from registry.core.digests import sha256_bytes
from registry.core.errors import ReproduceError
from registry.core.workspace import inside
from registry.records.dataset import GenerationRequest, GeneratorRef
from registry.store import manifest as mf
from registry.store.marking import Marking


@dataclass(frozen=True)
class ReproduceResult:
    sample_id: str
    manifest: Path
    recorded_sha256: str
    reproduced_sha256: str
    # the recorded image's sha256 without its C2PA chunk, when it carries one (else None)
    unsigned_sha256: str | None = None

    @property
    def match(self) -> bool:
        return self.reproduced_sha256 in (self.recorded_sha256, self.unsigned_sha256)


def _unsigned_sha256(ws: Path, rec) -> str | None:
    """sha256 of the recorded image without its C2PA chunk; None unless the shard holds the recorded
    bytes and they carry one."""
    from registry.core.errors import ManifestError
    from registry.store.shards import read_members
    from registry.trust.credentials import has_c2pa, strip_c2pa

    try:
        png = read_members(ws / rec.shard).get(rec.member)
    except ManifestError:
        return None
    if png is None or sha256_bytes(png) != rec.image_sha256 or not has_c2pa(png):
        return None
    return sha256_bytes(strip_c2pa(png))


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
    reproduced = sha256_bytes(png)
    unsigned = None if reproduced == rec.image_sha256 else _unsigned_sha256(ws, rec)
    return ReproduceResult(sample_id, path, rec.image_sha256, reproduced, unsigned)
