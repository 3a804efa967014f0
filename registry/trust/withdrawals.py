"""Whether a release was withdrawn, and whether that withdrawal can be trusted.

A withdrawal that cannot be trusted still counts as one (refusing a release wrongly is the safe side) and
says why: a signature the trust root does not accept, an unsigned ``withdrawal.json``, a record copied
from another version, or a record deleted while the audit log still holds its event. Writing one is
``registry.releases.withdraw``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from registry.core.errors import ReleaseError
from registry.records.lineage import WithdrawalState
from registry.records.signed import WITHDRAWAL, WITHDRAWAL_TYPE, Withdrawal
from registry.store import audit, journal
from registry.store.releases import release_folder


def is_withdrawn(ws: Path, name: str, version: str) -> WithdrawalState | None:
    """The withdrawal of ``name@version`` (with ``trusted`` and ``why_untrusted``), or None.

    A withdrawal that cannot be trusted still counts as one (refusing a release wrongly is the safe
    side) and says why: a signature the trust root does not accept, an unsigned ``withdrawal.json``, a
    record copied from another version, or a record deleted while the audit log still holds its event.
    """
    from registry.core.errors import SigningError
    from registry.trust.signing import payload_of

    subject = f"{name}@{version}"
    if journal.is_unfinished(ws, "withdraw", subject):  # not one until recovery finishes it
        return None
    folder = release_folder(ws, name, version)
    path = folder / WITHDRAWAL
    if path.is_file():
        try:
            envelope = json.loads(path.read_text())
            w = Withdrawal.model_validate_json(payload_of(envelope, WITHDRAWAL_TYPE))
        except (ValueError, SigningError) as e:
            raise ReleaseError(f"{path} is not a valid withdrawal record ({e}); restore it from git") from e
        why = _untrusted_withdrawal(ws, envelope, w, subject)
        return WithdrawalState(**dict(w), trusted=why is None, why_untrusted=why)
    if (folder / "withdrawal.json").is_file():
        try:
            old = json.loads((folder / "withdrawal.json").read_text())
            known = {k: v for k, v in old.items() if k in WithdrawalState.model_fields}
            return WithdrawalState.model_validate(
                known
                | {"trusted": False, "why_untrusted": "an unsigned withdrawal.json; withdraw again to sign"}
            )
        except (ValueError, AttributeError) as e:
            raise ReleaseError(
                f"{folder / 'withdrawal.json'} is not a valid withdrawal record ({e}); restore it from git"
            ) from None
    event = next(
        (e for e in reversed(audit.read(ws)) if e.kind == "withdrawal" and e.subject == subject), None
    )
    if event is None:
        return _from_tag(ws, name, version)
    return WithdrawalState(
        release=subject,
        reason=str(event.details.get("reason", "")),
        time=event.time,
        actor=event.actor,
        trusted=False,
        why_untrusted=f"the withdrawal record {path.relative_to(ws)} was deleted, but the audit log "
        f"records the withdrawal (seq {event.seq}); restore it from git",
    )


def withdrawn_tag(name: str, version: str) -> str:
    """The git tag a withdrawal leaves beside its record and audit event (issue 24, family 8)."""
    return f"withdrawn/{name}@v{version}"


def tag_message(w: Withdrawal, record: str, record_sha256: str) -> str:
    """The withdrawn tag's message: what :func:`_from_tag` reads back when the record is gone."""
    from registry.trust.gitsign import one_line

    return (
        f"Withdraw {w.release}\n\n"
        f"Reason:   {one_line(w.reason)}\n"
        f"Time:     {w.time.isoformat()}\n"
        f"Actor:    {one_line(w.actor)}\n"
        f"Signer:   {one_line(w.signer)} as {w.role} (key {w.keyid[:16]})\n"
        f"Record:   {record} sha256 {record_sha256}\n"
    )


def _from_tag(ws: Path, name: str, version: str) -> WithdrawalState | None:
    """A withdrawal whose record and audit event are both gone, found by its tag (issue 24, family 8:
    deleting the record with the log lines after the last signed checkpoint un-withdrew the release).
    Untrusted, so it still counts, and says how to restore it."""
    from registry.core import vcs

    if not (ws / ".git").exists():  # a copy outside git (pulled, unpacked): no tags to read
        return None
    tag = withdrawn_tag(name, version)
    proc = vcs.run_git(ws, "for-each-ref", "--format=%(contents)", f"refs/tags/{tag}")
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    fields = dict(
        (k.strip().lower(), v.strip())
        for k, _, v in (line.partition(":") for line in proc.stdout.splitlines())
    )
    try:
        time = datetime.fromisoformat(fields.get("time", ""))
    except ValueError:
        time = datetime.fromtimestamp(0, UTC)
    return WithdrawalState(
        release=f"{name}@{version}",
        reason=fields.get("reason") or "(not readable from the tag)",
        time=time if time.tzinfo else time.replace(tzinfo=UTC),
        actor=fields.get("actor") or "unknown",
        trusted=False,
        why_untrusted=f"its record and audit event were deleted, but the tag {tag} records the withdrawal; "
        "restore them from git (`git log --all -- releases/`)",
    )


def _untrusted_withdrawal(ws: Path, envelope: dict, w: Withdrawal, subject: str) -> str | None:
    from registry.core.errors import TrustError
    from registry.trust.root import load_trust
    from registry.trust.signing import signature_verifies

    if w.release != subject:
        return f"the signed withdrawal is for {w.release}, not {subject} (copied from another version)"
    try:
        trust = load_trust(ws, strict=False)  # a reader: unreachable thresholds are not its concern
    except TrustError as e:
        return f"cannot be checked: {e}"
    key, why = trust.check_signer(w.keyid, w.role, w.time)
    if why or key is None:
        return why or "unknown key"
    if not signature_verifies(envelope, w.keyid, key.sslib_key()):
        return f"its signature by key {w.keyid[:16]} ({key.name}) does not verify (forged or edited)"
    return None
