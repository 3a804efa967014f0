"""The audit log: an append-only record of every generate, filter, validate, release, derivation,
waiver, withdrawal, key generation and training run, kept in git as a DAG that merges by construction.

    append(ws, "release", "digits@1.0.0", {"manifest_sha256": ...})   # -> AuditEvent
    read(ws)                                                        # the merged timeline
    verify(ws)                                                      # -> [] when intact

Each event is its own file, ``audit/events/<hash>.json``, holding the event's canonical JSON; ``hash``
is the sha256 of that JSON without ``hash``, and the file is named by it. An event names its
``parents``: the log's heads (the events no other event names as a parent) when it was written. Two
clones that both append write different new files and edit none, so ``git merge`` never conflicts, and
the merged log is the union: a DAG whose heads are the two sides' last events; the next event names
both. The heads are derived from the files, never stored, so there is no shared index to conflict on.

An edited event no longer matches its name and hash; a removed one is named by its children as a
missing parent. A removed *head* (an event nothing follows yet) leaves no trace in the log itself: only
a signed checkpoint over it does (``registry.trust.checkpoints``), which is why ``log --verify`` counts
the events no signature covers yet, and ``log --checkpoint`` signs the heads.

The log before issue 20 was one hash chain, ``audit/events.jsonl``. It is read as it stands (each line
an event whose one parent is ``prev_hash``) and migrated to files by the first append: each line's
bytes become ``audit/events/<hash>.json`` unchanged, so a checkpoint signed over the chain (``seq``,
``hash``) still names its event.

Appends take an flock on ``audit/events/`` itself (no lock file to commit); each event file is written
to a temporary name and renamed (``registry.core.fsio``), so a kill leaves at most a stray temporary
file that readers skip and the next append removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from registry.core import collector, vcs
from registry.core.digests import sha256_bytes, sha256_json
from registry.core.errors import AuditError
from registry.core.fsio import atomic_write_bytes
from registry.core.workspace import no_links
from registry.records.audit import GENESIS, AuditEvent, Checkpoint, EventKind
from registry.records.policy import PolicyReport

LOG = Path("audit")  # what git tracks: events, checkpoints (and, before migration, events.jsonl)
EVENTS = LOG / "events"
LEGACY = LOG / "events.jsonl"
_NAME = re.compile(r"[0-9a-f]{64}\.json")
_VERIFY = "run `synthreg log --verify` to see the damage; the log is never repaired automatically"
_TICK = timedelta(microseconds=1)
_CHUNK = 1 << 16

__all__ = [
    "EVENTS",
    "GENESIS",
    "LEGACY",
    "LOG",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "actor_name",
    "append",
    "append_missing",
    "append_validation",
    "content_hash",
    "describe",
    "head",
    "load",
    "log_path",
    "migrate",
    "read",
    "shown",
    "unlogged",
    "validation_events",
    "verify",
]


def _canonical(obj: dict[str, Any]) -> str:
    # The same form sha256_json digests, so an event's hash can be recomputed from its file alone.
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


def shown(text: object) -> str:
    """``text`` for one line of output: a control character (a newline in a forged event's subject or
    actor would forge a line of `synthreg log`) is shown escaped."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in str(text))


def describe(e: AuditEvent) -> str:
    """How a message names an event: its short hash, what it was and when (and an old chain seq)."""
    seq = f"seq {e.seq}, " if e.seq is not None else ""
    return f"event {e.hash[:12]} ({seq}{e.kind} {shown(e.subject)}, {e.time:%Y-%m-%dT%H:%M:%SZ})"


def log_path(ws: Path) -> Path:
    """The events folder, refused if it, ``audit/`` or an old ``events.jsonl`` is a symbolic link or
    leaves the workspace. Stages call it before writing their outputs, so a refused log leaves nothing
    half done."""
    no_links(ws, LEGACY, "audit log")
    return no_links(ws, EVENTS, "audit log")


@dataclass
class AuditLog:
    """Every event that could be read, by hash, and what was wrong with the rest (file by file)."""

    events: dict[str, AuditEvent] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    edited: dict[str, AuditEvent] = field(default_factory=dict)  # content does not match the hash
    legacy: int = 0  # events still read from audit/events.jsonl (not migrated yet)

    def timeline(self) -> list[AuditEvent]:
        """The merged timeline: by time, then hash. An event is never older than its parents, so each
        follows everything it names."""
        return sorted(self.events.values(), key=lambda e: (e.time, e.hash))

    def heads(self) -> list[str]:
        named = {p for e in self.events.values() for p in e.parent_hashes}
        return sorted(h for h in self.events if h not in named)

    def closure(self, hashes: Iterable[str]) -> set[str]:
        """``hashes`` and every event before them that the log holds."""
        seen: set[str] = set()
        todo = [h for h in hashes if h in self.events]
        while todo:
            h = todo.pop()
            if h in seen:
                continue
            seen.add(h)
            todo.extend(p for p in self.events[h].parent_hashes if p in self.events and p not in seen)
        return seen

    def structure(self) -> list[str]:
        """Problems with the links between events: a missing parent, an old chain event whose seq does
        not follow its predecessor's, an event dated before its parent. In timeline order."""
        found: list[tuple[datetime, str, str]] = []
        events = self.events
        for e in events.values():  # not sorted: a 100,000-event log is checked in one pass
            if e.parents is None:  # an old chain event: its seq follows its predecessor's
                if e.prev_hash == GENESIS:
                    if e.seq != 0:
                        found.append(
                            (e.time, e.hash, f"{describe(e)}: seq is {e.seq} but it starts the chain")
                        )
                    continue
                parents = [str(e.prev_hash)]
            else:
                parents = e.parents
            for p in parents:
                parent = events.get(p)
                if parent is None:
                    if p not in self.edited:
                        found.append(
                            (
                                e.time,
                                e.hash,
                                f"{describe(e)} follows event {p[:12]}, which is missing (removed?)",
                            )
                        )
                elif e.seq is not None:
                    if parent.seq is None or e.seq != parent.seq + 1:
                        found.append(
                            (
                                e.time,
                                e.hash,
                                f"{describe(e)}: seq is {e.seq}, but its predecessor's is {parent.seq} "
                                "(removed or reordered?)",
                            )
                        )
                elif e.time < parent.time:
                    found.append(
                        (
                            e.time,
                            e.hash,
                            f"{describe(e)} is dated before its parent {describe(parent)} (edited?)",
                        )
                    )
        return [msg for _, _, msg in sorted(found)]


def _hash_holds(raw: bytes, claimed: str) -> bool:
    """Whether ``claimed`` is the hash of the event in ``raw``. Fast path: an event file is canonical
    JSON, in which the top-level ``hash`` is followed by ``kind`` (keys sorted), so the hashed text is the
    file's bytes without that one member. A file that is not canonical takes the slow path, re-encoding
    it: the result is the same."""
    member = b'"hash":"' + claimed.encode() + b'",'
    at = raw.find(member + b'"kind":"')
    if at >= 0:
        body = raw[:at] + raw[at + len(member) :]
        if sha256_bytes(body.rstrip(b"\n")) == claimed:
            return True
    return content_hash(json.loads(raw)) == claimed


def _take(log: AuditLog, raw: bytes, where: str, name: str | None) -> None:
    """Parse one event (a file's bytes or an old line) into ``log``, or record why not."""
    try:
        event = AuditEvent.model_validate_json(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = f"not JSON ({err['msg']})" if err["type"] == "json_invalid" else err["msg"]
        log.problems.append(f"{where} is not a valid event: {msg} (half-written, or edited?)")
        return
    if not _hash_holds(raw, event.hash):
        log.problems.append(f"{where}: {describe(event)}'s hash does not match its content (edited?)")
        log.edited.setdefault(event.hash, event)
        return
    if name is not None and name != event.hash + ".json":
        log.problems.append(
            f"{where} holds {describe(event)}, whose file name is {event.hash}.json (renamed?)"
        )
        return
    log.events.setdefault(event.hash, event)


def load(ws: Path) -> AuditLog:
    """Every event in ``audit/events/`` and (until it is migrated) ``audit/events.jsonl``. Hashes and
    file names are checked; links between events are ``AuditLog.structure``."""
    # Reading a log keeps one object per event alive: with the cyclic collector on, its full
    # collections rescan them all again and again, and 100,000 events took 5x the time of 5,000 per
    # event (benchmarks/bench_audit.py). Nothing read here forms a cycle.
    with collector.paused():
        return _load(ws)


def _load(ws: Path) -> AuditLog:
    folder = log_path(ws)
    legacy = ws / LEGACY
    log = AuditLog()
    if legacy.is_file():
        lines = legacy.read_bytes().splitlines(keepends=True)
        for n, raw in enumerate(lines, 1):
            if not raw.endswith(b"\n"):
                log.problems.append(f"line {n} of {LEGACY} is half-written (no trailing newline)")
                continue
            _take(log, raw, f"line {n} of {LEGACY}", None)
        log.legacy = len(lines)
    if not folder.is_dir():
        return log
    with os.scandir(folder) as scan:
        entries = sorted((d.name, d) for d in scan)
    prefix = EVENTS.as_posix()
    for name, entry in entries:
        if name.startswith("."):
            continue  # a temporary file of an append in progress, or one a kill left
        if entry.is_symlink() or not entry.is_file() or not _NAME.fullmatch(name):
            log.problems.append(f"{prefix}/{name} is not an event file (a plain file named <sha256>.json)")
            continue
        fd = os.open(entry.path, os.O_RDONLY)
        try:
            chunks = [os.read(fd, _CHUNK)]
            while len(chunks[-1]) == _CHUNK:  # a large event (a long details object)
                chunks.append(os.read(fd, _CHUNK))
        finally:
            os.close(fd)
        _take(log, b"".join(chunks), f"{prefix}/{name}", name)
    return log


def read(ws: Path) -> list[AuditEvent]:
    """Every event in timeline order (by time, then hash); [] when there is no log yet. An event that
    cannot be read is refused; links between events are not checked here: see verify."""
    log = load(ws)
    bad = [p for p in log.problems if "is not a valid event" in p or "half-written" in p]
    if bad:
        raise AuditError(f"{bad[0]}; {_VERIFY}")
    # As before issue 20, an edited event is still read (verify names it).
    return sorted([*log.events.values(), *log.edited.values()], key=lambda e: (e.time, e.hash))


def verify(ws: Path) -> list[str]:
    """Problems with the log, one message each, naming the event; [] when intact. Signed checkpoints
    are checked above this layer (``registry.trust.checkpoints``)."""
    log = load(ws)
    return log.problems + log.structure()


def head(ws: Path) -> Checkpoint | None:
    """The log's heads as a checkpoint, or None for an empty log."""
    heads = load(ws).heads()
    return Checkpoint(heads=heads) if heads else None


@contextlib.contextmanager
def _locked(ws: Path) -> Iterator[Path]:
    """An exclusive flock on the events folder itself: appends from other processes wait."""
    folder = log_path(ws)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _migrate(ws: Path, folder: Path) -> int:
    """Move ``audit/events.jsonl`` into event files (lock held); the number of events it held."""
    legacy = ws / LEGACY
    if not legacy.is_file():
        return 0
    log = AuditLog()
    lines = legacy.read_bytes().splitlines(keepends=True)
    for n, raw in enumerate(lines, 1):
        if not raw.endswith(b"\n"):
            log.problems.append(f"line {n} of {LEGACY} is half-written (no trailing newline)")
        else:
            _take(log, raw, f"line {n} of {LEGACY}", None)
    if log.problems:
        raise AuditError(f"{LEGACY} cannot be migrated to {EVENTS}/: {log.problems[0]}; {_VERIFY}")
    for raw in lines:
        event = AuditEvent.model_validate_json(raw)
        path = folder / f"{event.hash}.json"
        if not path.exists():
            atomic_write_bytes(path, raw)  # the line's very bytes: its hash and old checkpoints hold
    _fsync_dir(folder)
    legacy.unlink()  # only once every event is in its file: a kill before this migrates again
    _fsync_dir(legacy.parent)
    return len(lines)


def migrate(ws: Path) -> int:
    """Migrate an old ``audit/events.jsonl`` to ``audit/events/`` now (the first append does it too);
    the number of events moved, 0 when there was nothing to migrate. Refused, changing nothing, when a
    line is half-written or edited."""
    with _locked(ws) as folder:
        return _migrate(ws, folder)


def append(
    ws: Path, kind: EventKind, subject: str, details: dict[str, Any], actor: str | None = None
) -> AuditEvent:
    """Append one event whose parents are the log's heads; safe against concurrent appends from other
    processes (they wait for the lock)."""
    actor = actor or actor_name(ws)
    with _locked(ws) as folder:
        _migrate(ws, folder)
        for stale in folder.glob(".*.tmp"):  # left by a killed append: only a lock holder writes here
            stale.unlink(missing_ok=True)
        log = load(ws)
        if log.problems:
            # Building on an edited or torn event would bury it under a valid-looking successor.
            raise AuditError(f"the audit log is damaged ({log.problems[0]}); {_VERIFY}")
        parents = log.heads()
        now = datetime.now(UTC)
        # Never dated before an event it follows (a clock behind the other clone's): the timeline then
        # lists it after every event that was in the log when it was written.
        latest = max((e.time for e in log.events.values()), default=now)
        body = {
            "kind": kind,
            "time": max(now, latest + _TICK),
            "actor": actor,
            "subject": subject,
            "details": details,
            "parents": parents,
            "hash": GENESIS,  # placeholder so the model validates; replaced below
        }
        body = AuditEvent.model_validate(body).model_dump(mode="json")
        body["hash"] = content_hash(body)
        event = AuditEvent.model_validate(body)
        atomic_write_bytes(folder / f"{event.hash}.json", (_canonical(body) + "\n").encode())
        _fsync_dir(folder)
    return event


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
    """Those of ``events`` (kind, subject, details), in order, that the log does not hold from timeline
    position ``start`` on: what an interrupted run still has to append. (A new event is dated after
    every event it follows, so this run's events come after position ``start``.)"""
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
