"""Lineage: trace a run, model or image back to what made it; find everything a generator, source,
prompt or sample reached; withdraw a release.

    trace_run(ws, run_id)            MLflow run -> dataset versions -> generators, prompts, seeds, sources
    trace_model(ws, "NAME/VERSION")  registered model version -> its run -> trace_run
    trace_image(ws, path)            image file -> its sample record and every version holding it
    impact(ws, generator=...)        generator | source | prompt regex | sample -> versions, runs, models
    withdraw(ws, "NAME@X.Y.Z", why)  mark a release withdrawn (withdrawal.json + audit event + git commit)

Runs are read through the conventions of :mod:`registry.downstream.tracking` (dataset input ``NAME@X.Y.Z``
with
digest = the manifest's sha256, or its first 32+ hex: MLflow keeps 36 characters of a dataset digest;
tag ``synthreg.manifest_sha256`` = the whole sha256). Manifests are queried in DuckDB, all released
ones at once (``read_parquet([...], filename=true)``), never loaded row by row into Python.

A withdrawal never touches the signed ``release.json``: it is a separate file beside it,
``releases/NAME/X.Y.Z/withdrawal.json``, so the release still verifies and every trace can say that
it was withdrawn, when, by whom and why. MLflow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from registry.core.errors import TrackingError
from registry.core.names import shown
from registry.downstream import tracking
from registry.downstream.claims import Claims
from registry.downstream.claims import load as load_claims
from registry.downstream.tracking import mlflow_errors
from registry.lineage.common import (
    deny_list,
    digest_matches,
    release_info,
    sample_stats,
    sql_quote,
)
from registry.records.dataset import DATASET_NAME
from registry.records.lineage import (
    ClaimCheck,
    DatasetEntry,
    Drawn,
    ModelVersionInfo,
    RunInfo,
    RunTrace,
    SampleStats,
    Unresolved,
)
from registry.records.release import Release
from registry.store.releases import PLAIN_SEMVER, load_release, versions

# What a trace cannot prove (issue 24): MLflow records are written by whoever can reach the store.
UNSIGNED_CLAIM = (
    "that the run trained on this version is what the run logged in MLflow, which nobody signed: the "
    "digest shows the data it names is the release's, not that the run used it"
)


def claim_note(claim: ClaimCheck) -> str:
    """The trace's note on a run's claim (``registry.downstream.claims``)."""
    if claim.status == "unsigned":
        return f"UNSIGNED CLAIM: {UNSIGNED_CLAIM} ({claim.why})"
    return f"claim {claim.status}: {claim.why}"


# MLflow's own run id pattern (mlflow.utils.validation._RUN_ID_REGEX): checked before any store lookup,
# as a file store builds paths from it (issue 24: ids from MLflow records are untrusted input).
RUN_ID = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}", re.ASCII)

SOURCE_TYPE = (
    "synthreg"  # registry.downstream.mlflow_source.SOURCE_TYPE (that module imports MLflow at the top)
)


# ---------------------------------------------------------------------------------------------------
# MLflow


def _not_found(e: Exception) -> bool:
    return getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def _source_url(source: str) -> str:
    """A dataset source as logged: the raw ``synthreg://`` string, or a DatasetSource's JSON."""
    with contextlib.suppress(ValueError, TypeError):
        data = json.loads(source)
        if isinstance(data, dict):
            for key in ("url", "uri", "path", "source"):
                if isinstance(data.get(key), str):
                    return data[key]
    return source


def _dataset_entry(
    ws: Path,
    name: str,
    digest: str | None,
    source: str,
    context: str | None,
    tags: dict[str, str],
    releases: dict[str, Release],
    stats: dict[str, SampleStats],
    deny: dict[str, str],
    profile: dict | None = None,
    claims: Claims | None = None,
    run_id: str | None = None,
) -> DatasetEntry:
    url = _source_url(source)
    parsed = urlparse(url)
    logged: dict[str, Any] = {
        "name": name,
        "digest": digest,
        "source": source,
        "source_url": url,
        "source_git_commit": parse_qs(parsed.query).get("git", [None])[0]
        if parsed.scheme == "synthreg"
        else None,
        "context": context,
    }
    dataset, sep, version = name.partition("@")
    version = version.removeprefix("v")
    if not sep or not version:
        note = f"{name} is not a synthreg dataset (its name is not NAME@X.Y.Z); not traced"
        return DatasetEntry(**logged, release=None, notes=[note])
    if version == tracking.WORKING:
        from registry.lineage import working as lineage_working

        facts = lineage_working.entry(ws, name, digest, profile if profile is not None else {}, tags, deny)
        claim = (claims or Claims()).check(run_id, name, facts.manifest_sha256)
        facts.notes.append(claim_note(claim))
        return DatasetEntry(**logged, **dict(facts), digest_matches=facts.resolved, claim=claim)
    ref = f"{dataset}@{version}"
    r = releases.get(ref)
    if r is None:
        warning = f"{ref} is not released in workspace {ws}; cannot trace it (see `synthreg list`)"
        return DatasetEntry(**logged, release=None, warnings=[warning])
    info = release_info(ws, r, stats.get(ref), deny)
    matches = digest_matches(digest, r.manifest_sha256)
    compared = (
        "full sha256" if digest == r.manifest_sha256 else f"first {len(digest or '')} hex of the sha256"
    )
    if not matches:
        info.warnings.insert(
            0,
            f"DIGEST MISMATCH: the run logged {name} with digest {digest}, but the release's manifest "
            f"sha256 is {r.manifest_sha256}: the run did not train on this version as released",
        )
    tagged = tags.get(tracking.TAG_MANIFEST)
    if tags.get(tracking.TAG_DATASET) == name and tagged and tagged != r.manifest_sha256:
        info.warnings.insert(
            0,
            f"DIGEST MISMATCH: tag {tracking.TAG_MANIFEST} is {tagged}, but the release's manifest "
            f"sha256 is {r.manifest_sha256}",
        )
    claim = (claims or Claims()).check(run_id, name, r.manifest_sha256)
    info.notes.append(claim_note(claim))
    return DatasetEntry(**logged, **dict(info), digest_matches=matches, digest_compared=compared, claim=claim)


def _is_synthreg(name: str, source_type: str | None, tags: dict[str, str]) -> bool:
    dataset, sep, version = name.partition("@")
    return bool(sep and DATASET_NAME.fullmatch(dataset) and version) and (
        source_type == SOURCE_TYPE or tags.get(tracking.TAG_DATASET) == name or source_type is None
    )


def _drawn(name: str, tags: dict[str, str]) -> Drawn | None:
    """What the run recorded of the samples it drew from input ``name``: count, artifact, sha256."""
    from registry.downstream.track import samples_artifact, samples_tag

    recorded = tags.get(samples_tag(name))
    if not recorded:
        return None
    count, _, sha = recorded.partition(" ")
    return Drawn(count=int(count) if count.isdigit() else None, sha256=sha, artifact=samples_artifact(name))


def _trace(ws: Path, run: Any, uri: str) -> RunTrace:
    from registry.lineage.working import Profile, profile_of

    tags = dict(run.data.tags)
    inputs = [
        (
            di.dataset.name,
            di.dataset.digest,
            di.dataset.source,
            next((t.value for t in di.tags if t.key == "mlflow.data.context"), None),
            profile_of(di.dataset.profile),
            di.dataset.source_type,
        )
        for di in run.inputs.dataset_inputs
    ]
    if not inputs and tags.get(tracking.TAG_DATASET):  # tags only: still follow the convention
        inputs = [(tags[tracking.TAG_DATASET], tags.get(tracking.TAG_MANIFEST), "", None, Profile(), None)]
    if not any(_is_synthreg(name, st, tags) for name, *_, st in inputs):
        logged = ", ".join(f"{n} ({st})" for n, *_, st in inputs) or "none"
        raise TrackingError(
            f"run {run.info.run_id} logged no synthreg dataset input (inputs: {logged}; no "
            f"{tracking.TAG_DATASET} tag), so it cannot be traced; log its data with "
            "registry.log_dataset(ws, 'NAME@X.Y.Z') inside the run"
        )
    wanted: dict[str, Release] = {}
    for name, *_ in inputs:
        dataset, _, version = name.partition("@")
        version = version.removeprefix("v")
        if (
            DATASET_NAME.fullmatch(dataset)
            and PLAIN_SEMVER.fullmatch(version)
            and version in versions(ws, dataset)
        ):
            wanted[f"{dataset}@{version}"] = load_release(ws, f"{dataset}@{version}")
    stats, missing = sample_stats(ws, list(wanted.values()))
    deny = deny_list(ws)
    claims = load_claims(ws)
    datasets = []
    for name, digest, source, context, profile, _ in inputs:
        d = _dataset_entry(
            ws, name, digest, source, context, tags, wanted, stats, deny, profile, claims, run.info.run_id
        )
        d.drawn = _drawn(name, tags)
        datasets.append(d)
    unresolved = [
        Unresolved(dataset=d.name, manifest_sha256=d.manifest_sha256, looked=d.looked)
        for d in datasets
        if d.unreleased and not d.resolved
    ]
    return RunTrace(
        tracking_uri=uri,
        run=RunInfo(
            run_id=run.info.run_id,
            run_name=run.info.run_name,
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            lifecycle_stage=run.info.lifecycle_stage,
            start_time=run.info.start_time,
            tags=tags,
            params=dict(run.data.params),
            metrics=dict(run.data.metrics),
        ),
        datasets=datasets,
        unresolved=unresolved,
        warnings=[w for d in datasets for w in d.warnings] + missing,
    )


def trace_run(ws: Path, run_id: str) -> RunTrace:
    """An MLflow run's dataset inputs traced to releases, generators, prompts, seeds and sources."""
    uri = tracking.tracking_uri(ws)
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):  # from the CLI or a model version
        raise TrackingError(
            f"run id {shown(str(run_id))} is not an MLflow run id (letters, digits, _ and -, at most 256); "
            "pass the id `mlflow runs list` or the MLflow UI shows"
        )
    with mlflow_errors(uri):
        c = tracking.reader(ws)
        try:
            run = c.get_run(run_id)
        except Exception as e:  # MLflow's "not found", by its error code
            if _not_found(e):
                raise TrackingError(f"run {run_id} not found in {uri}") from None
            raise
    return _trace(ws, run, uri)


def _model_ref(ref: str) -> tuple[str, str]:
    """``NAME/VERSION``, ``NAME/latest`` or ``NAME@ALIAS`` (``models:/`` prefix allowed) -> (name, selector);
    the selector is a version number, ``latest`` or ``@ALIAS``."""
    bare = ref.removeprefix("models:/")
    name, sep, version = bare.rpartition("/")
    if not sep:
        name, sep, alias = bare.rpartition("@")
        if sep and name and alias:
            return name, f"@{alias}"
    if not sep or not name or not version or not (version.isdigit() or version == "latest"):
        raise TrackingError(
            f"model {ref!r} is not NAME/VERSION, NAME/latest or NAME@ALIAS (e.g. digits-classifier/1); "
            "see `synthreg models`"
        )
    return name, version


def _model_version(c: Any, name: str, selector: str, uri: str) -> Any:
    if selector == "latest":
        found = list(c.search_model_versions(f"name = '{sql_quote(name)}'"))
        if not found:
            raise TrackingError(f"model {name!r} has no version in {uri}")
        return max(found, key=lambda v: int(v.version))
    if selector.startswith("@"):
        alias = selector[1:]
        try:
            return c.get_model_version_by_alias(name, alias)
        except Exception as e:
            if not _not_found(e) and getattr(e, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise
            known = sorted(c.get_registered_model(name).aliases or {})
            raise TrackingError(
                f"model {name!r} has no alias {alias!r} in {uri}; aliases: {', '.join(known) or 'none'} "
                f"(set one with MlflowClient().set_registered_model_alias)"
            ) from None
    try:
        return c.get_model_version(name, selector)
    except Exception as e:
        if not _not_found(e):
            raise
        known = sorted(
            (m.version for m in c.search_model_versions(f"name = '{sql_quote(name)}'")), key=lambda v: int(v)
        )
        raise TrackingError(
            f"model {name!r} has no version {selector!r} in {uri}; "
            f"known versions: {', '.join(map(str, known)) or 'none'}"
        ) from None


def trace_model(ws: Path, ref: str) -> RunTrace:
    """A registered model version (``NAME/VERSION``, ``NAME/latest``, ``NAME@ALIAS``) -> its run ->
    :func:`trace_run`."""
    name, selector = _model_ref(ref)
    uri = tracking.tracking_uri(ws)
    with mlflow_errors(uri):
        c = tracking.reader(ws)
        try:
            c.get_registered_model(name)
        except Exception as e:
            if not _not_found(e):
                raise
            known = sorted(m.name for m in c.search_registered_models(max_results=100))
            listed = f"; registered models: {', '.join(known)}" if known else "; no model is registered"
            raise TrackingError(f"model {name!r} not found in {uri}{listed}") from None
        mv = _model_version(c, name, selector, uri)
        run_id = mv.run_id
        model_id = getattr(mv, "model_id", None)
        if not run_id and model_id:  # MLflow 3: a version of a logged model names its source run there
            run_id = c.get_logged_model(model_id).source_run_id
    if not run_id:
        raise TrackingError(f"model {name}/{mv.version} names no run in {uri}, so it cannot be traced")
    out = trace_run(ws, run_id)
    out.model = ModelVersionInfo(
        name=name,
        version=str(mv.version),
        asked=ref,
        run_id=run_id,
        source=mv.source,
        status=mv.status,
        aliases=list(getattr(mv, "aliases", []) or []),
        tags=dict(mv.tags or {}),
    )
    return out
