"""The generate stage: plan -> batches -> tar shards + a Parquet manifest, resumable after any kill.

Layout of an output folder (``data/<dataset>/candidates`` by default)::

    shards/shard-00000.tar     PNG members named <sample_id>.png, ~shard_size each
    manifest.parquet           one SampleRecord per image (written last: its presence means done)
    generation.json            recipe, generator spec, params and plan digest of the finished run
    .work/                     while running: plan.json, batches/*.parquet, parts/*.parquet

Resume. Shard j holds plan entries [j*S, (j+1)*S); batches never straddle shards. Each finished batch
is checkpointed to ``.work/batches/`` (records + PNG bytes, one Parquet file written atomically);
when a shard's batches are all there the shard tar is written (atomically) and then its manifest part;
a part's presence marks its shard done. A restarted run skips done shards and done batches and
recomputes the rest; as every image depends only on its request and the weights, the result equals an
uninterrupted run's (same ids, same image digests, byte-identical shards: tar members carry fixed
metadata). A different plan (recipe, weights, batch or shard size changed) discards ``.work``.
"""

from __future__ import annotations

import io
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from generators.backends import Backend, load_backend
from generators.plan import plan
from registry import audit
from registry import manifest as mf
from registry.config import load_recipe
from registry.digests import perceptual_hash, sha256_bytes, sha256_file, sha256_json
from registry.errors import ManifestError
from registry.fsio import atomic_path, atomic_write_text
from registry.marking import XMP_KEYWORD, Marking, xmp_packet
from registry.models import GenerateParams, GenerationRequest, Recipe, SampleRecord
from registry.shards import write_shard
from registry.workspace import inside, relative

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class GenerateResult:
    out_dir: Path
    manifest: Path
    images: int
    shards: int
    generated: int  # images made by this run (the rest were already done)
    seconds: float
    weights_digest: str


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
    trainedAlgorithmicMedia), which sample it is and which generator weights made it (registry.marking).
    Deterministic, so the digest covers the marking and reproduce still matches bit for bit."""
    from PIL import Image, PngImagePlugin

    info = None
    if marking is not None:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(XMP_KEYWORD, xmp_packet(marking), zip=False)
    buf = io.BytesIO()
    Image.fromarray(image, mode="L" if image.ndim == 2 else "RGB").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def default_out_dir(recipe: Recipe) -> str:
    return f"data/{recipe.dataset}/candidates"


def _batches(n: int, shard_size: int, batch_size: int) -> list[tuple[int, int, int]]:
    """(shard, start, stop) for every batch; batches never straddle a shard boundary."""
    out = []
    for shard_start in range(0, n, shard_size):
        shard_stop = min(shard_start + shard_size, n)
        out += [
            (shard_start // shard_size, s, min(s + batch_size, shard_stop))
            for s in range(shard_start, shard_stop, batch_size)
        ]
    return out


def generate(
    recipe_path: Path,
    ws: Path,
    out: Path | str | None = None,
    params: GenerateParams | None = None,
    progress: Progress | None = None,
) -> GenerateResult:
    """Run (or resume) the recipe at ``recipe_path``; everything is validated before anything is written."""
    params = params or GenerateParams()
    recipe = load_recipe(inside(ws, recipe_path, "recipe"))
    out_dir = inside(ws, out or default_out_dir(recipe), "output folder")
    if params.threads:
        import torch

        torch.set_num_threads(params.threads)
    backend = load_backend(recipe.generator, ws, params.device)
    requests = plan(recipe)
    for req in requests:
        backend.check(req)

    spec = backend.spec
    shard_size = params.shard_size_for(len(requests))  # adapts so a release loads in parallel
    batches = _batches(len(requests), shard_size, params.batch_size)
    n_shards = batches[-1][0] + 1
    plan_digest = sha256_json(
        {
            "requests": [r.model_dump() for r in requests],
            "weights": spec.weights_digest,
            "scheduler": spec.scheduler_config_digest,
            "batch_size": params.batch_size,
            "shard_size": shard_size,
        }
    )
    manifest_path = out_dir / "manifest.parquet"
    summary_path = out_dir / "generation.json"
    if manifest_path.is_file() and summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("plan_digest") == plan_digest:
            if progress:
                progress(len(requests), len(requests))
            return GenerateResult(
                out_dir, manifest_path, len(requests), n_shards, 0, 0.0, spec.weights_digest
            )

    work = out_dir / ".work"
    plan_file = work / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()).get("plan_digest") != plan_digest:
        shutil.rmtree(work)
    # A new plan replaces the old output: its manifest would no longer match the shards.
    manifest_path.unlink(missing_ok=True)
    summary_path.unlink(missing_ok=True)
    (work / "batches").mkdir(parents=True, exist_ok=True)
    (work / "parts").mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, json.dumps({"plan_digest": plan_digest, "images": len(requests)}))

    started = time.perf_counter()
    versions = library_versions()
    shard_rel = [relative(ws, out_dir / "shards" / f"shard-{j:05d}.tar") for j in range(n_shards)]
    generated, done_images = 0, 0
    for j in range(n_shards):
        part = work / "parts" / f"shard-{j:05d}.parquet"
        shard_batches = [(b, s, e) for b, (sj, s, e) in enumerate(batches) if sj == j]
        if part.is_file():
            done_images += sum(e - s for _, s, e in shard_batches)
            if progress:
                progress(done_images, len(requests))
            continue
        tables = []
        for b, s, e in shard_batches:
            batch_file = work / "batches" / f"batch-{b:06d}.parquet"
            if not batch_file.is_file():
                table = _run_batch(backend, requests[s:e], b, recipe, shard_rel[j], versions)
                with atomic_path(batch_file) as tmp:
                    pq.write_table(table, tmp, compression="zstd")
                generated += e - s
            tables.append(pq.read_table(batch_file))
            done_images += e - s
            if progress:
                progress(done_images, len(requests))
        shard_table = pa.concat_tables(tables)
        write_shard(
            ws / shard_rel[j],
            list(zip(shard_table["member"].to_pylist(), shard_table["png"].to_pylist(), strict=True)),
        )
        mf.write_table(shard_table.drop_columns(["png"]), part)
        for b, _, _ in shard_batches:
            (work / "batches" / f"batch-{b:06d}.parquet").unlink(missing_ok=True)

    parts = [pq.read_table(work / "parts" / f"shard-{j:05d}.parquet") for j in range(n_shards)]
    table = pa.concat_tables(parts)
    if table.num_rows != len(requests) or table["sample_id"].to_pylist() != [r.sample_id for r in requests]:
        raise ManifestError(f"{work} holds a partial run that does not match the plan; delete it and rerun")
    for stale in (out_dir / "shards").glob("shard-*.tar"):
        if relative(ws, stale) not in shard_rel:
            stale.unlink()
    mf.write_table(table, manifest_path)
    atomic_write_text(
        summary_path,
        json.dumps(
            {
                "plan_digest": plan_digest,
                "recipe": recipe.model_dump(mode="json"),
                "generator": spec.model_dump(mode="json"),
                "params": params.model_dump(mode="json"),
                "images": len(requests),
                "shards": shard_rel,
            },
            indent=2,
        )
        + "\n",
    )
    shutil.rmtree(work)
    audit.append(
        ws,
        "generate",
        relative(ws, out_dir),
        {
            "images": len(requests),
            "generated": generated,
            "plan_digest": plan_digest,
            "generator": spec.name,
            "weights_digest": spec.weights_digest,
            "manifest_sha256": sha256_file(manifest_path),
        },
    )
    return GenerateResult(
        out_dir,
        manifest_path,
        len(requests),
        n_shards,
        generated,
        time.perf_counter() - started,
        spec.weights_digest,
    )


def _run_batch(
    backend: Backend,
    requests: list[GenerationRequest],
    batch: int,
    recipe: Recipe,
    shard: str,
    versions: dict[str, str],
) -> pa.Table:
    """Generate one batch; return its manifest rows plus a ``png`` column of encoded images."""
    t0 = time.perf_counter()
    images = backend.generate(requests)
    gen_seconds = (time.perf_counter() - t0) / len(requests)
    created = datetime.now(UTC)
    spec = backend.spec
    rows, pngs = [], []
    for req, image in zip(requests, images, strict=True):
        t1 = time.perf_counter()
        png = encode_png(image, Marking(req.sample_id, spec.name, spec.weights_digest))
        phash = perceptual_hash(png)
        digest = sha256_bytes(png)
        rec = SampleRecord(
            dataset=recipe.dataset,
            **req.model_dump(),
            generator_name=spec.name,
            generator_backend=spec.backend,
            generator_source=spec.source,
            weights_digest=spec.weights_digest,
            generator_licence=spec.licence,
            pipeline_class=spec.pipeline_class,
            scheduler=spec.scheduler,
            scheduler_config_digest=spec.scheduler_config_digest,
            image_sha256=digest,
            phash=phash,
            shard=shard,
            member=f"{req.sample_id}.png",
            batch=batch,
            batch_size=len(requests),
            gen_seconds=gen_seconds,
            encode_seconds=time.perf_counter() - t1,
            library_versions=versions,
            device=backend.device,
            created_at=created,
        )
        rows.append(rec)
        pngs.append(png)
    table = mf.to_table(rows)
    return table.append_column("png", pa.array(pngs, type=pa.binary()))
