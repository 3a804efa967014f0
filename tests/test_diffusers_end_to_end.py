"""The diffusers path end to end, through the CLI, on the tiny random-weight pipeline and the shipped
recipe (recipes/tiny-sd.yaml): generate -> filter -> validate -> release -> train -> trace -> impact.

The pets dataset has no real source, so `train` trains on synthetic images alone and says so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, write_yaml

DVC = str(Path(sys.executable).parent / "dvc")
runner = CliRunner()
# Error rules the tiny pipeline's 16 noise images fail: no identity classifier for pets (so no
# consistency measured, no observed attributes); waived here, as a reviewer would for a demo set.
WAIVED = ["bias.requested-balance", "bias.observed-collapse", "quality.identity-consistency"]


def sh(cwd: Path, *cmd: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"


def cli(ws: Path, *args: str) -> str:
    result = runner.invoke(app(), [*args, "-w", str(ws)])
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.stdout


def app():
    from registry.cli import app

    return app


@pytest.mark.slow
def test_generate_filter_validate_release_train_trace_impact(tmp_path: Path, monkeypatch) -> None:
    from generators.tiny_sd import save_tiny_sd_pipeline

    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    sh(ws, "git", "init", "-q")
    for k, v in {"user.name": "E2E", "user.email": "e2e@example.org", "commit.gpgsign": "false"}.items():
        sh(ws, "git", "config", k, v)
    sh(ws, DVC, "init", "-q")
    save_tiny_sd_pipeline(ws / "models" / "tiny-sd")
    shutil.copy(REPO / "recipes" / "tiny-sd.yaml", ws / "recipe.yaml")
    for part in ("policies/packs/default.yaml", "policies/licenses.yaml"):
        (ws / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / part, ws / part)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["recipe"] = "recipe.yaml"
    params["generate"] |= {"batch_size": 8, "shard_size": 8, "threads": 1}
    params["filter"]["min_contrast"] = 0.0  # noise from random weights is low-contrast
    params["train"] |= {"dataset": "pets@1.0.0", "train_size": 16, "epochs": 1, "threads": 1, "metrics": None}
    write_yaml(ws / "params.yaml", params)
    write_yaml(
        ws / "waivers.yaml",
        {
            "waivers": [
                {
                    "rule_id": r,
                    "scope": "pets",
                    "reason": "16 noise images from a random-weight demo pipeline",
                    "approver": "qa@example.org",
                    "expires": "2099-12-31",
                }
                for r in WAIVED
            ]
        },
    )

    cli(ws, "generate")
    assert "16/16 accepted" in cli(ws, "filter", "data/pets/candidates")
    assert cli(ws, "validate", "data/pets/filtered").splitlines()[-1].startswith("PASSED")
    cli(ws, "keygen", "--key", str(tmp_path / "key.pem"))
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "pets")
    cli(ws, "release", "pets", "--version", "1.0.0", "--key", str(tmp_path / "key.pem"))

    result = runner.invoke(app(), ["train", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "warning: no real source for pets@1.0.0: trained on synthetic images only" in result.output
    assert "evaluated on held-out synthetic split (3 images of pets@1.0.0, not used for training)" in (
        result.output
    )
    assert "model pets-classifier/1" in result.stdout  # named after the dataset

    trace = json.loads(cli(ws, "trace", "model", "pets-classifier/latest", "--json"))
    (d,) = trace["datasets"]
    assert d["release"] == "pets@1.0.0" and d["digest_matches"]
    assert [(g["name"], g["backend"]) for g in d["generators"]] == [("tiny-sd", "diffusers")]
    assert trace["run"]["params"]["real_source"] == "none"
    assert d["drawn"]["count"] == 16  # 13 trained on + 3 held out

    weights = d["generators"][0]["weights_digest"]
    impact = json.loads(cli(ws, "impact", "--generator", weights[:12], "--json"))
    assert [v["release"] for v in impact["versions"]] == ["pets@1.0.0"]
    assert [(m["name"], m["version"]) for m in impact["model_versions"]] == [("pets-classifier", "1")]
    events = [json.loads(line) for line in (ws / "audit/events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "train" and events[-1]["subject"] == "pets-classifier/1"
