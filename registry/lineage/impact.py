"""Impact: every dataset version, MLflow run and registered model that a generator, a source, a prompt
pattern or a sample reached, released or not.

    impact(ws, generator="tiny-digits")     # or source=, prompt= (regex), sample= (sample id)

- Released versions: their manifests are queried together in DuckDB (``read_parquet([...])``).
- Unreleased data: every run that logged a ``NAME@working`` input is found in MLflow; each distinct
  working manifest is looked for once by content (:mod:`registry.store.unreleased`: workspace, DVC cache,
  DVC remote) and queried with the releases, and what it reached is marked UNRELEASED. A run whose
  working manifest resolves nowhere is listed in ``unresolved_runs`` with why, never dropped silently.
- ``sample``: a run that recorded the sample ids it drew (``registry.downstream.track``) is named only if it
  drew that sample; a run that used a version holding it but recorded no ids is listed with ``drew: None``
  and a warning, as it may have.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from registry.core.errors import SynthregError
from registry.downstream import tracking
from registry.downstream.claims import Claims
from registry.downstream.claims import load as load_claims
from registry.downstream.mlflow_tables import VIEW_ALL
from registry.downstream.tracking import mlflow_errors
from registry.lineage import working as lineage_working
from registry.lineage.common import (
    HEX_PREFIX,
    all_releases,
    digest_matches,
    manifest_paths,
    models_of,
    query_manifests,
    release_ref,
    sql_quote,
)
from registry.records.lineage import (
    ClaimCheck,
    Impact,
    ImpactCounts,
    ModelVersionInfo,
    RunHit,
    Unresolved,
    VersionHit,
)
from registry.records.release import Release
from registry.trust.withdrawals import is_withdrawn

_COUNTS = "filename, count(*), count(*) FILTER (WHERE decision = 'accepted')"  # per manifest file


def _experiments(c: Any) -> list[str]:
    exp_ids, token = [], None
    while True:
        page = c.search_experiments(view_type=VIEW_ALL, max_results=1000, page_token=token)
        exp_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    return exp_ids


def _search(c: Any, exp_ids: list[str], filters: list[str]) -> dict[str, Any]:
    return lineage_working.search_runs(c, exp_ids, filters)


def _runs_using(c: Any, exp_ids: list[str], refs: list[str]) -> list[Any]:
    """Every run whose dataset input (or synthreg.dataset tag) is one of the released ``refs``."""
    filters = [
        "datasets.name IN (" + ", ".join(f"'{sql_quote(r)}'" for r in refs[i : i + 50]) + ")"
        for i in range(0, len(refs), 50)
    ] + [f"tags.`{tracking.TAG_DATASET}` = '{sql_quote(r)}'" for r in refs]
    return list(_search(c, exp_ids, filters).values()) if refs else []


def _drew(c: Any, run: Any, names: list[str], sample: str) -> bool | None:
    """Whether ``run`` drew ``sample`` from one of the inputs ``names``: None when it recorded no ids."""
    from registry.downstream.track import samples_artifact, samples_tag

    recorded = [n for n in names if run.data.tags.get(samples_tag(n))]
    if not recorded:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for n in recorded:
            path = Path(c.download_artifacts(run.info.run_id, samples_artifact(n), tmp))
            if sample in path.read_text().split("\n"):
                return True
    return False


def _run_row(run: Any, used: list[str], matches: bool, unreleased: bool) -> RunHit:
    return RunHit(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        lifecycle_stage=run.info.lifecycle_stage,
        datasets=sorted(used),
        digest_matches=matches,
        unreleased=unreleased,
        drew=None,
    )


def _selector(**selectors: str | None) -> tuple[str, str]:
    """(kind, value) of the one selector given, or a SynthregError."""
    given = {k: v for k, v in selectors.items() if v is not None}
    if len(given) != 1:
        raise SynthregError(
            "give exactly one of --generator, --source, --prompt, --sample, --version"
            + (f" (got {', '.join('--' + k for k in given)})" if given else "")
        )
    ((kind, value),) = given.items()
    if kind == "prompt":
        try:
            re.compile(value)
        except re.error as e:
            raise SynthregError(f"--prompt {value!r} is not a valid regular expression: {e}") from None
    return kind, value


def _released(releases: list[Release], ref: str) -> Release:
    """The released version ``ref`` names (NAME@X.Y.Z or NAME@vX.Y.Z); a SynthregError naming the released
    ones otherwise."""
    name, _, version = ref.partition("@")
    version = version.removeprefix("v")
    by_ref = {release_ref(r): r for r in releases}
    known = list(by_ref)
    if f"{name}@{version}" not in by_ref:
        listed = ", ".join(k for k in known if k.startswith(f"{name}@")) or "none"
        raise SynthregError(
            f"--version {ref!r} is not a released version (NAME@X.Y.Z); released versions of {name!r}: "
            f"{listed} (see `synthreg list`)"
        )
    return by_ref[f"{name}@{version}"]


def _version_hits(r: Release) -> tuple[list[Release], Hits, Hits, list[str]]:
    """One released version selects itself, whole."""
    return [r], {release_ref(r): (r.counts.total, r.counts.accepted)}, {}, []


def _by_file(
    working: dict[str, lineage_working.WorkingManifest],
) -> dict[str, lineage_working.WorkingManifest]:
    """Working manifests found by content, one per file: runs that logged a prefix of the digest and runs
    that logged the whole sha256 of the same manifest are merged (the whole digest is kept)."""
    by_path: dict[str, lineage_working.WorkingManifest] = {}
    for _, wm in sorted(working.items(), key=lambda kv: -len(kv[0])):
        if wm.found and wm.found.path:
            if str(wm.found.path) in by_path:
                by_path[str(wm.found.path)].runs += wm.runs
            else:
                by_path[str(wm.found.path)] = wm
    return by_path


Hits = dict[str, tuple[int, int]]  # release ref or working sha256 -> (samples, accepted)


def _source_hits(
    ws: Path, releases: list[Release], value: str, working: dict, wpaths: dict[str, str]
) -> tuple[Hits, Hits, list[str]]:
    """Every sample of a version depends on a source it lists, except a conditioning source that names
    its identities: then only those identities' samples do."""
    hits: Hits = {}
    whits: Hits = {}
    missing: list[str] = []
    key = value.casefold()
    for r in releases:
        named = [s for s in r.sources if s.name.casefold() == key]
        if not named:
            continue
        if any(s.identities is None for s in named):
            hits[release_ref(r)] = (r.counts.total, r.counts.accepted)
            continue
        paths, gone = manifest_paths(ws, [r])
        missing += gone
        identities = sorted({i for s in named for i in s.identities or []})
        for _, n, a in query_manifests(
            paths, _COUNTS, "WHERE list_contains($ids, identity) GROUP BY filename", {"ids": identities}
        ):
            hits[release_ref(r)] = (n, a)
    for path, sha in wpaths.items():
        named_w = [
            s for s in lineage_working.logged_sources(working[sha].profile) if s["name"].casefold() == key
        ]
        if not named_w:
            continue
        params: dict[str, Any] = {}
        if any(s.get("identities") is None for s in named_w):
            where = "GROUP BY filename"
        else:
            ids = sorted({i for s in named_w for i in s["identities"]})
            where, params = "WHERE list_contains($ids, identity) GROUP BY filename", {"ids": ids}
        for _, n, a in query_manifests({path: sha}, _COUNTS, where, params):
            whits[sha] = (n, a)
    return hits, whits, missing


def _row_hits(
    ws: Path, releases: list[Release], kind: str, value: str, wpaths: dict[str, str]
) -> tuple[list[Release], Hits, Hits, list[str]]:
    """A generator, prompt or sample selects manifest rows: the versions it can be in, and the hits."""
    params: dict[str, Any] = {}
    if kind == "generator":
        digest = value.lower() if HEX_PREFIX.fullmatch(value.lower()) else None
        releases = [
            r
            for r in releases
            if any(g.name == value or (digest and g.weights_digest.startswith(digest)) for g in r.generators)
        ]
        where = "WHERE generator_name = $v OR starts_with(weights_digest, $digest)"
        params = {"v": value, "digest": digest or "-"}
    elif kind == "prompt":
        where, params = "WHERE regexp_matches(prompt, $v)", {"v": value}
    else:
        where, params = "WHERE sample_id = $v", {"v": value}
    hits: Hits = {}
    whits: Hits = {}
    paths, missing = manifest_paths(ws, releases)
    for f, n, a in query_manifests({**paths, **wpaths}, _COUNTS, f"{where} GROUP BY filename", params):
        if f in paths:
            hits[paths[f]] = (n, a)
        else:
            whits[wpaths[f]] = (n, a)
    return releases, hits, whits, missing


def _prompt_ids(
    ws: Path,
    releases: list[Release],
    found: list[VersionHit],
    wpaths: dict[str, str],
    kind: str,
    pattern: str,
) -> None:
    """Each version's matching sample ids, for ``--prompt`` (the ids a derive leaves out); other selectors
    list none (a generator reaches every sample it made)."""
    if kind != "prompt":
        return
    paths, _ = manifest_paths(ws, releases)
    key = {**paths, **wpaths}  # manifest file -> release ref or working sha256
    ids: dict[str, list[str]] = {}
    for f, sample_ids in query_manifests(
        key,
        "filename, list(sample_id ORDER BY sample_id)",
        "WHERE regexp_matches(prompt, $v) GROUP BY filename",
        {"v": pattern},
    ):
        ids[key[f]] = sample_ids
    for v in found:
        v.sample_ids = ids.get(v.manifest_sha256 if v.unreleased else v.release, [])


def _versions(
    ws: Path, by_ref: dict[str, Release], hits: Hits, whits: Hits, working: dict
) -> list[VersionHit]:
    return [
        VersionHit(
            release=ref,
            unreleased=False,
            samples=n,
            accepted=a,
            manifest_sha256=by_ref[ref].manifest_sha256,
            withdrawn=is_withdrawn(ws, *ref.split("@")),
        )
        for ref, (n, a) in sorted(hits.items())
    ] + [
        VersionHit(
            release=working[sha].name,
            unreleased=True,
            samples=n,
            accepted=a,
            manifest_sha256=sha,
            resolved_from=working[sha].found.where,
            withdrawn=None,
        )
        for sha, (n, a) in sorted(whits.items())
    ]


_STRENGTH = {"unsigned": 0, "recorded": 1, "signed": 2}


def _claim(claims: Claims, run: Any, used: dict[str, str | None]) -> ClaimCheck:
    """The weakest of the run's claims to have used each of ``used`` ({input name: its sha256})."""
    checks = [claims.check(run.info.run_id, name, sha) for name, sha in sorted(used.items())]
    worst = min(checks, key=lambda c: _STRENGTH[c.status])
    return worst.model_copy(update={"why": "; ".join(dict.fromkeys(c.why for c in checks))})


def _runs(
    c: Any,
    exp_ids: list[str],
    by_ref: dict[str, Release],
    hits: Hits,
    whits: Hits,
    working: dict,
    claims: Claims,
) -> tuple[list[RunHit], dict[str, Any]]:
    """The runs that used a version hit (released first, then working), and their MLflow objects."""
    runs: list[RunHit] = []
    objs: dict[str, Any] = {}
    for run in sorted(
        _runs_using(c, exp_ids, sorted(hits)), key=lambda r: (r.info.experiment_id, r.info.start_time)
    ):
        used = {
            di.dataset.name.replace("@v", "@"): di.dataset.digest
            for di in run.inputs.dataset_inputs
            if di.dataset.name.replace("@v", "@") in hits
        }
        tag = run.data.tags.get(tracking.TAG_DATASET)
        if not used and tag in hits:
            used[tag] = run.data.tags.get(tracking.TAG_MANIFEST)
        matches = all(digest_matches(d, by_ref[ref].manifest_sha256) for ref, d in used.items())
        runs.append(_run_row(run, list(used), matches, False))
        runs[-1].claim = _claim(claims, run, {ref: by_ref[ref].manifest_sha256 for ref in used})
        objs[run.info.run_id] = run
    seen = {r.run_id for r in runs}
    for sha in sorted(whits):
        for run in sorted(working[sha].runs, key=lambda r: (r.info.experiment_id, r.info.start_time)):
            if run.info.run_id not in seen:
                seen.add(run.info.run_id)
                runs.append(_run_row(run, [working[sha].name], True, True))
                runs[-1].claim = _claim(claims, run, {working[sha].name: sha})
                objs[run.info.run_id] = run
    return runs, objs


def _warnings(
    kind: str,
    value: str,
    found: list[VersionHit],
    runs: list[RunHit],
    unresolved: list[Unresolved],
    missing: list[str],
) -> list[str]:
    return (
        [f"WITHDRAWN: {v.release} was withdrawn: {v.withdrawn.reason}" for v in found if v.withdrawn]
        + [
            f"UNRELEASED: {v.release} (manifest sha256 {v.manifest_sha256[:16]}..., found in "
            f"{v.resolved_from}) is a working manifest that runs trained on"
            for v in found
            if v.unreleased
        ]
        + [
            f"DIGEST MISMATCH: run {r.run_id} logged {', '.join(r.datasets)} with a digest that is "
            "not the release's manifest sha256"
            for r in runs
            if not r.digest_matches
        ]
        + [
            f"UNSIGNED CLAIM: that run {r.run_id} trained on {', '.join(r.datasets)} is only what it "
            f"logged in MLflow ({r.claim.why})"
            for r in runs
            if r.claim and r.claim.status == "unsigned"
        ]
        + [
            f"UNKNOWN DRAW: run {r.run_id} used {', '.join(r.datasets)}, which holds {value!r}, but "
            "recorded no sample ids, so it may have drawn it"
            for r in runs
            if kind == "sample" and r.drew is None
        ]
        + [
            f"UNRESOLVED: run {u.run_id} trained on {u.dataset}, but {u.why}; whether it used this "
            f"{kind} is unknown"
            for u in unresolved
        ]
        + missing
    )


def impact(
    ws: Path,
    generator: str | None = None,
    source: str | None = None,
    prompt: str | None = None,
    sample: str | None = None,
    version: str | None = None,
) -> Impact:
    """Every dataset version (released or working), MLflow run and registered model version that a
    generator (name or weights digest prefix of 8+ hex), a source (by name), a prompt pattern (regex)
    or a sample id reached; or (``version``, NAME@X.Y.Z) the runs and models trained on one version."""
    kind, value = _selector(generator=generator, source=source, prompt=prompt, sample=sample, version=version)
    uri = tracking.tracking_uri(ws)  # a malformed URI is an error even when nothing matches
    releases = all_releases(ws)
    asked = _released(releases, value) if kind == "version" else None
    if asked is not None:
        value = release_ref(asked)
    with mlflow_errors(uri):
        c = tracking.reader(ws)
        exp_ids = _experiments(c)
        # a run on a working manifest never trained on a released version: none is looked for
        working, unresolved = (
            ({}, [])
            if kind == "version"
            else lineage_working.working_manifests(ws, lineage_working.working_runs(c, exp_ids))
        )
    by_path = _by_file(working)
    working = {wm.sha256: wm for wm in by_path.values()}
    wpaths = {path: wm.sha256 for path, wm in by_path.items()}  # path -> sha256
    if asked is not None:
        releases, hits, whits, missing = _version_hits(asked)
    elif kind == "source":
        hits, whits, missing = _source_hits(ws, releases, value, working, wpaths)
    else:
        releases, hits, whits, missing = _row_hits(ws, releases, kind, value, wpaths)
    by_ref = {release_ref(r): r for r in releases}
    found = _versions(ws, by_ref, hits, whits, working)
    _prompt_ids(ws, releases, found, wpaths, kind, value)
    with mlflow_errors(uri):
        runs, objs = _runs(c, exp_ids, by_ref, hits, whits, working, load_claims(ws))
        excluded = 0
        if kind == "sample":
            kept = []
            for row in runs:
                row.drew = _drew(c, objs[row.run_id], row.datasets, value)
                if row.drew is False:
                    excluded += 1
                else:
                    kept.append(row)
            runs = kept
        models = [
            ModelVersionInfo(
                name=mv.name,
                version=str(mv.version),
                run_id=mv.run_id,
                status=mv.status,
                source=mv.source,
                aliases=list(getattr(mv, "aliases", []) or []),
                tags=dict(mv.tags or {}),
            )
            for mv in sorted(models_of(c, [r.run_id for r in runs]), key=lambda m: (m.name, int(m.version)))
        ]
    return Impact(
        selector={kind: value},
        tracking_uri=uri,
        versions=found,
        runs=runs,
        model_versions=models,
        unresolved_runs=unresolved,
        counts=ImpactCounts(
            versions=len(found),
            samples=sum(v.samples for v in found),
            accepted=sum(v.accepted for v in found),
            runs=len(runs),
            model_versions=len(models),
            unresolved_runs=len(unresolved),
            runs_without_the_sample=excluded,
        ),
        warnings=_warnings(kind, value, found, runs, unresolved, missing),
    )
