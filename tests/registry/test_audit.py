import itertools
import json
import multiprocessing
from pathlib import Path

import pytest

from registry.store import audit
from registry.store.audit import GENESIS, LOG, AuditError


def fill(ws: Path, n: int = 5) -> list[audit.AuditEvent]:
    kinds = ["generate", "filter", "validate", "release", "waiver", "withdrawal", "keygen"]
    return [
        audit.append(ws, kinds[i % len(kinds)], "digits@1.0.0", {"i": i}, actor="alice") for i in range(n)
    ]


def lines(ws: Path) -> list[str]:
    return (ws / LOG).read_text().splitlines(keepends=True)


def rewrite(ws: Path, new: list[str]) -> None:
    (ws / LOG).write_text("".join(new))


def test_chain_is_valid_and_starts_at_genesis(tmp_path: Path) -> None:
    events = fill(tmp_path)
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert events[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert audit.read(tmp_path) == events
    assert audit.verify(tmp_path) == []


def test_lines_are_canonical_json(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    for line in lines(tmp_path):
        obj = json.loads(line)
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
        assert obj["time"].endswith("Z")


def test_actor_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHREG_ACTOR", "ci-bot")
    assert audit.append(tmp_path, "keygen", "keys/", {}).actor == "ci-bot"


def test_empty_or_missing_log_reads_as_nothing(tmp_path: Path) -> None:
    assert audit.read(tmp_path) == []
    assert audit.verify(tmp_path) == []
    (tmp_path / LOG).parent.mkdir()
    (tmp_path / LOG).touch()
    assert audit.read(tmp_path) == []
    assert audit.verify(tmp_path) == []
    assert audit.append(tmp_path, "generate", "data/", {}).prev_hash == GENESIS


def test_edited_event_is_named(tmp_path: Path) -> None:
    fill(tmp_path)
    old = lines(tmp_path)
    obj = json.loads(old[2])
    obj["actor"] = "mallory"
    old[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
    rewrite(tmp_path, old)
    assert audit.verify(tmp_path) == ["event 2 (line 3): hash does not match its content (edited?)"]


def test_edited_event_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    fill(tmp_path)
    old = lines(tmp_path)
    obj = json.loads(old[2])
    obj["actor"] = "mallory"
    obj["hash"] = audit.content_hash(obj)
    old[2] = json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n"
    rewrite(tmp_path, old)
    (problem,) = audit.verify(tmp_path)
    assert problem.startswith("event 3 (line 4): prev_hash does not match")


def test_deleted_middle_line_is_detected(tmp_path: Path) -> None:
    fill(tmp_path)
    old = lines(tmp_path)
    rewrite(tmp_path, old[:2] + old[3:])
    problems = audit.verify(tmp_path)
    assert problems[0] == "event 3 (line 3): seq is 3, expected 2 (removed or reordered?)"
    assert problems[1].startswith("event 3 (line 3): prev_hash does not match")
    assert len(problems) == 2


def test_swapped_lines_are_detected(tmp_path: Path) -> None:
    fill(tmp_path)
    old = lines(tmp_path)
    old[1], old[2] = old[2], old[1]
    rewrite(tmp_path, old)
    problems = audit.verify(tmp_path)
    assert any(p.startswith("event 2 (line 2): seq is 2, expected 1") for p in problems)
    assert any(p.startswith("event 1 (line 3): prev_hash does not match") for p in problems)


def test_truncated_last_line_is_refused_and_reported(tmp_path: Path) -> None:
    fill(tmp_path)
    data = (tmp_path / LOG).read_bytes()
    (tmp_path / LOG).write_bytes(data[:-40])
    with pytest.raises(AuditError, match=r"\(line 5\) .*half-written.*synthreg log --verify"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert (tmp_path / LOG).read_bytes() == data[:-40]  # refused, not repaired
    (problem,) = audit.verify(tmp_path)
    assert problem.startswith("line 5 of the audit log is half-written")
    with pytest.raises(AuditError, match="line 5"):
        audit.read(tmp_path)


def test_missing_trailing_newline_is_refused(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    data = (tmp_path / LOG).read_bytes()
    (tmp_path / LOG).write_bytes(data[:-1])
    with pytest.raises(AuditError, match="line 2"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})
    assert audit.verify(tmp_path) == [
        "line 2 of the audit log is half-written (no trailing newline) (crash mid-append, or edited?)"
    ]


def test_append_refuses_to_chain_to_an_edited_last_event(tmp_path: Path) -> None:
    fill(tmp_path, 3)
    old = lines(tmp_path)
    old[-1] = old[-1].replace('"alice"', '"mallory"')
    rewrite(tmp_path, old)
    with pytest.raises(AuditError, match=r"\(seq 2\) .* was edited"):
        audit.append(tmp_path, "release", "digits@1.0.0", {})


def test_long_last_line_is_read_across_chunks(tmp_path: Path) -> None:
    fill(tmp_path, 2)
    audit.append(tmp_path, "validate", "digits", {"blob": "x" * 200_000}, actor="alice")
    assert audit.append(tmp_path, "release", "digits", {}, actor="alice").seq == 3
    assert audit.verify(tmp_path) == []


def _appender(ws: str, who: str, n: int, barrier) -> None:
    barrier.wait()  # start together so the appends really interleave
    for i in range(n):
        audit.append(Path(ws), "generate", "data/", {"i": i}, actor=who)


def test_concurrent_appends_all_land_in_order(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), f"p{k}", 25, barrier)) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    events = audit.read(tmp_path)
    assert [e.seq for e in events] == list(range(50))
    assert audit.verify(tmp_path) == []
    for who in ("p0", "p1"):
        assert [e.details["i"] for e in events if e.actor == who] == list(range(25))
