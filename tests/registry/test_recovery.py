"""Issue 24, family 9: concurrency and recovery. Two real `generate` or `filter` processes into one folder
serialise (the second refuses, naming the holder's pid, host, command and start); `doctor` judges a
version by its signed state and a staging folder by its journal entry and the release lock, never by a
pid alone; an `approve` killed between its commit and its tag is found and tagged by `doctor --repair`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generators.generate import generate
from registry.cli import app
from registry.core.locks import LOCK_NAME
from registry.records.dataset import GenerateParams
from registry.releases.approve import approve
from registry.releases.release import release
from registry.store import journal
from tests.conftest import TrustSetup
from tests.registry.conftest import ACTOR, Built, clone, sh, tags
from tests.registry.test_trust import make_team

runner = CliRunner()


def start(ws: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "registry.cli", *args, "-w", str(ws)],
        cwd=ws,
        env=os.environ | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_once_locked(proc: subprocess.Popen, lock: Path, timeout: float = 120.0) -> dict:
    """SIGSTOP ``proc`` as soon as ``lock`` names it as the holder (it then holds the flock); its record."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            held = json.loads(lock.read_text() or "null")
        except (OSError, ValueError):
            held = None
        if isinstance(held, dict) and held.get("pid") == proc.pid:
            os.kill(proc.pid, signal.SIGSTOP)
            return held
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.001)
    raise AssertionError(f"{proc.args} never took {lock}")


@pytest.mark.parametrize(
    ("command", "args", "out"),
    [
        ("filter", ["filter", "data/c", "--out", "data/f"], "data/f"),
        ("generate", ["generate", "recipe.yaml", "--out", "data/g"], "data/g"),
    ],
)
def test_two_runs_into_one_folder_serialise_and_the_second_names_the_holder(
    workspace: Path, command: str, args: list[str], out: str
):
    ws = workspace
    generate(Path("recipe.yaml"), ws, "data/c", GenerateParams(batch_size=6, shard_size=6))
    first = start(ws, *args)
    try:
        held = stop_once_locked(first, ws / out / LOCK_NAME)
        assert (held["command"], held["host"]) == (command, socket.gethostname())
        second = start(ws, *args)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 1, err
        assert err.startswith(
            f"error: output folder {out} is in use by `synthreg {command}` (pid {first.pid} "
        )
        assert f"on host {socket.gethostname()}, since {held['since']})" in err
        assert err.endswith("wait for it to finish or stop it, then run again\n")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err  # the holder was not disturbed, and finishes
    assert (ws / out / "manifest.parquet").is_file() and not (ws / out / LOCK_NAME).exists()


# --- doctor judges a version by its signed state ---------------------------------------------------------


def doctor_output(ws: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["doctor", *args, "-w", str(ws)])
    return res.exit_code, res.output


def test_a_candidate_short_of_a_threshold_of_two_is_not_unfinished_and_is_never_tagged(
    fresh: Path, solo_trust: TrustSetup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    team = make_team(tmp_path / "team", solo_trust, approvers=2)
    monkeypatch.setenv("SYNTHREG_TRUST", str(team.trust))
    ws = fresh
    release("digits", "1.0.0", ws, key=team.alice)
    assert approve(ws, "digits@1.0.0", team.bob).met is False  # one approval of two
    for args in ((), ("--repair",)):
        assert doctor_output(ws, *args) == (0, "doctor: nothing to repair\n")
    assert tags(ws) == []
    assert runner.invoke(app, ["list", "-w", str(ws)]).output == (
        "digits: 1.0.0 (candidate, approved by 2 of 3 (releaser 1/1, approver 1/2))\n"
    )
    assert approve(ws, "digits@1.0.0", team.carol).met is True
    assert tags(ws) == ["digits@v1.0.0"] and doctor_output(ws) == (0, "doctor: nothing to repair\n")


def cli(ws: Path, key: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != journal.CRASH_ENV}
    env = base | {"SYNTHREG_SIGNING_KEY": str(key), "SYNTHREG_ACTOR": ACTOR} | env
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args, "-w", str(ws)],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("journalled", [True, False], ids=["journal-kept", "journal-lost"])
def test_an_approve_killed_before_its_tag_is_found_and_tagged_by_doctor(
    base: Built, solo_trust: TrustSetup, tmp_path: Path, journalled: bool
):
    """Bob's approval meets the threshold and is committed; SIGKILL comes before the tag. `doctor` finds
    the untagged final version (from its journal entry, or, with the entry lost, from the signed state),
    and `--repair` tags the commit that holds the sign-offs: final in `list`, `verify` passes."""
    team = make_team(tmp_path / "team", solo_trust)
    env = {"SYNTHREG_TRUST": str(team.trust)}
    ws = clone(base.ws, tmp_path / "ws")
    assert cli(ws, team.alice, ["release", "digits", "--version", "1.0.0"], env).returncode == 0
    killed = cli(ws, team.bob, ["approve", "digits@1.0.0"], env | {journal.CRASH_ENV: "before:tag"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert tags(ws) == [] and journal.pending(ws) == [("approve", "digits@1.0.0")]
    if not journalled:
        journal.entry_path(ws, "approve", "digits@1.0.0").unlink()
    found = (
        "journal: unfinished approve of digits@1.0.0" if journalled else "untagged: digits@1.0.0 has no tag"
    )
    res = cli(ws, team.bob, ["doctor"], env)
    assert res.returncode == 1 and res.stdout.startswith(f"  {found}"), res.stdout
    res = cli(ws, team.bob, ["doctor", "--repair"], env)
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert tags(ws) == ["digits@v1.0.0"]
    for name in ("signoffs.json", "release.dsse.json"):  # the tag holds both approvals
        at_tag = sh(ws, "git", "show", f"digits@v1.0.0:releases/digits/1.0.0/{name}")
        assert at_tag.strip() == (ws / "releases/digits/1.0.0" / name).read_text().strip()
    assert len(json.loads((ws / "releases/digits/1.0.0/signoffs.json").read_text())) == 2
    listed = cli(ws, team.bob, ["list"], env)
    assert listed.returncode == 0 and "INVALID" not in listed.stdout and "CANDIDATE" not in listed.stdout
    for args in (["verify", "digits@1.0.0"], ["doctor"], ["log", "--verify"]):
        checked = cli(ws, team.bob, args, env)
        assert checked.returncode == 0, (args, checked.stdout, checked.stderr)
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""


# --- stale temporary folders are judged by the journal and by locks, never by a pid alone ------------------


@pytest.fixture
def other_process():
    """A live process that is not synthreg: its pid is what a reused pid looks like."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    yield proc.pid
    proc.kill()
    proc.communicate()


def test_a_staging_folder_whose_pid_another_live_process_took_is_reported_and_removed(
    released_copy: Path, other_process: int
):
    ws = released_copy
    staging = ws / f"releases/digits/.1.1.0.tmp-{other_process}"
    scratch = ws / f".dvc/tmp/{journal.DERIVE_TMP_PREFIX}{other_process}-abc"
    for p in (staging, scratch):
        (p / "data").mkdir(parents=True)
    (scratch / journal.SCRATCH_LOCK).touch()  # a killed derive's lock file: nobody holds it now
    rel = [p.relative_to(ws).as_posix() for p in (staging, scratch)]
    code, out = doctor_output(ws)
    assert code == 1
    assert out.splitlines() == [
        f"  temporary: {rel[0]} (no unfinished operation uses it)",
        f"  temporary: {rel[1]} (no unfinished operation uses it)",
        "doctor: 2 problem(s), 2 left; run `synthreg doctor --repair`",
    ]
    code, out = doctor_output(ws, "--repair")
    assert code == 0 and not staging.exists() and not scratch.exists(), out


HOLD_SCRATCH = """
import sys
from pathlib import Path
from registry.store.journal import scratch_lock
with scratch_lock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_scratch_folder_a_live_derive_holds_is_left_alone_whatever_its_pid(released_copy: Path):
    ws = released_copy
    scratch = ws / f".dvc/tmp/{journal.DERIVE_TMP_PREFIX}99999999-live"  # a dead pid, but its lock is held
    scratch.mkdir(parents=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRATCH, str(scratch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert doctor_output(ws, "--repair") == (0, "doctor: nothing to repair\n")
        assert scratch.is_dir()
    finally:
        holder.kill()
        holder.communicate()
    assert doctor_output(ws, "--repair")[0] == 0 and not scratch.exists()  # its holder died: stale now


# --- family 10: a waiver scope that matches nothing ------------------------------------------------------


def test_a_waiver_scope_that_matches_nothing_is_refused_at_waive_and_ignored_by_validate(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    import re

    import registry.releases.waive as waive_module
    from registry.core.errors import PolicyError
    from tests.registry.conftest import validate_ws

    ws = fresh
    args = ("bias.observed-collapse", "dig*", "toy set", date(2099, 1, 1))
    with pytest.raises(PolicyError) as e:
        waive_module.waive(ws, *args, key=base.key)
    assert str(e.value) == (
        "waiver scope 'dig*' is not a dataset name or '*', so it would match no dataset (patterns are not "
        "supported; datasets here: digits): name the dataset, or '*' for every dataset"
    )
    # A waiver signed by a synthreg that still took patterns: validate names it and does not apply it.
    monkeypatch.setattr(waive_module, "DATASET_NAME", re.compile(r".+"))
    path, _ = waive_module.waive(ws, *args, key=base.key)
    report = validate_ws(ws, waivers=None)
    [ignored] = [w for w in report.ignored_waivers if w.source == path.relative_to(ws).as_posix()]
    assert (ignored.scope, ignored.why) == (
        "dig*",
        "its scope 'dig*' is not a dataset name or '*', so it matches no dataset (patterns are not "
        "supported); sign a new one with `synthreg waive --scope NAME`",
    )
    assert all(r.waiver is None or r.waiver.scope != "dig*" for r in report.results)


# --- family 10: a git lock a killed derive left -----------------------------------------------------------

DERIVE = ["derive", "digits@1.0.0", "--version", "1.1.0", "--reason", "licence revoked",
          "--exclude-source", "volunteer-sevens"]  # fmt: skip
HOLD_OPEN = """
import sys
f = open(sys.argv[1], "rb")
print("open", flush=True)
sys.stdin.read()
"""


def test_a_derive_killed_in_git_leaves_an_index_lock_that_recovery_clears_and_only_that(
    released: Built, tmp_path: Path
):
    """A kill of the derive's process group during `git commit` leaves `.git/index.lock` (the crash hook
    stops synthreg just before the step, and the test makes the lock the killed git would leave). While a
    live process holds the file, nothing removes it; an older lock is not the operation's either. Once
    it is stale, the re-run recovers (clearing it), finishes, and everything agrees."""
    ws = clone(released.ws, tmp_path / "ws")
    killed = cli(ws, released.key, DERIVE, {journal.CRASH_ENV: "before:commit"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    entry = journal.read_entry(ws, "derive", "digits@1.1.0")
    assert entry.doing == "commit"
    lock = ws / ".git/index.lock"
    lock.write_bytes(b"")

    os.utime(lock, (entry.state["step_began"] - 60,) * 2)  # made before the step: someone else's
    assert journal.clear_stale_git_lock(ws, entry) is False and lock.exists()
    os.utime(lock, None)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"open\n"
        res = cli(ws, released.key, ["doctor", "--repair"], {})
        assert res.returncode != 0 and "index.lock" in res.stdout + res.stderr, (res.stdout, res.stderr)
        assert lock.exists() and journal.pending(ws) == [("derive", "digits@1.1.0")]
    finally:
        holder.kill()
        holder.communicate()

    again = cli(ws, released.key, DERIVE, {})
    assert again.returncode == 0, again.stderr
    assert not lock.exists() and journal.pending(ws) == []
    assert tags(ws) == ["digits@v1.0.0", "digits@v1.1.0"]
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""
    assert cli(ws, released.key, ["doctor"], {}).stdout == "doctor: nothing to repair\n"
