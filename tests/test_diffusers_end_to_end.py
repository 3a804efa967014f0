"""A second dataset beside digits, as the README walks it (issue 19): `synthreg init pets` on a tiny
random-weight diffusers pipeline, then `dvc repro validate@pets` (the dataset's own DVC stages, made by
DVC's foreach over params.yaml's datasets), commit, release, train, trace and impact. Nothing of digits'
configuration is edited, no manifest is committed to git, and no waiver is needed. Then the default
digits dataset, beside it with its own settings, is released, trained and traced in the same workspace.

The pets dataset has no real source, so `train` trains on synthetic images alone and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, write_yaml

BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
runner = CliRunner()
# The README's command, word for word.
INIT = (  # noqa: SIM905
    "init pets --identity cat --identity dog --attribute setting=indoor,outdoor --generator models/pets-sd "
    "--generator-licence CreativeML-OpenRAIL-M --licence CC-BY-4.0 --use research --use training-a-model "
    "--size 32 --steps 2 --guidance 1.0 --images-per-identity 8"
).split()


def sh(cwd: Path, *cmd: str) -> str:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def cli(ws: Path, *args: str) -> str:
    result = runner.invoke(app(), [*args, "-w", str(ws)])
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


def app():
    from registry.cli import app

    return app


@pytest.mark.slow
def test_a_second_dataset_from_init_to_a_traced_model(tmp_path: Path, monkeypatch) -> None:
    from generators.tiny_sd import save_tiny_sd_pipeline

    ws = tmp_path / "ws"
    ws.mkdir()
    for item in ("dvc.yaml", "params.yaml", ".dvcignore", "recipes/digits.yaml", "generators", "policies"):
        (ws / item).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, ws / item)
    for item in ("registry/downstream/train.py", "registry/downstream/track.py"):  # train's DVC deps
        (ws / item).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / item, ws / item)
    for cache in ws.rglob("__pycache__"):
        shutil.rmtree(cache)
    digits_before = yaml.safe_load((ws / "params.yaml").read_text())["datasets"]["digits"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    sh(ws, "git", "init", "-q")
    for k, v in {"user.name": "E2E", "user.email": "e2e@example.org", "commit.gpgsign": "false"}.items():
        sh(ws, "git", "config", k, v)
    sh(ws, DVC, "init", "-q")
    sh(ws, DVC, "config", "core.analytics", "false")
    sh(ws, DVC, "remote", "add", "-q", "-d", "storage", str(tmp_path / "remote"))
    (ws / ".gitignore").write_text("/models/\n")
    save_tiny_sd_pipeline(ws / "models" / "pets-sd")

    out = cli(ws, *INIT)
    assert "wrote recipes/pets.yaml" in out and "wrote policies/packs/pets.yaml" in out
    # The pets dataset's own settings: noise from random weights is low-contrast; a tiny train.
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["datasets"]["pets"]["filter"]["min_contrast"] = 0.0
    params["datasets"]["pets"]["train"] |= {"train_size": 16, "epochs": 1, "threads": 1}
    write_yaml(ws / "params.yaml", params)
    assert "generate@pets" in sh(ws, DVC, "stage", "list")

    out = sh(ws, DVC, "repro", "validate@pets")
    for stage in ("generate@pets", "filter@pets", "validate@pets"):
        assert f"Running stage '{stage}'" in out
    assert "@digits" not in out  # only the dataset asked for
    report = json.loads((ws / "data/pets/policy/report.json").read_text())
    status = {r["rule_id"]: r["status"] for r in report["results"]}
    assert report["passed"] and "fail" not in status.values() and "waived" not in status.values()
    assert status["bias.setting.requested-balance"] == "pass"
    assert status["bias.setting.observed-balance"] == "not run"  # no attribute classifier: never a pass
    assert status["quality.identity-consistency"] == "not run"
    assert status["leakage.eval-split"] == "not applicable"
    assert "bias.requested-balance" not in status  # the digits pack's stroke rules are not pets'

    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "pets: a second dataset")
    assert "data/pets/filtered/manifest.parquet" not in sh(ws, "git", "ls-files")  # in dvc.lock only
    cli(ws, "release", "pets", "--version", "1.0.0")  # the session's key ($SYNTHREG_SIGNING_KEY)

    result = runner.invoke(app(), ["train", "--dataset", "pets@1.0.0", "-w", str(ws)])  # pets' settings
    assert result.exit_code == 0, result.output
    assert "warning: no real source for pets@1.0.0: trained on synthetic images only" in result.output
    assert "evaluated on held-out synthetic split (3 images of pets@1.0.0, not used for training)" in (
        result.output
    )
    assert "model pets-classifier/1" in result.stdout  # named after the dataset
    assert (ws / "data/pets/train/metrics.json").is_file() and not (ws / "data/digits").exists()

    trace = json.loads(cli(ws, "trace", "model", "pets-classifier/latest", "--json"))
    (d,) = trace["datasets"]
    assert d["release"] == "pets@1.0.0" and d["digest_matches"]
    assert [(g["name"], g["backend"]) for g in d["generators"]] == [("pets-sd", "diffusers")]
    assert trace["run"]["params"]["real_source"] == "none"
    assert d["drawn"]["count"] == 16  # 13 trained on + 3 held out

    weights = d["generators"][0]["weights_digest"]
    impact = json.loads(cli(ws, "impact", "--generator", weights[:12], "--json"))
    assert [v["release"] for v in impact["versions"]] == ["pets@1.0.0"]
    assert [(m["name"], m["version"]) for m in impact["model_versions"]] == [("pets-classifier", "1")]
    indoor = json.loads(cli(ws, "impact", "--prompt", "indoor", "--json"))
    [hit] = indoor["versions"]
    assert len(hit["sample_ids"]) == hit["samples"] == 8
    from registry.store import audit

    events = audit.read(ws)
    assert events[-1].kind == "train" and events[-1].subject == "pets-classifier/1"
    assert yaml.safe_load((ws / "params.yaml").read_text())["datasets"]["digits"] == digits_before

    # The default dataset beside it, with its own unedited settings: released, trained, traced.
    out = sh(ws, DVC, "repro", "validate@digits")
    assert "Running stage 'generate@digits'" in out and "@pets" not in out
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "digits")
    cli(ws, "release", "digits", "--version", "1.0.0")
    result = runner.invoke(app(), ["train", "--dataset", "digits@1.0.0", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "trained on digits@1.0.0: 50 real + 500 synthetic images" in result.output  # digits' settings
    assert "model digits-classifier/1" in result.stdout
    digits = json.loads((ws / "data/digits/train/metrics.json").read_text())
    pets = json.loads((ws / "data/pets/train/metrics.json").read_text())  # not overwritten by digits
    assert (digits["n_real"], digits["n_synthetic"], pets["n_real"], pets["n_synthetic"]) == (50, 500, 0, 13)
    for name, ref in (("digits", "digits@1.0.0"), ("pets", "pets@1.0.0")):  # strings beside the numbers
        assert json.loads((ws / f"data/{name}/train/run-info.json").read_text())["dataset"] == ref
    trace = json.loads(cli(ws, "trace", "model", "digits-classifier/latest", "--json"))
    assert [d["release"] for d in trace["datasets"]] == ["digits@1.0.0"]
    listed = cli(ws, "list")
    assert "pets" in listed and "digits" in listed
