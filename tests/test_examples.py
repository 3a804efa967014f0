"""The example scripts behave like command-line tools (issue 19: `make_tiny_pipeline.py --help` wrote a
pipeline into a folder named `--help`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SCRIPT = REPO / "examples" / "make_tiny_pipeline.py"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True)


def test_help_prints_usage_and_writes_nothing(tmp_path: Path) -> None:
    out = run(tmp_path, "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: make_tiny_pipeline.py")
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_option_is_a_usage_error_and_a_full_folder_is_kept(tmp_path: Path) -> None:
    out = run(tmp_path, "--nope")
    assert out.returncode == 2 and "unrecognized arguments: --nope" in out.stderr
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "models" / "tiny-sd"
    kept.mkdir(parents=True)
    (kept / "mine.txt").write_text("mine")
    out = run(tmp_path)
    assert out.returncode == 1 and "already holds files; pass --force" in out.stderr
    assert [p.name for p in kept.iterdir()] == ["mine.txt"]
