"""The real `dvc` on the real dvc.yaml, in a temporary git repo: repro, no-op repro, param change."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, small_recipe, write_yaml


def run(cmd: list[str], cwd: Path) -> str:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for item in ("dvc.yaml", "generators", "policies"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    for cache in tmp_path.rglob("__pycache__"):
        shutil.rmtree(cache)
    recipe = small_recipe()
    recipe["generator"]["path"] = "generators/tiny_digits/model"
    write_yaml(tmp_path / "recipes/small.yaml", recipe)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["recipe"] = "recipes/small.yaml"
    write_yaml(tmp_path / "params.yaml", params)
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    run(["dvc", "config", "core.analytics", "false"], tmp_path)
    return tmp_path


def test_repro_then_nothing_then_only_what_a_param_touches(repo: Path):
    # Up to filter: validate's verdict on a 12-image toy recipe is not what this test is about.
    out = run(["dvc", "repro", "filter"], repo)
    assert "Running stage 'generate'" in out and "Running stage 'filter'" in out
    assert "Running stage 'train_generator'" not in out  # frozen: weights are committed
    assert (repo / "data/digits/filtered/manifest.parquet").is_file()

    out = run(["dvc", "repro", "filter"], repo)
    assert "Running stage" not in out

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["filter"]["identity_threshold"] = 0.95
    write_yaml(repo / "params.yaml", params)
    out = run(["dvc", "repro", "filter"], repo)
    assert "Running stage 'filter'" in out
    assert "Running stage 'generate'" not in out


def test_a_failing_policy_stops_dvc_repro_at_validate(repo: Path):
    recipe = yaml.safe_load((repo / "recipes/small.yaml").read_text())
    recipe["sources"].append({"name": "DukeMTMC-reID", "licence": "CC-BY-NC-SA-4.0", "role": "conditioning"})
    write_yaml(repo / "recipes/small.yaml", recipe)
    shutil.copy(REPO / "policies/withdrawn.yaml", repo / "policies/withdrawn.yaml")
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Running stage 'validate'" in out
    assert "fail   sources.not-withdrawn: withdrawn source used: DukeMTMC-reID" in out
    assert "exited with 3" in out, out  # POLICY_FAILED_EXIT, as DVC reports it
    # The report is written even though the stage failed: the evidence is there to read.
    assert (repo / "data/digits/policy/report.json").is_file()
