"""The pipeline reproduces its own dvc.lock, and a release made from it travels (issue 9): clone A runs
generate, filter and validate with the real `dvc repro`, commits dvc.lock and releases (pushing to a
local-folder remote); a fresh `git clone` B gets every output with a plain `dvc pull`, `dvc status` is
clean, and B running the three stages again itself leaves dvc.lock byte for byte as A committed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline_dvc import repo, run  # noqa: F401  (`repo` is a fixture)

STAGES = ("generate@digits", "filter@digits", "validate@digits")  # DVC foreach stages (issue 19)
WHO = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


def entries(lock: str) -> dict:
    return {s: yaml.safe_load(lock)["stages"][s] for s in STAGES}


@pytest.mark.slow
def test_a_second_clone_pulls_everything_and_reproduces_the_lock(repo: Path, tmp_path: Path):  # noqa: F811
    # The toy recipe fails rules a real dataset passes (too few images); waive them, as a team would:
    # signed by the session's solo key (tests/conftest.py), an approver of the pinned trust root.
    from registry.releases.waive import waive

    toy = ["bias.requested-balance", "bias.observed-collapse", "quality.identity-consistency"]
    for k, v in {"user.name": "t", "user.email": "t@example.org", "commit.gpgsign": "false"}.items():
        run(["git", "config", k, v], repo)  # waive commits the signed waiver
    for r in toy:
        waive(repo, r, "digits", "12 toy images", date(2099, 12, 31))
    run(["dvc", "remote", "add", "-q", "-d", "storage", str(tmp_path / "remote")], repo)
    out = run(["dvc", "repro", "validate"], repo)
    assert "Running stage 'validate@digits'" in out
    run(["git", "add", "-A"], repo)
    run(["git", *WHO, "commit", "-q", "-m", "pipeline run"], repo)
    committed = (repo / "dvc.lock").read_text()

    synthreg = str(Path(sys.executable).with_name("synthreg"))
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_EMAIL": "t@example.org"}
    run([synthreg, "release", "digits", "--version", "1.0.0"], repo, env)  # the session's solo key

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(repo), str(b)], tmp_path)
    run(["dvc", "pull"], b)  # the pipeline's outputs and the release: all pushed by `synthreg release`
    assert "Data and pipelines are up to date" in run(["dvc", "status", *STAGES], b)
    run([synthreg, "verify", "digits@1.0.0"], b)

    for stage in STAGES:  # made again in B, one stage at a time (never the frozen train_generator)
        out = run(["dvc", "repro", "--force", "--single-item", stage], b)
        assert f"Running stage '{stage}'" in out
    assert entries((b / "dvc.lock").read_text()) == entries(committed)
    # dvc.lock, report.json/md, filter.json, filter-info.json, provenance.gx.json unchanged; only the
    # audit log grew
    diff = ["git", "diff", "--stat", "--exit-code", "--", ".", ":!audit"]
    proc = subprocess.run(diff, cwd=b, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
