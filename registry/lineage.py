"""Lineage: trace a run, model or image back to what made it; find everything a generator, source,
prompt or sample reached; withdraw a release.

    trace_run(ws, run_id)            MLflow run -> dataset versions -> generators, prompts, seeds, sources
    trace_model(ws, "NAME/VERSION")  registered model version -> its run -> trace_run
    trace_image(ws, path)            image file -> its sample record and every version holding it
    impact(ws, generator=...)        generator | source | prompt regex | sample -> versions, runs, models
    withdraw(ws, "NAME@X.Y.Z", why)  mark a release withdrawn (withdrawal.json + audit event + git commit)

Runs are read through the conventions of :mod:`registry.tracking` (dataset input ``NAME@X.Y.Z`` with
digest = the manifest's sha256, or its first 32+ hex: MLflow keeps 36 characters of a dataset digest;
tag ``synthreg.manifest_sha256`` = the whole sha256). Manifests are queried in DuckDB, all released
ones at once (``read_parquet([...], filename=true)``), never loaded row by row into Python.

A withdrawal never touches the signed ``release.json``: it is a separate file beside it,
``releases/NAME/X.Y.Z/withdrawal.json``, so the release still verifies and every trace can say that
it was withdrawn, when, by whom and why. MLflow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlparse

from pydantic import AwareDatetime, Field

from registry import audit, journal, tracking
from registry.errors import ManifestError, ReleaseError, SynthregError, TrackingError, WorkspaceError
from registry.models import DATASET_NAME, Sha256, Strict
from registry.release import RELEASES, load_release, parse_ref, versions
from registry.release_record import Release

SOURCE_TYPE = "synthreg"  # registry.mlflow_source.SOURCE_TYPE (that module imports MLflow at the top)

WITHDRAWAL = "withdrawal.dsse.json"  # DSSE envelope, payload a Withdrawal
WITHDRAWAL_TYPE = "application/vnd.synthreg.withdrawal+json"
PHASH_DISTANCE = 4  # max Hamming distance (of 64 bits) for a perceptual match
MAX_IMAGES = 50  # distinct images listed by trace_image
HEX_PREFIX = re.compile(r"[0-9a-f]{8,64}")
# MLflow stores at most 36 characters of a dataset digest (mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE),
# so a run can log only a prefix of the manifest's sha256 as its input digest (the full one goes in the
# synthreg.manifest_sha256 tag). A prefix this long or longer counts as the digest.
MIN_DIGEST_PREFIX = 32
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")
GENERATOR_NOTE = (
    "the generator's own training sources (role generator-training) are part of this provenance: "
    "a model trained on these images learns partly from them, so any downstream gain comes partly "
    "from that real data and inherits its licence and status"
)


class Withdrawal(Strict):
    """The payload of ``releases/NAME/X.Y.Z/withdrawal.dsse.json``, signed by a releaser or approver of
    the trust root: the release stays signed and verifiable, but withdrawn."""

    release: str = Field(description="NAME@X.Y.Z")
    reason: str = Field(min_length=1)
    time: AwareDatetime
    actor: str = Field(min_length=1, description="who withdrew it (--actor, default git user.name)")
    signer: str = Field(min_length=1, description="the signing key's holder, by the trust root")
    manifest_sha256: Sha256 = Field(description="the withdrawn version's content digest")
    keyid: Sha256
    role: Literal["releaser", "approver"]
    checkpoint: audit.Checkpoint | None = Field(description="the audit log's head when this was signed")


# ---------------------------------------------------------------------------------------------------
# withdrawal


def _folder(ws: Path, name: str, version: str) -> Path:
    return ws / RELEASES / name / version


def is_withdrawn(ws: Path, name: str, version: str) -> dict | None:
    """The withdrawal of ``name@version`` as a dict (with ``trusted`` and ``why_untrusted``), or None.

    A withdrawal that cannot be trusted still counts as one (refusing a release wrongly is the safe
    side) and says why: a signature the trust root does not accept, an unsigned ``withdrawal.json``, a
    record copied from another version, or a record deleted while the audit log still holds its event.
    """
    from registry.errors import SigningError
    from registry.signing import payload_of

    subject = f"{name}@{version}"
    if journal.is_unfinished(ws, "withdraw", subject):  # not one until recovery finishes it
        return None
    folder = _folder(ws, name, version)
    path = folder / WITHDRAWAL
    if path.is_file():
        try:
            envelope = json.loads(path.read_text())
            w = Withdrawal.model_validate_json(payload_of(envelope, WITHDRAWAL_TYPE))
        except (ValueError, SigningError) as e:
            raise ReleaseError(f"{path} is not a valid withdrawal record ({e}); restore it from git") from e
        out = w.model_dump(mode="json") | {"trusted": True, "why_untrusted": None}
        why = _untrusted_withdrawal(ws, envelope, w, subject)
        return out | {"trusted": why is None, "why_untrusted": why}
    if (folder / "withdrawal.json").is_file():
        old = json.loads((folder / "withdrawal.json").read_text())
        return old | {
            "trusted": False,
            "why_untrusted": "an unsigned withdrawal.json; withdraw again to sign",
        }
    event = next(
        (e for e in reversed(audit.read(ws)) if e.kind == "withdrawal" and e.subject == subject), None
    )
    if event is None:
        return None
    return {
        "release": subject,
        "reason": str(event.details.get("reason", "")),
        "time": event.time.isoformat(),
        "actor": event.actor,
        "trusted": False,
        "why_untrusted": f"the withdrawal record {path.relative_to(ws)} was deleted, but the audit log "
        f"records the withdrawal (seq {event.seq}); restore it from git",
    }


def _untrusted_withdrawal(ws: Path, envelope: dict, w: Withdrawal, subject: str) -> str | None:
    from registry.errors import TrustError
    from registry.signing import signature_verifies
    from registry.trust import load_trust

    if w.release != subject:
        return f"the signed withdrawal is for {w.release}, not {subject} (copied from another version)"
    try:
        trust = load_trust(ws)
    except TrustError as e:
        return f"cannot be checked: {e}"
    key, why = trust.check_signer(w.keyid, w.role, w.time)
    if why or key is None:
        return why or "unknown key"
    if not signature_verifies(envelope, w.keyid, key.sslib_key()):
        return f"its signature by key {w.keyid[:16]} ({key.name}) does not verify (forged or edited)"
    return None


def withdraw(
    ws: Path,
    ref: str,
    reason: str,
    actor: str | None = None,
    key: Path | str | None = None,
    trust: Path | str | None = None,
) -> dict:
    """Withdraw a released version: write the signed ``withdrawal.dsse.json`` beside the (untouched)
    signed record, append a ``withdrawal`` audit event and commit both, as a journalled transaction
    (``WITHDRAW``: record, audit, commit; a kill before the audit event is appended undoes the record,
    after it the next command commits). A version is withdrawn once; re-running a killed withdrawal that
    recovery has just finished reports it. The key must be a releaser's or an approver's in the trust
    root; ``actor`` is who asked (default git user.name), the signer is the key's holder there."""
    from registry.release import _git, _has_commits, _lock
    from registry.signing import load_signer, sign
    from registry.trust import load_trust

    name, version = parse_ref(ref)
    if version is None or not SEMVER.fullmatch(version) or not DATASET_NAME.fullmatch(name):
        raise ReleaseError(f"{ref!r} is not NAME@X.Y.Z; name the version to withdraw, e.g. {name}@1.0.0")
    if not reason.strip():
        raise ReleaseError("give a reason for the withdrawal (--reason)")
    subject = f"{name}@{version}"
    record = load_release(ws, subject)
    if not (ws / ".git").exists():
        raise ReleaseError(f"workspace {ws} is not a git repository; a withdrawal is committed to git")
    path = _folder(ws, name, version) / WITHDRAWAL
    signer = load_signer(key)
    trusted = load_trust(ws, trust)
    keyid = signer.public_key.keyid
    entry = trusted.root.key(keyid)
    role: Literal["releaser", "approver"] = "releaser" if entry and "releaser" in entry.roles else "approver"
    entry = trusted.signing_key(keyid, role)
    with _lock(ws):
        earlier = is_withdrawn(ws, name, version)
        if earlier and journal.finished_here(ws, ("withdraw",), subject):
            return earlier
        if earlier:
            raise ReleaseError(
                f"{subject} was already withdrawn on {earlier['time'][:10]} by {earlier['actor']}: "
                f"{earlier['reason']}"
            )
        actor = actor or audit.actor_name(ws)
        w = Withdrawal(
            release=subject,
            reason=reason.strip(),
            time=datetime.now(UTC),
            actor=actor,
            signer=entry.name,
            manifest_sha256=record.manifest_sha256,
            keyid=keyid,
            role=role,
            checkpoint=audit.head(ws),
        )
        payload = json.dumps(w.model_dump(mode="json"), sort_keys=True).encode()
        rel = path.relative_to(ws).as_posix()
        state = {
            "record": rel,
            "text": json.dumps(sign(payload, signer, WITHDRAWAL_TYPE), indent=2) + "\n",
            "events": [
                {
                    "kind": "withdrawal",
                    "subject": subject,
                    "details": {
                        "reason": w.reason,
                        "manifest_sha256": w.manifest_sha256,
                        "record": rel,
                        "keyid": keyid,
                        "signer": entry.name,
                        "role": role,
                    },
                }
            ],
            "actor": actor,
            "audit_from": len(audit.read(ws)),
            "message": f"Withdraw {subject}: {w.reason}",
            "head": _git(ws, "rev-parse", "HEAD") if _has_commits(ws) else None,
        }
        with journal.transaction(ws, "withdraw", subject, state):
            pass  # every step is a forward step: the transaction runs them
    return w.model_dump(mode="json") | {"trusted": True, "why_untrusted": None}


def _step_record(ws: Path, entry: journal.Entry) -> None:
    from registry.fsio import atomic_write_text

    path = ws / entry.state["record"]
    if not path.is_file() or path.read_text() != entry.state["text"]:
        atomic_write_text(path, entry.state["text"])


def _step_audit(ws: Path, entry: journal.Entry) -> None:
    audit.append_missing(ws, entry.state["events"], entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: journal.Entry) -> None:
    from registry.release import _git

    rel, log = entry.state["record"], audit.LOG.as_posix()
    _git(ws, "add", rel, log)
    clean = subprocess.run(
        ["git", "diff", "--cached", "--quiet", "HEAD", "--", rel], cwd=ws, capture_output=True
    )
    in_head = subprocess.run(["git", "cat-file", "-e", f"HEAD:{rel}"], cwd=ws, capture_output=True)
    if in_head.returncode == 0 and clean.returncode == 0:
        return
    _git(ws, "commit", "-q", "-m", entry.state["message"], "--", rel, log)


def _undo_withdraw(ws: Path, entry: journal.Entry) -> None:
    """Before its audit event there is no withdrawal: remove the record (never one already committed)."""
    from registry.release import _git

    rel = entry.state["record"]
    path = ws / rel
    in_head = subprocess.run(["git", "cat-file", "-e", f"HEAD:{rel}"], cwd=ws, capture_output=True)
    if path.is_file() and in_head.returncode != 0:
        path.unlink()
        with contextlib.suppress(ReleaseError):
            _git(ws, "reset", "-q", "--", rel)


# Rolled forward once its audit event is in the log (the withdrawal is then on record), back before.
WITHDRAW = journal.Operation(
    steps=("record", "audit", "commit"),
    forward={"record": _step_record, "audit": _step_audit, "commit": _step_commit},
    undo=_undo_withdraw,
    roll_forward=journal.logged,
    public=journal.logged,
)


# ---------------------------------------------------------------------------------------------------
# releases and manifests


def _all_releases(ws: Path) -> list[Release]:
    from registry.catalog import list_releases

    return [load_release(ws, f"{n}@{v}") for n, vs in list_releases(ws).items() for v in vs]


def _ref(r: Release) -> str:
    return f"{r.name}@{r.version}"


def _manifests(ws: Path, releases: list[Release]) -> tuple[dict[str, str], list[str]]:
    """({manifest path: release ref} for those on disk, [warnings for those missing])."""
    found, missing = {}, []
    for r in releases:
        path = _folder(ws, r.name, r.version) / r.manifest_path
        if path.is_file():
            found[str(path)] = _ref(r)
        else:
            missing.append(
                f"the manifest of {_ref(r)} is not on disk ({path.relative_to(ws)}); "
                "run `dvc checkout` (or `dvc pull`) to include it"
            )
    return found, missing


def _query(paths: dict[str, str], select: str, where: str = "", params: dict | None = None) -> list[tuple]:
    """One query over every manifest in ``paths``, with ``filename`` naming each row's file.
    ``params`` are named (``$name``); ``$files`` is taken."""
    if not paths:
        return []
    import duckdb

    con = duckdb.connect()
    sql = f"SELECT {select} FROM read_parquet($files, filename=true, union_by_name=true) {where}"
    try:
        return con.execute(sql, {"files": list(paths), **(params or {})}).fetchall()
    except duckdb.Error as e:
        raise ManifestError(f"cannot query the release manifests: {e}") from e
    finally:
        con.close()


def _deny_list(ws: Path) -> dict[str, str]:
    """Sources withdrawn since (workspace ``policies/withdrawn.yaml``): name -> reason."""
    path = ws / "policies" / "withdrawn.yaml"
    if not path.is_file():
        return {}
    from registry import yamlio

    try:
        data = yamlio.load_file(path, "withdrawn-sources list") or {}
        return {str(w["name"]): str(w.get("reason", "")) for w in data.get("withdrawn", [])}
    except (SynthregError, TypeError, KeyError, AttributeError):
        return {}  # the validate stage reports a malformed list; lineage only reads it


def _release_info(ws: Path, r: Release, stats: dict | None, deny: dict[str, str]) -> dict:
    """Everything a trace says about one release (without the MLflow side)."""
    withdrawn = is_withdrawn(ws, r.name, r.version)
    sources = [
        {
            "name": s.name,
            "version": s.version,
            "digest": s.digest,
            "licence": s.licence,
            "role": s.role,
            "status": s.status,
            "url": s.url,
            "withdrawn_since": deny.get(s.name) if s.status != "withdrawn" else None,
            "identities": s.identities,  # None: every identity
        }
        for s in r.sources
    ]
    warnings = []
    if withdrawn:
        signed = (
            f" (signed by {withdrawn['signer']}, {withdrawn['role']} key {withdrawn['keyid'][:16]})"
            if withdrawn.get("trusted")
            else f" (NOT TRUSTED: {withdrawn.get('why_untrusted')})"
        )
        warnings.append(
            f"WITHDRAWN: {_ref(r)} was withdrawn on {withdrawn['time'][:10]} by {withdrawn['actor']}: "
            f"{withdrawn['reason']}{signed}"
        )
        derived = [_ref(d) for d in _all_releases(ws) if d.derived_from and d.derived_from.parent == _ref(r)]
        if derived:
            warnings.append(f"derived from the withdrawn {_ref(r)}: {', '.join(derived)}")
    for s in sources:
        if s["status"] == "withdrawn":
            warnings.append(f"source {s['name']} ({s['role']}) was marked withdrawn at release")
        elif s["withdrawn_since"] is not None:
            warnings.append(
                f"source {s['name']} ({s['role']}) is now on the withdrawn list "
                f"(policies/withdrawn.yaml): {s['withdrawn_since']}"
            )
    training = [s.name for s in r.sources if s.role == "generator-training"]
    return {
        "release": _ref(r),
        "released": True,
        "manifest_sha256": r.manifest_sha256,
        "git_commit": r.git_commit,
        "created_at": r.created_at.isoformat(),
        "actor": r.actor,
        "dataset_licence": r.dataset_licence,
        "intended_use": r.intended_use.model_dump(mode="json"),
        "withdrawn": withdrawn,
        "derived_from": r.derived_from.model_dump(mode="json") if r.derived_from else None,
        "generators": [
            {
                "name": g.name,
                "backend": g.backend,
                "weights_digest": g.weights_digest,
                "licence": g.licence,
                "pipeline_class": g.pipeline_class,
                "scheduler": g.scheduler,
                "images": g.images,
            }
            for g in r.generators
        ],
        "generator_training_sources": training,
        "prompt_templates": list(r.prompt_templates),
        "recipe_seed": r.seed,
        "samples": stats,
        "sources": sources,
        "filter": {
            "total": r.counts.total,
            "accepted": r.counts.accepted,
            "rejected": r.counts.rejected,
            "reasons": dict(r.counts.reasons),
        },
        "policy": {
            "passed": r.policy_passed,
            "report_sha256": r.policy_report_sha256,
            "results": dict(r.policy_results),
            "waivers": [w.model_dump(mode="json") for w in r.waivers],
        },
        "warnings": warnings,
        "notes": [
            f"{GENERATOR_NOTE} ({', '.join(training)})"
            if training
            else f"{GENERATOR_NOTE}; this release records none, so that part of its provenance is unknown"
        ],
    }


def _sample_stats(ws: Path, releases: list[Release]) -> tuple[dict[str, dict], list[str]]:
    paths, missing = _manifests(ws, releases)
    rows = _query(
        paths,
        "filename, count(*), count(*) FILTER (WHERE decision = 'accepted'), min(seed), max(seed)",
        "GROUP BY filename",
    )
    return {
        paths[f]: {"count": n, "accepted": a, "seed_min": lo, "seed_max": hi} for f, n, a, lo, hi in rows
    }, missing


# ---------------------------------------------------------------------------------------------------
# MLflow


@contextlib.contextmanager
def _mlflow_errors(uri: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise TrackingError(f"MLflow at {uri}: {e.message.strip()}") from e


def digest_matches(logged: str | None, manifest_sha256: str) -> bool:
    """The logged dataset digest names this manifest: the full sha256, or a prefix of 32+ hex of it."""
    if not logged:
        return False
    logged = logged.lower()
    return logged == manifest_sha256 or (
        len(logged) >= MIN_DIGEST_PREFIX and manifest_sha256.startswith(logged)
    )


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
    stats: dict[str, dict],
    deny: dict[str, str],
    profile: dict | None = None,
) -> dict:
    url = _source_url(source)
    parsed = urlparse(url)
    entry: dict[str, Any] = {
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
        return entry | {
            "released": False,
            "warnings": [],
            "notes": [f"{name} is not a synthreg dataset (its name is not NAME@X.Y.Z); not traced"],
        }
    if version == tracking.WORKING:
        from registry import lineage_working

        return entry | lineage_working.entry(ws, name, digest, profile or {}, tags, deny)
    ref = f"{dataset}@{version}"
    r = releases.get(ref)
    if r is None:
        return entry | {
            "released": False,
            "warnings": [f"{ref} is not released in workspace {ws}; cannot trace it (see `synthreg list`)"],
            "notes": [],
        }
    info = _release_info(ws, r, stats.get(ref), deny)
    matches = digest_matches(digest, r.manifest_sha256)
    info["digest_matches"] = matches
    info["digest_compared"] = (
        "full sha256" if digest == r.manifest_sha256 else f"first {len(digest or '')} hex of the sha256"
    )
    if not matches:
        info["warnings"].insert(
            0,
            f"DIGEST MISMATCH: the run logged {name} with digest {digest}, but the release's manifest "
            f"sha256 is {r.manifest_sha256}: the run did not train on this version as released",
        )
    tagged = tags.get(tracking.TAG_MANIFEST)
    if tags.get(tracking.TAG_DATASET) == name and tagged and tagged != r.manifest_sha256:
        info["warnings"].insert(
            0,
            f"DIGEST MISMATCH: tag {tracking.TAG_MANIFEST} is {tagged}, but the release's manifest "
            f"sha256 is {r.manifest_sha256}",
        )
    return entry | info


def _is_synthreg(name: str, source_type: str | None, tags: dict[str, str]) -> bool:
    dataset, sep, version = name.partition("@")
    return bool(sep and DATASET_NAME.fullmatch(dataset) and version) and (
        source_type == SOURCE_TYPE or tags.get(tracking.TAG_DATASET) == name or source_type is None
    )


def _drawn(name: str, tags: dict[str, str]) -> dict | None:
    """What the run recorded of the samples it drew from input ``name``: count, artifact, sha256."""
    from registry.track import samples_artifact, samples_tag

    recorded = tags.get(samples_tag(name))
    if not recorded:
        return None
    count, _, sha = recorded.partition(" ")
    return {
        "count": int(count) if count.isdigit() else None,
        "sha256": sha,
        "artifact": samples_artifact(name),
    }


def _trace(ws: Path, run: Any, uri: str) -> dict:
    from registry.lineage_working import profile_of

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
        inputs = [(tags[tracking.TAG_DATASET], tags.get(tracking.TAG_MANIFEST), "", None, {}, None)]
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
        if DATASET_NAME.fullmatch(dataset) and SEMVER.fullmatch(version) and version in versions(ws, dataset):
            wanted[f"{dataset}@{version}"] = load_release(ws, f"{dataset}@{version}")
    stats, missing = _sample_stats(ws, list(wanted.values()))
    deny = _deny_list(ws)
    datasets = []
    for name, digest, source, context, profile, _ in inputs:
        d = _dataset_entry(ws, name, digest, source, context, tags, wanted, stats, deny, profile)
        d["drawn"] = _drawn(name, tags)
        datasets.append(d)
    warnings = [w for d in datasets for w in d["warnings"]] + missing
    unresolved = [
        {"dataset": d["name"], "manifest_sha256": d.get("manifest_sha256"), "looked": d["looked"]}
        for d in datasets
        if d.get("unreleased") and not d.get("resolved")
    ]
    return {
        "tracking_uri": uri,
        "run": {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "lifecycle_stage": run.info.lifecycle_stage,
            "start_time": run.info.start_time,
            "tags": tags,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
        },
        "datasets": datasets,
        "unresolved": unresolved,
        "warnings": warnings,
    }


def trace_run(ws: Path, run_id: str) -> dict:
    """An MLflow run's dataset inputs traced to releases, generators, prompts, seeds and sources."""
    uri = tracking.tracking_uri(ws)
    with _mlflow_errors(uri):
        from mlflow.exceptions import MlflowException

        c = tracking.client(ws)
        try:
            run = c.get_run(run_id)
        except MlflowException as e:
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
    from mlflow.exceptions import MlflowException

    if selector == "latest":
        found = list(c.search_model_versions(f"name = '{_q(name)}'"))
        if not found:
            raise TrackingError(f"model {name!r} has no version in {uri}")
        return max(found, key=lambda v: int(v.version))
    if selector.startswith("@"):
        alias = selector[1:]
        try:
            return c.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            if not _not_found(e) and getattr(e, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise
            known = sorted(c.get_registered_model(name).aliases or {})
            raise TrackingError(
                f"model {name!r} has no alias {alias!r} in {uri}; aliases: {', '.join(known) or 'none'} "
                f"(set one with MlflowClient().set_registered_model_alias)"
            ) from None
    try:
        return c.get_model_version(name, selector)
    except MlflowException as e:
        if not _not_found(e):
            raise
        known = sorted(
            (m.version for m in c.search_model_versions(f"name = '{_q(name)}'")), key=lambda v: int(v)
        )
        raise TrackingError(
            f"model {name!r} has no version {selector!r} in {uri}; "
            f"known versions: {', '.join(map(str, known)) or 'none'}"
        ) from None


def trace_model(ws: Path, ref: str) -> dict:
    """A registered model version (``NAME/VERSION``, ``NAME/latest``, ``NAME@ALIAS``) -> its run ->
    :func:`trace_run`."""
    name, selector = _model_ref(ref)
    uri = tracking.tracking_uri(ws)
    with _mlflow_errors(uri):
        from mlflow.exceptions import MlflowException

        c = tracking.client(ws)
        try:
            c.get_registered_model(name)
        except MlflowException as e:
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
    out["model"] = {
        "name": name,
        "version": str(mv.version),
        "asked": ref,
        "run_id": run_id,
        "source": mv.source,
        "status": mv.status,
        "aliases": list(getattr(mv, "aliases", []) or []),
        "tags": dict(mv.tags or {}),
    }
    return out


def _q(s: str) -> str:
    return s.replace("'", "\\'")


def _models_of(c: Any, run_ids: list[str]) -> list[Any]:
    """The registered model versions made by ``run_ids``. Many runs: every version, read once and
    filtered here (MLflow parses each `run_id IN (...)` filter slowly: 20 chunks of 50 took 1.1 s of a
    3 s impact over 1,000 runs); a few runs: by chunks of ids."""
    wanted = set(run_ids)
    if len(wanted) <= 100:
        filters = [
            "run_id IN (" + ", ".join(f"'{_q(r)}'" for r in run_ids[i : i + 50]) + ")"
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


# ---------------------------------------------------------------------------------------------------
# images


def trace_image(ws: Path, path: Path | str) -> dict:
    """An image file -> its sample record(s), the sources of their releases, and every version holding it.

    Exact match on the file's sha256 first; else a perceptual match (phash Hamming distance <= 4)."""
    file = Path(path)
    if not file.is_file():
        raise WorkspaceError(f"image {file} does not exist; pass an image file")
    data = file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    releases = _all_releases(ws)
    by_ref = {_ref(r): r for r in releases}
    paths, missing = _manifests(ws, releases)
    cols = (
        "filename, sample_id, image_sha256, phash, dataset, identity, prompt, negative_prompt, seed, "
        "steps, guidance, width, height, generator_name, weights_digest, generator_licence, scheduler, "
        "shard, member, decision, reason"
    )
    # The MAX_IMAGES closest distinct images, with every row (version) of each; `matched` counts all rows.
    first = f"QUALIFY dense_rank() OVER (ORDER BY distance, image_sha256) <= {MAX_IMAGES}"
    rows = _query(
        paths,
        f"{cols}, 0 AS distance, count(*) OVER () AS matched",
        f"WHERE image_sha256 = $sha {first} ORDER BY sample_id",
        {"sha": sha},
    )
    match, phash = "exact", None
    if not rows:
        from registry.digests import perceptual_hash

        try:
            phash = perceptual_hash(data)
        except Exception as e:  # PIL raises several types for bytes that are not an image
            raise ReleaseError(f"{file} is not a readable image ({e}); it is in no released version") from e
        match = "perceptual"
        dist = "bit_count(xor(('0x' || phash)::UBIGINT, $phash::UBIGINT))"
        rows = _query(
            paths,
            f"{cols}, {dist} AS distance, count(*) OVER () AS matched",
            f"WHERE {dist} <= {PHASH_DISTANCE} {first} ORDER BY distance, sample_id",
            {"phash": int(phash, 16)},
        )
    if not rows:
        where = f"{len(paths)} released version(s)" + (
            f"; {len(missing)} manifest(s) not on disk" if missing else ""
        )
        raise ReleaseError(
            f"image {file} (sha256 {sha[:16]}..., phash {phash}) is in no released version: no exact "
            f"copy and nothing within perceptual distance {PHASH_DISTANCE} in {where}"
        )
    names = [*cols.split(", ")[1:], "distance"]
    images: dict[tuple[str, str], dict] = {}
    deny = _deny_list(ws)
    info: dict[str, dict] = {}
    for row in rows:
        ref = paths[row[0]]
        rec = dict(zip(names, row[1:-1], strict=True))
        key = (rec["sample_id"], rec["image_sha256"])
        if key not in images:
            images[key] = {k: v for k, v in rec.items() if k not in ("decision", "reason")} | {"versions": []}
        if ref not in info:
            info[ref] = _release_info(ws, by_ref[ref], None, deny)
        images[key]["versions"].append(
            {
                "release": ref,
                "decision": rec["decision"],
                "reason": rec["reason"],
                "withdrawn": info[ref]["withdrawn"],
                "sources": info[ref]["sources"],
            }
        )
    found = list(images.values())
    refs = sorted({v["release"] for im in found for v in im["versions"]})
    warnings = [
        f"WITHDRAWN: {v['release']} (holding {im['sample_id']}) was withdrawn: {v['withdrawn']['reason']}"
        for im in found
        for v in im["versions"]
        if v["withdrawn"]
    ] + missing
    return {
        "file": str(file),
        "sha256": sha,
        "phash": phash,
        "match": match,
        "images": found,
        "versions": refs,
        "matched_rows": rows[0][-1],
        "images_listed_max": MAX_IMAGES,
        "warnings": list(dict.fromkeys(warnings)),
    }


# ---------------------------------------------------------------------------------------------------
# impact


def impact(
    ws: Path,
    generator: str | None = None,
    source: str | None = None,
    prompt: str | None = None,
    sample: str | None = None,
) -> dict:
    """See :func:`registry.impact_search.impact` (its own room: it reaches unreleased data too)."""
    from registry.impact_search import impact as run

    return run(ws, generator, source, prompt, sample)


# ---------------------------------------------------------------------------------------------------
# human-readable summaries (the CLI prints these; --json prints the dicts)
