"""A release made today equals, file by file, the golden release, except for signatures, key ids, times
and commits (``scripts/golden_release.py``; the golden folder is ``fixtures/golden-release-0.6.tar.gz``,
made when the digits domain's scores were rounded to be the same on every CPU, after issues 19, 21 and 23
changed the record; 0.1 was made before issue 18's move). The maker drives only the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "golden_release.py"


@pytest.mark.slow
def test_a_release_made_now_equals_the_golden_one(tmp_path: Path):
    with tarfile.open(Path(__file__).parent / "fixtures" / "golden-release-0.6.tar.gz") as tar:
        tar.extractall(tmp_path / "golden", filter="data")
    # The maker's own workspace store: an MLflow store another test left in the environment (MLflow's
    # set_tracking_uri exports MLFLOW_TRACKING_URI) would put its models in the release's report.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    made = subprocess.run(
        [sys.executable, str(SCRIPT), "make", str(tmp_path / "now")], capture_output=True, text=True, env=env
    )
    assert made.returncode == 0, made.stdout + made.stderr
    now = Path(made.stdout.strip().splitlines()[-1])
    compared = subprocess.run(
        [sys.executable, str(SCRIPT), "compare", str(tmp_path / "golden" / "1.0.0"), str(now)],
        capture_output=True,
        text=True,
    )
    assert compared.returncode == 0, compared.stdout


def test_the_comparison_sees_a_changed_file(tmp_path: Path):
    """The comparison is not blind: one byte of the card changed is a difference."""
    with tarfile.open(Path(__file__).parent / "fixtures" / "golden-release-0.6.tar.gz") as tar:
        tar.extractall(tmp_path / "a", filter="data")
        tar.extractall(tmp_path / "b", filter="data")
    card = tmp_path / "b" / "1.0.0" / "card.md"
    card.write_text(card.read_text().replace("digits", "digitz", 1))
    compared = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "compare",
            str(tmp_path / "a" / "1.0.0"),
            str(tmp_path / "b" / "1.0.0"),
        ],
        capture_output=True,
        text=True,
    )
    assert compared.returncode == 1 and "differs: card.md" in compared.stdout


def test_the_comparison_masks_the_release_day_and_nothing_else_of_the_report(tmp_path: Path):
    """A release made on another day dates its lineage row by that day (CI runs on any day); any other
    change to the report is still a difference."""
    with tarfile.open(Path(__file__).parent / "fixtures" / "golden-release-0.6.tar.gz") as tar:
        for side in ("a", "b", "c"):
            tar.extractall(tmp_path / side, filter="data")
    compare = [sys.executable, str(SCRIPT), "compare", str(tmp_path / "a" / "1.0.0")]
    report = tmp_path / "b" / "1.0.0" / "report.html"
    text = report.read_text()
    row = re.search(r"<td>digits@1\.0\.0</td><td>(\d{4}-\d{2}-\d{2})</td>", text)
    assert row is not None
    report.write_text(text.replace(row.group(0), row.group(0).replace(row.group(1), "2031-01-02")))
    same = subprocess.run([*compare, str(tmp_path / "b" / "1.0.0")], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout
    other = tmp_path / "c" / "1.0.0" / "report.html"
    other.write_text(other.read_text().replace("No model is known", "No model is said"))
    differs = subprocess.run([*compare, str(tmp_path / "c" / "1.0.0")], capture_output=True, text=True)
    assert differs.returncode == 1 and "differs: report.html" in differs.stdout
