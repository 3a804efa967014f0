"""Lineage of runs on unreleased data (``NAME@working``): trace them as fully as a release, marked
UNRELEASED, and let ``impact`` reach them.

A working input is traced from the manifest it names by content (:mod:`registry.store.unreleased` finds it in
the workspace, the DVC cache or the DVC remote): generators and weights digests, seeds, counts and
filter reasons come from that manifest; the recipe digest, prompt templates, sources and policy status
come from what the run logged (the input's profile, :class:`registry.downstream.track.DatasetProfile`), as no
signed record holds them. When the manifest is found nowhere the trace says where it looked and still
shows what the run logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from registry.downstream import tracking
from registry.downstream.mlflow_tables import VIEW_ALL
from registry.lineage.common import source_warnings
from registry.records.lineage import (
    FilterCounts,
    GeneratorInfo,
    PolicyInfo,
    ReleaseFacts,
    SampleStats,
    SourceInfo,
    Unresolved,
)
from registry.store import unreleased

UNRELEASED_NOTE = (
    "no signed release vouches for this data: it was found again by its content digest, but the policy "
    "status, recipe and sources are what the run logged"
)


class Profile(dict):
    """A logged profile: its fields, and ``problem`` when what was logged is not a JSON object."""

    problem: str | None = None


def profile_of(raw: str | None) -> Profile:
    """The logged profile as a dict: empty when absent; empty with ``problem`` naming why when it is not
    JSON or not a JSON object (issue 24: a JSON list crashed trace and impact)."""
    out = Profile()
    if not raw:
        return out
    try:
        data = json.loads(raw)
    except ValueError:
        out.problem = "the run's logged profile is not JSON: shown as unknown"
        return out
    if not isinstance(data, dict):
        out.problem = (
            f"the run's logged profile is a JSON {type(data).__name__}, not an object: shown as unknown "
            "(it was not logged by synthreg's log_dataset, or was edited)"
        )
        return out
    out.update(data)
    return out


def logged_sources(profile: dict) -> list[dict[str, Any]]:
    """The ``sources`` a working input's profile logged, each with a text ``name`` and ``identities``
    None or a list of texts; malformed entries are left out (trace names them, see ``_Logged``)."""
    out = []
    raw = profile.get("sources")
    for s in raw if isinstance(raw, list) else []:
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            continue
        ids = s.get("identities")
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            continue
        out.append({"name": s["name"], "identities": ids})
    return out


def digests(
    name: str, digest: str | None, profile: dict, tags: dict[str, str]
) -> tuple[str | None, str | None]:
    """(the fullest sha256 logged, the DVC md5 logged) for the working input ``name``."""
    sha, md5 = profile.get("manifest_sha256"), profile.get("dvc_md5")
    sha = sha if isinstance(sha, str) else None  # a malformed profile: the tag or the input's digest
    md5 = md5 if isinstance(md5, str) else None
    if tags.get(tracking.TAG_DATASET) == name:
        sha = sha or tags.get(tracking.TAG_MANIFEST)
        md5 = md5 or tags.get(tracking.TAG_DVC_MD5)
    return (sha or digest or None), md5


class _Logged:
    """What a run logged (its profile, or facts read from the manifest), read field by field: a value of
    the wrong type is shown as unknown and named in a warning, never a crash and never dropped silently
    (a user's own script may log anything)."""

    def __init__(self, data: dict) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.malformed: list[str] = []

    def _bad(self, key: str) -> None:
        if key not in self.malformed:
            self.malformed.append(key)

    def text(self, key: str, of: dict | None = None) -> str | None:
        v = (self.data if of is None else of).get(key)
        if v is None or isinstance(v, str):
            return v
        self._bad(key)
        return None

    def integer(self, key: str, of: dict | None = None) -> int | None:
        v = (self.data if of is None else of).get(key)
        if v is None or (isinstance(v, int) and not isinstance(v, bool)):
            return v
        self._bad(key)
        return None

    def texts(self, key: str, of: dict | None = None) -> list[str] | None:
        v = (self.data if of is None else of).get(key)
        if v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            return v
        self._bad(key)
        return None

    def records(self, key: str) -> list[dict]:
        v = self.data.get(key)
        if v is None:
            return []
        if isinstance(v, list) and all(isinstance(x, dict) for x in v):
            return v
        self._bad(key)
        return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []

    def counts(self, key: str) -> dict[str, int]:
        v = self.data.get(key)
        if v is None:
            return {}
        if isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in v.values()):
            return {str(k): n for k, n in v.items()}
        self._bad(key)
        return {}

    def warning(self) -> list[str]:
        problem = getattr(self.data, "problem", None)
        if not self.malformed:
            return [problem] if problem else []
        return ([problem] if problem else []) + [
            f"the run's logged profile has malformed {', '.join(self.malformed)}: shown as unknown "
            "(it was not logged by synthreg's log_dataset, or was edited)"
        ]


def _sources(logged: _Logged, deny: dict[str, str]) -> list[SourceInfo]:
    out = []
    for s in logged.records("sources"):
        name = s.get("name")
        if not isinstance(name, str):
            logged._bad("sources.name")
            name = str(name)
        status = logged.text("status", s) or "active"
        out.append(
            SourceInfo(
                name=name,
                version=logged.text("version", s),
                digest=logged.text("digest", s),
                licence=logged.text("licence", s),
                role=logged.text("role", s),
                status=status,
                url=logged.text("url", s),
                withdrawn_since=deny.get(name) if status != "withdrawn" else None,
                identities=logged.texts("identities", s),
            )
        )
    return out


def _generators(logged: _Logged) -> list[GeneratorInfo]:
    return [
        GeneratorInfo(
            name=logged.text("name", g) or "?",
            backend=logged.text("backend", g),
            weights_digest=logged.text("weights_digest", g),
            licence=logged.text("licence", g),
            pipeline_class=logged.text("pipeline_class", g),
            scheduler=logged.text("scheduler", g),
            images=logged.integer("images", g),
        )
        for g in logged.records("generators")
    ]


def _resolve(
    ws: Path, name: str, sha: str | None, md5: str | None
) -> tuple[unreleased.Found, dict[str, Any], list[str]]:
    """Where the working manifest is now (found by content), what it holds, and the UNRELEASED warning."""
    from registry.downstream.track import manifest_facts

    found = (
        unreleased.find(ws, sha, md5)
        if sha
        else unreleased.Found(None, "", ["nowhere: no digest was logged"])
    )
    facts: dict[str, Any] = {}
    warnings: list[str] = []
    if found.path is not None:
        facts = manifest_facts(found.path)
        warnings.append(
            f"UNRELEASED: {name} is a working manifest, not a release; found by content in {found.where}"
        )
    else:
        warnings.append(
            f"UNRELEASED: {name} (manifest sha256 {sha or '?'}) resolves nowhere: looked in "
            f"{'; '.join(found.looked)}. It was deleted or changed after training; shown is what the run "
            "logged"
        )
    return found, facts, warnings


def entry(
    ws: Path, name: str, digest: str | None, profile: dict, tags: dict[str, str], deny: dict
) -> ReleaseFacts:
    """What a trace says about a working input: the ``release_info`` facts, plus where it was found."""
    sha, md5 = digests(name, digest, profile, tags)
    found, facts, warnings = _resolve(ws, name, sha, md5)
    logged = _Logged(profile)
    if "generators" in facts:
        gens = [GeneratorInfo(**dict(g)) for g in facts["generators"]]
    else:
        gens = _generators(logged)
    sources = _sources(logged, deny)
    warnings += source_warnings(sources, "when the run logged it")
    counts = _Logged(facts) if facts else logged
    policy = logged.data.get("policy")
    if not isinstance(policy, dict):
        if policy is not None:
            logged._bad("policy")
        policy = {}
    passed = policy.get("passed")
    if not (passed is None or isinstance(passed, bool)):
        logged._bad("policy.passed")
        passed = None
    total, accepted = counts.integer("rows"), counts.integer("accepted")
    facts_ = ReleaseFacts(
        release=None,
        released=False,
        unreleased=True,
        resolved=found.path is not None,
        resolved_from=found.where or None,
        resolved_path=str(found.path) if found.path else None,
        looked=found.looked,
        manifest_sha256=sha,
        dvc_md5=md5,
        git_commit=logged.text("git_commit"),
        recipe_sha256=logged.text("recipe_sha256"),
        recipe_seed=logged.integer("recipe_seed"),
        prompt_templates=logged.texts("prompt_templates") or [],
        generators=gens,
        generator_training_sources=[s.name for s in sources if s.role == "generator-training"],
        samples=(
            SampleStats(
                count=total,
                accepted=accepted,
                seed_min=counts.integer("seed_min"),
                seed_max=counts.integer("seed_max"),
            )
            if total is not None
            else None
        ),
        sources=sources,
        filter=FilterCounts(
            total=total,
            accepted=accepted,
            rejected=(total - accepted) if total is not None and accepted is not None else None,
            reasons=counts.counts("reasons"),
        ),
        policy=PolicyInfo(
            passed=passed, report_sha256=logged.text("report_sha256", policy), results={}, waivers=[]
        ),
        warnings=warnings,
        notes=[UNRELEASED_NOTE] if found.path is not None else [],
    )
    facts_.warnings += logged.warning() + (counts.warning() if counts is not logged else [])
    return facts_


@dataclass
class WorkingManifest:
    """One distinct working manifest that runs logged, found (``path``) or not."""

    name: str  # NAME@working
    sha256: str
    md5: str | None
    profile: dict
    runs: list[Any] = field(default_factory=list)
    found: unreleased.Found | None = None


def working_runs(c: Any, exp_ids: list[str]) -> list[Any]:
    """Every run that logged a ``NAME@working`` input (or tag), in the given experiments."""
    filters = ["datasets.name LIKE '%@working'", f"tags.`{tracking.TAG_DATASET}` LIKE '%@working'"]
    return list(search_runs(c, exp_ids, filters).values())


def search_runs(c: Any, exp_ids: list[str], filters: list[str]) -> dict[str, Any]:
    """{run id: run} of every run, live or deleted, matching any of ``filters`` in ``exp_ids``, page by
    page (MLflow returns at most 1,000 runs a page and takes at most 100 experiments a search)."""
    runs: dict[str, Any] = {}
    for i in range(0, len(exp_ids), 100):
        for f in filters:
            token = None
            while True:
                page = c.search_runs(
                    exp_ids[i : i + 100], f, run_view_type=VIEW_ALL, max_results=1000, page_token=token
                )
                runs.update((r.info.run_id, r) for r in page)
                token = page.token
                if not token:
                    break
    return runs


def working_manifests(ws: Path, runs: list[Any]) -> tuple[dict[str, WorkingManifest], list[Unresolved]]:
    """({sha256: WorkingManifest} for every distinct working manifest the runs logged, each looked for
    once; [runs whose working input logged no digest, with why])."""
    out: dict[str, WorkingManifest] = {}
    unresolved: list[Unresolved] = []
    for run in runs:
        tags = dict(run.data.tags)
        inputs = [
            (di.dataset.name, di.dataset.digest, profile_of(di.dataset.profile))
            for di in run.inputs.dataset_inputs
            if di.dataset.name.endswith(f"@{tracking.WORKING}")
        ]
        if not inputs and str(tags.get(tracking.TAG_DATASET, "")).endswith(f"@{tracking.WORKING}"):
            inputs = [(tags[tracking.TAG_DATASET], tags.get(tracking.TAG_MANIFEST), Profile())]
        for name, digest, profile in inputs:
            sha, md5 = digests(name, digest, profile, tags)
            if not sha:
                unresolved.append(
                    Unresolved(run_id=run.info.run_id, dataset=name, why="the run logged no manifest digest")
                )
                continue
            key = sha.lower()
            wm = out.setdefault(key, WorkingManifest(name, key, md5, profile))
            wm.md5 = wm.md5 or md5
            wm.runs.append(run)
    for wm in out.values():
        wm.found = unreleased.find(ws, wm.sha256, wm.md5)
        if wm.found.path is None:
            for run in wm.runs:
                unresolved.append(
                    Unresolved(
                        run_id=run.info.run_id,
                        dataset=wm.name,
                        manifest_sha256=wm.sha256,
                        why=f"its manifest resolves nowhere: looked in {'; '.join(wm.found.looked)}",
                    )
                )
    return out, unresolved
