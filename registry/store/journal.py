"""Transactions for everything that publishes into ``releases/``: a write-ahead journal and recovery.

A release, a derivation or a withdrawal is several steps (folder, ``dvc add``, audit event, git commit,
tag) that no filesystem makes atomic. Each operation therefore writes a journal entry first,
``.dvc/tmp/synthreg-journal/<op>--<NAME@X.Y.Z>.json`` (ignored by git, written atomically with fsync),
and rewrites it before and after every step. A SIGKILL at any point leaves the entry behind, and:

- readers (``versions()``, ``list``, ``load_release``, ``verify``, the loader, a bare ``NAME``) hide the
  subject of an unfinished release or derivation, and ``is_withdrawn`` ignores an unfinished withdrawal;
- the next command that reads or writes releases recovers first, under the release lock: it rolls the
  operation forward when its record is complete (``Operation.roll_forward``; for a release: the signed
  record was fully staged), running the remaining steps, each idempotent (it checks what is already
  done), and rolls it back otherwise (``Operation.undo``: remove the folder, unstage, delete a tag or
  commit only if this operation made it and nothing came after). Readers recover only when the lock is
  free (``recover_if_idle``): a reader never waits for a release in progress, it just hides it;
- temporary folders no live operation uses are removed by recovery: a staging folder
  (``releases/NAME/.X.Y.Z.tmp-PID``) no unfinished entry names, a derive scratch folder
  (``.dvc/tmp/synthreg-derive-PID-*``) whose lock nobody holds (``stale_temporaries``; never judged by
  whether a pid is alive, which another process may have taken since);
- ``synthreg doctor`` (``registry.releases.doctor``) reports all of this, and leftovers no journal explains.

How an operation uses it (``registry.releases.publish.publish``, ``registry.releases.withdraw.withdraw``
and ``registry.releases.approve.approve`` do):

1. Write its steps as functions ``step(ws, entry) -> None`` that read everything they need from
   ``entry.state`` (JSON: relative paths, the commit message, the audit events to append...) and check
   what is already done, so running one twice is harmless. Steps only the live process can do (it holds
   the signer) run inline with ``txn.step(name)`` instead.
2. Describe it as an ``Operation`` (its step names in order, the forward steps, ``undo``, the
   ``roll_forward`` decision, ``public``: has anything others rely on happened) in a module constant,
   and name that constant in ``OPERATIONS`` below (``"approve": "registry.releases.approve:APPROVE"``):
   recovery imports it from there, so a journal left by any operation can be recovered by any command.
3. In the command, under ``with locked(ws):`` (the lock, then recovery), then::

       with transaction(ws, "approve", "digits@1.0.0", state) as txn:
           with txn.step("sign"):
               ...                      # live-only work
       # leaving the block runs the forward steps and removes the entry

   An exception while nothing is ``public`` undoes everything and re-raises; after that the entry
   stays (recovery finishes the job) and a ReleaseError says so. ``crashpoint()`` is called before and after
   every step, so the crash-injection test covers a new operation without more code.

Test hook: ``SYNTHREG_CRASH_AT=before:<step>`` or ``after:<step>`` makes the process SIGKILL itself at
that point (``after`` = the step ran, the journal does not say so yet). Nothing but tests sets it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.core.errors import ReleaseError, SynthregError
from registry.core.fsio import atomic_write_text
from registry.core.processes import running
from registry.core.workspace import no_links
from registry.records.journal import Entry

JOURNAL = Path(".dvc") / "tmp" / "synthreg-journal"
LOCK = Path(".dvc") / "tmp" / "synthreg-release.lock"  # ignored by git (.dvc/.gitignore), unlike releases/
RELEASES = Path("releases")
DERIVE_TMP_PREFIX = "synthreg-derive-"
SCRATCH_LOCK = ".synthreg-scratch.lock"  # in a derive scratch folder, flocked while it is in use
CRASH_ENV = "SYNTHREG_CRASH_AT"
# Operations whose subject is a new version: while one is unfinished, the version is not released.
CREATES_VERSION = ("release", "derive")
# Where each operation's description lives (imported on demand, so recovery needs no import cycle).
OPERATIONS = {
    "release": "registry.releases.publish:PUBLISH",
    "derive": "registry.releases.publish:PUBLISH",
    "withdraw": "registry.releases.withdraw:WITHDRAW",
    "approve": "registry.releases.approve:APPROVE",
}
# NAME@X.Y.Z, with semver's optional pre-release and build parts
SUBJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}@\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_STAGING = re.compile(r"\.(?P<version>.+)\.tmp-(?P<pid>\d+)")
_DERIVE_TMP = re.compile(re.escape(DERIVE_TMP_PREFIX) + r"(?P<pid>\d+)-.*")
_LEGACY_TMP_AGE = 3600.0  # a derive temp folder without a pid (made before pids were in its name)


Step = Callable[[Path, Entry], None]


@dataclass(frozen=True)
class Operation:
    steps: tuple[str, ...]  # every step, live-only ones first
    forward: dict[str, Step]  # the steps recovery can (re)run, by name
    undo: Step  # roll back everything the operation may have made (idempotent)
    roll_forward: Callable[[Path, Entry], bool]  # recovery: finish (True) or undo (False)?
    # Has anything others rely on happened (an audit event)? A live failure undoes until then; after
    # it, the entry stays and recovery finishes. ``logged`` serves an operation that appends events.
    public: Callable[[Path, Entry], bool]


@dataclass
class Recovered:
    op: str
    subject: str
    outcome: str  # "finished" or "rolled back"


# ---------------------------------------------------------------------------------------------------
# the test hook, the lock, the files


def crashpoint(point: str) -> None:
    """Test hook: SIGKILL this process when ``$SYNTHREG_CRASH_AT`` names ``point``."""
    if os.environ.get(CRASH_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def lock(ws: Path, wait: bool = True) -> Iterator[bool]:
    """The release lock (one publishing operation at a time). Yields False when ``wait`` is False and
    another process (or another open of it in this one) holds it."""
    path = no_links(ws, LOCK, "release lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked(ws: Path) -> Iterator[None]:
    """The release lock, then recovery of any interrupted operation: how every writer of ``releases/``
    (release, derive, approve, withdraw) starts."""
    with lock(ws):
        recover(ws)
        yield


def _folder(ws: Path) -> Path:
    """The journal folder, refused when it (or ``.dvc/tmp``) is a symbolic link: entries written through
    one landed outside the workspace, and recovery would read entries planted there (issue 24)."""
    return no_links(ws, JOURNAL, "journal folder")


def entry_path(ws: Path, op: str, subject: str) -> Path:
    return _folder(ws) / f"{op}--{subject}.json"


def _save(ws: Path, entry: Entry) -> None:
    path = entry_path(ws, entry.op, entry.subject)
    atomic_write_text(path, entry.model_dump_json(indent=2) + "\n")
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(ws: Path, entry: Entry) -> None:
    path = entry_path(ws, entry.op, entry.subject)
    path.unlink(missing_ok=True)
    if path.parent.is_dir():
        _fsync_dir(path.parent)


def pending(ws: Path) -> list[tuple[str, str]]:
    """(op, subject) of every unfinished operation, from the entries' names (no file is parsed)."""
    folder = _folder(ws)
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        op, sep, subject = p.name.removesuffix(".json").partition("--")
        if sep and p.name.endswith(".json") and not p.name.startswith("."):
            found.append((op, subject))
    return found


def unfinished_versions(ws: Path, name: str) -> set[str]:
    """Versions of ``name`` that an unfinished release or derivation is making: not released (yet)."""
    return {
        s.partition("@")[2] for op, s in pending(ws) if op in CREATES_VERSION and s.partition("@")[0] == name
    }


def is_unfinished(ws: Path, op: str, subject: str) -> bool:
    return (op, subject) in pending(ws)


def read_entry(ws: Path, op: str, subject: str) -> Entry:
    """The entry, refused unless every path and tag it names is the one its subject implies: recovery
    removes and commits what an entry names, so a planted or edited entry must not point elsewhere."""
    path = entry_path(ws, op, subject)
    try:
        entry = Entry.model_validate_json(path.read_text())
    except (OSError, ValueError) as e:
        raise ReleaseError(
            f"journal entry {path} cannot be read ({e}); inspect it, then delete it and run "
            "`synthreg doctor` to see what it left"
        ) from None
    name, _, version = entry.subject.partition("@")
    expected = {
        "final": f"{RELEASES.as_posix()}/{name}/{version}",
        "staging": f"{RELEASES.as_posix()}/{name}/.{version}.tmp-{entry.pid}",
        "record": f"{RELEASES.as_posix()}/{name}/{version}/withdrawal.dsse.json",
        "folder": f"{RELEASES.as_posix()}/{name}/{version}",
        "tag": f"{name}@v{version}",
        "withdrawn_tag": f"withdrawn/{name}@v{version}",  # withdraw's (issue 24)
    }
    wrong = sorted(k for k, v in expected.items() if k in entry.state and entry.state[k] != v)
    signed = {f"{expected['final']}/{n}" for n in ("release.dsse.json", "signoffs.json")}  # approve's files
    wrong += sorted(k for k in ("files", "old") if k in entry.state and not set(entry.state[k]) <= signed)
    pub = entry.state.get("pubkey")  # publish writes it: only ever a public key file under keys/
    if pub is not None and not (
        isinstance(pub, dict) and re.fullmatch(r"keys/[0-9a-f]{64}\.pub\.json", str(pub.get("path")))
    ):
        wrong.append("pubkey")
    if (entry.op, entry.subject) != (op, subject) or not SUBJECT.fullmatch(subject) or wrong:
        raise ReleaseError(
            f"journal entry {path} does not match its name or names other paths "
            f"({', '.join(wrong) or 'op or subject'}); synthreg did not write it: inspect it and delete it"
        )
    return entry


def operation(op: str) -> Operation:
    where = OPERATIONS.get(op)
    if where is None:
        raise ReleaseError(f"the journal names an unknown operation {op!r}; upgrade synthreg and recover")
    module, _, attr = where.partition(":")
    found: Operation = getattr(importlib.import_module(module), attr)
    return found


def logged(ws: Path, entry: Entry) -> bool:
    """For an operation whose state holds ``events`` (kind, subject, details) appended by a step named
    ``audit`` from log position ``audit_from``: has any of them been appended?"""
    from registry.store import audit

    events = entry.state.get("events") or []
    if "audit" in entry.done:
        return True
    return bool(events) and len(audit.unlogged(ws, events, entry.state["audit_from"])) < len(events)


# ---------------------------------------------------------------------------------------------------
# running an operation


class Transaction:
    def __init__(self, ws: Path, entry: Entry) -> None:
        self.ws, self.entry = ws, entry

    def update(self, **state: Any) -> None:
        """Add to the state the forward steps will read (saved before the next step starts)."""
        self.entry = self.entry.model_copy(update={"state": self.entry.state | state})
        _save(self.ws, self.entry)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.entry = _begin_step(self.ws, self.entry, name)
        yield
        self.entry = _end_step(self.ws, self.entry, name)


def _begin_step(ws: Path, entry: Entry, name: str) -> Entry:
    # When the step began (wall clock): a git lock made after it, by a git this step ran and a kill left
    # behind, is this operation's to clear (``clear_stale_git_lock``). A retry of the step that failed
    # (a `doctor --repair` that met the lock still held) keeps the first attempt's time: the lock that
    # attempt's killed git left is still this operation's.
    began = entry.state.get("step_began") if entry.doing == name else None
    state = entry.state | {"step_began": began if isinstance(began, (int, float)) else time.time()}
    entry = entry.model_copy(update={"doing": name, "state": state})
    _save(ws, entry)
    crashpoint(f"before:{name}")
    return entry


def _end_step(ws: Path, entry: Entry, name: str) -> Entry:
    crashpoint(f"after:{name}")
    entry = entry.model_copy(update={"doing": None, "done": [*entry.done, name]})
    _save(ws, entry)
    return entry


def _forward(ws: Path, entry: Entry, op: Operation) -> Entry:
    for name in op.steps:
        if name in entry.done:
            continue
        if name not in op.forward:
            raise ReleaseError(f"{entry.op} {entry.subject}: step {name!r} can only run in the live process")
        entry = _begin_step(ws, entry, name)
        op.forward[name](ws, entry)
        entry = _end_step(ws, entry, name)
    _remove(ws, entry)
    return entry


@contextlib.contextmanager
def transaction(ws: Path, op: str, subject: str, state: dict[str, Any]) -> Iterator[Transaction]:
    """Journal ``op`` on ``subject``; the caller holds ``lock(ws)``. See the module docstring."""
    desc = operation(op)
    entry = Entry(
        op=op,
        subject=subject,
        pid=os.getpid(),
        started=datetime.now(UTC),
        steps=list(desc.steps),
        state=state,
    )
    _save(ws, entry)
    txn = Transaction(ws, entry)
    try:
        yield txn
        txn.entry = _forward(ws, txn.entry, desc)
    except BaseException as e:
        entry = txn.entry
        with contextlib.suppress(SynthregError):  # every step saves it: the disk knows the step it was in
            entry = read_entry(ws, op, subject)
        public = True
        with contextlib.suppress(Exception):
            public = desc.public(ws, entry)
        if not public:
            with contextlib.suppress(Exception):
                desc.undo(ws, entry)
                _remove(ws, entry)
            raise
        if not isinstance(e, Exception):
            raise
        raise ReleaseError(
            f"{op} of {subject} stopped at step {entry.doing or '?'}: {e}. It is recorded in "
            f"{entry_path(ws, op, subject).relative_to(ws)} and will be finished by the next synthreg "
            "command; fix the cause and run `synthreg doctor --repair`"
        ) from e


def adopt(ws: Path, op: str, subject: str, steps: list[str], done: list[str], state: dict[str, Any]) -> None:
    """Write an entry for work done without one (``doctor --repair``), for recovery to finish."""
    entry = Entry(
        op=op,
        subject=subject,
        pid=os.getpid(),
        started=datetime.now(UTC),
        steps=steps,
        done=done,
        state=state,
    )
    _save(ws, entry)


# ---------------------------------------------------------------------------------------------------
# recovery


# (workspace, op, subject) this process finished by recovery: a re-run of the killed command reports
# the finished operation instead of refusing it as done already.
_FINISHED: set[tuple[Path, str, str]] = set()


def finished_here(ws: Path, ops: tuple[str, ...], subject: str) -> bool:
    return any((ws, op, subject) in _FINISHED for op in ops)


def _claimed_staging(ws: Path) -> tuple[set[str], set[str]]:
    """The staging folders unfinished releases and derivations name (relative paths), and the subjects
    whose entry cannot be read (any staging folder of theirs is left to the person who reads it)."""
    named, unreadable = set(), set()
    for op, subject in pending(ws):
        if op not in CREATES_VERSION:
            continue
        try:
            staging = read_entry(ws, op, subject).state.get("staging")
        except SynthregError:
            unreadable.add(subject)
            continue
        if isinstance(staging, str):
            named.add(staging)
    return named, unreadable


def scratch_held(folder: Path) -> bool | None:
    """Whether a live process holds ``folder``'s scratch lock (``scratch_lock``); None when it has no lock
    file (a folder made before scratch folders were locked)."""
    try:
        fd = os.open(folder / SCRATCH_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # not ours to judge (a link, no permission): never removed
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def scratch_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s scratch lock while using it: ``stale_temporaries`` leaves a held one alone,
    whatever pid its name carries (the kernel drops the lock when the process dies)."""
    fd = os.open(folder / SCRATCH_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def stale_temporaries(ws: Path) -> list[Path]:
    """Temporary folders no live operation uses. A staging folder (``releases/NAME/.X.Y.Z.tmp-PID``) is
    judged by the journal: publishing makes it only under the release lock, inside a journalled
    operation that names it, so one no unfinished entry names is left over, even when its pid now
    belongs to another live process (issue 24); one an entry names is recovery's to finish or remove. A
    derive scratch folder is judged by its lock (``scratch_lock``): it is made before the release lock
    is taken, so no entry names it yet. Only one without a lock file falls back to its pid and age."""
    found = []
    root = ws / RELEASES
    if root.is_dir():
        named, unreadable = _claimed_staging(ws)
        for dataset in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for p in sorted(dataset.iterdir()):
                m = _STAGING.fullmatch(p.name)
                rel = p.relative_to(ws).as_posix()
                if m and rel not in named and f"{dataset.name}@{m['version']}" not in unreadable:
                    found.append(p)
    tmp = ws / ".dvc" / "tmp"
    if tmp.is_dir():
        for p in sorted(tmp.glob(f"{DERIVE_TMP_PREFIX}*")):
            held = scratch_held(p) if p.is_dir() and not p.is_symlink() else False
            if held is False:
                found.append(p)
                continue
            m = _DERIVE_TMP.fullmatch(p.name)
            if held is None and (
                (m and not running(int(m["pid"])))
                or (not m and time.time() - p.stat().st_mtime > _LEGACY_TMP_AGE)
            ):
                found.append(p)
    return found


def remove_temporary(path: Path) -> None:
    """Remove a stale temporary folder; a link in its place is removed, never followed."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def needs_recovery(ws: Path) -> bool:
    return bool(pending(ws)) or bool(stale_temporaries(ws))


def recover(ws: Path) -> list[Recovered]:
    """Finish or roll back every unfinished operation, then remove stale temporary folders. The caller
    holds ``lock(ws)``. Raises a ReleaseError naming the operation when one cannot be finished (its
    entry stays, so its subject stays hidden)."""
    done = []
    for op, subject in pending(ws):
        try:
            done.append(recover_one(ws, op, subject))
        except SynthregError as e:
            raise ReleaseError(
                f"an interrupted {op} of {subject} cannot be recovered: {e}; fix the cause and run "
                "`synthreg doctor --repair`"
            ) from e
    for p in stale_temporaries(ws):
        remove_temporary(p)
    return done


def recover_if_idle(ws: Path) -> None:
    """For readers: recover when nothing else holds the release lock; otherwise leave it (unfinished
    subjects stay hidden). A failure is left for ``synthreg doctor`` to report."""
    if not (ws / ".dvc").is_dir() or not needs_recovery(ws):
        return
    with contextlib.suppress(SynthregError, OSError), lock(ws, wait=False) as got:
        if got:
            recover(ws)


def _held_open(path: Path) -> bool:
    """Whether a live process has ``path`` open (git keeps its lock file open while it holds it). Reads
    /proc; where a process's descriptors cannot be read, it is counted as holding it."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # cannot tell: never remove
    target = str(path)
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
            continue
        try:
            fds = list((pid_dir / "fd").iterdir())
        except PermissionError:
            return True
        except OSError:
            continue  # gone meanwhile
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return True
    return False


def clear_stale_git_lock(ws: Path, entry: Entry) -> bool:
    """Remove ``.git/index.lock`` when this unfinished operation's killed process left it, and only then:
    the entry was in a step (``doing``) when it stopped, the lock file was made after that step began,
    and no live process has it open. The caller holds the release lock, so the entry's process is gone
    (whatever its pid now names). A lock another live git holds, or one older than the step, stays."""
    lock_file = ws / ".git" / "index.lock"
    began = entry.state.get("step_began")
    if entry.doing is None or not isinstance(began, (int, float)) or not lock_file.is_file():
        return False
    if lock_file.is_symlink() or lock_file.stat().st_mtime < began - 1.0:  # 1 s: coarse file clocks
        return False
    if _held_open(lock_file.resolve()):
        return False
    lock_file.unlink(missing_ok=True)
    return True


def recover_one(ws: Path, op: str, subject: str) -> Recovered:
    """Finish or roll back one unfinished operation (the caller holds the lock)."""
    entry = read_entry(ws, op, subject)
    clear_stale_git_lock(ws, entry)  # a git the kill interrupted would make every next git call fail
    desc = operation(op)
    if desc.roll_forward(ws, entry):
        _forward(ws, entry, desc)
        _FINISHED.add((ws, op, subject))
        return Recovered(op, subject, "finished")
    desc.undo(ws, entry)
    _remove(ws, entry)
    return Recovered(op, subject, "rolled back")
