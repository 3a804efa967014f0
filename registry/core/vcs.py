"""git and dvc, run as programs: the one module that starts either (DVC's ``dvc/scm.py`` plays this part).

    git(ws, "rev-parse", "HEAD")            # stdout, stripped; a failure raises ReleaseError
    run_git(ws, "cat-file", "-e", "HEAD:x") # the finished process, for callers that read the exit code
    dvc(ws, "add", "-q", "releases/d/1.0.0/data")
    run_dvc(ws, "push", target, poll=...)   # the finished process; ``poll()`` while it runs

Everything that reads or writes the repository's history goes through these functions, so a reader can
find every git and dvc call from one place, and a change of how they are run (the ``dvc`` beside this
Python, environment for fast failure) is made once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from registry.core.errors import ReleaseError

POLL_SECONDS = 0.5  # how often run_dvc(poll=...) calls poll while DVC runs


def run_git(ws: Path, *args: str, text: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """``git ARGS`` in ``ws`` (``input`` on its stdin), output captured, whatever its exit code."""
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=text, input=input)


def git(ws: Path, *args: str) -> str:
    """``git ARGS`` in ``ws``: its stdout, stripped; a ReleaseError with git's own message on failure."""
    proc = run_git(ws, *args)
    if proc.returncode != 0:
        shown = " ".join(a.partition("\n")[0] for a in args)  # a commit message by its subject line
        raise ReleaseError(f"`git {shown}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def git_ok(ws: Path, *args: str) -> bool:
    """Whether ``git ARGS`` exits 0 (``cat-file -e``, ``diff --quiet``, ``rev-parse --verify``)."""
    return run_git(ws, *args).returncode == 0


def has_commits(ws: Path) -> bool:
    return git_ok(ws, "rev-parse", "-q", "--verify", "HEAD")


def head(ws: Path) -> str:
    """HEAD's commit id, or ``unknown`` outside a repository or before the first commit."""
    proc = run_git(ws, "rev-parse", "HEAD")
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def tagged(ws: Path, tag: str) -> bool:
    try:
        return bool(git(ws, "tag", "--list", tag))
    except ReleaseError:
        return False


def tag_commit(ws: Path, tag: str) -> str | None:
    """The commit ``refs/tags/TAG`` points at, or None without the tag."""
    proc = run_git(ws, "rev-list", "-n", "1", f"refs/tags/{tag}", "--")
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def user_name(ws: Path) -> str | None:
    """git's ``user.name`` for ``ws``, or None when unset (or git cannot run)."""
    try:
        proc = run_git(ws, "config", "user.name")
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def _dvc_program() -> str:
    """The ``dvc`` installed beside this Python (a virtual environment's), else the one on PATH."""
    dvc = Path(sys.executable).with_name("dvc")
    return str(dvc) if dvc.exists() else "dvc"


def run_dvc(
    ws: Path,
    *args: str,
    env: dict[str, str] | None = None,
    poll: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in ``ws``, output captured, whatever its exit code; ``env`` is added to the
    environment; ``poll()`` every ``POLL_SECONDS`` while it runs."""
    cmd = [_dvc_program(), *args]
    full = {**(env or {}), **os.environ} if env else None
    if poll is None:
        return subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env=full)
    with subprocess.Popen(
        cmd, cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full
    ) as proc:
        while True:
            try:  # retrying communicate() after a timeout loses no output (subprocess docs)
                out, err = proc.communicate(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                poll()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def dvc(ws: Path, *args: str) -> None:
    """``dvc ARGS`` in ``ws``; a ReleaseError with DVC's own message on failure."""
    proc = run_dvc(ws, *args)
    if proc.returncode != 0:
        raise ReleaseError(f"`dvc {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
