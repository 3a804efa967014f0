"""What trace, trace image and impact share: every released version, their manifests queried together in
DuckDB (``read_parquet([...], filename=true)``, never row by row in Python), what a trace says about a
release (generators, sources, policy, withdrawal, samples), and how a logged digest names a manifest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from registry.core import duck
from registry.core.errors import ConfigError, ManifestError, SynthregError, WorkspaceError
from registry.records.lineage import (
    FilterCounts,
    GeneratorInfo,
    PolicyInfo,
    ReleaseFacts,
    SampleStats,
    SourceInfo,
    WithdrawalState,
)
from registry.records.release import Release
from registry.store.releases import load_release, release_folder
from registry.trust.withdrawals import is_withdrawn

HEX_PREFIX = re.compile(r"[0-9a-f]{8,64}")

# MLflow stores at most 36 characters of a dataset digest (mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE),
# so a run can log only a prefix of the manifest's sha256 as its input digest (the full one goes in the
# synthreg.manifest_sha256 tag). A prefix this long or longer counts as the digest.
MIN_DIGEST_PREFIX = 32


def all_releases(ws: Path) -> list[Release]:
    from registry.releases.catalog import list_releases

    return [load_release(ws, f"{n}@{v}") for n, vs in list_releases(ws).items() for v in vs]


def release_ref(r: Release) -> str:
    return f"{r.name}@{r.version}"


def manifest_paths(ws: Path, releases: list[Release]) -> tuple[dict[str, str], list[str]]:
    """({manifest path: release ref} for those on disk, [warnings for those missing])."""
    found, missing = {}, []
    for r in releases:
        try:  # every part checked: a data/ folder linked out of the workspace is not read (issue 24)
            path = release_folder(ws, r.name, r.version, *r.manifest_path.split("/"))
        except WorkspaceError as e:
            missing.append(f"the manifest of {release_ref(r)} is not read: {e}")
            continue
        if path.is_file():
            found[str(path)] = release_ref(r)
        else:
            missing.append(
                f"the manifest of {release_ref(r)} is not on disk ({path.relative_to(ws)}); "
                "run `dvc checkout` (or `dvc pull`) to include it"
            )
    return found, missing


def query_manifests(
    paths: dict[str, str], select: str, where: str = "", params: dict | None = None
) -> list[tuple]:
    """One query over every manifest in ``paths``, with ``filename`` naming each row's file.
    ``params`` are named (``$name``); ``$files`` is taken."""
    if not paths:
        return []
    import duckdb

    con = duck.connect()
    sql = f"SELECT {select} FROM read_parquet($files, filename=true, union_by_name=true) {where}"
    try:
        return con.execute(sql, {"files": list(paths), **(params or {})}).fetchall()
    except duckdb.Error as e:
        if (why := duck.out_of_memory(e)) is not None:  # not the manifests' fault
            raise ConfigError(why) from None
        raise ManifestError(f"cannot query the release manifests: {e}") from e
    finally:
        con.close()


def deny_list(ws: Path) -> dict[str, str]:
    """Sources withdrawn since (workspace ``policies/withdrawn.yaml``): name -> reason."""
    path = ws / "policies" / "withdrawn.yaml"
    if not path.is_file():
        return {}
    from registry.core import yamlio

    try:
        data = yamlio.load_file(path, "withdrawn-sources list") or {}
        return {str(w["name"]): str(w.get("reason", "")) for w in data.get("withdrawn", [])}
    except (SynthregError, TypeError, KeyError, AttributeError):
        return {}  # the validate stage reports a malformed list; lineage only reads it


def digest_matches(logged: str | None, manifest_sha256: str) -> bool:
    """The logged dataset digest names this manifest: the full sha256, or a prefix of 32+ hex of it."""
    if not logged:
        return False
    logged = logged.lower()
    return logged == manifest_sha256 or (
        len(logged) >= MIN_DIGEST_PREFIX and manifest_sha256.startswith(logged)
    )


def sql_quote(s: str) -> str:
    return s.replace("'", "\\'")


def models_of(c: Any, run_ids: list[str]) -> list[Any]:
    """The registered model versions made by ``run_ids``. Many runs: every version, read once and
    filtered here (MLflow parses each `run_id IN (...)` filter slowly: 20 chunks of 50 took 1.1 s of a
    3 s impact over 1,000 runs); a few runs: by chunks of ids."""
    wanted = set(run_ids)
    if len(wanted) <= 100:
        filters = [
            "run_id IN (" + ", ".join(f"'{sql_quote(r)}'" for r in run_ids[i : i + 50]) + ")"
            for i in range(0, len(run_ids), 50)
        ]
    else:
        filters = [""]
    out = []
    for f in filters:
        token = None
        while True:
            page = c.search_model_versions(f or None, max_results=10000, page_token=token)
            out += [mv for mv in page if mv.run_id in wanted]
            token = page.token
            if not token:
                break
    return out


GENERATOR_NOTE = (
    "the generator's own training sources (role generator-training) are part of this provenance: "
    "a model trained on these images learns partly from them, so any downstream gain comes partly "
    "from that real data and inherits its licence and status"
)


def _release_warnings(
    ws: Path, r: Release, withdrawn: WithdrawalState | None, sources: list[SourceInfo]
) -> list[str]:
    """What a trace must shout about a release: its withdrawal (and the versions derived from it), and
    sources withdrawn at release or since."""
    warnings = []
    if withdrawn:
        signed = (
            f" (signed by {withdrawn.signer}, {withdrawn.role} key {(withdrawn.keyid or '')[:16]})"
            if withdrawn.trusted
            else f" (NOT TRUSTED: {withdrawn.why_untrusted})"
        )
        warnings.append(
            f"WITHDRAWN: {release_ref(r)} was withdrawn on {withdrawn.day} by {withdrawn.actor}: "
            f"{withdrawn.reason}{signed}"
        )
        derived = [
            release_ref(d)
            for d in all_releases(ws)
            if d.derived_from and d.derived_from.parent == release_ref(r)
        ]
        if derived:
            warnings.append(f"derived from the withdrawn {release_ref(r)}: {', '.join(derived)}")
    return warnings + source_warnings(sources, "at release")


def source_warnings(sources: list[SourceInfo], when: str) -> list[str]:
    """A source marked withdrawn (``when``: at release, when the run logged it), or on the withdrawn list
    since."""
    warnings: list[str] = []
    for s in sources:
        if s.status == "withdrawn":
            warnings.append(f"source {s.name} ({s.role}) was marked withdrawn {when}")
        elif s.withdrawn_since is not None:
            warnings.append(
                f"source {s.name} ({s.role}) is now on the withdrawn list "
                f"(policies/withdrawn.yaml): {s.withdrawn_since}"
            )
    return warnings


def release_info(ws: Path, r: Release, stats: SampleStats | None, deny: dict[str, str]) -> ReleaseFacts:
    """Everything a trace says about one release (without the MLflow side)."""
    withdrawn = is_withdrawn(ws, r.name, r.version)
    sources = [
        SourceInfo(
            name=s.name,
            version=s.version,
            digest=s.digest,
            licence=s.licence,
            role=s.role,
            status=s.status,
            url=s.url,
            withdrawn_since=deny.get(s.name) if s.status != "withdrawn" else None,
            identities=s.identities,
        )
        for s in r.sources
    ]
    training = [s.name for s in r.sources if s.role == "generator-training"]
    return ReleaseFacts(
        release=release_ref(r),
        released=True,
        manifest_sha256=r.manifest_sha256,
        git_commit=r.git_commit,
        created_at=r.created_at,
        actor=r.actor,
        dataset_licence=r.dataset_licence,
        intended_use=r.intended_use,
        withdrawn=withdrawn,
        derived_from=r.derived_from,
        generators=[GeneratorInfo(**dict(g)) for g in r.generators],
        generator_training_sources=training,
        prompt_templates=list(r.prompt_templates),
        recipe_seed=r.seed,
        samples=stats,
        sources=sources,
        filter=FilterCounts(
            total=r.counts.total,
            accepted=r.counts.accepted,
            rejected=r.counts.rejected,
            reasons=dict(r.counts.reasons),
        ),
        policy=PolicyInfo(
            passed=r.policy_passed,
            report_sha256=r.policy_report_sha256,
            results=dict(r.policy_results),
            waivers=list(r.waivers),
        ),
        warnings=_release_warnings(ws, r, withdrawn, sources),
        notes=[
            f"{GENERATOR_NOTE} ({', '.join(training)})"
            if training
            else f"{GENERATOR_NOTE}; this release records none, so that part of its provenance is unknown"
        ],
    )


def sample_stats(ws: Path, releases: list[Release]) -> tuple[dict[str, SampleStats], list[str]]:
    """{release ref: its manifest's sample count, accepted count and seed range}, [manifests missing]."""
    paths, missing = manifest_paths(ws, releases)
    rows = query_manifests(
        paths,
        "filename, count(*), count(*) FILTER (WHERE decision = 'accepted'), min(seed), max(seed)",
        "GROUP BY filename",
    )
    return {
        paths[f]: SampleStats(count=n, accepted=a, seed_min=lo, seed_max=hi) for f, n, a, lo, hi in rows
    }, missing
