"""The real `dvc` on the real dvc.yaml, in a temporary git repo: repro, no-op repro, param change, a failing
policy stopping the pipeline, and `dvc exp run -S` sweeping the synthetic share of the train stage, with
numbers-only metrics in `dvc exp show` and `dvc metrics show`, and the per-class and mix plots drawn."""

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, small_recipe, write_yaml


def non_numbers(tree: object, at: str = "") -> list[str]:
    """Where ``tree`` (JSON) holds a leaf that is not a number: strings, booleans, nulls, by key path."""
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in non_numbers(v, f"{at}.{k}" if k != "data" else at)]
    if isinstance(tree, list):
        return [p for i, v in enumerate(tree) for p in non_numbers(v, f"{at}[{i}]")]
    return [] if isinstance(tree, int | float) and not isinstance(tree, bool) else [f"{at}={tree!r}"]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    path = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=os.environ | path | (env or {}), capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for item in ("dvc.yaml", "generators", "policies", "registry"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    for cache in tmp_path.rglob("__pycache__"):
        shutil.rmtree(cache)
    recipe = small_recipe()
    recipe["generator"]["path"] = "generators/tiny_digits/model"
    write_yaml(tmp_path / "recipes/small.yaml", recipe)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["digits"]["recipe"] = "recipes/small.yaml"
    write_yaml(tmp_path / "params.yaml", params)
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    run(["dvc", "config", "core.analytics", "false"], tmp_path)
    return tmp_path


def test_repro_then_nothing_then_only_what_a_param_touches(repo: Path):
    # Up to filter: validate's verdict on a 12-image toy recipe is not what this test is about.
    out = run(["dvc", "repro", "filter"], repo)  # every dataset's filter stage: here, filter@digits
    assert "Running stage 'generate@digits'" in out and "Running stage 'filter@digits'" in out
    assert "Running stage 'train_generator'" not in out  # frozen: weights are committed
    assert (repo / "data/digits/filtered/manifest.parquet").is_file()

    out = run(["dvc", "repro", "filter"], repo)
    assert "Running stage" not in out

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["digits"]["filter"]["identity_threshold"] = 0.95
    write_yaml(repo / "params.yaml", params)
    out = run(["dvc", "repro", "filter"], repo)
    assert "Running stage 'filter@digits'" in out
    assert "Running stage 'generate@digits'" not in out


def test_a_failing_policy_stops_dvc_repro_at_validate(repo: Path):
    recipe = yaml.safe_load((repo / "recipes/small.yaml").read_text())
    recipe["sources"].append({"name": "DukeMTMC-reID", "licence": "CC-BY-NC-SA-4.0", "role": "conditioning"})
    write_yaml(repo / "recipes/small.yaml", recipe)
    shutil.copy(REPO / "policies/withdrawn.yaml", repo / "policies/withdrawn.yaml")
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Running stage 'validate@digits'" in out
    assert "fail   sources.not-withdrawn: withdrawn source used: DukeMTMC-reID" in out
    assert "exited with 3" in out, out  # POLICY_FAILED_EXIT, as DVC reports it
    # The report is written even though the stage failed: the evidence is there to read.
    assert (repo / "data/digits/policy/report.json").is_file()


@pytest.mark.slow  # about 45 s on 2 cores; CI runs it in .ci/run's slow list
def test_dvc_exp_run_sweeps_the_synthetic_share(repo: Path):
    # The toy recipe fails rules a real dataset passes (too few images); waive them, as a team would.
    toy = ["bias.requested-balance", "bias.observed-collapse", "quality.identity-consistency"]
    from registry.releases.waive import waive

    for k, v in {"user.name": "t", "user.email": "t@example.org", "commit.gpgsign": "false"}.items():
        run(["git", "config", k, v], repo)  # waive commits the signed waiver
    for r in toy:  # signed by the session's solo key, an approver of the pinned trust root
        waive(repo, r, "digits", "12 toy images", date(2099, 12, 31))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["digits"]["train"].update(train_size=40, epochs=1, real_per_class=2)
    write_yaml(repo / "params.yaml", params)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    (repo / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    run(["git", "add", "-A"], repo)
    who = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    run(["git", *who, "commit", "-q", "-m", "pipeline"], repo)

    metrics, info = repo / "data/digits/train/metrics.json", repo / "data/digits/train/run-info.json"
    out = run(["dvc", "exp", "run", "-S", "datasets.digits.train.synthetic_share=0"], repo, env)
    assert "Running stage 'generate@digits'" in out and "Running stage 'train@digits'" in out
    real_only = json.loads(metrics.read_text()) | json.loads(info.read_text())
    assert (real_only["synthetic_share"], real_only["n_synthetic"], real_only["n_real"]) == (0.0, 0, 20)

    sweep = ["-S", "datasets.digits.train.synthetic_share=1", "-S", "datasets.digits.train.use_rejected=true"]
    out = run(["dvc", "exp", "run", *sweep], repo, env)
    assert "Running stage 'train@digits'" in out and "Running stage 'generate@digits'" not in out
    synthetic = json.loads(metrics.read_text()) | json.loads(info.read_text())
    assert (synthetic["synthetic_share"], synthetic["n_synthetic"], synthetic["n_real"]) == (1.0, 12, 0)

    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))  # [workspace, baseline commit]
    found, names = {}, []
    for exp in [e for base in shown for e in base["experiments"] or []]:
        names.append(exp["name"])
        for rev in exp["revs"]:
            data = rev["data"]
            share = data["params"]["params.yaml"]["data"]["datasets"]["digits"]["train"]["synthetic_share"]
            trained = data["metrics"]["data/digits/train/metrics.json"]["data"]
            found[share] = (trained["accuracy"], trained["n_synthetic"])
            # Issue 23: every metric DVC shows is a number (strings and digests live in side files).
            assert set(data["metrics"]) == {
                "data/digits/filtered/filter.json",
                "data/digits/train/metrics.json",
            }
            assert not non_numbers(data["metrics"]), non_numbers(data["metrics"])
    assert found == {0: (real_only["accuracy"], 0), 1: (synthetic["accuracy"], 12)}
    shown_now = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    assert not non_numbers(shown_now) and "accuracy" in json.dumps(shown_now)

    # The per-class accuracy and the mix point are DVC plots: `dvc plots show` draws them, and
    # `dvc plots diff` over the sweep's experiments puts one mix point per experiment on one chart.
    run(["dvc", "plots", "show", "-o", "plots"], repo)
    page = (repo / "plots/index.html").read_text()
    assert "vegaEmbed('#data_digits_train_per-class_json'" in page
    assert "vegaEmbed('#data_digits_train_mix_json'" in page
    drawn = json.loads(run(["dvc", "plots", "diff", *names, "--json"], repo))["data"]

    def values(plot: str) -> list[dict]:
        (vega,) = [p for p in drawn[plot] if p["type"] == "vega"]
        return vega["content"]["data"]["values"]

    mix = values("data/digits/train/mix.json")
    assert len(mix) == 2 and {d["rev"] for d in mix} == set(names)
    assert {(d["synthetic_share"], d["accuracy"]) for d in mix} == {
        (0.0, real_only["accuracy"]),
        (1.0, synthetic["accuracy"]),
    }
    per_class = values("data/digits/train/per-class.json")
    assert {d["rev"] for d in per_class} == set(names)
    assert {d["identity"] for d in per_class} <= set("0123456789")
    assert all(0 <= d["accuracy"] <= 1 for d in per_class)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("synthreg-train").experiment_id])
    assert {r.info.run_id: r.data.tags["synthreg.synthetic_share"] for r in runs} == {
        real_only["run_id"]: "0.0",
        synthetic["run_id"]: "1.0",
    }
