"""`synthreg approve`: add a signature by another key to a candidate release; tag it when the trust
root's thresholds are met. A journalled transaction (``APPROVE``: write, audit, commit, tag).

    approve(ws, "digits@1.0.0", key)

The approval state itself (who signed, in which role, whether that is enough) is
``registry.trust.approvals``, which is pure."""

from __future__ import annotations

import json
from pathlib import Path

from registry.core import vcs
from registry.core.errors import ReleaseError
from registry.records.journal import Entry
from registry.records.signed import SIGNOFF_TYPE, SIGNOFFS
from registry.records.trust import ROLES, Role
from registry.releases.tagging import commit_message, signing_tags, status_line, tag_release
from registry.store import audit, journal
from registry.trust.approvals import (
    ENVELOPE,
    ApprovalState,
    approval_state,
    make_signoff,
    read_signed,
    require_untrusted_free,
    tag_name,
)
from registry.trust.checkpoints import Retirement, record_sha256


def approve(
    ws: Path,
    ref: str,
    key: Path | str | None = None,
    trust_file: Path | str | None = None,
    role: Role = "approver",
) -> ApprovalState:
    """Add a signature by ``key`` in ``role`` to a candidate release; tag it when the thresholds are met.

    Refused, with nothing written, for an unknown or already final version, a key the trust root does
    not allow in ``role``, a key that signed already, and (unless solo) a releaser approving their own.
    """
    from registry.store.releases import parse_ref, release_folder
    from registry.trust.root import load_trust
    from registry.trust.signing import PAYLOAD_TYPE, add_signature, load_signer, payload_of

    name, version = parse_ref(ref)
    if version is None:
        raise ReleaseError(f"give the version to approve: {name}@X.Y.Z")
    if role not in ROLES:
        raise ReleaseError(f"role {role!r} is not one of {', '.join(ROLES)}")
    ref = f"{name}@{version}"
    folder = release_folder(ws, name, version)
    if not (folder / ENVELOPE).is_file():
        raise ReleaseError(f"{ref} is not a candidate release (no {folder / ENVELOPE}); see `synthreg list`")
    trust = load_trust(ws, trust_file)
    signer = load_signer(key, ws)
    entry = trust.signing_key(signer.public_key.keyid, role)
    with journal.locked(ws):
        envelope, signoffs = read_signed(folder)
        retirement = Retirement(ws, trust)
        before = approval_state(trust, ref, envelope, signoffs, retirement)
        if journal.finished_here(ws, ("approve",), ref) and any(
            s.keyid == entry.keyid for s in before.signers
        ):
            return before  # a killed run of this very approval, just finished by recovery: report it
        if before.met:
            if not vcs.tagged(ws, tag_name(name, version)):  # approved, but a crash came before the tag
                rel = f"{folder.relative_to(ws).as_posix()}/{SIGNOFFS}"
                commit = vcs.git(ws, "rev-list", "-1", "HEAD", "--", rel)
                with signing_tags(signer):
                    tag_release(ws, tag_name(name, version), commit, folder)
                return before
            raise ReleaseError(f"{ref} is final already ({before.summary()}); nothing to approve")
        require_untrusted_free(before)
        if before.problems:
            raise ReleaseError(f"{ref} cannot be approved: {before.problems[0]}")
        mine = [s for s in before.signers if s.keyid == entry.keyid]
        if any(role in s.roles for s in mine):
            raise ReleaseError(f"key {entry.keyid[:16]} ({entry.name}) has signed {ref} as {role} already")
        if mine and not trust.solo:
            raise ReleaseError(
                f"key {entry.keyid[:16]} ({entry.name}) signed {ref} as {'+'.join(mine[0].roles)}; an "
                f"approval must come from another key (solo is off in {trust.path})"
            )
        payload = payload_of(envelope, PAYLOAD_TYPE)
        new_env = add_signature(envelope, signer)
        signoff = make_signoff(ws, ref, payload, signer, entry, [role], trust.version)
        new_signoffs = [*signoffs, signoff]
        after = approval_state(trust, ref, new_env, new_signoffs, retirement)
        rel = folder.relative_to(ws).as_posix()
        tag = tag_name(name, version)
        state = {
            "folder": rel,
            "files": {
                f"{rel}/{ENVELOPE}": json.dumps(new_env, indent=2) + "\n",
                f"{rel}/{SIGNOFFS}": json.dumps(new_signoffs, indent=2) + "\n",
            },
            "old": {
                f"{rel}/{n}": (folder / n).read_text() if (folder / n).is_file() else None
                for n in (ENVELOPE, SIGNOFFS)
            },
            "events": [
                {
                    "kind": "approval",
                    "subject": ref,
                    "details": {
                        "keyid": entry.keyid,
                        "name": entry.name,
                        "role": role,
                        "status": after.status,
                        **({"root_version": after.root_version} if after.root_version else {}),
                        # the sign-off itself, so a checkpoint over this event vouches for it (issue 24)
                        "record_sha256": record_sha256(signoff, SIGNOFF_TYPE),
                    },
                }
            ],
            "actor": audit.actor_name(ws),
            "audit_from": len(audit.read(ws)),
            "message": None,  # with its body, once the new sign-offs are written (step "write")
            "subject": f"Approve {ref} ({role} {entry.name})",
            "status": status_line(after),
            "tag": tag,
            "tag_now": after.met,
            "tag_existed": bool(vcs.git(ws, "tag", "--list", tag)),
        }
        with signing_tags(signer), journal.transaction(ws, "approve", ref, state):
            pass  # every step is a forward step: the transaction runs them
    return after


def _step_write(ws: Path, entry: Entry) -> None:
    from registry.core.fsio import atomic_write_text

    for rel, text in entry.state["files"].items():
        path = ws / rel
        if not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)


def _step_audit(ws: Path, entry: Entry) -> None:
    audit.append_missing(ws, entry.state["events"], entry.state["audit_from"], entry.state["actor"])


def _step_commit(ws: Path, entry: Entry) -> None:

    files = [*entry.state["files"], audit.LOG.as_posix()]
    vcs.git(ws, "add", *files)
    if vcs.git_ok(
        ws, "diff", "--cached", "--quiet", "HEAD", "--", *files
    ):  # committed already (a recovery after the commit)
        return
    folder, state = ws / entry.state["folder"], entry.state  # an entry from before issue 23: "message"
    message = state.get("message") or commit_message(
        state["subject"], folder, state["status"], state["actor"]
    )
    vcs.git(ws, "commit", "-q", "-m", message, "--", *files)


def _step_tag(ws: Path, entry: Entry) -> None:

    tag = entry.state["tag"]
    if not entry.state["tag_now"] or vcs.git(ws, "tag", "--list", tag):
        return
    rel = f"{entry.state['folder']}/{SIGNOFFS}"
    tag_release(ws, tag, vcs.git(ws, "rev-list", "-1", "HEAD", "--", rel), ws / entry.state["folder"])


def _undo_approve(ws: Path, entry: Entry) -> None:
    """Before its audit event there is no approval: put the envelope and sign-offs back as they were."""
    from registry.core.fsio import atomic_write_text

    for rel, text in entry.state["old"].items():
        path = ws / rel
        if text is None:
            path.unlink(missing_ok=True)
        elif not path.is_file() or path.read_text() != text:
            atomic_write_text(path, text)


# Rolled forward once its audit event is in the log (the approval is then on record), back before.
APPROVE = journal.Operation(
    steps=("write", "audit", "commit", "tag"),
    forward={"write": _step_write, "audit": _step_audit, "commit": _step_commit, "tag": _step_tag},
    undo=_undo_approve,
    roll_forward=journal.logged,
    public=journal.logged,
)
