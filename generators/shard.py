"""One shard of generation: a job's requests in, a tar of marked PNGs and their manifest rows out.

``make_shard`` is what both executors run (the local runner in ``generators.generate`` and the Ray
executor), so their output is byte-identical; it never imports either runner."""

from __future__ import annotations

import io
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from generators.backends import Backend
from generators.plan import iter_plan
from registry.core.digests import perceptual_hashes, sha256_bytes
from registry.core.fsio import atomic_path
from registry.core.workspace import relative
from registry.records.dataset import GenerationRequest, Recipe
from registry.store import manifest as mf
from registry.store.marking import Marking, mark_png
from registry.store.shards import write_shard
from registry.trust.credentials import Credentials

if TYPE_CHECKING:
    from PIL import Image


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("synthreg", "torch", "diffusers", "transformers", "numpy", "pillow", "imagehash"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def encode_png(image: np.ndarray, marking: Marking | None = None) -> bytes:
    """The PNG of ``image``; with ``marking``, an XMP iTXt chunk saying it is AI-generated (IPTC
    trainedAlgorithmicMedia), which sample it is and which generator weights made it (registry.store.marking).
    Deterministic, so the digest covers the marking and reproduce still matches bit for bit."""
    png = _png(_picture(image))
    return png if marking is None else mark_png(png, marking)


def _picture(image: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB")


def _png(picture: Image.Image) -> bytes:
    """Pillow's PNG of ``picture``, unmarked: ``mark_png`` then splices the marking in after IHDR, the
    bytes Pillow writes with the packet in a PngInfo, with no PngInfo built an image (issue 22)."""
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Job:
    """A checked plan, small enough to send to a worker: requests are rebuilt shard by shard."""

    ws: Path
    out_dir: Path
    recipe: Recipe
    images: int
    batch_size: int
    shard_size: int
    weights_digest: str
    plan_digest: str
    c2pa: Credentials | None = None  # sign every PNG with these (the recipe asks for C2PA)

    @property
    def work(self) -> Path:
        return self.out_dir / ".work"

    @property
    def shards(self) -> int:
        return -(-self.images // self.shard_size)

    def shard_rel(self, j: int) -> str:
        return relative(self.ws, self.out_dir / "shards" / f"shard-{j:05d}.tar")

    def shard_batches(self, j: int) -> list[tuple[int, int, int]]:
        """(batch, start, stop) of shard ``j``; batches never straddle a shard boundary."""
        start, stop = j * self.shard_size, min((j + 1) * self.shard_size, self.images)
        first = j * -(-self.shard_size // self.batch_size)
        return [
            (first + i, s, min(s + self.batch_size, stop))
            for i, s in enumerate(range(start, stop, self.batch_size))
        ]

    def part(self, j: int) -> Path:
        return self.work / "parts" / f"shard-{j:05d}.parquet"


def make_shard(
    job: Job,
    backend: Backend,
    j: int,
    versions: dict[str, str],
    on_images: Callable[[int], None] | None = None,
) -> int:
    """Make shard ``j`` (or finish it from its checkpointed batches); return the images generated.

    Both executors call this, so a shard is the same bytes whoever makes it. ``on_images`` hears of
    every batch done (of the whole shard at once when it was already done)."""
    batches = job.shard_batches(j)
    if job.part(j).is_file():
        if on_images:
            on_images(batches[-1][2] - batches[0][1])
        return 0
    generated, tables = 0, []
    for b, s, e in batches:
        batch_file = job.work / "batches" / f"batch-{b:06d}.parquet"
        if batch_file.is_file():
            table = pq.read_table(batch_file)
        else:
            requests = list(iter_plan(job.recipe, s, e))
            table = run_batch(backend, requests, b, job.recipe, job.shard_rel(j), versions, job.c2pa)
            generated += e - s
            # The shard is written straight from its last batch, so that one needs no checkpoint: a
            # kill before the shard is written remakes it, as it would a batch killed mid-way.
            if b != batches[-1][0]:
                with atomic_path(batch_file) as tmp:
                    pq.write_table(table, tmp, compression="zstd")
        tables.append(table)
        if on_images:
            on_images(e - s)
    shard_table = pa.concat_tables(tables)
    write_shard(
        job.ws / job.shard_rel(j),
        zip(shard_table["member"].to_pylist(), shard_table["png"].to_pylist(), strict=True),
    )
    mf.write_table(shard_table.drop_columns(["png"]), job.part(j))
    for b, _, _ in batches:
        (job.work / "batches" / f"batch-{b:06d}.parquet").unlink(missing_ok=True)
    return generated


def run_batch(
    backend: Backend,
    requests: list[GenerationRequest],
    batch: int,
    recipe: Recipe,
    shard: str,
    versions: dict[str, str],
    c2pa: Credentials | None = None,
) -> pa.Table:
    """Generate one batch; return its manifest rows plus a ``png`` column of encoded images.

    The rows are built as columns (``mf.columns_table``), not as a SampleRecord each: every value
    comes from a validated request, the backend's spec or this batch, and the first row is validated
    as a SampleRecord, which checks what the rows share (issue 22)."""
    images = backend.generate(requests)
    spec = backend.spec
    pictures = [_picture(image) for image in images]
    pngs = [
        mark_png(_png(picture), Marking(req.sample_id, spec.name, spec.weights_digest))
        for req, picture in zip(requests, pictures, strict=True)
    ]
    if c2pa is not None:  # after the XMP, before the digest: the sha256 covers the manifest
        from registry.trust.credentials import PngSigner

        signer = PngSigner(c2pa)
        try:
            pngs = [
                signer.sign(png, Marking(req.sample_id, spec.name, spec.weights_digest))
                for req, png in zip(requests, pngs, strict=True)
            ]
        finally:
            signer.close()
    per_row = {name: [getattr(req, name) for req in requests] for name in GenerationRequest.model_fields}
    per_row |= {
        "image_sha256": [sha256_bytes(png) for png in pngs],
        "phash": perceptual_hashes(pictures),  # the pixels the PNG holds, so no decode
        "member": [f"{req.sample_id}.png" for req in requests],
    }
    shared = {
        "dataset": recipe.dataset,
        "generator_name": spec.name,
        "generator_backend": spec.backend,
        "generator_source": spec.source,
        "weights_digest": spec.weights_digest,
        "generator_licence": spec.licence,
        "pipeline_class": spec.pipeline_class,
        "scheduler": spec.scheduler,
        "scheduler_config_digest": spec.scheduler_config_digest,
        "shard": shard,
        "batch": batch,
        "batch_size": len(requests),
        "library_versions": versions,
        "device": backend.device,
    }
    table = mf.columns_table(len(requests), per_row, shared)
    mf.records(table.slice(0, 1))  # validates the first row, and with it every shared value
    return table.append_column("png", pa.array(pngs, type=pa.binary()))
