"""The generate stage: plan -> batches -> tar shards + a Parquet manifest, resumable after any kill.

Layout of an output folder (``data/<dataset>/candidates`` by default)::

    shards/shard-00000.tar     PNG members named <sample_id>.png, ~shard_size each
    manifest.parquet           one SampleRecord per image (written last: its presence means done)
    generation.json            recipe, generator spec, params and plan digest of the finished run
    .work/                     while running: plan.json, batches/*.parquet, parts/*.parquet

Resume. Shard j holds plan entries [j*S, (j+1)*S); batches never straddle shards. Each finished batch
but a shard's last is checkpointed to ``.work/batches/`` (records + PNG bytes, one Parquet file written
atomically); with the last one done the shard tar is written (atomically) and then its manifest part;
a part's presence marks its shard done. A restarted run skips done shards and done batches and
recomputes the rest; as every image depends only on its request and the weights, the result equals an
uninterrupted run's (same ids, same image digests, byte-identical shards: tar members carry fixed
metadata). A different plan (recipe, weights, batch or shard size changed) discards ``.work``.

C2PA. A recipe with ``marking: {c2pa: true}`` gets each PNG signed with C2PA content credentials
after its XMP marking (registry.trust.credentials), with the key and chain the command line or the
environment gives; they are checked before anything is written, and the signer's certificate digest
joins the plan digest (so turning C2PA on, or changing signer, makes a new plan). Signed images are
not byte-reproducible (c2pa-rs salts its hashes at random): a resumed run keeps its checkpointed
batches, and remakes the rest with equally valid but different bytes.

Executors. :func:`make_shard` is the whole of a shard's work; the local executor calls it shard after
shard, the Ray executor (generators/ray_executor.py) from an actor pool, so both write the same bytes.
Memory stays flat in the plan's size: requests are rebuilt shard by shard (``iter_plan``), the plan
digest is streamed, and the manifest is written part by part.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from generators.backends import Backend, load_backend
from generators.plan import iter_plan, plan_size
from generators.shard import Job, library_versions, make_shard
from registry.core.digests import sha256_file
from registry.core.errors import ManifestError
from registry.core.fsio import atomic_path, atomic_write_text
from registry.core.locks import folder_lock
from registry.core.workspace import inside, relative
from registry.records.config import load_recipe
from registry.records.dataset import (
    LOAD_TEST_BACKEND,
    GenerateParams,
    GeneratorSpec,
    Recipe,
)
from registry.store import audit
from registry.store import manifest as mf
from registry.store.marking import Marking, check_markable
from registry.trust.credentials import Credentials

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
    backend: str = ""
    # Recipe fields changed since these images were made that need no new images (declarations); only
    # set when the run found the images already complete.
    declarations_changed: tuple[str, ...] = ()
    nodes: dict[str, int] = field(default_factory=dict)  # shards made per Ray node id (Ray executor only)


def default_out_dir(recipe: Recipe) -> str:
    return f"data/{recipe.dataset}/candidates"


def plan_job(
    ws: Path,
    out_dir: Path,
    recipe: Recipe,
    params: GenerateParams,
    backend: Backend,
    c2pa: Credentials | None = None,
) -> Job:
    """Check every request with the backend and digest the plan, one request at a time.

    The digest is ``sha256_json({"requests": [...], "weights": ..., ...})`` of the whole plan, as before
    streaming (so an older interrupted run still resumes), built without holding the plan in memory.
    With C2PA it also holds ``"c2pa": {"signer": <sha256 of the signer certificate>}``; without, the
    key is absent and the digest is what it always was."""
    spec = backend.spec
    shard_size = params.shard_size_for(plan_size(recipe))  # adapts so a release loads in parallel
    h = hashlib.sha256()
    h.update(b'{"batch_size":' + canon(params.batch_size))
    if c2pa is not None:  # keys in sorted order, as sha256_json would write them
        h.update(b',"c2pa":' + canon({"signer": c2pa.signer_sha256}))
    h.update(b',"requests":[')
    for req in iter_plan(recipe):
        backend.check(req)
        check_markable(Marking(req.sample_id, spec.name, spec.weights_digest))  # as run_batch marks it
        h.update((b"," if req.index else b"") + canon(req.model_dump()))
    h.update(b'],"scheduler":' + canon(spec.scheduler_config_digest))
    h.update(b',"shard_size":' + canon(shard_size) + b',"weights":' + canon(spec.weights_digest))
    h.update(b"}")
    return Job(
        ws,
        out_dir,
        recipe,
        plan_size(recipe),
        params.batch_size,
        shard_size,
        spec.weights_digest,
        h.hexdigest(),
        c2pa,
    )


def canon(obj: object) -> bytes:
    """Canonical JSON bytes of ``obj`` (sorted keys, no spaces), as the plan digest hashes it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def generate(
    recipe_path: Path,
    ws: Path,
    out: Path | str | None = None,
    params: GenerateParams | None = None,
    progress: Progress | None = None,
    c2pa_key: Path | str | None = None,
    c2pa_chain: Path | str | None = None,
) -> GenerateResult:
    """Run (or resume) the recipe at ``recipe_path``; everything is validated before anything is written.

    ``params.executor`` picks who makes the shards: this process (``local``) or a Ray actor pool
    (``ray``, generators/ray_executor.py); the output is the same bytes either way. A recipe asking for
    C2PA signs with ``c2pa_key``/``c2pa_chain`` (else ``$SYNTHREG_C2PA_KEY``/``$SYNTHREG_C2PA_CHAIN``);
    without them it is refused, as is a missing or malformed certificate or key."""
    params = params or GenerateParams()
    recipe = load_recipe(inside(ws, recipe_path, "recipe"))
    out_dir = inside(ws, out or default_out_dir(recipe), "output folder")
    audit.log_path(ws)  # refused before anything is written
    # The lock is taken before the plan reads what out_dir holds (a resume), so two runs started together
    # really serialise: the second refuses, naming the first, instead of planning from the same state.
    with folder_lock(ws, out_dir, "generate"):  # a second run into out_dir refuses (registry.core.locks)
        creds = _c2pa_credentials(ws, recipe_path, recipe, c2pa_key, c2pa_chain)
        if params.threads and recipe.generator.backend != LOAD_TEST_BACKEND:
            import torch

            torch.set_num_threads(params.threads)
        backend = load_backend(recipe.generator, ws, params.device)
        job = plan_job(ws, out_dir, recipe, params, backend, creds)
        return _generate(ws, recipe, out_dir, params, backend, job, progress)


def _c2pa_credentials(
    ws: Path, recipe_path: Path | str, recipe: Recipe, key: Path | str | None, chain: Path | str | None
) -> Credentials | None:
    """The checked C2PA key and chain when the recipe asks for C2PA (None when it does not); a key
    inside the workspace is refused."""
    if not recipe.c2pa:
        return None
    import os

    from registry.core.errors import CredentialsError
    from registry.trust.credentials import ENV_CHAIN, ENV_KEY, NO_KEY_HINT, PngSigner, load_credentials

    if not (key or os.environ.get(ENV_KEY)) or not (chain or os.environ.get(ENV_CHAIN)):
        raise CredentialsError(
            f"recipe {recipe_path} asks for C2PA content credentials (marking: {{c2pa: true}}) but no "
            f"C2PA signing key and certificate chain are given: {NO_KEY_HINT}"
        )
    creds = load_credentials(key, chain, ws)
    PngSigner(creds).close()  # c2pa-python is there and accepts them, before anything is written
    return creds


def start_work(job: Job, manifest_path: Path, summary_path: Path) -> None:
    """The work folder for this plan (another plan's is removed), and no output of an older plan."""
    work = job.work
    plan_file = work / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()).get("plan_digest") != job.plan_digest:
        shutil.rmtree(work)
    # A new plan replaces the old output: its manifest would no longer match the shards.
    manifest_path.unlink(missing_ok=True)
    summary_path.unlink(missing_ok=True)
    (work / "batches").mkdir(parents=True, exist_ok=True)
    (work / "parts").mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan_file, json.dumps({"plan_digest": job.plan_digest, "images": job.images}))


def finish(
    ws: Path,
    recipe: Recipe,
    out_dir: Path,
    params: GenerateParams,
    spec: GeneratorSpec,
    job: Job,
    manifest_path: Path,
    summary_path: Path,
) -> None:
    """The manifest, then no shard of another plan, then the generation record; the work folder goes."""
    work = job.work
    shard_rel = [job.shard_rel(j) for j in range(job.shards)]
    _write_manifest(job, manifest_path)
    for stale in (out_dir / "shards").glob("shard-*.tar"):
        if relative(ws, stale) not in shard_rel:
            stale.unlink()
    for tmp in (out_dir / "shards").glob(".shard-*.tmp"):  # left by a writer killed mid-write
        tmp.unlink()
    atomic_write_text(
        summary_path,
        json.dumps(
            {
                "plan_digest": job.plan_digest,
                "recipe": recipe.model_dump(mode="json"),
                "generator": spec.model_dump(mode="json"),
                "params": params.model_dump(mode="json"),
                "images": job.images,
                "shards": shard_rel,
            },
            indent=2,
        )
        + "\n",
    )
    shutil.rmtree(work)


def _changes_since(done: dict, recipe: Recipe) -> tuple[list[str], list[str]]:
    """What changed in the recipe since the recorded generation: (fields that shape images, declarations).
    A record without a readable recipe: everything may have changed."""
    from pydantic import ValidationError

    from registry.records.dataset import recipe_changes

    try:
        recorded = Recipe.model_validate(done.get("recipe"))
    except ValidationError:
        return ["recipe"], []
    return recipe_changes(recorded, recipe)


def _generate(
    ws: Path,
    recipe: Recipe,
    out_dir: Path,
    params: GenerateParams,
    backend: Backend,
    job: Job,
    progress: Progress | None,
) -> GenerateResult:
    spec = backend.spec
    manifest_path = out_dir / "manifest.parquet"
    summary_path = out_dir / "generation.json"
    if manifest_path.is_file() and summary_path.is_file():
        done = json.loads(summary_path.read_text())
        shaping, declared = _changes_since(done, recipe)
        # The plan digest covers the requests and weights; a field it misses (the generator's name, in
        # every image's marking) still means new images: "already complete" only for this recipe's own.
        if done.get("plan_digest") == job.plan_digest and not shaping:
            if progress:
                progress(job.images, job.images)
            return GenerateResult(
                out_dir,
                manifest_path,
                job.images,
                job.shards,
                0,
                0.0,
                spec.weights_digest,
                spec.backend,
                tuple(declared),
            )

    pool = None
    if params.executor == "ray":  # reach the cluster and start the workers before anything is written
        from generators.ray_executor import ShardPool

        pool = ShardPool(job, params)

    start_work(job, manifest_path, summary_path)

    started, started_at = time.perf_counter(), datetime.now(UTC)
    generated = pool.run(progress) if pool else _run_local(job, backend, progress)
    nodes = dict(sorted(pool.nodes.items())) if pool else {}
    finish(ws, recipe, out_dir, params, spec, job, manifest_path, summary_path)
    audit.append(
        ws,
        "generate",
        relative(ws, out_dir),
        {
            "images": job.images,
            "generated": generated,
            "plan_digest": job.plan_digest,
            "generator": spec.name,
            "weights_digest": spec.weights_digest,
            "manifest_sha256": sha256_file(manifest_path),
            # Run-specific facts live here, not in the manifest (a DVC output must be reproducible).
            "started_at": started_at.isoformat(),
            "seconds": round(time.perf_counter() - started, 3),
            "host": platform.node(),
            "device": backend.device,
            **({"nodes": nodes} if nodes else {}),  # a Ray run: shards per node id
        },
    )
    return GenerateResult(
        out_dir,
        manifest_path,
        job.images,
        job.shards,
        generated,
        time.perf_counter() - started,
        spec.weights_digest,
        spec.backend,
        nodes=nodes,
    )


def _run_local(job: Job, backend: Backend, progress: Progress | None) -> int:
    versions = library_versions()
    done = 0

    def on_images(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done, job.images)

    return sum(make_shard(job, backend, j, versions, on_images) for j in range(job.shards))


def _write_manifest(job: Job, path: Path) -> None:
    """Stream the parts into one manifest, checking each against the plan, in row groups of whole shards
    of at least ``mf.group_rows`` rows (the last may hold fewer). A reader of a Parquet file holds the
    metadata of every row group: a group a shard (1,000 rows by default) made that about 380 MB for a
    10,000,000-image manifest, before filter read a row (issue 22)."""
    held: list[pa.Table] = []
    group = mf.group_rows(job.images)
    options = mf.writer_options(job.images)  # small pages where the groups are large
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, mf.SCHEMA, **options) as writer:
        for j in range(job.shards):
            batches = job.shard_batches(j)
            expected = list(range(batches[0][1], batches[-1][2]))
            part = pq.read_table(job.part(j)) if job.part(j).is_file() else None
            if part is None or part["index"].to_pylist() != expected:
                raise ManifestError(
                    f"{job.work} holds a partial run that does not match the plan (shard {j}); "
                    "delete it and rerun"
                )
            held.append(part.cast(mf.SCHEMA))
            if sum(t.num_rows for t in held) >= group or j == job.shards - 1:
                writer.write_table(pa.concat_tables(held).combine_chunks())
                held = []
