"""`synthreg withdraw`: a signed withdrawal beside the signed record (left as is), an audit event and a
git commit, as a journalled transaction (``WITHDRAW``: record, audit, commit, tag).

    withdraw(ws, "digits@1.0.0", "source withdrawn by its owner", key=...)

Reading a withdrawal and deciding whether it can be trusted is ``registry.trust.withdrawals``."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from registry.core import vcs
from registry.core.digests import sha256_bytes
from registry.core.errors import ReleaseError
from registry.core.names import check_line
from registry.records.dataset import DATASET_NAME
from registry.records.journal import Entry
from registry.records.lineage import WithdrawalState
from registry.records.signed import WITHDRAWAL, WITHDRAWAL_TYPE, Withdrawal
from registry.releases.tagging import signing_tags, tag_other
from registry.store import audit, journal
from registry.store.releases import PLAIN_SEMVER as SEMVER
from registry.store.releases import load_release, parse_ref, release_folder
from registry.trust.withdrawals import is_withdrawn, tag_message, withdrawn_tag


def withdraw(
    ws: Path,
    ref: str,
    reason: str,
    actor: str | None = None,
    key: Path | str | None = None,
    trust: Path | str | None = None,
) -> WithdrawalState:
    """Withdraw a released version: write the signed ``withdrawal.dsse.json`` beside the (untouched)
    signed record, append a ``withdrawal`` audit event and commit both, as a journalled transaction
    (``WITHDRAW``: record, audit, commit; a kill before the audit event is appended undoes the record,
    after it the next command commits). A version is withdrawn once; re-running a killed withdrawal that
    recovery has just finished reports it. The key must be a releaser's or an approver's in the trust
    root; ``actor`` is who asked (default git user.name), the signer is the key's holder there."""
    from registry.trust.root import load_trust
    from registry.trust.signing import load_signer, sign

    name, version = parse_ref(ref)
    if version is None or not SEMVER.fullmatch(version) or not DATASET_NAME.fullmatch(name):
        raise ReleaseError(f"{ref!r} is not NAME@X.Y.Z; name the version to withdraw, e.g. {name}@1.0.0")
    if not reason.strip():
        raise ReleaseError("give a reason for the withdrawal (--reason)")
    check_line(reason, "--reason")
    check_line(actor, "--actor")
    subject = f"{name}@{version}"
    record = load_release(ws, subject)
    if not (ws / ".git").exists():
        raise ReleaseError(f"workspace {ws} is not a git repository; a withdrawal is committed to git")
    path = release_folder(ws, name, version) / WITHDRAWAL
    signer = load_signer(key, ws)
    trusted = load_trust(ws, trust)
    keyid = signer.public_key.keyid
    entry = trusted.root.key(keyid)
    role: Literal["releaser", "approver"] = "releaser" if entry and "releaser" in entry.roles else "approver"
    entry = trusted.signing_key(keyid, role)
    with journal.locked(ws):
        earlier = is_withdrawn(ws, name, version)
        if earlier and journal.finished_here(ws, ("withdraw",), subject):
            return earlier
        if earlier:
            raise ReleaseError(
                f"{subject} was already withdrawn on {earlier.day} by {earlier.actor}: {earlier.reason}"
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
        envelope = sign(payload, signer, WITHDRAWAL_TYPE)
        state = {
            "record": rel,
            "text": json.dumps(envelope, indent=2) + "\n",
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
                        "record_sha256": sha256_bytes(payload),
                    },
                }
            ],
            "actor": actor,
            "audit_from": len(audit.read(ws)),
            "message": f"Withdraw {subject}: {w.reason}",
            "head": vcs.git(ws, "rev-parse", "HEAD") if vcs.has_commits(ws) else None,
            "withdrawn_tag": withdrawn_tag(name, version),
            "tag_message": tag_message(w, rel, sha256_bytes(payload)),
        }
        with signing_tags(signer), journal.transaction(ws, "withdraw", subject, state):
            pass  # every step is a forward step: the transaction runs them
    return WithdrawalState(**dict(w), trusted=True, why_untrusted=None)


def _step_record(ws: Path, entry: Entry) -> None:
    from registry.core.fsio import atomic_write_text

    path = ws / entry.state["record"]
    if not path.is_file() or path.read_text() != entry.state["text"]:
        atomic_write_text(path, entry.state["text"])


def _step_audit(ws: Path, entry: Entry) -> None:
    audit.append_missing(ws, entry.state["events"], entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: Entry) -> None:

    rel, log = entry.state["record"], audit.LOG.as_posix()
    vcs.git(ws, "add", rel, log)
    clean = vcs.git_ok(ws, "diff", "--cached", "--quiet", "HEAD", "--", rel)
    if vcs.git_ok(ws, "cat-file", "-e", f"HEAD:{rel}") and clean:
        return
    vcs.git(ws, "commit", "-q", "-m", entry.state["message"], "--", rel, log)


def _step_tag(ws: Path, entry: Entry) -> None:
    """A tag on the withdrawal's commit: the withdrawal stays visible when its record and the log's
    unsigned tail are deleted together (issue 24, family 8). An entry from before it has no tag."""
    tag = entry.state.get("withdrawn_tag")
    if tag is None or vcs.tagged(ws, tag):
        return
    commit = vcs.git(ws, "rev-list", "-1", "HEAD", "--", entry.state["record"])
    tag_other(ws, tag, commit, entry.state["tag_message"])


def _undo_withdraw(ws: Path, entry: Entry) -> None:
    """Before its audit event there is no withdrawal: remove the record (never one already committed)."""

    rel = entry.state["record"]
    path = ws / rel
    if path.is_file() and not vcs.git_ok(ws, "cat-file", "-e", f"HEAD:{rel}"):
        path.unlink()
        with contextlib.suppress(ReleaseError):
            vcs.git(ws, "reset", "-q", "--", rel)


# Rolled forward once its audit event is in the log (the withdrawal is then on record), back before.
WITHDRAW = journal.Operation(
    steps=("record", "audit", "commit", "tag"),
    forward={"record": _step_record, "audit": _step_audit, "commit": _step_commit, "tag": _step_tag},
    undo=_undo_withdraw,
    roll_forward=journal.logged,
    public=journal.logged,
)
