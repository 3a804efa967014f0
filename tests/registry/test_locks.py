"""Output-folder locks (registry/core/locks.py): a second `generate` or `filter` into a folder another
process is
writing refuses at once, naming the folder and the holder's pid; a killed holder does not block anyone."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from generators.generate import generate
from registry.core.errors import FolderBusyError
from registry.core.locks import LOCK_NAME, folder_lock
from registry.records.dataset import GenerateParams

HOLD = """
import sys
from pathlib import Path
from registry.core.locks import folder_lock
ws = Path(sys.argv[1])
with folder_lock(ws, ws / sys.argv[2], "generate"), folder_lock(ws, ws / sys.argv[3], "filter"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def holder(ws: Path, *folders: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ws), *folders],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "registry.cli", *args, "-w", str(ws)],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=300,
    )


def busy(folder: str, command: str, pid: int, prefix: str = "error: ") -> str:
    """The refusal as a pattern: it names the holder's pid, host, command and since when."""
    return (
        re.escape(f"{prefix}output folder {folder} is in use by `synthreg {command}` (pid {pid} on host ")
        + re.escape(socket.gethostname())
        + r", since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); "
        + re.escape("wait for it to finish or stop it, then run again")
        + "\n?"
    )


def test_a_second_generate_or_filter_into_a_busy_folder_refuses(workspace: Path):
    ws = workspace
    generate(Path("recipe.yaml"), ws, "data/c", GenerateParams(batch_size=6, shard_size=6))
    before = {p: p.stat().st_mtime_ns for p in (ws / "data/c").rglob("*")}
    hold = holder(ws, "data/c", "data/f")
    try:
        gen = cli(ws, "generate", "recipe.yaml", "--out", "data/c")
        assert (gen.returncode, gen.stdout) == (1, "") and re.fullmatch(
            busy("data/c", "generate", hold.pid), gen.stderr
        )
        filt = cli(ws, "filter", "data/c", "--out", "data/f")
        assert filt.returncode == 1 and re.fullmatch(busy("data/f", "filter", hold.pid), filt.stderr)
        assert not (ws / "data/f/manifest.parquet").exists()
    finally:
        hold.kill()  # SIGKILL: the kernel drops its locks; its lock files stay behind
        hold.communicate()
    assert hold.returncode == -signal.SIGKILL and (ws / "data/f" / LOCK_NAME).is_file()
    assert {p: p.stat().st_mtime_ns for p in (ws / "data/c").rglob("*") if p.name != LOCK_NAME} == before

    with folder_lock(ws, ws / "data/f", "filter"):  # the dead holder blocks nobody
        pass
    assert not (ws / "data/f" / LOCK_NAME).exists()


def test_the_lock_is_released_and_removed_after_a_run_and_on_an_error(tmp_path: Path):
    out = tmp_path / "out"
    with folder_lock(tmp_path, out, "filter"):
        assert (out / LOCK_NAME).is_file()
        with pytest.raises(FolderBusyError) as e, folder_lock(tmp_path, out, "generate"):
            pass  # the same process, another open: refused like anyone else
        assert re.fullmatch(busy("out", "filter", os.getpid(), prefix=""), str(e.value))
    assert not (out / LOCK_NAME).exists()
    with pytest.raises(RuntimeError), folder_lock(tmp_path, out, "filter"):
        raise RuntimeError("boom")
    assert not (out / LOCK_NAME).exists()
    with folder_lock(tmp_path, out, "filter"):  # free again
        pass
