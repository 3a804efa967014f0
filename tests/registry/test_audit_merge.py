"""Issue 20: an audit log that merges by construction, and a tail that is signed or named.

Two copies of one workspace each release a version through the real release, git merges them without a
conflict, ``log --verify`` passes and says what no signature covers; ``log --checkpoint`` then covers
everything. Deleting or editing a covered event fails; a forged or deleted *uncovered* tail event is
named as unsigned, never verified; a forked checkpoint is named. Old chain checkpoints still hold after
the migration."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.records.audit import Checkpoint
from registry.records.signed import WAIVER_TYPE, SignedWaiver
from registry.releases.release import release
from registry.store import audit
from registry.trust.checkpoints import CHECKPOINTS, verify_log
from registry.trust.root import load_trust
from registry.trust.signing import load_signer, sign
from tests.conftest import TrustSetup
from tests.registry.conftest import Built, clone, sh
from tests.registry.test_audit import old_chain

runner = CliRunner()


def verify_json(ws: Path) -> tuple[int, dict]:
    out = runner.invoke(app, ["log", "--verify", "--json", "-w", str(ws)])
    return out.exit_code, json.loads(out.stdout)


def merge(into: Path, other: Path) -> str:
    branch = sh(other, "git", "rev-parse", "--abbrev-ref", "HEAD")
    sh(into, "git", "fetch", "-q", str(other), f"+refs/heads/{branch}:refs/remotes/other/{branch}")
    sh(into, "git", "fetch", "-q", str(other), "+refs/tags/*:refs/tags/*")
    proc = subprocess.run(
        ["git", "merge", "--no-edit", f"other/{branch}"], cwd=into, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def merged(base: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two copies of ``base``, one releasing digits 1.0.0, the other 2.0.0, merged into the first."""
    top = tmp_path_factory.mktemp("merge")
    a, b = clone(base.ws, top / "a"), clone(base.ws, top / "b")
    release("digits", "1.0.0", a, key=base.key)
    release("digits", "2.0.0", b, key=base.key)
    out = merge(a, b)
    assert "CONFLICT" not in out
    return a


def test_two_clones_that_both_released_merge_without_conflict_and_verify(merged: Path, tmp_path: Path):
    ws = clone(merged, tmp_path / "ws")
    assert sh(ws, "git", "status", "--porcelain") == ""
    code, report = verify_json(ws)
    assert code == 0 and report["intact"] and report["problems"] == []
    assert len(report["heads"]) == 2  # each side's last event
    # Each release's own event follows the sign-off that checkpoints the log: unsigned, and said so.
    assert report["uncovered"] == 2 and report["risk"].startswith(f"2 of {report['events']} event(s) are not")
    assert report["uncovered_since"] is not None
    text = runner.invoke(app, ["log", "--verify", "-w", str(ws)]).stdout.splitlines()
    assert text[0].startswith("audit log: intact (") and ", 2 head(s); " in text[0]
    assert text[-1].startswith("unsigned: 2 of ") and "`synthreg log --checkpoint`" in text[-1]

    timeline = runner.invoke(app, ["log", "-w", str(ws)]).stdout.splitlines()
    released = [line for line in timeline if " release " in line]
    assert [line.split()[5] for line in released] == ["digits@1.0.0", "digits@2.0.0"] or [
        line.split()[5] for line in released
    ] == ["digits@2.0.0", "digits@1.0.0"]
    times = [" ".join(line.split()[2:4]) for line in timeline]
    assert times == sorted(times)  # one merged timeline, by time

    signed = runner.invoke(app, ["log", "--checkpoint", "-w", str(ws)])
    assert signed.exit_code == 0, signed.output
    assert signed.stdout.startswith(f"signed a checkpoint over {report['events']} event(s) (2 head(s)) as ")
    assert "2 event(s) newly covered" in signed.stdout and signed.stdout.rstrip().endswith(" committed")
    assert sh(ws, "git", "status", "--porcelain") == ""
    code, after = verify_json(ws)
    assert code == 0 and after["uncovered"] == 0 and after["risk"] is None
    assert runner.invoke(app, ["log", "--verify", "--require-signed", "-w", str(ws)]).exit_code == 0
    assert after["checkpoints"] == report["checkpoints"] + 1
    text = runner.invoke(app, ["log", "--verify", "-w", str(ws)]).stdout.splitlines()
    assert text[-1] == f"signed: all {after['events']} event(s) are covered by a signed checkpoint"
    # The next event joins both branches.
    nxt = audit.append(ws, "train", "digits@1.0.0", {}, actor="Carol")
    assert nxt.parents == sorted(report["heads"])


def _checkpointed(merged: Path, where: Path) -> tuple[Path, list[audit.AuditEvent]]:
    ws = clone(merged, where)
    assert runner.invoke(app, ["log", "--checkpoint", "-w", str(ws)]).exit_code == 0
    return ws, audit.read(ws)


@pytest.mark.parametrize("side", ["1.0.0", "2.0.0"])
def test_a_covered_event_deleted_or_edited_on_either_side_fails(merged: Path, tmp_path: Path, side: str):
    ws, events = _checkpointed(merged, tmp_path / "ws")
    [ev] = [e for e in events if e.kind == "release" and e.subject == f"digits@{side}"]
    path = ws / audit.EVENTS / f"{ev.hash}.json"
    saved = path.read_bytes()
    path.unlink()
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert out.exit_code == 1
    assert f"checkpoints head {ev.hash[:12]}, which the log does not hold" in out.stdout
    path.write_bytes(saved.replace(b'"actor":"Release Tester"', b'"actor":"Mallory"'))
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert (
        out.exit_code == 1
        and f"{audit.describe(ev)}'s hash does not match its content (edited?)" in out.stdout
    )
    assert f"checkpoints head {ev.hash[:12]}, which was edited" in out.stdout

    # An older event, under both sides' checkpoints: its child names it missing, and so does each checkpoint.
    path.write_bytes(saved)
    older = events[3]
    (ws / audit.EVENTS / f"{older.hash}.json").unlink()
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert out.exit_code == 1
    assert f"follows event {older.hash[:12]}, which is missing (removed?)" in out.stdout
    assert f"event {older.hash[:12]} is missing, but the checkpoint " in out.stdout


def test_a_forged_tail_event_is_named_unsigned_and_a_deleted_one_was_shown_as_a_risk(
    merged: Path, tmp_path: Path
):
    ws, _ = _checkpointed(merged, tmp_path / "ws")
    heads = audit.head(ws)
    assert heads is not None
    forged = {
        "kind": "release",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": "Release Tester",
        "subject": "digits@9.9.9",
        "details": {},
        "parents": heads.heads,
    }
    forged["hash"] = audit.content_hash(forged)
    text = json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n"
    (ws / audit.EVENTS / f"{forged['hash']}.json").write_text(text)
    code, report = verify_json(ws)
    # Its hash and parent are valid, so the log alone cannot tell it from a real one; but it claims a
    # release no signed record in the workspace backs: it is named as not signed (issue 24, family 8).
    described = f"event {forged['hash'][:12]} (release digits@9.9.9, {forged['time'][:19]}Z)"
    assert code == 1 and report["uncovered"] == 1 and not report["intact"]
    assert report["uncovered_events"] == [described]
    assert report["problems"] == [
        f"{described} is not signed: no checkpoint covers it and its record is not in the workspace signed "
        "by a key of the trust root (a forged event, or its record deleted: restore it from git)"
    ]
    out = runner.invoke(app, ["log", "--verify", "-w", str(ws)]).stdout
    assert "unsigned: 1 of " in out and "deleting them cannot be detected" in out
    assert "signed: all" not in out and "audit log: 1 problem(s)" in out
    strict = runner.invoke(app, ["log", "--verify", "--require-signed", "-w", str(ws)])
    assert strict.exit_code == 1 and strict.stdout.splitlines()[-1] == (
        "FAIL: --require-signed, and 1 event(s) are unsigned"
    )

    # A real uncovered tail event: the risk is stated while it is there; once deleted, nothing can tell.
    (ws / audit.EVENTS / f"{forged['hash']}.json").unlink()
    tail = audit.append(ws, "train", "digits@1.0.0", {"run_id": "abc"}, actor="Carol")
    code, report = verify_json(ws)
    assert code == 0 and report["uncovered"] == 1 and audit.describe(tail) in report["uncovered_events"]
    (ws / audit.EVENTS / f"{tail.hash}.json").unlink()
    code, report = verify_json(ws)
    assert code == 0 and report["uncovered"] == 0  # the limit the risk line warned of


def test_a_checkpoint_whose_heads_are_absent_is_named(merged: Path, tmp_path: Path):
    """b signs a checkpoint over an event of its own; a copies the checkpoint but not the event."""
    a, b = clone(merged, tmp_path / "a"), clone(merged, tmp_path / "b")
    extra = audit.append(b, "train", "digits@2.0.0", {}, actor="Bob")
    signed = runner.invoke(app, ["log", "--checkpoint", "-w", str(b)])
    assert signed.exit_code == 0, signed.output
    [cp] = (b / CHECKPOINTS).glob("*.dsse.json")
    (a / CHECKPOINTS).mkdir(parents=True)
    shutil.copy(cp, a / CHECKPOINTS / cp.name)
    out = runner.invoke(app, ["log", "--verify", "-w", str(a)])
    assert out.exit_code == 1
    assert (
        f"  the checkpoint {cp.name[:16]} signed by Solo Tester (key {load_signer().public_key.keyid[:16]}) "
        f"checkpoints head {extra.hash[:12]}, which the log does not hold (removed, rewritten, or the "
        "signer's branch not merged: `git merge` it)"
    ) in out.stdout.splitlines()
    (a / CHECKPOINTS / cp.name).unlink()  # git would not overwrite an untracked copy
    merge(a, b)  # the branch merged: the checkpoint lies in the log again
    code, report = verify_json(a)
    assert code == 0 and report["uncovered"] == 0


def _legacy_waiver(ws: Path, key: Path, cp: Checkpoint, tag: str) -> str:
    """A waiver signed before issue 20, whose checkpoint names one event of the old chain."""
    signer = load_signer(key)
    w = SignedWaiver(
        rule_id="bias.requested-balance",
        scope="digits",
        reason="signed over the old chain",
        expires=date(2099, 1, 1),
        approver="Solo Tester",
        keyid=signer.public_key.keyid,
        signed_at=datetime.now(UTC),
        checkpoint=cp,
    )
    payload = json.dumps(w.model_dump(mode="json")).encode()
    name = f"bias.requested-balance--{tag}.dsse.json"
    (ws / "waivers").mkdir(exist_ok=True)
    (ws / "waivers" / name).write_text(json.dumps(sign(payload, signer, WAIVER_TYPE)))
    return name


def test_old_chain_checkpoints_still_hold_after_migration_and_a_forked_one_is_named(
    tmp_path: Path, solo_trust: TrustSetup
):
    lines = old_chain(4)
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "audit").mkdir(parents=True)
    (a / audit.LEGACY).write_bytes(b"".join(lines))
    third = json.loads(lines[2])
    name_a = _legacy_waiver(a, solo_trust.key, Checkpoint(seq=2, hash=third["hash"]), "a")
    trust = load_trust(a)
    before = verify_log(a, trust)
    assert before.intact and (before.covered, before.uncovered, before.not_migrated) == (3, 1, 4)
    audit.migrate(a)
    after = verify_log(a, trust)
    assert after.intact and (after.covered, after.uncovered, after.not_migrated) == (3, 1, 0)

    # b's old chain forked from a's at seq 2 (two histories each signed), then both were migrated and merged.
    other = json.loads(lines[2])
    other["details"] = {"i": "elsewhere"}
    del other["hash"]
    other["hash"] = audit.content_hash(other)
    (b / "audit").mkdir(parents=True)
    (b / audit.LEGACY).write_bytes(
        b"".join(lines[:2]) + json.dumps(other, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    )
    name_b = _legacy_waiver(b, solo_trust.key, Checkpoint(seq=2, hash=other["hash"]), "b")
    audit.migrate(b)
    for p in (b / audit.EVENTS).iterdir():
        shutil.copy(p, a / audit.EVENTS / p.name)
    shutil.copy(b / "waivers" / name_b, a / "waivers" / name_b)
    report = verify_log(a, trust)
    key = solo_trust.keyid[:16]
    first, second = sorted([(third["hash"], name_a), (other["hash"], name_b)])
    assert report.problems == [
        f"forked checkpoint at seq 2 of the old chain: the waiver {first[1]} signed by Solo Tester "
        f"(key {key}) checkpoints {first[0][:12]}; the waiver {second[1]} signed by Solo Tester (key {key}) "
        f"checkpoints {second[0][:12]}"
    ]
    # A chain checkpoint that names an event by a seq it does not have is named too.
    wrong = _legacy_waiver(a, solo_trust.key, Checkpoint(seq=1, hash=third["hash"]), "wrong")
    report = verify_log(a, trust)
    assert (
        f"the waiver {wrong} signed by Solo Tester (key {key}) checkpoints event {third['hash'][:12]} "
        "as seq 1, but it is event "
    ) in report.problems[0]
