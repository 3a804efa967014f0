"""Build a load-test workspace's candidates directly: what ``synthreg generate`` writes, in parallel.

Run from a bench workspace (``bench_e2e.py --direct`` calls it; you rarely run it alone)::

    python benchmarks/build_direct.py WORKSPACE [--workers N]

Issue 22 asks for the stages after generate at 10,000,000 images, where ``synthreg generate`` itself
(one process, about 0.3-0.5 ms an image here) would take more than an hour. This script writes the same
files as generate for the workspace's recipe and ``params.yaml``: ``data/<dataset>/candidates/`` with
its shards, ``manifest.parquet`` and ``generation.json``, and generate's audit event.
``tests/generators/test_build_direct.py`` holds them equal to generate's, byte for byte, at a few
thousand images. It gets there with generate's own code (the plan, ``run_batch``, ``write_shard``, the
manifest parts and ``finish``), with three differences that change no byte:

- **The grating is drawn once.** The synthetic-pattern backend computes its grating again for every
  image, though the grating depends only on the identity, the attributes and the size. That is about
  three quarters of its time. ``CachedPattern`` computes each grating once and adds each image's own
  noise, drawn from its seed, as the backend does.
- **Shards are made by a pool of processes**, one per core by default, where generate runs one
  process.
- **The plan digest is taken from each shard's requests.** Generate walks the whole plan once more
  for it, before any image is made.

The audit event says ``"built_by": "benchmarks/build_direct.py"``, so nobody mistakes the run for
generate's. This is a benchmark's tool. Nothing in synthreg calls it, and the only generator it knows is
the load-test backend.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from generators.backends import load_backend
from generators.backends import synthetic_pattern as sp
from generators.generate import canon, default_out_dir, finish, start_work
from generators.plan import iter_plan, plan_size
from generators.shard import Job, library_versions, run_batch
from registry.core.digests import sha256_file
from registry.core.workspace import relative
from registry.records.config import load_params, load_recipe
from registry.records.dataset import LOAD_TEST_BACKEND, GenerationRequest
from registry.store import audit
from registry.store import manifest as mf
from registry.store.marking import Marking, check_markable
from registry.store.shards import write_shard


class CachedPattern:
    """The synthetic-pattern backend with each grating computed once: the same pixels, bit for bit.

    ``draw`` in generators/backends/synthetic_pattern.py computes ``base`` from the identity, the
    attributes and the size alone, then adds noise from the seed. Here ``base`` is kept per
    (identity, attributes, size), and the rest is the backend's arithmetic, in the same order."""

    def __init__(self, backend: sp.SyntheticPatternBackend) -> None:
        self.inner, self.spec, self.device = backend, backend.spec, backend.device
        self._bases: dict[tuple, np.ndarray] = {}

    def check(self, req: GenerationRequest) -> None:
        self.inner.check(req)

    def _base(self, req: GenerationRequest) -> np.ndarray:
        attributes = json.dumps(req.attributes, sort_keys=True)
        key = (req.identity, attributes, req.width, req.height)
        base = self._bases.get(key)
        if base is None:
            h = sp._unit(req.identity)
            fx, fy = 1 + h % 5, 1 + (h >> 8) % 5
            phase = (sp._unit(attributes) % 360) * np.pi / 180
            y, x = np.mgrid[0 : req.height, 0 : req.width] / max(req.width, req.height)
            grating = np.sin(2 * np.pi * (fx * x + fy * y) + phase)
            base = self._bases[key] = 0.5 + self.inner.amplitude * grating
        return base

    def generate(self, requests: list[GenerationRequest]) -> list[np.ndarray]:
        out = []
        for req in requests:
            base = self._base(req)
            pixels = base + np.random.default_rng(req.seed).normal(0, self.inner.noise, base.shape)
            out.append(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8))
        return out


_JOB: Job | None = None  # set in the parent before the pool forks: each worker inherits it
_BACKEND: CachedPattern | None = None
_VERSIONS: dict[str, str] = {}


def _make_shard(j: int) -> bytes:
    """Shard ``j`` and its manifest part, as ``make_shard`` writes them (no checkpoints: a killed build
    is simply run again); returns its requests as the plan digest takes them."""
    job, backend = _JOB, _BACKEND
    assert job is not None and backend is not None
    spec, tables, texts = backend.spec, [], []
    for b, s, e in job.shard_batches(j):
        requests = list(iter_plan(job.recipe, s, e))
        for req in requests:  # what plan_job checks of every request
            backend.check(req)
            check_markable(Marking(req.sample_id, spec.name, spec.weights_digest))
            texts.append(canon(req.model_dump()))
        tables.append(run_batch(backend, requests, b, job.recipe, job.shard_rel(j), _VERSIONS))
    table = pa.concat_tables(tables)
    write_shard(
        job.ws / job.shard_rel(j),
        zip(table["member"].to_pylist(), table["png"].to_pylist(), strict=True),
    )
    mf.write_table(table.drop_columns(["png"]), job.part(j))
    return b",".join(texts)


def build(ws: Path, workers: int | None = None, params_file: str = "params.yaml") -> Path:
    """Write the candidates of ``ws``'s one dataset as ``synthreg generate`` would; return their folder."""
    global _JOB, _BACKEND, _VERSIONS
    ws = ws.resolve()
    params = load_params(ws / params_file, ws)
    recipes = [d.recipe for d in params.datasets.values()] if params.datasets else [params.recipe]
    if len(recipes) != 1:
        raise SystemExit(f"{ws / params_file} names {len(recipes)} datasets; build_direct builds one")
    recipe = load_recipe(ws / recipes[0])
    if recipe.generator.backend != LOAD_TEST_BACKEND:
        raise SystemExit(
            f"build_direct makes {LOAD_TEST_BACKEND} images only; "
            f"{recipes[0]} uses {recipe.generator.backend}"
        )
    if recipe.c2pa:  # generate signs every image then; this builder has no C2PA signer
        raise SystemExit(f"{recipes[0]} asks for C2PA content credentials; build_direct makes none")
    gen = params.generate
    backend = CachedPattern(load_backend(recipe.generator, ws, gen.device))
    spec = backend.spec
    out_dir = ws / default_out_dir(recipe)
    shard_size = gen.shard_size_for(plan_size(recipe))
    job = Job(ws, out_dir, recipe, plan_size(recipe), gen.batch_size, shard_size, spec.weights_digest, "")
    start_work(job, out_dir / "manifest.parquet", out_dir / "generation.json")
    _JOB, _BACKEND, _VERSIONS = job, backend, library_versions()

    started, started_at = time.perf_counter(), datetime.now(UTC)
    h = hashlib.sha256()  # plan_job's digest, framed as it frames it (no C2PA: the load test has none)
    h.update(b'{"batch_size":' + canon(gen.batch_size) + b',"requests":[')
    with multiprocessing.get_context("fork").Pool(workers or os.cpu_count()) as pool:
        for j, chunk in enumerate(pool.imap(_make_shard, range(job.shards))):
            h.update((b"," if j else b"") + chunk)
    h.update(b'],"scheduler":' + canon(spec.scheduler_config_digest))
    h.update(b',"shard_size":' + canon(shard_size) + b',"weights":' + canon(spec.weights_digest) + b"}")
    job = replace(job, plan_digest=h.hexdigest())

    finish(ws, recipe, out_dir, gen, spec, job, out_dir / "manifest.parquet", out_dir / "generation.json")
    audit.append(
        ws,
        "generate",
        relative(ws, out_dir),
        {
            "images": job.images,
            "generated": job.images,
            "plan_digest": job.plan_digest,
            "generator": spec.name,
            "weights_digest": spec.weights_digest,
            "manifest_sha256": sha256_file(out_dir / "manifest.parquet"),
            "started_at": started_at.isoformat(),
            "seconds": round(time.perf_counter() - started, 3),
            "host": platform.node(),
            "device": backend.device,
            "built_by": "benchmarks/build_direct.py",
        },
    )
    return out_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = ap.parse_args()
    t = time.perf_counter()
    out = build(args.workspace, args.workers)
    print(f"built {out} in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
