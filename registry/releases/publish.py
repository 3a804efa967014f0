"""Releasing a dataset version: gate on the policy report, copy content-addressed, sign, commit, tag.

    release("digits", "1.0.0", ws)   # -> releases/digits/1.0.0/ + git tag digits@v1.0.0

Layout of ``releases/<name>/<version>/`` (all in git except ``data/``, which DVC tracks)::

    release.json           the Release record
    release.dsse.json      DSSE envelope: in-toto Statement v1, subjects = data/ files, signed
                           by the releaser and every approver (registry.trust.approvals)
    signoffs.json          one signed sign-off per signer: who, roles, when, audit log checkpoint
    policy-report.json     the report the release was gated on (and policy-report.md, to read)
    card.md  croissant.json  prov.json
    report.html            the HTML audit report as at release (registry.exports.report_html)
    README.md              the card again, where Hugging Face `datasets` looks: load_dataset(folder) works
    data.dvc               DVC pointer to data/: manifest.parquet, manifest-flat.parquet (the same rows,
                           map columns as JSON text, for Hugging Face `datasets`) and
                           shards/<sha256>.tar (WebDataset: each image with its .json and .cls sidecar,
                           registry/store/webdataset.py)

The manifest is released byte for byte as validated (its digest is the report's), and shards are
stored under their own sha256, so a version names its content and two versions share identical
shards. Releases are serialised by a lock on ``.dvc/tmp/synthreg-release.lock`` (ignored by git); the
version folder is assembled under a temporary name (``.X.Y.Z.tmp-<pid>``, which readers skip) and
renamed, then committed and tagged. ``publish`` is a journalled transaction (``registry.store.journal``): a
kill at any step leaves a version that no reader treats as released until the next command finishes
it (the signed record was complete) or removes it (it was not).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from registry.core import allocator, vcs
from registry.core.digests import sha256_bytes, sha256_file
from registry.core.errors import ReleaseError
from registry.core.fsio import Stamp, atomic_write_text, link_unchanged
from registry.core.names import check_manifest, shown
from registry.core.workspace import no_links
from registry.records.dataset import DATASET_NAME, Recipe, SourceRef
from registry.records.journal import Entry
from registry.records.lineage import ModelsSeen, SignaturesSeen
from registry.records.policy import PolicyReport
from registry.records.release import SEMVER, Counts, Derivation, GeneratorUse, Release, ShardRef
from registry.releases.shard_check import IMAGE_COLUMNS, checked_members
from registry.releases.tagging import commit_message, signing_tags, status_line, tag_release
from registry.store import audit, journal
from registry.store import manifest as mf
from registry.store.releases import EXPORTS, RELEASES, load_release, release_folder, versions
from registry.store.webdataset import SIDECAR_FIELDS, add_sidecars, sidecars_of
from registry.trust.root import Trust
from registry.trust.signing import KEYS, public_key_file, sign, statement


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
    release_folder(ws, name, version)  # a symbolic link anywhere on the way is refused
    no_links(ws, KEYS, "public keys folder")  # release writes keys/<keyid>.pub.json
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
    models: ModelsSeen | Callable[[], ModelsSeen] | None = None,
    details: dict[str, Any] | None = None,
) -> Release:
    """Make ``releases/NAME/VERSION`` under the release lock, as a journalled transaction
    (``registry.store.journal``) of the steps in ``PUBLISH_STEPS``:

    1. stage: ``build(staging)`` writes the data and returns the record, the policy report and its text;
       sign as releaser (envelope + sign-off), write the exports (all in ``.VERSION.tmp-PID``, fsynced).
       From here recovery finishes.
    2. rename: the staging folder into place.         5. commit: the folder and the audit log.
    3. dvc-add: ``data/`` to DVC.                      6. tag: ``NAME@vVERSION`` on that commit, only
    4. audit: the events (for a derivation, the           when the sign-offs meet the trust root's
       validation first), each appended once.             thresholds (solo mode); else a candidate.

    Signing: the releaser's key must be an ed25519 key the pinned trust root lists as ``releaser``
    (checked before anything is written). A candidate waits for ``synthreg approve``. ``models``: what the
    MLflow store held, for the report, or the function that waits for it (release asks on a thread);
    None: not asked, the report says so. ``details``: more for the
    release event's details (release's policy re-check: which outcomes it reused).

    A failure before ``audit`` removes the folder and unstages it; later, the journal stays and the next
    command finishes the release. The audit log is append-only, so an event appended before a failure
    the live process undid stays (its subject names a version that was not made)."""
    from registry.records.signed import SIGNOFF_TYPE, SIGNOFFS
    from registry.releases.report import pending_signatures
    from registry.trust.approvals import ENVELOPE, approval_state, make_signoff, releaser_roles
    from registry.trust.checkpoints import Retirement, record_sha256
    from registry.trust.root import load_trust
    from registry.trust.signing import payload_of

    trust = trust if isinstance(trust, Trust) else load_trust(ws, trust)
    entry = trust.signing_key(signer.public_key.keyid, "releaser")
    ref = f"{name}@{version}"
    with journal.locked(ws):
        if journal.finished_here(ws, (op,), ref):
            return load_release(ws, ref)
        check_new_version(ws, name, version)
        final = release_folder(ws, name, version)
        staging = ws / RELEASES / name / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        tag = f"{name}@v{version}"
        state = {
            "staging": staging.relative_to(ws).as_posix(),
            "final": final.relative_to(ws).as_posix(),
            "tag": tag,
            "tag_existed": vcs.tagged(ws, tag),
            "message": message,
            "head": vcs.git(ws, "rev-parse", "HEAD") if vcs.has_commits(ws) else None,
            "actor": audit.actor_name(ws),
            "audit_from": len(audit.read(ws)),
        }
        with signing_tags(signer), journal.transaction(ws, op, ref, state) as txn, txn.step("stage"):
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
            roles = releaser_roles(trust, entry)
            _write_exports(
                staging,
                record,
                report,
                report_text,
                pending_signatures(trust, entry, roles),
                models() if callable(models) else models,  # asked on a thread meanwhile (release)
            )
            subjects |= {e: sha256_file(staging / e) for e in EXPORTS}
            envelope = sign(statement(subjects, payload), signer)
            # Sign as releaser. The sign-off (who, roles, when, audit checkpoint) is signed too.
            signoffs = [make_signoff(ws, ref, payload_of(envelope), signer, entry, roles, trust.version)]
            approval = approval_state(trust, ref, envelope, signoffs, Retirement(ws, trust))
            atomic_write_text(staging / ENVELOPE, json.dumps(envelope, indent=2) + "\n")
            atomic_write_text(staging / SIGNOFFS, json.dumps(signoffs, indent=2) + "\n")
            _fsync_tree(staging)
            signer_details: dict[str, Any] = {
                "status": approval.status,
                "signer": {"keyid": entry.keyid, "name": entry.name},
                # the releaser's sign-off, so a checkpoint over this event vouches for it (issue 24)
                "record_sha256": record_sha256(signoffs[0], SIGNOFF_TYPE),
            }
            if trust.version is not None:  # issue 20: the root version the release was signed under
                signer_details["root_version"] = trust.version
            signer_details |= details or {}
            # Final only when the thresholds are met; a candidate waits for `synthreg approve`. The commit
            # holds the signer's public key (a convenience copy; trust comes from the pinned root).
            txn.update(
                message=commit_message(message, staging, status_line(approval), audit.actor_name(ws)),
                events=_events(record, report, name, version, signer_details),
                tag_now=approval.met,
                remote=record.remote,
                pubkey=public_key_file(signer, entry.name),
            )
            # The steps after this one read what they need from the journal and the disk, and two run
            # DVC's own process beside this one: the record (18 MB at 10,000 shards) and what was made
            # from it go first, and come back from release.json once the version is made (issue 22).
            del record, report, report_text, payload, subjects, envelope, signoffs
    return _written(final)


def _written(folder: Path) -> Release:
    """The record in ``folder/release.json``, as ``publish`` wrote it."""
    return Release.model_validate_json((folder / "release.json").read_text())


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


def _step_rename(ws: Path, entry: Entry) -> None:
    staging, final = ws / entry.state["staging"], ws / entry.state["final"]
    if staging.is_dir():
        if final.exists():
            raise ReleaseError(f"both {staging} and {final} exist; remove the one that is not the release")
        os.replace(staging, final)
    elif not (final / "release.json").is_file():
        raise ReleaseError(f"neither {staging} nor {final} holds the release; it is lost, remove the entry")


def _step_dvc_add(ws: Path, entry: Entry) -> None:
    _require_data(ws / entry.state["final"])
    allocator.give_back()  # what the stage freed, before DVC's process runs beside this one (issue 22)
    vcs.dvc(ws, "add", "-q", f"{entry.state['final']}/data")


def _require_data(folder: Path) -> None:
    """Refuse to track a version short of a shard or of its manifest."""
    data = folder / "data"
    missing = [s.path for s in _written(folder).shards if not (data / s.path).is_file()]
    if missing or not (data / "manifest.parquet").is_file():
        raise ReleaseError(
            f"{data} lacks {', '.join(missing) or 'manifest.parquet'}; restore it, `dvc checkout`"
        )


def _step_push(ws: Path, entry: Entry) -> None:
    """Push the release's data to the remote it names, before the audit event and the commit: a version
    others can see is one they can pull (``registry.releases.remote``; pushing twice sends nothing new)."""
    from registry.releases import remote

    if entry.state.get("remote") is None:  # --no-push, recorded in the record and the audit event
        return
    record = _written(ws / entry.state["final"])
    name, version, derived = record.name, record.version, record.derived_from is not None
    del record  # not held while DVC's process pushes (issue 22)
    remote.push_release(ws, name, version, entry.state["remote"], derived=derived)


def _step_audit(ws: Path, entry: Entry) -> None:
    events = entry.state["events"]
    if entry.state.get("adopted"):  # a version no journal explains: its own event may be logged already,
        logged = {(e.kind, e.subject) for e in audit.read(ws)}  # with details this run cannot rebuild
        events = [e for e in events if (e["kind"], e["subject"]) not in logged]
    audit.append_missing(ws, events, entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: Entry) -> None:
    rel, log = entry.state["final"], audit.LOG.as_posix()
    files = [rel, log]
    pub = entry.state.get("pubkey")
    if pub:  # the signer's public key travels with the release commit (self-sufficient, issue 9)
        path = ws / pub["path"]
        if not path.is_file():
            atomic_write_text(path, pub["text"])
        files.append(pub["path"])
    vcs.git(ws, "add", *files)
    if _committed(ws, rel, files):
        return
    vcs.git(ws, "commit", "-q", "-m", entry.state["message"], "--", *files)


def _committed(ws: Path, rel: str, files: list[str]) -> bool:
    """``rel`` and the other ``files`` are in HEAD exactly as in the index (nothing left to commit)."""
    if not vcs.has_commits(ws):
        return False
    return vcs.git_ok(ws, "cat-file", "-e", f"HEAD:{rel}/release.json") and vcs.git_ok(
        ws, "diff", "--cached", "--quiet", "HEAD", "--", *files
    )


def _step_tag(ws: Path, entry: Entry) -> None:
    from registry.records.signed import SIGNOFFS
    from registry.trust.approvals import ENVELOPE

    if not entry.state.get("tag_now", True):  # a candidate: `synthreg approve` tags it at its threshold
        return
    tag, rel = entry.state["tag"], entry.state["final"]
    # The last commit of the signed files: for a version approved after its release (doctor adopting one
    # whose approval was killed before its tag), the approval's commit, not the candidate's (issue 24).
    signed = (f"{rel}/{n}" for n in ("release.json", ENVELOPE, SIGNOFFS))
    commit = vcs.git(ws, "rev-list", "-1", "HEAD", "--", *signed)
    if vcs.tagged(ws, tag):
        if vcs.git(ws, "rev-parse", f"{tag}^{{commit}}") != commit:
            raise ReleaseError(f"tag {tag} exists and points elsewhere than {commit[:12]}; delete or move it")
        return
    tag_release(ws, tag, commit, ws / rel)


def _undo_publish(ws: Path, entry: Entry) -> None:
    """Remove what this publication made: its tag and commit only when it made them and nothing came
    after (HEAD is still that commit), then the folder and its staging; unstage it."""
    s = entry.state
    shutil.rmtree(ws / s["staging"], ignore_errors=True)
    final = ws / s["final"]
    if not s["tag_existed"] and vcs.tagged(ws, s["tag"]):
        vcs.git(ws, "tag", "-d", s["tag"])
    if vcs.has_commits(ws) and vcs.git(ws, "rev-parse", "HEAD") != s["head"]:
        added = vcs.git(ws, "rev-list", "-1", "HEAD", "--", f"{s['final']}/release.json")
        if (
            added == vcs.git(ws, "rev-parse", "HEAD")
            and vcs.git(ws, "log", "-1", "--format=%B").strip() == s["message"].strip()
        ):
            if s["head"]:
                vcs.git(ws, "reset", "-q", "--soft", "HEAD~1")
            else:  # it was the first commit
                vcs.git(ws, "update-ref", "-d", "HEAD")
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
        with contextlib.suppress(ReleaseError):
            vcs.git(ws, "reset", "-q", "--", s["final"])


def adopt(ws: Path, name: str, version: str) -> str:
    """Journal a version folder that no journal explains (made by hand, or by synthreg before the
    journal existed) as a publication whose record is complete, so recovery finishes it: only when the
    version verifies (signature, record, every image). The caller holds the release lock."""
    from registry.releases.verify import verify

    ref = f"{name}@{version}"
    checked = verify(ws, ref)
    # The tag is what finishing adds: an approved release short of it is what adoption is for.
    untagged = f"{ref} is approved but has no tag {name}@v{version}; it is not final"
    problems = [p for p in checked.problems if p != untagged]
    if problems or checked.bad_samples:
        first = [*problems, *(f"sample {k}: {v}" for k, v in sorted(checked.bad_samples.items()))][0]
        raise ReleaseError(f"{ref} does not verify ({first}); it is not finished: restore or remove it")
    final = release_folder(ws, name, version)
    record = load_release(ws, ref)
    if (record.name, record.version) != (name, version):  # a signed folder copied under another name
        raise ReleaseError(f"{final} holds the record of {record.name}@{record.version}; remove it")
    report = PolicyReport.model_validate_json((final / "policy-report.json").read_text())
    tag = f"{name}@v{version}"
    state = {
        "staging": f"{RELEASES.as_posix()}/{name}/.{version}.tmp-{os.getpid()}",
        "final": final.relative_to(ws).as_posix(),
        "tag": tag,
        "tag_existed": vcs.tagged(ws, tag),
        "message": f"{'Derive' if record.derived_from else 'Release'} {ref} (finished by synthreg doctor)",
        "head": vcs.git(ws, "rev-parse", "HEAD") if vcs.has_commits(ws) else None,
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
    shards: ShardSource,
    derivation: Derivation | None = None,
    progress: Callable[..., None] | None = None,
) -> Release:
    """Copy the manifest and content-addressed shards into ``out/data``; build the record. ``shards``
    gives each shard the manifest names, and may name a file to link rather than write (``ShardSource``).
    Everything is checked on the copies, under the release lock: the manifest copy must be the one the
    policy report validated (a filter run since the gate would change it), and every image in every
    copied shard must match its recorded sha256, so a corrupt shard is never signed."""
    (out / "data" / "shards").mkdir(parents=True)
    released = out / "data" / "manifest.parquet"
    shutil.copyfile(manifest, released)
    manifest_sha256 = sha256_file(released)
    if manifest_sha256 != report.manifest_sha256:
        raise ReleaseError("the filtered manifest changed after validation; run `synthreg validate` again")
    con = mf.connect(released)
    check_manifest(con, f"manifest {manifest}")  # no unsafe name is signed
    refs = _copy_shards(con, out, shards, list(recipe.identities), progress)
    # What Hugging Face `datasets` can load (issue 12), each row naming its released shard (issue 23).
    mf.write_flat(released, out / "data" / mf.FLAT, mf.released_shards(refs))
    flat_sha256 = sha256_file(out / "data" / mf.FLAT)
    counts = _counts(con)
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
        flat_manifest_sha256=flat_sha256,
        shards=refs,
        counts=counts,
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
        git_commit=vcs.git(ws, "rev-parse", "HEAD") if vcs.has_commits(ws) else "none",
        created_at=datetime.now(UTC),
        actor=actor or audit.actor_name(ws),
        recipe=recipe,
        derived_from=derivation,
    )


class ShardSource(Protocol):
    """Where ``assemble`` reads a manifest's shards: the workspace's (release), a parent's (derive)."""

    def __call__(self, shard: str, members: set[str]) -> bytes:
        """The bytes of the tar the manifest calls ``shard``, holding the ``members`` it names."""

    def linkable(self, shard: str, data: bytes) -> Stamp | None:
        """A file holding exactly ``data``, the shard as assembled (``fsio.read_stamped``), to link rather
        than write again (a derived shard that lost nothing, issue 22); or None."""


def _copy_shards(
    con: Any,
    out: Path,
    shards: ShardSource,
    identities: list[str],
    progress: Callable[..., None] | None,
) -> list[ShardRef]:
    """Each shard the manifest names, checked member by member against the recorded digests, with its
    WebDataset sidecars added, written under its own sha256 into ``out/data/shards``."""
    n_shards = con.execute("SELECT count(DISTINCT shard) FROM manifest").fetchall()[0][0]
    refs = []
    # A few shards' rows at a time, as Arrow tables (mf.tables_by_shard): the whole manifest as Python
    # objects was most of release's and derive's memory (~3 KB a row, issue 13).
    for i, (shard, table) in enumerate(
        mf.tables_by_shard(con, ["member", "image_sha256", *SIDECAR_FIELDS])  # sample_id among them
    ):
        if progress:  # (shards copied and checked, shards)
            progress(i, n_shards)
        assert shard is not None  # check_manifest refused a row without one
        rows = [table.column(c).to_pylist() for c in IMAGE_COLUMNS]  # member, sample id, sha256, ...
        expected = dict(zip(rows[0], zip(rows[1], rows[2], strict=True), strict=True))
        sidecars = sidecars_of(table, identities)  # built column-wise (issue 22)
        del table
        data = shards(shard, set(expected))
        found = checked_members(data, shard, expected, rows)
        members = len(expected)
        data = add_sidecars(data, sidecars, found)  # WebDataset .json/.cls
        digest = sha256_bytes(data)
        dest = out / "data" / "shards" / f"{digest}.tar"  # in staging: renamed whole
        stamp = shards.linkable(shard, data)
        if stamp is None or not link_unchanged(stamp, dest):  # a second name for the same bytes
            dest.write_bytes(data)
        refs.append(
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
    return refs


def _counts(con: Any) -> Counts:
    """Images per identity and decision, and per rejection reason."""
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
    return Counts(
        total=total,
        accepted=accepted,
        rejected=total - accepted,
        per_identity=per_identity,
        reasons=dict(sorted(reasons.items())),
    )


def _write_exports(
    out: Path,
    record: Release,
    report: PolicyReport,
    report_text: str,
    signatures: SignaturesSeen | None = None,
    models: ModelsSeen | None = None,
) -> None:
    atomic_write_text(out / "policy-report.json", report_text)
    from registry.exports import croissant_jsonld, prov_json, render_card, render_markdown
    from registry.releases.report import release_html

    atomic_write_text(out / "policy-report.md", render_markdown(report))  # the same report, for people
    atomic_write_text(out / "card.md", render_card(record, report))
    atomic_write_text(out / "README.md", render_card(record, report))  # the same card, where `datasets` looks
    atomic_write_text(out / "croissant.json", json.dumps(croissant_jsonld(record, report), indent=2) + "\n")
    atomic_write_text(out / "prov.json", prov_json(record) + "\n")
    atomic_write_text(out / "report.html", release_html(out, record, report, signatures, models))
