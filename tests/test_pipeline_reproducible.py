"""The pipeline reproduces its own dvc.lock, and a release made from it travels (issue 9): clone A runs
generate, filter and validate with the real `dvc repro`, commits dvc.lock and releases (pushing to a
local-folder remote); a fresh `git clone` B gets every output with a plain `dvc pull`, `dvc status` is
clean, and B running the three stages again itself leaves dvc.lock byte for byte as A committed it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_yaml
from tests.test_pipeline_dvc import repo, run  # noqa: F401  (`repo` is a fixture)

STAGES = ("generate", "filter", "validate")
WHO = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


def entries(lock: str) -> dict:
    return {s: yaml.safe_load(lock)["stages"][s] for s in STAGES}


@pytest.mark.slow
def test_a_second_clone_pulls_everything_and_reproduces_the_lock(repo: Path, tmp_path: Path):  # noqa: F811
    toy = ["bias.requested-balance", "bias.observed-collapse", "quality.identity-consistency"]
    waivers = [
        {"rule_id": r, "scope": "digits", "reason": "12 toy images", "approver": "qa@example.org"}
        | {"expires": "2099-12-31"}
        for r in toy
    ]
    write_yaml(repo / "waivers.yaml", {"waivers": waivers})
    run(["dvc", "remote", "add", "-q", "-d", "storage", str(tmp_path / "remote")], repo)
    out = run(["dvc", "repro", "validate"], repo)
    assert "Running stage 'validate'" in out
    run(["git", "add", "-A"], repo)
    run(["git", *WHO, "commit", "-q", "-m", "pipeline run"], repo)
    committed = (repo / "dvc.lock").read_text()

    synthreg = str(Path(sys.executable).with_name("synthreg"))
    key = tmp_path / "release.pem"
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_EMAIL": "t@example.org"}
    run([synthreg, "keygen", "--key", str(key)], repo)
    run([synthreg, "release", "digits", "--version", "1.0.0", "--key", str(key)], repo, env)

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
    diff = ["git", "diff", "--stat", "--exit-code", "--", ".", ":!audit/events.jsonl"]
    proc = subprocess.run(diff, cwd=b, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
