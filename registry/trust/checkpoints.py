"""Signed checkpoints of the audit log, and the log checked against them (``synthreg log --verify``).

    report = verify_log(ws, trust)      # -> LogVerification: problems, and what no signature covers yet

A checkpoint is a set of heads of the log (``registry.records.audit.Checkpoint``) inside a record whose
signature verifies against a key of the pinned trust root: a release sign-off, a withdrawal, a waiver,
or a checkpoint of its own (``audit/checkpoints/<sha256>.dsse.json``, ``synthreg log --checkpoint``).
It *covers* its heads and every event before them. A covered event cannot be removed or edited without
``verify_log`` naming it and the record that covers it. An event no checkpoint covers yet (the tail
after the last signed record: a ``train``, a ``generate``) can be removed, or forged, without a trace in
the log: ``verify_log`` counts such events and names the oldest, in every output, as a risk rather than
calling them verified (issue 20 "a tail that is signed or named"; issue 24 family 8).
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from pathlib import Path

from pydantic import ValidationError

from registry.core.errors import SigningError
from registry.records.audit import Checkpoint
from registry.records.lineage import LogVerification
from registry.records.signed import CHECKPOINT_TYPE, LogCheckpoint
from registry.store import audit
from registry.store.audit import AuditLog, describe
from registry.trust.root import Trust

CHECKPOINTS = audit.LOG / "checkpoints"  # <sha256 of the envelope's bytes>.dsse.json: merge-safe

__all__ = ["CHECKPOINTS", "check_checkpoints", "signed_checkpoints", "verify_log"]


def signed_checkpoints(ws: Path, trust: Trust) -> list[tuple[Checkpoint, str]]:
    """Every audit checkpoint inside a record whose signature verifies against a key of the trust root
    (release sign-offs, withdrawals, waivers, checkpoints of the log itself), with what signed it.
    Unverifiable records are skipped here: verify, validate and the loader report them."""
    from registry.records.signed import (
        SIGNOFF_TYPE,
        WAIVER_TYPE,
        WITHDRAWAL,
        WITHDRAWAL_TYPE,
        SignedWaiver,
        SignOff,
        Withdrawal,
    )
    from registry.trust.approvals import SIGNOFFS
    from registry.trust.signing import payload_of, signature_verifies
    from registry.trust.waivers import WAIVERS

    found: list[tuple[Checkpoint, str]] = []

    def take(env: dict, ptype: str, model, what: str) -> None:
        try:
            rec = model.model_validate_json(payload_of(env, ptype))
        except (SigningError, ValidationError, ValueError):
            return
        key = trust.root.key(rec.keyid)
        if key is None or rec.checkpoint is None or not signature_verifies(env, rec.keyid, key.sslib_key()):
            return
        found.append((rec.checkpoint, f"{what} signed by {key.name} (key {rec.keyid[:16]})"))

    for path in sorted((ws / "releases").glob(f"*/*/{SIGNOFFS}")):
        ref = f"{path.parent.parent.name}@{path.parent.name}"
        with contextlib.suppress(OSError, ValueError):
            for env in json.loads(path.read_text()):
                take(env, SIGNOFF_TYPE, SignOff, f"the sign-off of {ref}")
    for path in sorted((ws / "releases").glob(f"*/*/{WITHDRAWAL}")):
        with contextlib.suppress(OSError, ValueError):
            ref = f"{path.parent.parent.name}@{path.parent.name}"
            take(json.loads(path.read_text()), WITHDRAWAL_TYPE, Withdrawal, f"the withdrawal of {ref}")
    for path in sorted((ws / WAIVERS).glob("*.dsse.json")):
        with contextlib.suppress(OSError, ValueError):
            take(json.loads(path.read_text()), WAIVER_TYPE, SignedWaiver, f"the waiver {path.name}")
    for path in sorted((ws / CHECKPOINTS).glob("*.dsse.json")):
        with contextlib.suppress(OSError, ValueError):
            take(
                json.loads(path.read_text()),
                CHECKPOINT_TYPE,
                LogCheckpoint,
                f"the checkpoint {path.name[:16]}",
            )
    return found


def _anchor_problems(log: AuditLog, checkpoints: list[tuple[Checkpoint, str]]) -> list[str]:
    """Each checkpoint's heads must lie in the log (as the same old chain seq, for a chain checkpoint),
    two chain checkpoints must not name two events at one seq, and nothing a checkpoint covers may be
    missing."""
    problems = []
    last = max((e.seq for e in log.events.values() if e.seq is not None), default=-1)
    by_seq: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for cp, what in sorted(checkpoints, key=lambda c: (c[0].seq or 0, c[1])):
        if cp.seq is not None and cp.hash is not None:
            by_seq[cp.seq][cp.hash].append(what)
            event = log.events.get(cp.hash)
            if event is None and cp.hash in log.edited:
                problems.append(f"event {cp.hash[:12]} was edited, but {what} checkpoints it (seq {cp.seq})")
            elif event is None and cp.seq > last:
                problems.append(
                    f"the log was truncated: its chain ends at seq {last}, "
                    f"but {what} checkpoints seq {cp.seq}"
                )
            elif event is None:
                problems.append(
                    f"the log was rewritten or forked at or before seq {cp.seq}: {what} checkpoints event "
                    f"{cp.hash[:12]} (seq {cp.seq}), which the log does not hold"
                )
            elif event.seq != cp.seq:
                problems.append(
                    f"{what} checkpoints event {cp.hash[:12]} as seq {cp.seq}, but it is {describe(event)}"
                )
            continue
        for h in cp.head_hashes:
            if h in log.edited:
                problems.append(f"{what} checkpoints head {h[:12]}, which was edited")
            elif h not in log.events:
                problems.append(
                    f"{what} checkpoints head {h[:12]}, which the log does not hold (removed, rewritten, or "
                    "the signer's branch not merged: `git merge` it)"
                )
    for seq, hashes in sorted(by_seq.items()):
        if len(hashes) > 1:
            named = "; ".join(
                f"{', '.join(whats)} checkpoints {h[:12]}" for h, whats in sorted(hashes.items())
            )
            problems.append(f"forked checkpoint at seq {seq} of the old chain: {named}")
    return problems


def _missing_under(log: AuditLog, checkpoints: list[tuple[Checkpoint, str]]) -> list[str]:
    """An event a checkpoint covers that is gone (its child names it): named with the checkpoint."""
    missing = {p for e in log.events.values() for p in e.parent_hashes if p not in log.events}
    if not missing:
        return []
    problems = []
    for cp, what in checkpoints:
        gone = sorted({p for h in log.closure(cp.head_hashes) for p in log.events[h].parent_hashes} & missing)
        problems += [
            f"event {p[:12]} was edited, but {what} covers it"
            if p in log.edited
            else f"event {p[:12]} is missing, but {what} covers it (removed?)"
            for p in gone
        ]
    return problems


def verify_log(ws: Path, trust: Trust) -> LogVerification:
    """The log checked as a DAG (hashes, names, parents) and against every signed checkpoint, with the
    events no checkpoint covers: how many, since when."""
    log = audit.load(ws)
    checkpoints = signed_checkpoints(ws, trust)
    problems = [*log.problems, *log.structure(), *_anchor_problems(log, checkpoints)]
    problems += _missing_under(log, checkpoints)
    covered = log.closure(h for cp, _ in checkpoints for h in cp.head_hashes)
    uncovered = sorted((e for h, e in log.events.items() if h not in covered), key=lambda e: (e.time, e.hash))
    return LogVerification(
        path=audit.LOG.as_posix(),
        intact=not problems,
        problems=problems,
        events=len(log.events),
        heads=log.heads(),
        not_migrated=log.legacy,
        checkpoints=len(checkpoints),
        covered=len(covered),
        uncovered=len(uncovered),
        uncovered_since=uncovered[0].time if uncovered else None,
        uncovered_events=[describe(e) for e in uncovered],
    )


def check_checkpoints(ws: Path, trust: Trust) -> tuple[int, list[str]]:
    """(checkpoints checked, problems): each signed checkpoint must lie in the log, so a whole-log
    rewrite with valid hashes, a deletion under a checkpoint or a fork is named."""
    log = audit.load(ws)
    checkpoints = signed_checkpoints(ws, trust)
    return len(checkpoints), _anchor_problems(log, checkpoints) + _missing_under(log, checkpoints)
