"""Transactional publishing (registry/store/journal.py): SIGKILL at every step of release, derive and
withdraw,
then the version is fully there or not at all, readers agree, and re-running the command succeeds;
`synthreg doctor` reports and repairs leftovers.

The crash test runs the real CLI in a subprocess with the test hook ``SYNTHREG_CRASH_AT=before:STEP`` or
``after:STEP`` (registry.store.journal.crashpoint), which SIGKILLs the process there. Every point is run under
``-m slow``; the default run keeps a subset that covers roll-back, roll-forward and an audit event
appended but not yet journalled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import WITHDRAWN_EXIT, ReleaseError
from registry.releases.publish import PUBLISH_STEPS
from registry.store import audit, journal
from registry.store.releases import versions
from registry.trust.withdrawals import is_withdrawn
from tests.registry.conftest import ACTOR, DVC, Built, clone, folder, sh, strays, tags

runner = CliRunner()
WITHDRAW_STEPS = ("record", "audit", "commit", "tag")
# Run by default: roll back (stage not journalled), roll forward past a logged-but-unjournalled audit
# event, a rename and a tag left to do; a withdrawal killed before and after its audit event.
FAST = {
    "release": {"after:stage", "after:audit", "before:tag"},
    "derive": {"after:rename"},
    "withdraw": {"after:record", "after:audit"},
}
COMMANDS = {
    "release": ["release", "digits", "--version", "1.0.0"],
    "derive": ["derive", "digits@1.0.0", "--version", "1.1.0", "--reason", "licence revoked",
               "--exclude-source", "volunteer-sevens"],
    "withdraw": ["withdraw", "digits@1.0.0", "--reason", "source withdrawn by its owner"],
}  # fmt: skip


def cli(
    ws: Path, key: Path, args: list[str], crash: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    # No progress lines on a loaded machine (a step over 10 s prints one): stderr is the message alone.
    quiet = {"SYNTHREG_PROGRESS_SECONDS": "100000"}
    env = os.environ | {"SYNTHREG_SIGNING_KEY": str(key), "SYNTHREG_ACTOR": ACTOR} | quiet | (env or {})
    env.pop(journal.CRASH_ENV, None)
    if crash:
        env[journal.CRASH_ENV] = crash
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args, "-w", str(ws)],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def points(op: str, steps: tuple[str, ...]) -> list:
    return [
        pytest.param(op, p, id=f"{op}-{p}", marks=() if p in FAST[op] else pytest.mark.slow)
        for s in steps
        for p in (f"before:{s}", f"after:{s}")
    ]


def leftovers(ws: Path) -> list[str]:
    tmp = ws / ".dvc" / "tmp"
    return [
        *strays(ws),
        *journal.pending(ws),  # type: ignore[list-item]
        *(p.name for p in tmp.glob(f"{journal.DERIVE_TMP_PREFIX}*")),
    ]


def assert_consistent(ws: Path, released: list[str], withdrawn: list[str]) -> None:
    """list, verify, log --verify, doctor, git, tags and the audit log all tell the same story."""
    listed = runner.invoke(app, ["list", "-w", str(ws)])
    status = {v: "solo, withdrawn" if v in withdrawn else "solo" for v in released}  # the solo trust root
    shown = ", ".join(f"{v} ({status[v]})" for v in released)
    assert (listed.exit_code, listed.output) == (0, f"digits: {shown}\n")
    for v in released:
        checked = runner.invoke(app, ["verify", f"digits@{v}", "-w", str(ws)])
        assert checked.exit_code == (WITHDRAWN_EXIT if v in withdrawn else 0), checked.output
        assert (folder(ws, v) / "data.dvc").is_file()
        assert bool(is_withdrawn(ws, "digits", v)) == (v in withdrawn)
    log = runner.invoke(app, ["log", "--verify", "-w", str(ws)])
    assert log.exit_code == 0 and log.output.startswith("audit log: intact"), log.output
    doc = runner.invoke(app, ["doctor", "-w", str(ws)])
    assert (doc.exit_code, doc.output) == (0, "doctor: nothing to repair\n")
    marks = [f"withdrawn/digits@v{v}" for v in withdrawn]  # issue 24: a withdrawal leaves a tag too
    assert tags(ws) == sorted([f"digits@v{v}" for v in released] + marks)
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    events = audit.read(ws)
    made = [e.subject for e in events if e.kind in ("release", "derive")]
    assert made == [f"digits@{v}" for v in released]  # each once: no duplicate after a roll-forward
    assert [e.subject for e in events if e.kind == "withdrawal"] == [f"digits@{v}" for v in withdrawn]
    assert leftovers(ws) == []


@pytest.mark.parametrize(
    ("op", "point"),
    points("release", PUBLISH_STEPS) + points("derive", PUBLISH_STEPS) + points("withdraw", WITHDRAW_STEPS),
)
def test_a_kill_at_any_step_leaves_all_or_nothing_and_a_rerun_succeeds(
    op: str, point: str, base: Built, released: Built, tmp_path: Path
):
    ws = clone((base if op == "release" else released).ws, tmp_path / "ws")
    before = {"release": [], "derive": ["1.0.0"], "withdraw": ["1.0.0"]}[op]

    killed = cli(ws, base.key, COMMANDS[op], crash=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # Before any recovery, nothing unfinished counts: the version (or the withdrawal) is not there.
    assert versions(ws, "digits") == before
    assert is_withdrawn(ws, "digits", "1.0.0") is None
    assert journal.pending(ws) != []

    again = cli(ws, base.key, COMMANDS[op])
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith({"release": "released", "derive": "derived", "withdraw": "withdrew"}[op])
    after = {"release": ["1.0.0"], "derive": ["1.0.0", "1.1.0"], "withdraw": ["1.0.0"]}[op]
    assert_consistent(ws, after, ["1.0.0"] if op == "withdraw" else [])


APPROVE_STEPS = ("write", "audit", "commit", "tag")


@pytest.mark.parametrize(
    "point",
    [
        pytest.param(p, marks=() if p in {"after:write", "after:audit"} else pytest.mark.slow)
        for s in APPROVE_STEPS
        for p in (f"before:{s}", f"after:{s}")
    ],
)
def test_a_kill_at_any_step_of_approve_leaves_one_approval_or_none_and_a_rerun_succeeds(
    point: str, base: Built, tmp_path: Path, solo_trust
):
    """A two-person trust root: Alice releases a candidate, Bob's approval is killed at ``point``. Before
    recovery it is still a candidate; re-running the approval succeeds, and afterwards there is exactly
    one approval: one signature and sign-off by Bob, one audit event, one tag, a clean git tree."""
    from tests.registry.test_trust import make_team

    team = make_team(tmp_path / "team", solo_trust)
    env = {"SYNTHREG_TRUST": str(team.trust)}
    ws = clone(base.ws, tmp_path / "ws")
    made = cli(ws, team.alice, COMMANDS["release"], env=env)
    assert made.returncode == 0, made.stderr
    approve = ["approve", "digits@1.0.0"]

    killed = cli(ws, team.bob, approve, crash=point, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert journal.pending(ws) == [("approve", "digits@1.0.0")]

    again = cli(ws, team.bob, approve, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "final: tag digits@v1.0.0"
    assert tags(ws) == ["digits@v1.0.0"]
    assert journal.pending(ws) == []
    assert [e.details["name"] for e in audit.read(ws) if e.kind == "approval"] == ["Bob"]
    envelope = json.loads((folder(ws, "1.0.0") / "release.dsse.json").read_text())
    assert sorted(s["keyid"] for s in envelope["signatures"]) == sorted([team.ids["Alice"], team.ids["Bob"]])
    signoffs = json.loads((folder(ws, "1.0.0") / "signoffs.json").read_text())
    assert len(signoffs) == 2
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    for args in (["verify", "digits@1.0.0"], ["log", "--verify"], ["doctor"]):
        checked = cli(ws, team.bob, args, env=env)
        assert checked.returncode == 0, (args, checked.stdout, checked.stderr)


def test_a_reader_finishes_a_release_killed_after_its_commit(base: Built, tmp_path: Path):
    ws = clone(base.ws, tmp_path / "ws")
    assert cli(ws, base.key, COMMANDS["release"], crash="after:commit").returncode == -signal.SIGKILL
    assert versions(ws, "digits") == [] and tags(ws) == []
    assert_consistent(ws, ["1.0.0"], [])  # `list` recovered first: the signed record was complete
    rerun = cli(ws, base.key, COMMANDS["release"])
    assert (rerun.returncode, rerun.stderr) == (
        1,
        "error: digits@1.0.0 exists already and releases are immutable; pick a new version\n",
    )


def test_doctor_reports_then_rolls_back_a_release_killed_before_its_record_was_complete(
    base: Built, tmp_path: Path
):
    ws = clone(base.ws, tmp_path / "ws")
    killed = cli(ws, base.key, COMMANDS["release"], crash="after:stage")
    assert killed.returncode == -signal.SIGKILL
    (staging,) = strays(ws)
    assert re.fullmatch(r"\.1\.0\.0\.tmp-\d+", staging)
    with pytest.raises(ReleaseError) as e:
        runner_load(ws, "digits@1.0.0")
    assert str(e.value) == (
        "digits@1.0.0 is not released: an interrupted operation on it has not finished; "
        "run `synthreg doctor --repair`"
    )

    report = runner.invoke(app, ["doctor", "-w", str(ws)])
    assert report.exit_code == 1
    assert report.output.splitlines() == [  # the staging folder is the entry's: its roll-back removes it
        "  journal: unfinished release of digits@1.0.0",
        "doctor: 1 problem(s), 1 left; run `synthreg doctor --repair`",
    ]
    as_json = json.loads(runner.invoke(app, ["doctor", "--json", "-w", str(ws)]).output)
    assert as_json["ok"] is False
    kinds = [(f["kind"], f["repaired"]) for f in as_json["findings"]]
    assert kinds == [("journal", False)]
    repaired = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert repaired.exit_code == 0, repaired.output
    assert (
        repaired.output.splitlines()[0]
        == "  journal: unfinished release of digits@1.0.0 (repaired: rolled back)"
    )
    assert not (ws / "releases/digits").exists() or not any((ws / "releases/digits").iterdir())
    assert tags(ws) == [] and leftovers(ws) == []
    assert [e.kind for e in audit.read(ws)].count("release") == 0


def runner_load(ws: Path, ref: str) -> None:
    from registry.store.releases import load_release

    # another process holds the lock, so load_release cannot recover and must refuse
    with journal.lock(ws):
        load_release(ws, ref)


def test_a_failed_commit_after_the_audit_event_is_finished_by_doctor(base: Built, tmp_path: Path):
    ws = clone(base.ws, tmp_path / "ws")
    hook = ws / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'commits are frozen today' >&2\nexit 1\n")
    hook.chmod(0o755)
    failed = cli(ws, base.key, COMMANDS["release"])
    assert failed.returncode == 1
    assert re.fullmatch(
        re.escape(
            "error: release of digits@1.0.0 stopped at step commit: `git commit -q -m Release "
            "digits@1.0.0 -- releases/digits/1.0.0 audit keys/"
        )
        + r"[0-9a-f]{64}\.pub\.json"  # the signer's public key travels with the release commit
        + re.escape(
            "` failed: commits are frozen today. It is recorded in "
            ".dvc/tmp/synthreg-journal/release--digits@1.0.0.json and will be finished by the next synthreg "
            "command; fix the cause and run `synthreg doctor --repair`"
        )
        + "\n",
        failed.stderr,
    ), failed.stderr
    assert versions(ws, "digits") == []
    doc = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert doc.exit_code == 1  # the hook still refuses: reported, not repaired
    assert "cannot be recovered" not in doc.output and "commits are frozen today" in doc.output
    hook.unlink()
    doc = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert doc.exit_code == 0, doc.output
    assert doc.output.splitlines()[0] == "  journal: unfinished release of digits@1.0.0 (repaired: finished)"
    assert_consistent(ws, ["1.0.0"], [])


def test_doctor_reports_versions_no_journal_explains_and_finishes_those_that_verify(
    released: Built, tmp_path: Path
):
    ws = clone(released.ws, tmp_path / "ws")
    sh(ws, "git", "tag", "-d", "digits@v1.0.0")
    sh(ws, "git", "tag", "digits@v9.9.9")
    (ws / ".dvc/tmp/synthreg-derive-99999999-x").mkdir(parents=True)
    copied = folder(ws, "2.0.0")  # an insider's copy of a signed folder under another version
    shutil.copytree(folder(ws, "1.0.0"), copied, ignore=shutil.ignore_patterns("data"))
    hint = "`synthreg doctor --repair` finishes it if it verifies; else remove releases/digits/"
    result = runner.invoke(app, ["doctor", "-w", str(ws)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "  temporary: .dvc/tmp/synthreg-derive-99999999-x (no unfinished operation uses it)",
        f"  untagged: digits@1.0.0 has no tag digits@v1.0.0 ({hint}1.0.0)",
        f"  untracked: releases/digits/2.0.0 is not committed to git ({hint}2.0.0)",
        f"  untagged: digits@2.0.0 has no tag digits@v2.0.0 ({hint}2.0.0)",
        f"  no-audit-event: digits@2.0.0 has no release or derive audit event ({hint}2.0.0)",
        "  tag-without-folder: tag digits@v9.9.9 has no releases/digits/9.9.9 (restore the folder "
        "(`git checkout digits@v9.9.9 -- releases/digits/9.9.9`))",
        "doctor: 6 problem(s), 6 left; run `synthreg doctor --repair`",
    ]
    result = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:2] == [
        "  temporary: .dvc/tmp/synthreg-derive-99999999-x (no unfinished operation uses it) (repaired)",
        "  untagged: digits@1.0.0 has no tag digits@v1.0.0 (repaired: finished)",
    ]
    assert lines[2].startswith(
        "  untracked: releases/digits/2.0.0 is not committed to git (digits@2.0.0 does "
    )
    assert lines[-1] == "doctor: 6 problem(s), 4 left"
    assert not (ws / ".dvc/tmp/synthreg-derive-99999999-x").exists()
    assert tags(ws) == ["digits@v1.0.0", "digits@v9.9.9"] and copied.is_dir()
    assert [e.subject for e in audit.read(ws) if e.kind == "release"] == ["digits@1.0.0"]


def test_doctor_finishes_a_release_killed_before_its_commit_by_a_synthreg_without_journal(
    released: Built, tmp_path: Path
):
    # What a kill between the audit event and the commit left before the journal existed.
    ws = clone(released.ws, tmp_path / "ws")
    sh(ws, "git", "tag", "-d", "digits@v1.0.0")
    sh(ws, "git", "reset", "-q", "--soft", "HEAD~1")
    sh(ws, "git", "reset", "-q")
    assert versions(ws, "digits") == ["1.0.0"]  # shown: nothing says it is unfinished
    result = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert (result.exit_code, result.output.splitlines()) == (
        0,
        [
            "  untracked: releases/digits/1.0.0 is not committed to git (repaired: finished)",
            "  untagged: digits@1.0.0 has no tag digits@v1.0.0 (repaired: finished)",
            "doctor: 2 problem(s), 0 left",
        ],
    )
    assert sh(ws, "git", "log", "-1", "--format=%s") == "Release digits@1.0.0 (finished by synthreg doctor)"
    assert_consistent(ws, ["1.0.0"], [])  # one release event: the one already logged


def test_readers_remove_stale_temporary_folders(released: Built, tmp_path: Path):
    ws = clone(released.ws, tmp_path / "ws")
    stale = [ws / "releases/digits/.1.1.0.tmp-99999999", ws / ".dvc/tmp/synthreg-derive-99999999-abc"]
    # A live pid does not keep a staging folder no journal entry names (issue 24: pids are reused).
    stale.append(ws / f"releases/digits/.1.2.0.tmp-{os.getpid()}")
    held = ws / f".dvc/tmp/synthreg-derive-{os.getpid()}-held"  # a derive using it holds its lock
    for p in [*stale, held]:
        p.mkdir(parents=True)
    with journal.scratch_lock(held):
        assert runner.invoke(app, ["list", "-w", str(ws)]).output == "digits: 1.0.0 (solo)\n"
    assert [p.exists() for p in stale] == [False, False, False] and held.exists()


def test_a_planted_journal_entry_cannot_make_recovery_remove_anything_else(released: Built, tmp_path: Path):
    ws = clone(released.ws, tmp_path / "ws")
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = journal.Entry(
        op="release",
        subject="digits@2.0.0",
        pid=99999999,
        started="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        steps=list(PUBLISH_STEPS),
        state={
            "final": "../../victim",
            "staging": "../../victim",
            "tag": "digits@v1.0.0",
            "tag_existed": False,
        },
    )
    path = ws / journal.JOURNAL / "release--digits@2.0.0.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(planted.model_dump_json())

    assert runner.invoke(app, ["list", "-w", str(ws)]).output == "digits: 1.0.0 (solo)\n"  # a reader goes on
    result = runner.invoke(app, ["doctor", "--repair", "-w", str(ws)])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == (
        f"  journal: unfinished release of digits@2.0.0 (journal entry {path} does not match its name or "
        "names other paths (final, staging, tag); synthreg did not write it: inspect it and delete it)"
    )
    assert victim.is_dir() and tags(ws) == ["digits@v1.0.0"]
    refused = cli(ws, released.key, ["release", "digits", "--version", "3.0.0"])
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: an interrupted release of digits@2.0.0 cannot be recovered: ")


FIXTURES = Path(__file__).parent / "fixtures"


def test_doctor_finishes_a_publish_journalled_by_the_code_before_the_move(tmp_path: Path):
    """Issue 18 moved the publication code (``registry.releases.publish`` became
    ``registry.releases.publish``).
    A release killed after its rename by the code before the move (the fixture, made with
    ``scripts/golden_release.py make OUT --crash-at after:rename`` at 0a35b42) is finished by today's
    ``synthreg doctor --repair``, and then verifies."""
    import tarfile

    with tarfile.open(FIXTURES / "interrupted-publish-0.1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    ws = tmp_path / "ws"
    entry = json.loads(next((ws / journal.JOURNAL).glob("release--*.json")).read_text())
    assert (entry["op"], entry["done"], entry["doing"]) == ("release", ["stage"], "rename")
    sh(ws, DVC, "remote", "modify", "--local", "storage", "url", str(tmp_path / "remote"))
    env = {"SYNTHREG_TRUST": str(tmp_path / "keys" / "trust.yaml")}
    key = tmp_path / "no-key.pem"  # nothing is signed: the record was complete when it was killed
    res = cli(ws, key, ["doctor", "--repair"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "journal: unfinished release of digits@1.0.0 (repaired: finished)" in res.stdout
    assert tags(ws) == ["digits@v1.0.0"] and not list((ws / journal.JOURNAL).glob("*.json"))
    res = cli(ws, key, ["verify", "digits@1.0.0"], env=env)
    assert res.returncode == 0 and "digits@1.0.0: OK (12 samples in 6 shards)" in res.stdout, res.stdout


def test_a_scratch_folder_named_for_no_possible_process_is_left_over_not_a_crash(tmp_path: Path):
    """A derive scratch folder without a lock file is judged by the pid in its name; one whose number no
    process can have (anyone with write access may make such a folder) made os.kill overflow, and doctor
    and recovery crashed on it. It is left over, as one of a process that is gone."""
    from registry.core import processes

    tmp = tmp_path / ".dvc" / "tmp"
    huge = tmp / f"{journal.DERIVE_TMP_PREFIX}{10**30}-x"
    huge.mkdir(parents=True)
    assert journal.stale_temporaries(tmp_path) == [huge]
    assert not processes.running(10**30) and processes.running(os.getpid())
