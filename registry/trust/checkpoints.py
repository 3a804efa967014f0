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
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from registry.core.digests import sha256_bytes
from registry.core.errors import SigningError
from registry.records.audit import AuditEvent, Checkpoint
from registry.records.dataset import DATASET_NAME
from registry.records.lineage import LogVerification
from registry.records.signed import (
    CHECKPOINT_TYPE,
    SIGNOFF_TYPE,
    SIGNOFFS,
    WAIVER_TYPE,
    WAIVERS,
    WITHDRAWAL,
    WITHDRAWAL_TYPE,
    LogCheckpoint,
    SignedWaiver,
    SignOff,
    Withdrawal,
)
from registry.records.trust import TrustedKey
from registry.store import audit
from registry.store.audit import AuditLog, describe
from registry.store.releases import PLAIN_SEMVER
from registry.trust.root import Trust
from registry.trust.signing import payload_of, signature_verifies

SignedModel = SignOff | Withdrawal | SignedWaiver | LogCheckpoint

CHECKPOINTS = audit.LOG / "checkpoints"  # <sha256 of the envelope's bytes>.dsse.json: merge-safe

__all__ = [
    "CHECKPOINTS",
    "Retirement",
    "SignedRecord",
    "check_checkpoints",
    "record_sha256",
    "signed_checkpoints",
    "signed_records",
    "verify_log",
]


@dataclass(frozen=True)
class SignedRecord:
    """A record beside the releases whose signature verifies against a key of the trust root: what it
    is (for messages), who signed it and when they say, the sha256 of its payload (what its audit event
    names as ``record_sha256``) and the log heads it checkpoints (None in records made without one)."""

    what: str
    keyid: str
    time: datetime
    sha256: str
    checkpoint: Checkpoint | None


def signed_records(ws: Path, trust: Trust) -> list[SignedRecord]:
    """Every signed record in the workspace whose signature verifies against a key of the trust root:
    release sign-offs, withdrawals, waivers and checkpoints of the log itself. Unverifiable records are
    skipped here: verify, validate and the loader report them."""
    found: list[SignedRecord] = []

    def take(env: dict, ptype: str, model: type[SignedModel], what: str) -> None:
        try:
            payload = payload_of(env, ptype)
            rec = model.model_validate_json(payload)
        except (SigningError, ValidationError, ValueError):
            return
        key = trust.root.key(rec.keyid)
        if key is None or not signature_verifies(env, rec.keyid, key.sslib_key()):
            return
        time = rec.signed_at if isinstance(rec, SignedWaiver) else rec.time
        what = f"{what} signed by {key.name} (key {rec.keyid[:16]})"
        found.append(SignedRecord(what, rec.keyid, time, sha256_bytes(payload), rec.checkpoint))

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


def signed_checkpoints(ws: Path, trust: Trust) -> list[tuple[Checkpoint, str]]:
    """Every audit checkpoint inside a signed record (:func:`signed_records`), with what signed it."""
    return [(r.checkpoint, r.what) for r in signed_records(ws, trust) if r.checkpoint is not None]


def record_sha256(envelope: dict, payload_type: str) -> str:
    """sha256 of a signed record's payload: what its audit event names (``record_sha256``), so a
    checkpoint that covers the event vouches for this very record."""
    return sha256_bytes(payload_of(envelope, payload_type))


class Retirement:
    """Whether a record signed by a retired key may count (issue 24, family 8).

    A key past its ``valid_until`` can still sign, and claim any earlier time: its holder can backdate
    an approval or a waiver. So such a record counts only when an audit checkpoint vouches that it
    existed before the retirement: the record's audit event (which names its ``record_sha256``) lies
    under a checkpoint signed before ``valid_until`` by *another* key that is neither revoked nor retired
    now (a retired key could backdate its checkpoint too). Otherwise it is reported, not counted.

        retirement = Retirement(ws, trust)
        why = retirement.why_not(key, record_sha256(env, SIGNOFF_TYPE))   # None: it counts

    The checkpoints are read once, and only when a retired key's record is asked about."""

    def __init__(self, ws: Path | None, trust: Trust, now: datetime | None = None) -> None:
        self.ws, self.trust, self.now = ws, trust, now or datetime.now(UTC)
        self._vouched: dict[str, list[tuple[datetime, str]]] | None = None

    def why_not(self, key: TrustedKey, sha256: str) -> str | None:
        """Why ``key``'s record with payload digest ``sha256`` does not count, or None when it does
        (the key is not retired, or a checkpoint made before its retirement covers the record)."""
        if key.valid_until is None or self.now <= key.valid_until:
            return None
        retired = f"key {key.keyid[:16]} ({key.name}) was retired on {key.valid_until:%Y-%m-%d %H:%M} UTC"
        if self.ws is None:
            return f"{retired}; without the workspace's audit log nothing shows this was signed before then"
        if any(k != key.keyid and t <= key.valid_until for t, k in self.vouched().get(sha256, [])):
            return None
        return (
            f"{retired}, and no audit checkpoint signed before then by another trusted key covers this "
            "record, so the time it claims cannot be trusted (a retired key can backdate). Before a key is "
            "retired, have another key sign the log: `synthreg log --checkpoint`"
        )

    def vouched(self) -> dict[str, list[tuple[datetime, str]]]:
        """record sha256 -> (time, keyid) of each checkpoint by a live key that covers its event."""
        if self._vouched is None:
            assert self.ws is not None
            log = audit.load(self.ws)
            named: dict[str, list[str]] = defaultdict(list)  # event hash -> record digests it names
            for h, e in log.events.items():
                if isinstance(sha := e.details.get("record_sha256"), str):
                    named[h].append(sha)
            self._vouched = defaultdict(list)
            for r in signed_records(self.ws, self.trust):
                key = self.trust.root.key(r.keyid)
                if r.checkpoint is None or key is None or key.revoked or key.valid_at(r.time):
                    continue
                if key.valid_until is not None and self.now > key.valid_until:
                    continue  # a retired key's checkpoint could be backdated as well
                for h in log.closure(r.checkpoint.head_hashes):
                    for sha in named.get(h, []):
                        self._vouched[sha].append((r.time, r.keyid))
        return self._vouched


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


# Events that say a signed record was made: each names it (``record_sha256``, since issue 24).
CLAIMS = ("release", "derive", "approval", "withdrawal", "waiver")
_REF = re.compile(rf"({DATASET_NAME.pattern})@({PLAIN_SEMVER.pattern})")


def _unsigned_claims(ws: Path, events: list[AuditEvent], records: list[SignedRecord]) -> list[str]:
    """Issue 24, family 8: anyone who can write the repository can append an event with a valid hash and
    parents (a forged ``release``). An event no checkpoint covers yet that claims a signed record must
    name one the workspace holds, signed by a key of the trust root; one written before events named
    their record (no ``record_sha256``) must at least have its record file."""
    digests = {r.sha256 for r in records}
    problems = []
    for e in events:
        if e.kind not in CLAIMS:
            continue
        sha = e.details.get("record_sha256")
        if sha is None and _has_record_file(ws, e):
            continue
        if sha is not None and sha in digests:
            continue
        named = f"its record (sha256 {str(sha)[:12]})" if sha is not None else "its record"
        problems.append(
            f"{describe(e)} is not signed: no checkpoint covers it and {named} is not in the workspace "
            "signed by a key of the trust root (a forged event, or its record deleted: restore it from git)"
        )
    return problems


def _has_record_file(ws: Path, e: AuditEvent) -> bool:
    """An event from before ``record_sha256``: whether the file it speaks of exists."""
    if e.kind == "waiver":  # a waiver signed (``file``), or one applied by a validation (``source``)
        file = e.details.get("file") or e.details.get("source")
        return isinstance(file, str) and (ws / WAIVERS / Path(file).name).is_file()
    m = _REF.fullmatch(e.subject)
    if m is None:
        return False
    folder = ws / "releases" / m[1] / m[2]
    names = {"withdrawal": (WITHDRAWAL, "withdrawal.json"), "approval": (SIGNOFFS,)}
    return any((folder / n).is_file() for n in names.get(e.kind, ("release.dsse.json",)))


def verify_log(ws: Path, trust: Trust) -> LogVerification:
    """The log checked as a DAG (hashes, names, parents) and against every signed checkpoint, with the
    events no checkpoint covers: how many, since when."""
    log = audit.load(ws)
    records = signed_records(ws, trust)
    checkpoints = [(r.checkpoint, r.what) for r in records if r.checkpoint is not None]
    problems = [*log.problems, *log.structure(), *_anchor_problems(log, checkpoints)]
    problems += _missing_under(log, checkpoints)
    covered = log.closure(h for cp, _ in checkpoints for h in cp.head_hashes)
    uncovered = sorted((e for h, e in log.events.items() if h not in covered), key=lambda e: (e.time, e.hash))
    problems += _unsigned_claims(ws, uncovered, records)
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
