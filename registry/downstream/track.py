"""Log a synthreg dataset as an input of an MLflow run, from any training code.

    import mlflow, registry
    with mlflow.start_run():
        registry.log_dataset(ws, "digits@1.0.0", samples=ids_drawn)   # or "digits@working", or a path
        ... train, mlflow.pytorch.log_model(...) ...

What a run then carries (``registry.downstream.tracking`` names the conventions; ``trace`` and ``impact``
read them):

- a dataset input ``NAME@X.Y.Z`` (a release) or ``NAME@working`` (an unreleased manifest), source type
  ``synthreg`` (:mod:`registry.downstream.mlflow_source`), digest = the manifest sha256's first 36 hex (all
  MLflow
  keeps), and a profile (:class:`DatasetProfile`) with the whole sha256, the DVC md5 (the name DVC's
  cache and remote give the file), the generators and their weights digests, the recipe digest, the
  real sources and the policy status: enough to find the manifest again by content, and to say what the
  data was when it cannot be found;
- tags ``synthreg.dataset``, ``synthreg.manifest_sha256``, ``synthreg.dvc_md5`` (the first training input);
- with ``samples``: the artifact ``synthreg/samples/NAME/VERSION.txt`` (the sample ids drawn, sorted, one
  a line) and the tag ``synthreg.samples.NAME.VERSION`` = ``"<count> <sha256 of the artifact>"``, so
  ``impact --sample`` names only the runs that drew a sample.

The profile holds facts of the dataset only, never of the run: MLflow stores one row per (experiment,
name, digest) and shares it between runs. MLflow is imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.core import vcs
from registry.core.digests import sha256_bytes, sha256_file, sha256_json
from registry.core.errors import ManifestError, ReleaseError, TrackingError
from registry.downstream import tracking
from registry.records.dataset import DATASET_NAME, Recipe
from registry.records.profile import DatasetProfile, GeneratorDigest, PolicyStatus

# MLflow stores a dataset digest in 36 characters at most (mlflow/utils/validation.py
# MAX_DATASET_DIGEST_SIZE, the datasets.digest VARCHAR(36) column): a sha256 (64 hex) does not fit.
MLFLOW_DIGEST_CHARS = 36
SAMPLES_DIR = "synthreg/samples"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoggedDataset:
    """What :func:`log_dataset` logged."""

    input_name: str
    digest: str
    profile: DatasetProfile
    samples: int | None  # sample ids recorded; None: not recorded


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def head(ws: Path) -> str:
    return vcs.head(ws)


def _rel(ws: Path, path: Path) -> str:
    resolved = path.resolve()
    return resolved.relative_to(ws).as_posix() if resolved.is_relative_to(ws) else str(resolved)


def _generation_recipe(ws: Path, name: str) -> Recipe | None:
    """The recipe the working images of ``name`` were generated with (candidates/generation.json)."""
    path = ws / "data" / name / "candidates" / "generation.json"
    try:
        return Recipe.model_validate(json.loads(path.read_text())["recipe"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _policy(ws: Path, name: str, manifest_sha256: str) -> PolicyStatus:
    report = ws / "data" / name / "policy" / "report.json"
    try:
        data = json.loads(report.read_text())
    except (OSError, ValueError):
        return PolicyStatus(report_sha256=None, passed=None)
    if not isinstance(data, dict) or data.get("manifest_sha256") != manifest_sha256:
        return PolicyStatus(report_sha256=None, passed=None)  # a stale report names nothing
    return PolicyStatus(report_sha256=sha256_file(report), passed=bool(data.get("passed")))


def manifest_facts(manifest: Path) -> dict[str, Any]:
    """Counts, reasons, seed range and generators of the manifest at ``manifest``, in one DuckDB pass each."""
    from registry.store import manifest as mf

    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist; check the path (or `dvc pull` it)")
    con = mf.connect(manifest)
    try:
        cols = {r[0] for r in con.execute("DESCRIBE manifest").fetchall()}
        if "weights_digest" not in cols or "sample_id" not in cols:
            raise ManifestError(
                f"{manifest} is not a synthreg manifest (no sample_id/weights_digest columns)"
            )
        decision = "decision" if "decision" in cols else "NULL"
        reason = "reason" if "reason" in cols else "NULL"
        (row,) = con.execute(  # fetchall: fetchone leaves the result open (DuckDB 2.0)
            f"SELECT count(*), count(*) FILTER (WHERE {decision} = 'accepted'), min(seed), max(seed) "
            "FROM manifest"
        ).fetchall()
        reasons = dict(
            con.execute(
                f"SELECT split_part(coalesce({reason}, 'unfiltered'), ':', 1), count(*) FROM manifest "
                "GROUP BY 1 ORDER BY 1"
            ).fetchall()
        )
        gens = con.execute(
            "SELECT generator_name, generator_backend, weights_digest, generator_licence, pipeline_class, "
            "scheduler, count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    finally:
        con.close()
    return {
        "rows": row[0],
        "accepted": row[1],
        "seed_min": row[2],
        "seed_max": row[3],
        "reasons": reasons,
        "generators": [
            GeneratorDigest(
                name=g[0],
                backend=g[1],
                weights_digest=g[2],
                licence=g[3],
                pipeline_class=g[4],
                scheduler=g[5],
                images=g[6],
            )
            for g in gens
        ],
    }


def describe(
    ws: Path, name: str, version: str, manifest: Path, git_commit: str | None = None
) -> DatasetProfile:
    """The profile of the manifest at ``manifest``: released (``version`` X.Y.Z) or working."""
    facts = manifest_facts(manifest)
    released = version != tracking.WORKING
    sha = sha256_file(manifest)
    if released:
        from registry.store.releases import load_release

        r = load_release(ws, f"{name}@{version}")
        recipe_sha = sha256_json(r.recipe.model_dump(mode="json")) if r.recipe else None
        seed: int | None = r.seed
        templates, sources = list(r.prompt_templates), list(r.sources)
        policy = PolicyStatus(report_sha256=r.policy_report_sha256, passed=r.policy_passed)
        commit = r.git_commit
    else:
        recipe = _generation_recipe(ws, name)
        recipe_sha = sha256_json(recipe.model_dump(mode="json")) if recipe else None
        templates = list(recipe.prompt_templates) if recipe else []
        seed = recipe.seed if recipe else None
        sources = list(recipe.sources) + list(recipe.generator.training_sources) if recipe else []
        policy = _policy(ws, name, sha)
        commit = git_commit or head(ws)
    return DatasetProfile(
        dataset=name,
        version=version,
        released=released,
        manifest_sha256=sha,
        dvc_md5=md5_file(manifest),
        manifest_path=_rel(ws, manifest),
        **facts,
        recipe_sha256=recipe_sha,
        recipe_seed=seed,
        prompt_templates=templates,
        sources=sources,
        policy=policy,
        git_commit=commit,
    )


def _dataset_of(manifest: Path) -> str:
    from registry.store import manifest as mf

    con = mf.connect(manifest)
    try:
        names = [r[0] for r in con.sql("SELECT DISTINCT dataset FROM manifest ORDER BY 1").fetchall()]
    except Exception as e:  # duckdb raises its own types for a file that is not a manifest
        raise ManifestError(f"{manifest} is not a readable synthreg manifest ({e})") from e
    finally:
        con.close()
    if len(names) != 1:
        raise ManifestError(
            f"{manifest} holds {len(names)} datasets ({', '.join(map(str, names))}); expected one"
        )
    return str(names[0])


def resolve(ws: Path, ref: str | Path) -> tuple[str, str, Path]:
    """``NAME@X.Y.Z``, ``NAME`` (latest release), ``NAME@working`` or a manifest path ->
    (name, version, manifest path). A release's manifest must still match its record."""
    from registry.store.releases import load_release, parse_ref, release_folder

    if isinstance(ref, Path) or str(ref).endswith(".parquet"):
        path = Path(ref)
        path = path if path.is_absolute() else ws / path
        if not path.is_file():
            raise ManifestError(f"manifest {path} does not exist; pass a manifest.parquet, or NAME@X.Y.Z")
        return _dataset_of(path), tracking.WORKING, path
    name, version = parse_ref(str(ref))
    if not DATASET_NAME.fullmatch(name):
        raise ReleaseError(f"dataset {ref!r} is not NAME@X.Y.Z, NAME, NAME@working or a manifest path")
    if version == tracking.WORKING:
        path = ws / "data" / name / "filtered" / "manifest.parquet"
        if not path.is_file():
            raise ManifestError(f"no filtered manifest for {name} at {path}; run `synthreg filter` first")
        return name, version, path
    record = load_release(ws, str(ref))
    path = release_folder(ws, record.name, record.version, record.manifest_path)
    if not path.is_file():
        raise ReleaseError(f"{path} is missing; run `dvc checkout` (or `dvc pull`) to restore it")
    if sha256_file(path) != record.manifest_sha256:
        raise ReleaseError(
            f"the manifest of {record.name}@{record.version} does not match its release record; "
            f"run `synthreg verify {record.name}@{record.version}`"
        )
    return record.name, record.version, path


def samples_tag(input_name: str) -> str:
    name, _, version = input_name.partition("@")
    return f"synthreg.samples.{name}.{version}"


def samples_artifact(input_name: str) -> str:
    name, _, version = input_name.partition("@")
    return f"{SAMPLES_DIR}/{name}/{version}.txt"


def _meta_input(profile: DatasetProfile, source: str):
    from mlflow.data.meta_dataset import MetaDataset

    from registry.downstream.mlflow_source import SynthregDatasetSource

    data = profile.model_dump(mode="json")

    class SynthregInput(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return data

        def to_dict(self) -> dict[str, str]:
            return super().to_dict() | {"profile": json.dumps(data, sort_keys=True)}

    return SynthregInput(
        SynthregDatasetSource(source),
        name=f"{profile.dataset}@{profile.version}",
        digest=profile.manifest_sha256[:MLFLOW_DIGEST_CHARS],
    )


def log_profile(
    profile: DatasetProfile, context: str = "training", samples: Iterable[str] | None = None
) -> LoggedDataset:
    """Log ``profile`` as an input of the active MLflow run (see the module docstring)."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        raise TrackingError("no active MLflow run; call log_dataset inside `with mlflow.start_run():`")
    source = tracking.dataset_source(profile.dataset, profile.version, profile.git_commit)
    item = _meta_input(profile, source)
    mlflow.log_input(item, context=context)
    input_name = item.name
    current = mlflow.get_run(run.info.run_id).data.tags
    if context == "training" and tracking.TAG_DATASET not in current:
        mlflow.set_tags(
            {
                tracking.TAG_DATASET: input_name,
                tracking.TAG_MANIFEST: profile.manifest_sha256,
                tracking.TAG_DVC_MD5: profile.dvc_md5,
            }
        )
    count = None
    if samples is not None:
        ids = sorted(set(samples))
        text = "".join(f"{i}\n" for i in ids)
        mlflow.log_text(text, samples_artifact(input_name))
        mlflow.set_tag(samples_tag(input_name), f"{len(ids)} {sha256_bytes(text.encode())}")
        count = len(ids)
    return LoggedDataset(input_name, profile.manifest_sha256[:MLFLOW_DIGEST_CHARS], profile, count)


def log_dataset(
    ws: Path | str,
    ref: str | Path,
    context: str = "training",
    samples: Iterable[str] | None = None,
) -> LoggedDataset:
    """Log a synthreg dataset (``NAME@X.Y.Z``, ``NAME``, ``NAME@working`` or a manifest path) as an input
    of the active MLflow run, with its content digest, DVC md5, generators, recipe, sources and policy
    status; ``samples``: the sample ids the run drew (recorded as an artifact; see the module docstring).
    """
    import mlflow

    from registry.core.workspace import root
    from registry.store import audit

    workspace = root(Path(ws))
    name, version, manifest = resolve(workspace, ref)
    logged = log_profile(describe(workspace, name, version, manifest), context, samples)
    run = mlflow.active_run()
    # Where auditors look (issue 21): a user's own script's run is in the audit log as `train`'s are.
    audit.append(
        workspace,
        "log-dataset",
        logged.input_name,
        {
            "run_id": run.info.run_id if run else None,
            "tracking_uri": tracking.tracking_uri(workspace),
            "context": context,
            "manifest_sha256": logged.profile.manifest_sha256,
            "samples_drawn": logged.samples,
        },
    )
    return logged
