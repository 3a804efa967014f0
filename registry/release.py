"""Releasing a dataset version: gate on the policy report, copy content-addressed, sign, commit, tag.

    release("digits", "1.0.0", ws)   # -> releases/digits/1.0.0/ + git tag digits@v1.0.0

Layout of ``releases/<name>/<version>/`` (all in git except ``data/``, which DVC tracks)::

    release.json           the Release record
    release.dsse.json      DSSE envelope: in-toto Statement v1, subjects = data/ files, signed
                           by the releaser and every approver (registry.approval)
    signoffs.json          one signed sign-off per signer: who, roles, when, audit log checkpoint
    policy-report.json     the report the release was gated on (and policy-report.md, to read)
    card.md  croissant.json  prov.json
    report.html            the HTML audit report as at release (registry.exports.report_html)
    README.md              the card again, where Hugging Face `datasets` looks: load_dataset(folder) works
    data.dvc               DVC pointer to data/: manifest.parquet, manifest-flat.parquet (the same rows,
                           map columns as JSON text, for Hugging Face `datasets`) and
                           shards/<sha256>.tar (WebDataset: each image with its .json and .cls sidecar,
                           registry/webdataset.py)

The manifest is released byte for byte as validated (its digest is the report's), and shards are
stored under their own sha256, so a version names its content and two versions share identical
shards. Releases are serialised by a lock on ``.dvc/tmp/synthreg-release.lock`` (ignored by git); the
version folder is assembled under a temporary name (``.X.Y.Z.tmp-<pid>``, which readers skip) and
renamed, then committed and tagged. ``publish`` is a journalled transaction (``registry.journal``): a
kill at any step leaves a version that no reader treats as released until the next command finishes
it (the signed record was complete) or removes it (it was not).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from registry import audit, journal
from registry import manifest as mf
from registry.digests import sha256_bytes, sha256_file
from registry.errors import ReleaseError
from registry.fsio import atomic_write_text
from registry.models import DATASET_NAME, Recipe, SourceRef
from registry.names import check_manifest, shown
from registry.policy import PolicyReport
from registry.release_record import SEMVER, Counts, Derivation, GeneratorUse, Release, ShardRef
from registry.shards import check_members
from registry.signing import load_signer, public_key_file, sign, statement
from registry.trust import Trust
from registry.webdataset import with_sidecars
from registry.workspace import inside

RELEASES = Path("releases")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@X.Y.Z`` (or ``name@vX.Y.Z``, or ``name``) -> (name, version or None).

    Both parts become path components under releases/, so anything else is refused here. The version
    may also be ``working`` (the working filtered manifest, for `synthreg train`), a fixed safe name."""
    name, _, version = ref.partition("@")
    version = version.removeprefix("v")
    if not DATASET_NAME.fullmatch(name) or (
        version and version != "working" and not re.fullmatch(SEMVER, version)
    ):
        raise ReleaseError(
            f"{shown(ref)} is not a release reference: give NAME@X.Y.Z (a dataset name of lowercase "
            "letters, digits, '-', '_'; version components below 10^9)"
        )
    return name, (version or None)


def versions(ws: Path, name: str) -> list[str]:
    """Released versions of ``name``, oldest first; one an unfinished operation is making is not one."""
    import semver

    folder = ws / RELEASES / name
    unfinished = journal.unfinished_versions(ws, name)
    found = (
        [
            p.name
            for p in folder.iterdir()
            if re.fullmatch(SEMVER, p.name) and (p / "release.json").is_file() and p.name not in unfinished
        ]
        if folder.is_dir()
        else []
    )
    return sorted(found, key=semver.Version.parse)


def _git(ws: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"`git {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def _dvc(ws: Path, *args: str) -> None:
    import sys

    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run(
        [str(dvc) if dvc.exists() else "dvc", *args], cwd=ws, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise ReleaseError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")


@contextlib.contextmanager
def _lock(ws: Path) -> Iterator[None]:
    """The release lock (``registry.journal.lock``), then recovery of any interrupted operation."""
    with journal.lock(ws):
        journal.recover(ws)
        yield


def _gate(ws: Path, name: str, manifest: Path, report_path: Path, today: date) -> tuple[PolicyReport, str]:
    """The policy report the release is gated on, and its text as written (released byte for byte)."""
    if not manifest.is_file():
        raise ReleaseError(f"no filtered manifest for {name} at {manifest}; run `dvc repro` first")
    if not report_path.is_file():
        raise ReleaseError(f"no policy report for {name} at {report_path}; run `synthreg validate` first")
    text = report_path.read_text()
    try:
        report = PolicyReport.model_validate_json(text)
    except ValueError:  # pydantic's ValidationError; e.g. a report written by an older synthreg
        raise ReleaseError(
            f"{report_path} is not a policy report this synthreg can read (edited, or written by an older "
            "version); run `synthreg validate` (or `dvc repro`) again"
        ) from None
    digest = sha256_file(manifest)
    if report.manifest_sha256 != digest:
        raise ReleaseError(
            f"the policy report is stale: made for manifest {report.manifest_sha256[:12]}, "
            f"but the manifest is {digest[:12]}; run `synthreg validate` again"
        )
    failing = [r.rule_id for r in report.results if r.status == "fail"]
    if failing:
        raise ReleaseError(
            f"the policy report has failing error rules without a waiver: {', '.join(failing)}"
        )
    expired = [r.rule_id for r in report.results if r.waiver and r.waiver.expires < today]
    if expired:
        raise ReleaseError(
            f"waivers for {', '.join(expired)} expired since validation; renew them and validate again"
        )
    return report, text


# Recipe fields that declare things about the dataset without shaping any image: they may change
# between generation and release (validate and release read them from the current recipe).
DECLARATIONS = {"description", "licence", "intended_use"}


def _recipe_file(ws: Path, recipe_path: Path | str | None) -> Path:
    from registry.config import load_params
    from registry.workspace import inside

    return inside(ws, recipe_path or load_params(ws / "params.yaml", ws).recipe, "recipe")


def _current_recipe(ws: Path, name: str, generation: Path, recipe_path: Path | str | None) -> Recipe:
    """The recipe file as it is now, refused if anything that shapes the images changed since generation."""
    from registry.config import load_recipe

    if not generation.is_file():
        raise ReleaseError(f"no generation record at {generation}; regenerate the dataset")
    recorded = Recipe.model_validate(json.loads(generation.read_text())["recipe"])
    current = load_recipe(_recipe_file(ws, recipe_path))
    if current.dataset != name:
        raise ReleaseError(f"the recipe is for dataset {current.dataset!r}, not {name!r}; pass --recipe")
    changed = sorted(
        k
        for k in Recipe.model_fields
        if k not in DECLARATIONS and getattr(current, k) != getattr(recorded, k)
    )
    if changed:
        raise ReleaseError(
            f"the recipe changed since the images were generated ({', '.join(changed)}); "
            "run `dvc repro` to regenerate, filter and validate, then release"
        )
    return current


def release(
    name: str,
    version: str,
    ws: Path,
    key: Path | str | None = None,
    actor: str | None = None,
    today: date | None = None,
    recipe_path: Path | str | None = None,
    trust: Path | str | None = None,
    no_push: bool = False,
    progress: Callable[..., None] | None = None,
) -> Release:
    """Release ``data/<name>/filtered`` as ``name@version``. Refused, before anything is written, when a
    file it depends on is not committed (``registry.source``), when the key is not a releaser's in the
    pinned trust root, when report.json disagrees with a fresh check of the manifest, and when there is
    no DVC remote to push to unless ``no_push``."""
    from registry import remote, source
    from registry.trust import load_trust

    if (finished := resumed(ws, ("release",), name, version)) is not None:
        return finished
    check_new_version(ws, name, version)
    data = ws / "data" / name
    manifest = data / "filtered" / "manifest.parquet"
    report, report_text = _gate(ws, name, manifest, data / "policy" / "report.json", today or date.today())
    recipe = _current_recipe(ws, name, data / "candidates" / "generation.json", recipe_path)
    if recipe.licence is None:
        raise ReleaseError(f"recipe for {name} declares no licence for the dataset; add `licence:` to it")
    source.require_committed(ws, source.dependencies(ws, _recipe_file(ws, recipe_path)))
    source.require_manifest_recorded(ws, manifest)
    signer = load_signer(key)  # before anything is written, and before the slower re-check
    trusted = load_trust(ws, trust)
    trusted.signing_key(signer.public_key.keyid, "releaser")
    pushed_to = remote.require(ws, no_push)
    _recheck(ws, manifest, recipe, report, today or date.today())

    def build(staging: Path) -> tuple[Release, PolicyReport, str]:
        record = assemble(
            ws,
            name,
            version,
            manifest,
            report,
            report_text,
            recipe,
            staging,
            actor,
            _workspace_shard(ws),
            progress=progress,
        ).model_copy(update={"remote": pushed_to, "no_push": no_push})
        return record, report, report_text

    return publish(ws, name, version, signer, build, f"Release {name}@{version}", trust=trusted)


def _recheck(ws: Path, manifest: Path, recipe: Recipe, report: PolicyReport, today: date) -> None:
    """Run the policy check again on the manifest and refuse when ``report.json`` says otherwise: the
    report is a file anyone with write access can edit, the check is not."""
    from policies.engine import check
    from registry.config import load_params

    v = load_params(ws / "params.yaml").validate_
    fresh = check(ws, manifest, recipe, v.packs, v.waivers, v.licences, today=today)
    said = {r.rule_id: (r.status, r.waiver) for r in report.results}
    found = {r.rule_id: (r.status, r.waiver) for r in fresh.results}
    for rule in sorted(set(said) | set(found)):
        if said.get(rule) != found.get(rule):
            s, f = said.get(rule, ("absent", None)), found.get(rule, ("absent", None))
            how = f"{s[0]}" + (f" (waived by {s[1].approver})" if s[1] else "")
            raise ReleaseError(
                f"report.json says rule {rule} is {how}, but checking the manifest again gives {f[0]}"
                + (f" (waived by {f[1].approver})" if f[1] else "")
                + "; the report was edited or is out of date: run `synthreg validate` again"
            )


def check_new_version(ws: Path, name: str, version: str) -> None:
    """Refuse a bad name or version, a workspace without git and DVC, and a version that exists or is
    not above the latest (checked first, and again under the lock in ``publish``)."""
    import semver

    if not DATASET_NAME.fullmatch(name):
        raise ReleaseError(f"dataset name {name!r} is not valid (lowercase letters, digits, '-', '_')")
    if not re.fullmatch(SEMVER, version):
        raise ReleaseError(
            f"version {shown(version)} is not semantic (X.Y.Z, e.g. 1.0.0, each number below 10^9)"
        )
    inside(ws, RELEASES / name, "releases folder")  # a symlink out of the workspace is refused
    if not (ws / ".git").exists() or not (ws / ".dvc").is_dir():
        raise ReleaseError(f"workspace {ws} must be a git repository with DVC initialised (`dvc init`)")
    existing = versions(ws, name)
    if version in existing:
        raise ReleaseError(f"{name}@{version} exists already and releases are immutable; pick a new version")
    if existing and semver.Version.parse(version) <= semver.Version.parse(existing[-1]):
        raise ReleaseError(f"version {version} is not greater than the latest, {name}@{existing[-1]}")


def resumed(ws: Path, ops: tuple[str, ...], name: str, version: str) -> Release | None:
    """The record of ``name@version`` when recovery in this process just finished an interrupted
    ``ops`` operation making it: re-running the killed command then reports it instead of refusing it."""
    journal.recover_if_idle(ws)
    if journal.finished_here(ws, ops, f"{name}@{version}"):
        return load_release(ws, f"{name}@{version}")
    return None


def publish(
    ws: Path,
    name: str,
    version: str,
    signer: Any,
    build: Callable[[Path], tuple[Release, PolicyReport, str]],
    message: str,
    op: str = "release",
    trust: Trust | Path | str | None = None,
) -> Release:
    """Make ``releases/NAME/VERSION`` under the release lock, as a journalled transaction
    (``registry.journal``) of the steps in ``PUBLISH_STEPS``:

    1. stage: ``build(staging)`` writes the data and returns the record, the policy report and its text;
       sign as releaser (envelope + sign-off), write the exports (all in ``.VERSION.tmp-PID``, fsynced).
       From here recovery finishes.
    2. rename: the staging folder into place.         5. commit: the folder and the audit log.
    3. dvc-add: ``data/`` to DVC.                      6. tag: ``NAME@vVERSION`` on that commit, only
    4. audit: the events (for a derivation, the           when the sign-offs meet the trust root's
       validation first), each appended once.             thresholds (solo mode); else a candidate.

    Signing: the releaser's key must be an ed25519 key the pinned trust root lists as ``releaser``
    (checked before anything is written). A candidate waits for ``synthreg approve``.

    A failure before ``audit`` removes the folder and unstages it; later, the journal stays and the next
    command finishes the release. The audit log is append-only, so an event appended before a failure
    the live process undid stays (its subject names a version that was not made)."""
    from registry.approval import ENVELOPE, SIGNOFFS, approval_state, make_signoff, releaser_roles
    from registry.signing import payload_of
    from registry.trust import load_trust

    trust = trust if isinstance(trust, Trust) else load_trust(ws, trust)
    entry = trust.signing_key(signer.public_key.keyid, "releaser")
    ref = f"{name}@{version}"
    with _lock(ws):
        if journal.finished_here(ws, (op,), ref):
            return load_release(ws, ref)
        check_new_version(ws, name, version)
        final = ws / RELEASES / name / version
        staging = ws / RELEASES / name / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        tag = f"{name}@v{version}"
        state = {
            "staging": staging.relative_to(ws).as_posix(),
            "final": final.relative_to(ws).as_posix(),
            "tag": tag,
            "tag_existed": _tagged(ws, tag),
            "message": message,
            "head": _git(ws, "rev-parse", "HEAD") if _has_commits(ws) else None,
            "actor": audit.actor_name(ws),
            "audit_from": len(audit.read(ws)),
        }
        with journal.transaction(ws, op, ref, state) as txn, txn.step("stage"):
            record, report, report_text = build(staging)
            subjects = {"data/manifest.parquet": record.manifest_sha256} | {
                f"data/{s.path}": s.sha256 for s in record.shards
            }
            flat = staging / "data" / mf.FLAT
            if flat.is_file():  # signed like the rest of data/, so `verify` and `pull` check it
                subjects[f"data/{mf.FLAT}"] = sha256_file(flat)
            payload = record.model_dump(mode="json")
            atomic_write_text(staging / "release.json", json.dumps(payload, indent=2, sort_keys=True) + "\n")
            # The exports are signed too: README.md is what Hugging Face `datasets` obeys (its configs:
            # name the files it loads), and the card and report are what reviewers read.
            _write_exports(staging, record, report, report_text)
            subjects |= {e: sha256_file(staging / e) for e in EXPORTS}
            envelope = sign(statement(subjects, payload), signer)
            # Sign as releaser. The sign-off (who, roles, when, audit checkpoint) is signed too.
            signoffs = [
                make_signoff(ws, ref, payload_of(envelope), signer, entry, releaser_roles(trust, entry))
            ]
            approval = approval_state(trust, ref, envelope, signoffs)
            atomic_write_text(staging / ENVELOPE, json.dumps(envelope, indent=2) + "\n")
            atomic_write_text(staging / SIGNOFFS, json.dumps(signoffs, indent=2) + "\n")
            _fsync_tree(staging)
            signer_details = {"status": approval.status, "signer": {"keyid": entry.keyid, "name": entry.name}}
            # Final only when the thresholds are met; a candidate waits for `synthreg approve`. The commit
            # holds the signer's public key (a convenience copy; trust comes from the pinned root).
            txn.update(
                events=_events(record, report, name, version, signer_details),
                tag_now=approval.met,
                remote=record.remote,
                pubkey=public_key_file(signer),
            )
    return record


PUBLISH_STEPS = ("stage", "rename", "dvc-add", "push", "audit", "commit", "tag")


def _events(
    record: Release, report: PolicyReport, name: str, version: str, signing: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The audit events a publication appends, in order: kind, subject, details (``signing``: the
    approval status and the releaser's key, merged into the release event's details)."""
    subject = f"{name}@{version}"
    details: dict[str, Any] = {
        "manifest_sha256": record.manifest_sha256,
        "policy_report_sha256": record.policy_report_sha256,
        "remote": record.remote,
        "no_push": record.no_push,
        **(signing or {}),
    }
    events = []
    if record.derived_from:  # validated by derive itself, not by a validate stage
        events += audit.validation_events(report, subject, record.policy_report_sha256)
        details["derived_from"] = record.derived_from.model_dump(mode="json")
    kind = "derive" if record.derived_from else "release"
    return [*events, {"kind": kind, "subject": subject, "details": details}]


def _fsync_tree(folder: Path) -> None:
    """Everything staged reaches the disk before the journal says the record is complete."""
    for p in sorted(folder.rglob("*"), reverse=True):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _step_rename(ws: Path, entry: journal.Entry) -> None:
    staging, final = ws / entry.state["staging"], ws / entry.state["final"]
    if staging.is_dir():
        if final.exists():
            raise ReleaseError(f"both {staging} and {final} exist; remove the one that is not the release")
        os.replace(staging, final)
    elif not (final / "release.json").is_file():
        raise ReleaseError(f"neither {staging} nor {final} holds the release; it is lost, remove the entry")


def _step_dvc_add(ws: Path, entry: journal.Entry) -> None:
    data = ws / entry.state["final"] / "data"
    record = Release.model_validate_json((ws / entry.state["final"] / "release.json").read_text())
    missing = [s.path for s in record.shards if not (data / s.path).is_file()]
    if missing or not (data / "manifest.parquet").is_file():  # never track a version short of a shard
        raise ReleaseError(
            f"{data} lacks {', '.join(missing) or 'manifest.parquet'}; restore it, `dvc checkout`"
        )
    _dvc(ws, "add", "-q", f"{entry.state['final']}/data")


def _step_push(ws: Path, entry: journal.Entry) -> None:
    """Push the release's data to the remote it names, before the audit event and the commit: a version
    others can see is one they can pull (``registry.remote``; pushing twice sends nothing new)."""
    from registry import remote

    if entry.state.get("remote") is None:  # --no-push, recorded in the record and the audit event
        return
    record = Release.model_validate_json((ws / entry.state["final"] / "release.json").read_text())
    remote.push_release(ws, record, entry.state["remote"])


def _step_audit(ws: Path, entry: journal.Entry) -> None:
    events = entry.state["events"]
    if entry.state.get("adopted"):  # a version no journal explains: its own event may be logged already,
        logged = {(e.kind, e.subject) for e in audit.read(ws)}  # with details this run cannot rebuild
        events = [e for e in events if (e["kind"], e["subject"]) not in logged]
    audit.append_missing(ws, events, entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: journal.Entry) -> None:
    rel, log = entry.state["final"], audit.LOG.as_posix()
    files = [rel, log]
    pub = entry.state.get("pubkey")
    if pub:  # the signer's public key travels with the release commit (self-sufficient, issue 9)
        path = ws / pub["path"]
        if not path.is_file():
            atomic_write_text(path, pub["text"])
        files.append(pub["path"])
    _git(ws, "add", *files)
    if _committed(ws, rel, files):
        return
    _git(ws, "commit", "-q", "-m", entry.state["message"], "--", *files)


def _committed(ws: Path, rel: str, files: list[str]) -> bool:
    """``rel`` and the other ``files`` are in HEAD exactly as in the index (nothing left to commit)."""
    if not _has_commits(ws):
        return False
    in_head = subprocess.run(
        ["git", "cat-file", "-e", f"HEAD:{rel}/release.json"], cwd=ws, capture_output=True
    )
    clean = subprocess.run(
        ["git", "diff", "--cached", "--quiet", "HEAD", "--", *files],
        cwd=ws,
        capture_output=True,
    )
    return in_head.returncode == 0 and clean.returncode == 0


def _step_tag(ws: Path, entry: journal.Entry) -> None:
    if not entry.state.get("tag_now", True):  # a candidate: `synthreg approve` tags it at its threshold
        return
    tag, rel = entry.state["tag"], entry.state["final"]
    commit = _git(ws, "rev-list", "-1", "HEAD", "--", f"{rel}/release.json")
    if _tagged(ws, tag):
        if _git(ws, "rev-parse", f"{tag}^{{commit}}") != commit:
            raise ReleaseError(f"tag {tag} exists and points elsewhere than {commit[:12]}; delete or move it")
        return
    _git(ws, "tag", tag, commit)


def _undo_publish(ws: Path, entry: journal.Entry) -> None:
    """Remove what this publication made: its tag and commit only when it made them and nothing came
    after (HEAD is still that commit), then the folder and its staging; unstage it."""
    s = entry.state
    shutil.rmtree(ws / s["staging"], ignore_errors=True)
    final = ws / s["final"]
    if not s["tag_existed"] and _tagged(ws, s["tag"]):
        _git(ws, "tag", "-d", s["tag"])
    if _has_commits(ws) and _git(ws, "rev-parse", "HEAD") != s["head"]:
        added = _git(ws, "rev-list", "-1", "HEAD", "--", f"{s['final']}/release.json")
        if (
            added == _git(ws, "rev-parse", "HEAD")
            and _git(ws, "log", "-1", "--format=%B").strip() == s["message"]
        ):
            if s["head"]:
                _git(ws, "reset", "-q", "--soft", "HEAD~1")
            else:  # it was the first commit
                _git(ws, "update-ref", "-d", "HEAD")
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(ReleaseError):
            _git(ws, "reset", "-q", "--", s["final"])


def adopt(ws: Path, name: str, version: str) -> str:
    """Journal a version folder that no journal explains (made by hand, or by synthreg before the
    journal existed) as a publication whose record is complete, so recovery finishes it: only when the
    version verifies (signature, record, every image). The caller holds the release lock."""
    from registry.verify import verify

    ref = f"{name}@{version}"
    checked = verify(ws, ref)
    # The tag is what finishing adds: an approved release short of it is what adoption is for.
    untagged = f"{ref} is approved but has no tag {name}@v{version}; it is not final"
    problems = [p for p in checked.problems if p != untagged]
    if problems or checked.bad_samples:
        first = [*problems, *(f"sample {k}: {v}" for k, v in sorted(checked.bad_samples.items()))][0]
        raise ReleaseError(f"{ref} does not verify ({first}); it is not finished: restore or remove it")
    final = ws / RELEASES / name / version
    record = load_release(ws, ref)
    if (record.name, record.version) != (name, version):  # a signed folder copied under another name
        raise ReleaseError(f"{final} holds the record of {record.name}@{record.version}; remove it")
    report = PolicyReport.model_validate_json((final / "policy-report.json").read_text())
    tag = f"{name}@v{version}"
    state = {
        "staging": f"{RELEASES.as_posix()}/{name}/.{version}.tmp-{os.getpid()}",
        "final": final.relative_to(ws).as_posix(),
        "tag": tag,
        "tag_existed": _tagged(ws, tag),
        "message": f"{'Derive' if record.derived_from else 'Release'} {ref} (finished by synthreg doctor)",
        "head": _git(ws, "rev-parse", "HEAD") if _has_commits(ws) else None,
        "actor": audit.actor_name(ws),
        "audit_from": 0,  # any earlier event for it counts: none is appended twice
        "adopted": True,
        "events": _events(record, report, name, version),
    }
    op = "derive" if record.derived_from else "release"
    journal.adopt(ws, op, ref, list(PUBLISH_STEPS), ["stage"], state)
    return op


PUBLISH = journal.Operation(
    steps=PUBLISH_STEPS,
    forward={
        "rename": _step_rename,
        "dvc-add": _step_dvc_add,
        "push": _step_push,
        "audit": _step_audit,
        "commit": _step_commit,
        "tag": _step_tag,
    },
    undo=_undo_publish,
    roll_forward=lambda ws, entry: "stage" in entry.done,  # the signed record is complete
    public=journal.logged,
)


def tag_commit(ws: Path, name: str, version: str) -> str | None:
    """The commit the tag ``name@vX.Y.Z`` points at (the release commit), or None without the tag."""
    tag = f"refs/tags/{name}@v{version}"
    proc = subprocess.run(["git", "rev-list", "-n", "1", tag, "--"], cwd=ws, capture_output=True, text=True)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _tagged(ws: Path, tag: str) -> bool:
    try:
        return bool(_git(ws, "tag", "--list", tag))
    except ReleaseError:
        return False


def assemble(
    ws: Path,
    name: str,
    version: str,
    manifest: Path,
    report: PolicyReport,
    report_text: str,
    recipe: Recipe,
    out: Path,
    actor: str | None,
    read_shard: ShardReader,
    derivation: Derivation | None = None,
    progress: Callable[..., None] | None = None,
) -> Release:
    """Copy the manifest and content-addressed shards into ``out/data``; build the record.

    ``read_shard(shard, members)`` gives the bytes of the tar the manifest calls ``shard``, holding the
    ``members`` it names. Everything is checked on the copies, under the release lock: the manifest copy
    must be the one the policy report validated (a filter run since the gate would change it), and every
    image in every copied shard must match its recorded sha256, so a corrupt shard is never signed.
    """
    (out / "data" / "shards").mkdir(parents=True)
    released = out / "data" / "manifest.parquet"
    shutil.copyfile(manifest, released)
    manifest_sha256 = sha256_file(released)
    if manifest_sha256 != report.manifest_sha256:
        raise ReleaseError("the filtered manifest changed after validation; run `synthreg validate` again")
    con = mf.connect(released)
    check_manifest(con, f"manifest {manifest}")  # no unsafe name is signed
    mf.write_flat(released, out / "data" / mf.FLAT)  # what Hugging Face `datasets` can load (issue 12)
    from registry.webdataset import SIDECAR_FIELDS

    n_shards = con.execute("SELECT count(DISTINCT shard) FROM manifest").fetchall()[0][0]
    shards = []
    # A few shards' rows at a time (mf.rows_by_shard): the whole manifest as Python objects was most of
    # release's and derive's memory (~3 KB a row, issue 13).
    for i, (shard, rows) in enumerate(
        mf.rows_by_shard(con, ["member", "sample_id", "image_sha256", *SIDECAR_FIELDS])
    ):
        if progress:  # (shards copied and checked, shards)
            progress(i, n_shards)
        assert shard is not None  # check_manifest refused a row without one
        expected = {member: (sid, sha) for member, sid, sha, *_ in rows}
        sidecars = {m: dict(zip(SIDECAR_FIELDS, values, strict=True)) for m, _, _, *values in rows}
        del rows
        data = read_shard(shard, set(expected))
        problems, bad_samples = check_members(data, expected, shard)
        if problems:  # e.g. a truncated tar
            raise ReleaseError(f"{problems[0]}; restore the shard (`dvc checkout`) or regenerate")
        if bad_samples:
            bad = sorted(bad_samples)
            raise ReleaseError(
                f"shard {shard} does not hold the recorded images for {len(bad)} sample(s), first {bad[0]}; "
                "restore the shard (`dvc checkout`) or regenerate"
            )
        members = len(expected)
        data = with_sidecars(data, sidecars, list(recipe.identities))  # WebDataset .json/.cls
        digest = sha256_bytes(data)
        (out / "data" / "shards" / f"{digest}.tar").write_bytes(data)  # in staging: renamed whole
        shards.append(
            ShardRef(
                path=f"shards/{digest}.tar",
                source=shard,
                sha256=digest,
                size=len(data),
                members=members,
            )
        )
    if progress:
        progress(n_shards, n_shards)
    per_identity: dict[str, dict[str, int]] = {}
    for identity, decision, n in con.execute(
        "SELECT identity, coalesce(decision, 'unfiltered'), count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        per_identity.setdefault(identity, {})[decision] = n
    reasons = Counter(
        {
            r: n
            for r, n in con.execute(
                "SELECT split_part(coalesce(reason, 'unfiltered'), ':', 1), count(*) FROM manifest GROUP BY 1"
            ).fetchall()
        }
    )
    total = sum(sum(d.values()) for d in per_identity.values())
    accepted = sum(d.get("accepted", 0) for d in per_identity.values())
    generators = [
        GeneratorUse(
            name=g, backend=b, weights_digest=w, licence=lic, pipeline_class=p, scheduler=s, images=n
        )
        for g, b, w, lic, p, s, n in con.execute(
            "SELECT generator_name, generator_backend, weights_digest, generator_licence, pipeline_class, "
            "scheduler, count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    ]
    attribution: list[dict] = next(
        (r.evidence.details.get("duties", []) for r in report.results if r.kind == "attribution"), []
    )
    sources: list[SourceRef] = list(recipe.sources) + list(recipe.generator.training_sources)
    return Release(
        name=name,
        version=version,
        manifest_sha256=manifest_sha256,
        shards=shards,
        counts=Counts(
            total=total,
            accepted=accepted,
            rejected=total - accepted,
            per_identity=per_identity,
            reasons=dict(sorted(reasons.items())),
        ),
        generators=generators,
        sources=sources,
        prompt_templates=recipe.prompt_templates,
        seed=recipe.seed,
        policy_report_sha256=sha256_bytes(report_text.encode()),
        policy_passed=report.passed,
        policy_results={r.rule_id: r.status for r in report.results},
        waivers=[r.waiver for r in report.results if r.waiver],
        intended_use=report.intended_use,
        dataset_licence=recipe.licence or "",
        attribution=list(dict.fromkeys(d["text"] for d in attribution)),  # a source may serve two roles
        git_commit=_git(ws, "rev-parse", "HEAD") if _has_commits(ws) else "none",
        created_at=datetime.now(UTC),
        actor=actor or audit.actor_name(ws),
        recipe=recipe,
        derived_from=derivation,
    )


ShardReader = Callable[[str, set[str]], bytes]


def _workspace_shard(ws: Path) -> ShardReader:
    def read(shard: str, members: set[str]) -> bytes:
        src = inside(ws, shard, "shard")  # symlinks included
        if not src.is_file():
            raise ReleaseError(f"shard {shard} is missing; restore it (`dvc checkout`) or regenerate")
        return src.read_bytes()

    return read


def _has_commits(ws: Path) -> bool:
    return (
        subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=ws, capture_output=True).returncode
        == 0
    )


# What _write_exports writes at the top of a release folder; each is a signed subject (verify checks them).
EXPORTS = (
    "policy-report.json",
    "policy-report.md",
    "card.md",
    "README.md",
    "croissant.json",
    "prov.json",
    "report.html",
)


def _write_exports(out: Path, record: Release, report: PolicyReport, report_text: str) -> None:
    atomic_write_text(out / "policy-report.json", report_text)
    from registry.exports import croissant_jsonld, prov_json, release_html, render_card, render_markdown

    atomic_write_text(out / "policy-report.md", render_markdown(report))  # the same report, for people
    atomic_write_text(out / "card.md", render_card(record, report))
    atomic_write_text(out / "README.md", render_card(record, report))  # the same card, where `datasets` looks
    atomic_write_text(out / "croissant.json", json.dumps(croissant_jsonld(record, report), indent=2) + "\n")
    atomic_write_text(out / "prov.json", prov_json(record) + "\n")
    atomic_write_text(out / "report.html", release_html(out, record, report))


def load_release(ws: Path, ref: str, bound: bool = True) -> Release:
    """The record of ``NAME@X.Y.Z`` (or of the latest version of ``NAME``), after recovering any
    interrupted operation when the release lock is free; a version still being made is not released.
    With ``bound``, a record whose own name and version are not its folder's (a signed release copied
    over another) is refused."""
    journal.recover_if_idle(ws)
    name, version = parse_ref(ref)
    if version is not None and version in journal.unfinished_versions(ws, name):
        raise ReleaseError(
            f"{name}@{version} is not released: an interrupted operation on it has not finished; "
            "run `synthreg doctor --repair`"
        )
    if version is None:
        found = versions(ws, name)
        if not found:
            raise ReleaseError(f"no releases of {name!r}; see `synthreg list`")
        version = found[-1]
    path = ws / RELEASES / name / version / "release.json"
    if not path.is_file():
        raise ReleaseError(f"{name}@{version} is not released; see `synthreg list`")
    try:
        record = Release.model_validate_json(path.read_text())
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ReleaseError(f"{path} is not a valid release record ({e}); restore it from git") from None
    if bound and (record.name, record.version) != (name, version):
        raise ReleaseError(
            f"{path} is the record of {record.name}@{record.version}, not {name}@{version} (a release "
            f"copied over another?); run `synthreg verify {name}@{version}` and restore it from git"
        )
    return record
