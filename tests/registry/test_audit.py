"""The audit log as a DAG of content-addressed events (issue 20): appends, reads, the migration of the
old chain, and what ``audit.verify`` names. Signed checkpoints, merges of real clones and the CLI are
tested in ``test_audit_merge.py``."""

import itertools
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest

from registry.store import audit
from registry.store.audit import EVENTS, GENESIS, LEGACY, AuditError


def fill(ws: Path, n: int = 5) -> list[audit.AuditEvent]:
    kinds = ["generate", "filter", "validate", "release", "waiver", "withdrawal", "keygen"]
    return [
        audit.append(ws, kinds[i % len(kinds)], "digits@1.0.0", {"i": i}, actor="alice") for i in range(n)
    ]


def event_file(ws: Path, e: audit.AuditEvent) -> Path:
    return ws / EVENTS / f"{e.hash}.json"


def old_chain(n: int) -> list[bytes]:
    """``n`` lines of an ``audit/events.jsonl`` as the code before issue 20 wrote it."""
    prev, out = GENESIS, []
    for i in range(n):
        body = {
            "seq": i,
            "kind": "generate",
            "time": f"2026-01-01T00:00:{i:02d}Z",
            "actor": "old",
            "subject": "data/",
            "details": {"i": i},
            "prev_hash": prev,
        }
        body["hash"] = prev = audit.content_hash(body)
        out.append(json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    return out


def test_each_event_is_a_file_named_by_its_hash_naming_the_heads(tmp_path: Path) -> None:
    events = fill(tmp_path)
    assert events[0].parents == []
    assert all(b.parents == [a.hash] for a, b in itertools.pairwise(events))
    assert sorted(p.name for p in (tmp_path / EVENTS).iterdir()) == sorted(f"{e.hash}.json" for e in events)
    for e in events:
        raw = event_file(tmp_path, e).read_text()
        obj = json.loads(raw)
        assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
        assert audit.content_hash(obj) == e.hash and "seq" not in obj and obj["time"].endswith("Z")
    assert audit.read(tmp_path) == events
    assert audit.head(tmp_path).heads == [events[-1].hash]
    assert audit.verify(tmp_path) == []


def test_actor_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHREG_ACTOR", "ci-bot")
    assert audit.append(tmp_path, "keygen", "keys/", {}).actor == "ci-bot"


def test_empty_or_missing_log_reads_as_nothing(tmp_path: Path) -> None:
    assert audit.read(tmp_path) == [] and audit.verify(tmp_path) == [] and audit.head(tmp_path) is None
    (tmp_path / EVENTS).mkdir(parents=True)
    assert audit.read(tmp_path) == [] and audit.verify(tmp_path) == []
    assert audit.append(tmp_path, "generate", "data/", {}).parents == []


def test_two_branches_make_two_heads_and_the_next_event_joins_them(tmp_path: Path) -> None:
    """What a git merge of two clones gives: the union of two sets of files."""
    a, b = tmp_path / "a", tmp_path / "b"
    common = fill(a, 2)
    shutil.copytree(a, b)
    ea = audit.append(a, "release", "digits@1.0.0", {}, actor="alice")
    eb = audit.append(b, "train", "digits@1.0.0", {}, actor="bob")
    for p in (b / EVENTS).iterdir():  # the merge: no file is on both sides with different bytes
        target = a / EVENTS / p.name
        assert not target.exists() or target.read_bytes() == p.read_bytes()
        shutil.copy(p, target)
    assert audit.verify(a) == []
    assert audit.head(a).heads == sorted([ea.hash, eb.hash])
    assert [e.hash for e in audit.read(a)] == [
        *(e.hash for e in common),
        *(e.hash for e in sorted([ea, eb], key=lambda e: (e.time, e.hash))),
    ]
    joined = audit.append(a, "validate", "digits", {}, actor="alice")
    assert joined.parents == sorted([ea.hash, eb.hash])
    assert joined.time > max(ea.time, eb.time)
    assert audit.verify(a) == []


def test_an_event_is_never_dated_before_the_events_it_follows(tmp_path: Path) -> None:
    """A clock behind the other clone's: the timeline still lists an event after its parents."""
    first = fill(tmp_path, 1)[0]
    path = event_file(tmp_path, first)
    obj = json.loads(path.read_text())
    obj["time"] = "2999-01-01T00:00:00Z"
    obj["hash"] = audit.content_hash(obj)
    path.unlink()
    (tmp_path / EVENTS / f"{obj['hash']}.json").write_text(
        json.dumps(obj, sort_keys=True, separators=(",", ":"))
    )
    nxt = audit.append(tmp_path, "train", "x", {}, actor="alice")
    assert nxt.time.year == 2999 and audit.read(tmp_path)[-1] == nxt


def test_edited_event_is_named_and_refused_as_a_parent(tmp_path: Path) -> None:
    events = fill(tmp_path)
    path = event_file(tmp_path, events[2])
    path.write_text(path.read_text().replace('"alice"', '"mallory"'))
    (problem,) = audit.verify(tmp_path)
    assert problem == (
        f"audit/events/{events[2].hash}.json: event {events[2].hash[:12]} (validate digits@1.0.0, "
        f"{events[2].time:%Y-%m-%dT%H:%M:%SZ})'s hash does not match its content (edited?)"
    )
    with pytest.raises(AuditError, match=r"the audit log is damaged .*synthreg log --verify"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert [e.actor for e in audit.read(tmp_path)][2] == "mallory"  # read, as before: verify names it


def test_edited_event_with_recomputed_hash_and_name_leaves_its_child_without_a_parent(tmp_path: Path) -> None:
    events = fill(tmp_path)
    path = event_file(tmp_path, events[2])
    obj = json.loads(path.read_text())
    obj["actor"] = "mallory"
    obj["hash"] = audit.content_hash(obj)
    path.unlink()
    (tmp_path / EVENTS / f"{obj['hash']}.json").write_text(
        json.dumps(obj, sort_keys=True, separators=(",", ":"))
    )
    problems = audit.verify(tmp_path)
    assert problems == [
        f"{audit.describe(events[3])} follows event {events[2].hash[:12]}, which is missing (removed?)"
    ]


def test_deleted_middle_event_is_detected_and_a_deleted_head_is_not(tmp_path: Path) -> None:
    events = fill(tmp_path)
    event_file(tmp_path, events[4]).unlink()  # the tail: nothing in the log itself names it
    assert audit.verify(tmp_path) == []
    event_file(tmp_path, events[1]).unlink()
    assert audit.verify(tmp_path) == [
        f"{audit.describe(events[2])} follows event {events[1].hash[:12]}, which is missing (removed?)"
    ]


def test_a_renamed_a_linked_and_a_stray_file_are_named(tmp_path: Path) -> None:
    events = fill(tmp_path, 2)
    folder = tmp_path / EVENTS
    event_file(tmp_path, events[0]).rename(folder / f"{'a' * 64}.json")
    (folder / "notes.txt").write_text("hi")
    (folder / f"{'b' * 64}.json").symlink_to(event_file(tmp_path, events[1]))
    (folder / ".x.json.tmp").write_text("half")  # a killed append's temporary file: skipped
    problems = audit.verify(tmp_path)
    assert problems[0].startswith(f"audit/events/{'a' * 64}.json holds event {events[0].hash[:12]}")
    assert (
        problems[1] == f"audit/events/{'b' * 64}.json is not an event file (a plain file named <sha256>.json)"
    )
    assert problems[2] == "audit/events/notes.txt is not an event file (a plain file named <sha256>.json)"
    assert problems[3].endswith(f"follows event {events[0].hash[:12]}, which is missing (removed?)")


def test_a_half_written_event_is_refused_not_repaired(tmp_path: Path) -> None:
    events = fill(tmp_path, 2)
    path = event_file(tmp_path, events[1])
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(AuditError, match=r"is not a valid event: .*\(half-written, or edited\?\)"):
        audit.read(tmp_path)
    with pytest.raises(AuditError, match="synthreg log --verify"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})


def test_a_killed_appends_temporary_file_is_removed_by_the_next_append(tmp_path: Path) -> None:
    fill(tmp_path, 1)
    stray = tmp_path / EVENTS / f".{'c' * 64}.json.abc.tmp"
    stray.write_text('{"kind":')
    assert audit.verify(tmp_path) == []
    audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert not stray.exists()


def test_the_old_chain_is_read_as_it_stands_and_migrated_byte_for_byte(tmp_path: Path) -> None:
    lines = old_chain(4)
    (tmp_path / LEGACY).parent.mkdir()
    (tmp_path / LEGACY).write_bytes(b"".join(lines))
    old = audit.read(tmp_path)
    assert [e.seq for e in old] == [0, 1, 2, 3] and audit.verify(tmp_path) == []
    assert audit.head(tmp_path).heads == [old[-1].hash]
    new = audit.append(tmp_path, "train", "x", {}, actor="alice")  # the first append migrates
    assert not (tmp_path / LEGACY).exists()
    for raw, e in zip(lines, old, strict=True):
        assert event_file(tmp_path, e).read_bytes() == raw
    assert new.parents == [old[-1].hash]
    assert audit.read(tmp_path) == [*old, new] and audit.verify(tmp_path) == []
    assert audit.migrate(tmp_path) == 0


def test_a_damaged_old_chain_is_not_migrated(tmp_path: Path) -> None:
    lines = old_chain(3)
    (tmp_path / LEGACY).parent.mkdir()
    (tmp_path / LEGACY).write_bytes(b"".join(lines)[:-10])
    with pytest.raises(AuditError, match=r"audit/events.jsonl cannot be migrated .*line 3 .*half-written"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert (tmp_path / LEGACY).read_bytes() == b"".join(lines)[:-10] and not any(
        (tmp_path / EVENTS).iterdir()
    )


def test_old_chain_faults_are_named_by_seq(tmp_path: Path) -> None:
    lines = old_chain(5)
    (tmp_path / LEGACY).parent.mkdir()
    (tmp_path / LEGACY).write_bytes(b"".join(lines[:2] + lines[3:]))
    [dropped] = audit.verify(tmp_path)
    third = json.loads(lines[2])
    assert dropped.endswith(f"follows event {third['hash'][:12]}, which is missing (removed?)")
    assert "(seq 3, generate data/" in dropped


def test_a_symlinked_events_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / EVENTS).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="audit/events is a symbolic link"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert not any((tmp_path / "elsewhere").iterdir())


def _appender(ws: str, who: str, n: int, barrier) -> None:
    barrier.wait()  # start together so the appends really interleave
    for i in range(n):
        audit.append(Path(ws), "generate", "data/", {"i": i}, actor=who)


def test_concurrent_appends_all_land_in_one_line(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), f"p{k}", 15, barrier)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    events = audit.read(tmp_path)
    assert len(events) == 30 and audit.verify(tmp_path) == []
    assert len(audit.head(tmp_path).heads) == 1  # serialised by the lock: a line, not a fork
    for who in ("p0", "p1"):
        assert [e.details["i"] for e in events if e.actor == who] == list(range(15))


def test_a_forged_events_newline_cannot_forge_a_line_of_log(tmp_path: Path) -> None:
    """Issue 24 family 5: anyone who can write the repository can add an event file; its text is shown
    escaped, one event per line."""
    from typer.testing import CliRunner

    from registry.cli import app

    fill(tmp_path, 1)
    body = {
        "kind": "release",
        "time": "2099-01-01T00:00:00Z",
        "actor": "x\n    9 0000 2099-01-01 00:00:00 release    digits@6.6.6  by Mallory",
        "subject": "digits@9.9.9\r",
        "details": {},
        "parents": audit.head(tmp_path).heads,
    }
    body["hash"] = audit.content_hash(body)
    (tmp_path / EVENTS / f"{body['hash']}.json").write_text(
        json.dumps(body, sort_keys=True, separators=(",", ":"))
    )
    out = CliRunner().invoke(app, ["log", "-w", str(tmp_path)]).stdout.splitlines()
    assert len(out) == 2 and "digits@9.9.9\\x0d  by x\\x0a    9 0000" in out[1]
