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
from pathlib import Path

import pytest

from generators.generate import generate
from registry.core.locks import LOCK_NAME
from registry.records.dataset import GenerateParams


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
