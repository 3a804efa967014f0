"""The audit log: an append-only, hash-chained record of every generate, filter, validate, release,
derivation, waiver, withdrawal, key generation and training run.

    append(ws, "release", "digits@1.0.0", {"manifest_sha256": ...})   # -> AuditEvent
    verify(ws)                                                      # -> [] when intact

``audit/events.jsonl`` holds one event per line in canonical JSON and is committed to git with the
releases. Each event carries the sha256 of its own content (``hash``) and its predecessor's hash
(``prev_hash``), so an edited, removed or reordered event breaks the chain where it happened. The
chain shows tampering to anyone who checks it; it does not prevent it (the releases' signatures do
that for what they sign).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from registry.core import vcs
from registry.core.digests import sha256_json
from registry.core.errors import AuditError
from registry.core.workspace import inside
from registry.records.audit import AuditEvent, Checkpoint, EventKind
from registry.records.policy import PolicyReport

LOG = Path("audit") / "events.jsonl"
GENESIS = "0" * 64  # prev_hash of the first event
_CHUNK = 1 << 16
_VERIFY = "run `synthreg log --verify` to see the damage; the log is never repaired automatically"


def _canonical(obj: dict[str, Any]) -> str:
    # The same form sha256_json digests, so a line's hash can be recomputed from the line alone.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(body: dict[str, Any]) -> str:
    """The hash an event's JSON object should carry: over everything but ``hash`` itself."""
    return sha256_json({k: v for k, v in body.items() if k != "hash"})


def actor_name(ws: Path) -> str:
    """``$SYNTHREG_ACTOR``, else git's user.name, else the login name: one line of text (a newline in it
    would forge a line of `synthreg log`)."""
    from registry.core.names import check_line

    if os.environ.get("SYNTHREG_ACTOR"):
        return check_line(os.environ["SYNTHREG_ACTOR"], "$SYNTHREG_ACTOR") or ""
    return check_line(vcs.user_name(ws) or getpass.getuser(), "git user.name") or ""


@contextlib.contextmanager
def _locked(path: Path, mode: str, lock: int) -> Iterator[IO[bytes]]:
    # flock on the log itself: readers take it shared so they never see an append half done.
    with open(path, mode) as f:
        fcntl.flock(f, lock)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _last_line(f: IO[bytes]) -> bytes:
    """The file's last line, read backwards from the end so a long log is not read whole."""
    pos = os.fstat(f.fileno()).st_size
    buf = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        buf = os.pread(f.fileno(), step, pos) + buf
        cut = buf.rfind(b"\n", 0, len(buf) - 1)  # the newline before the last line, not after it
        if cut >= 0:
            return buf[cut + 1 :]
    return buf


def _parse(raw: bytes, line: int) -> AuditEvent:
    if not raw.endswith(b"\n"):
        raise AuditError(f"line {line} of the audit log is half-written (no trailing newline)")
    try:
        return AuditEvent.model_validate_json(raw)
    except ValidationError as e:
        raise AuditError(f"line {line} of the audit log is not a valid event: {e.errors()[0]['msg']}") from e


def log_path(ws: Path) -> Path:
    """The audit log's path, refused if it (or ``audit/``) is a symlink out of the workspace. Stages call
    it before writing their outputs, so a refused log leaves nothing half done."""
    return inside(ws, LOG, "audit log")


def append(
    ws: Path, kind: EventKind, subject: str, details: dict[str, Any], actor: str | None = None
) -> AuditEvent:
    """Append one event chained to the last; safe against concurrent appends from other processes."""
    path = log_path(ws)
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = actor or actor_name(ws)
    # "a+b": O_APPEND, so the write lands at the end even if the file grew before the lock was taken.
    with _locked(path, "a+b", fcntl.LOCK_EX) as f:
        raw = _last_line(f)
        prev: AuditEvent | None = None
        if raw:
            try:
                prev = _parse(raw, 0)
            except AuditError:
                f.seek(0)
                line = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(_CHUNK), b"")) + 1
                raise AuditError(
                    f"the last line (line {line}) of {path} is half-written or malformed; {_VERIFY}"
                ) from None
            # Chaining to an edited event would bury the edit under a valid-looking successor.
            if content_hash(json.loads(raw)) != prev.hash:
                raise AuditError(f"the last event (seq {prev.seq}) of {path} was edited; {_VERIFY}")
        body = {
            "seq": prev.seq + 1 if prev else 0,
            "kind": kind,
            "time": datetime.now(UTC),
            "actor": actor,
            "subject": subject,
            "details": details,
            "prev_hash": prev.hash if prev else GENESIS,
            "hash": GENESIS,  # placeholder so the model validates; replaced below
        }
        body = AuditEvent.model_validate(body).model_dump(mode="json")
        body["hash"] = content_hash(body)
        event = AuditEvent.model_validate(body)
        # One write of a whole line, then fsync: a crash leaves at most a torn last line, which the
        # next append refuses to build on.
        f.write((_canonical(body) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())
    return event


def head(ws: Path) -> Checkpoint | None:
    """The last event's seq and hash, or None for an empty log."""
    path = ws / LOG
    if not path.is_file():
        return None
    with _locked(path, "rb", fcntl.LOCK_SH) as f:
        raw = _last_line(f)
    if not raw:
        return None
    event = _parse(raw, 0)
    return Checkpoint(seq=event.seq, hash=event.hash)


def _lines(ws: Path) -> list[bytes]:
    path = log_path(ws)
    if not path.is_file():
        return []
    with _locked(path, "rb", fcntl.LOCK_SH) as f:
        return f.readlines()


def lines(ws: Path) -> list[bytes]:
    """The log's raw lines, read under a shared lock."""
    return _lines(ws)


def read(ws: Path) -> list[AuditEvent]:
    """Every event, validated; [] when there is no log yet. Does not check the chain: see verify."""
    return [_parse(raw, n) for n, raw in enumerate(_lines(ws), 1)]


def verify(ws: Path) -> list[str]:
    """Problems with the log, one message each, naming the event and line; [] when intact."""
    problems: list[str] = []
    expected_seq, prev_hash = 0, GENESIS
    for n, raw in enumerate(_lines(ws), 1):
        try:
            event = _parse(raw, n)
        except AuditError as e:
            problems.append(f"{e} (crash mid-append, or edited?)")
            continue
        where = f"event {event.seq} (line {n})"
        if content_hash(json.loads(raw)) != event.hash:
            problems.append(f"{where}: hash does not match its content (edited?)")
        if event.seq != expected_seq:
            problems.append(f"{where}: seq is {event.seq}, expected {expected_seq} (removed or reordered?)")
        if event.prev_hash != prev_hash:
            problems.append(
                f"{where}: prev_hash does not match the previous event's hash (removed or reordered?)"
            )
        # Go on from this event, so one fault is reported where it is rather than on every later line.
        expected_seq, prev_hash = event.seq + 1, event.hash
    return problems


def validation_events(report: PolicyReport, subject: str, report_sha256: str) -> list[dict[str, Any]]:
    """The events of one policy validation (kind, subject, details): each waiver applied, then the verdict."""
    events: list[dict[str, Any]] = [
        {
            "kind": "waiver",
            "subject": f"{report.dataset}:{r.rule_id}",
            "details": r.waiver.model_dump(mode="json"),
        }
        for r in report.results
        if r.waiver
    ]
    verdict = {
        "manifest_sha256": report.manifest_sha256,
        "report_sha256": report_sha256,
        "passed": report.passed,
        "failed": [r.rule_id for r in report.results if r.status == "fail"],
    }
    return [*events, {"kind": "validate", "subject": subject, "details": verdict}]


def append_validation(ws: Path, report: PolicyReport, subject: str, report_sha256: str) -> None:
    """The events of one policy validation: each waiver applied, then the verdict."""
    for e in validation_events(report, subject, report_sha256):
        append(ws, e["kind"], e["subject"], e["details"])


def unlogged(ws: Path, events: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """Those of ``events`` (kind, subject, details), in order, that the log does not hold from event
    ``start`` on: what an interrupted run still has to append."""
    i = 0
    for e in read(ws)[start:]:
        if i < len(events) and (e.kind, e.subject, e.details) == (
            events[i]["kind"],
            events[i]["subject"],
            json.loads(_canonical(events[i]["details"])),
        ):
            i += 1
    return events[i:]


def append_missing(ws: Path, events: list[dict[str, Any]], start: int, actor: str | None = None) -> None:
    """Append ``unlogged(ws, events, start)``: an interrupted run is finished without a duplicate."""
    for e in unlogged(ws, events, start):
        append(ws, e["kind"], e["subject"], e["details"], actor)
