"""Training on a real/synthetic mix in a temporary workspace: a 24-image digits set generated and filtered
by the library, a hand-made release of it, and an MLflow SQLite store on tmp_path.

The dataset is built once per module; every test that trains logs to its own store.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import ReleaseError, TrackingError
from registry.downstream import tracking
from registry.downstream.track import MLFLOW_DIGEST_CHARS
from registry.downstream.train import SOURCE_TYPE, train
from registry.records.config import TrainParams
from registry.records.profile import DatasetProfile
from tests.conftest import MODEL, TrustSetup, sign_by_hand, small_recipe, write_yaml

CANDIDATES = "data/digits/candidates"
FILTERED = "data/digits/filtered"
MANIFEST = f"{FILTERED}/manifest.parquet"
RELEASE_COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Tiny on purpose: these tests pin what is logged, not how well the model learns.
SMALL = TrainParams(
    train_size=32, real_per_class=2, synthetic_share=0.5, epochs=1, batch_size=16, threads=1, seed=3
)

runner = CliRunner()
SIDE = ("run-info", "per-class", "mix")  # a train run's files beside its metrics (run_files)
REPORT_PAGE = "<!doctype html><title>digits@1.0.0</title><p>the release's audit report</p>\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Built:
    ws: Path
    total: int
    accepted: int
    head: str


def _fake_release(ws: Path) -> None:
    """``digits@1.0.0`` as ``synthreg release`` lays it out (record + content-addressed data), without
    the gate, signing, git and DVC, which tests/registry/test_release.py covers."""
    from registry.records.release import Release

    out = ws / "releases/digits/1.0.0"
    (out / "data/shards").mkdir(parents=True)
    shutil.copyfile(ws / MANIFEST, out / "data/manifest.parquet")
    con = duckdb.connect()
    counts = con.execute(
        f"SELECT shard, count(*) FROM read_parquet('{ws / MANIFEST}') GROUP BY shard ORDER BY shard"
    ).fetchall()
    shards = []
    for shard, members in counts:
        digest = sha256(ws / shard)
        shutil.copyfile(ws / shard, out / f"data/shards/{digest}.tar")
        shards.append(
            {
                "path": f"shards/{digest}.tar",
                "source": shard,
                "sha256": digest,
                "size": (ws / shard).stat().st_size,
                "members": members,
            }
        )
    record = Release(
        name="digits",
        version="1.0.0",
        manifest_sha256=sha256(ws / MANIFEST),
        shards=shards,
        counts={"total": 24, "accepted": 24, "rejected": 0, "per_identity": {}, "reasons": {}},
        generators=[],
        sources=[],
        prompt_templates=["a handwritten digit {identity}"],
        seed=0,
        policy_report_sha256="b" * 64,
        policy_passed=True,
        policy_results={},
        intended_use={"commercial": False, "purposes": ["research"]},
        dataset_licence="CC-BY-4.0",
        git_commit=RELEASE_COMMIT,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        actor="tester",
    )
    (out / "release.json").write_text(record.model_dump_json(indent=2))
    (out / "report.html").write_text(REPORT_PAGE)  # signed with the rest by sign_by_hand


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, solo_trust: TrustSetup) -> Built:
    """3 digits x 8 images in 2 shards, generated and filtered; a git commit; digits@1.0.0 released."""
    from generators.filter import filter_manifest
    from generators.generate import generate
    from registry.records.dataset import GenerateParams

    ws = tmp_path_factory.mktemp("train")
    shutil.copytree(MODEL, ws / "model")
    write_yaml(ws / "recipe.yaml", small_recipe(images_per_identity=8))
    generate(Path("recipe.yaml"), ws, CANDIDATES, GenerateParams(batch_size=12, shard_size=12, threads=1))
    res = filter_manifest(CANDIDATES, ws, FILTERED)
    assert 0 < res.accepted < res.total  # a rejected image, so use_rejected draws from a larger pool
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], cwd=ws, check=True)
    _fake_release(ws)
    sign_by_hand(ws, ws / "releases/digits/1.0.0", solo_trust.key)  # commits: HEAD is the release commit
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, check=True, capture_output=True, text=True)
    return Built(ws, res.total, res.accepted, head.stdout.strip())


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_run_follows_the_tracking_conventions(built: Built, store: str):
    ws = built.ws
    digest = sha256(ws / MANIFEST)
    report = ws / "data/digits/policy/report.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"manifest_sha256": digest}))  # a report made for this manifest
    policy = sha256(report)
    metrics_file = ws / "data/digits/train/first.json"
    try:
        res = train(
            ws, SMALL.model_copy(update={"metrics": "data/digits/train/first.json"}), "digits@working"
        )
    finally:
        report.unlink()

    assert (res.dataset, res.manifest_sha256) == ("digits@working", digest)
    assert (res.n_real, res.n_synthetic) == (16, 16)
    run = _client(store).get_run(res.run_id)
    p = run.data.params
    assert p["dataset"] == "digits@working"
    assert (p["n_real"], p["n_synthetic"], p["real_pool"]) == ("16", "16", "20")
    assert p["synthetic_pool"] == str(built.accepted)
    assert (p["synthetic_share"], p["train_size"], p["seed"], p["epochs"]) == ("0.5", "32", "3", "1")

    m = run.data.metrics
    per = [m[f"accuracy.identity_{d}"] for d in range(10)]
    assert 0 <= m["accuracy"] <= 1
    assert m["worst_group_gap"] == pytest.approx(max(per) - min(per))
    assert res.metrics["accuracy"] == m["accuracy"]

    assert {k: v for k, v in run.data.tags.items() if k.startswith("synthreg.")} == {
        tracking.TAG_DATASET: "digits@working",
        tracking.TAG_MANIFEST: digest,
        tracking.TAG_POLICY: policy,
        tracking.TAG_GIT: built.head,
        tracking.TAG_SHARE: "0.5",
        tracking.TAG_SHARE_ASKED: "0.5",
        tracking.TAG_DVC_MD5: hashlib.md5((ws / MANIFEST).read_bytes()).hexdigest(),
        "synthreg.samples.digits.working": run.data.tags["synthreg.samples.digits.working"],
    }
    # The 16 synthetic ids it drew, as an artifact whose count and sha256 the tag carries.
    artifact = "synthreg/samples/digits/working.txt"
    text = Path(_client(store).download_artifacts(res.run_id, artifact, str(ws / "dl"))).read_text()
    tag = run.data.tags["synthreg.samples.digits.working"]
    assert tag == f"16 {hashlib.sha256(text.encode()).hexdigest()}"
    ids = text.split()
    assert len(ids) == 16 and ids == sorted(ids) and all(i.startswith("digits-") for i in ids)

    (inp,) = run.inputs.dataset_inputs
    ds = inp.dataset
    assert ds.name == "digits@working"
    # MLflow keeps 36 characters of a digest: the manifest sha256's prefix, never MLflow's own digest.
    assert ds.digest == digest[:MLFLOW_DIGEST_CHARS] and len(ds.digest) == 36
    profile = DatasetProfile.model_validate_json(ds.profile)
    assert (profile.manifest_sha256, profile.version, profile.released) == (digest, "working", False)
    assert profile.dvc_md5 == hashlib.md5((ws / MANIFEST).read_bytes()).hexdigest()
    assert [(g.name, g.images) for g in profile.generators] == [("tiny-digits", built.total)]
    assert profile.policy.report_sha256 == policy and profile.recipe_sha256 is not None
    assert ds.source_type == SOURCE_TYPE
    assert json.loads(ds.source) == {"uri": tracking.dataset_source("digits", "working", built.head)}
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training"}

    import mlflow

    assert mlflow.data.get_source(inp).uri == tracking.dataset_source("digits", "working", built.head)

    versions = _client(store).search_model_versions("name = 'digits-classifier'")
    assert [(str(v.version), v.run_id) for v in versions] == [(res.model_version, res.run_id)]
    logged = _client(store).get_logged_model(versions[0].source.removeprefix("models:/"))
    assert logged.source_run_id == res.run_id
    assert {m.key: m.value for m in logged.metrics}["accuracy"] == m["accuracy"]

    # For DVC (issue 23): numbers only in the metrics file; the strings, the per-identity accuracies and
    # the mix point in side files named after it (first.json -> first.run-info.json, ...).
    written = json.loads(metrics_file.read_text())
    assert all(isinstance(v, int | float) for v in written.values()), written
    assert written["accuracy"] == m["accuracy"] and (written["n_real"], written["n_synthetic"]) == (16, 16)
    assert not any(k.startswith("accuracy.identity_") for k in written)
    side = {n: json.loads((ws / f"data/digits/train/first.{n}.json").read_text()) for n in SIDE}
    info = side["run-info"]
    assert (info["run_id"], info["dataset"], info["manifest_sha256"]) == (
        res.run_id,
        "digits@working",
        digest,
    )
    assert side["per-class"] == [
        {"identity": d, "accuracy": m[f"accuracy.identity_{d}"]} for d in map(str, range(10))
    ]
    assert side["mix"] == [
        {
            "synthetic_share": 0.5,
            "synthetic_share_used": 0.5,
            "accuracy": m["accuracy"],
            "worst_group_gap": m["worst_group_gap"],
        }
    ]
    # The working manifest has no HTML report: its run carries the policy report made for it.
    assert info["report"] == ["synthreg/report/digits/working/report.json"]
    got = _client(store).download_artifacts(res.run_id, info["report"][0], str(ws / "dl-report"))
    assert json.loads(Path(got).read_text()) == {"manifest_sha256": digest}


def test_a_release_and_its_working_manifest_train_the_same_model(built: Built, store: str):
    params = SMALL.model_copy(update={"synthetic_share": 1.0})
    released = train(built.ws, params, "digits@1.0.0")
    working = train(built.ws, params, "digits@working")
    assert released.metrics == working.metrics  # same images, same order, same seed: deterministic
    assert (released.n_real, released.n_synthetic) == (0, built.accepted)  # fewer than asked: all of them

    run = _client(store).get_run(released.run_id)
    ds = run.inputs.dataset_inputs[0].dataset
    record_digest = sha256(built.ws / "releases/digits/1.0.0/data/manifest.parquet")
    assert (ds.name, ds.digest) == ("digits@1.0.0", record_digest[:MLFLOW_DIGEST_CHARS])
    assert json.loads(ds.source) == {"uri": tracking.dataset_source("digits", "1.0.0", RELEASE_COMMIT)}
    assert run.data.tags[tracking.TAG_POLICY] == "b" * 64  # from the release record
    assert run.data.tags[tracking.TAG_GIT] == built.head  # the code that trained
    assert run.data.params["n_synthetic"] == str(built.accepted)
    assert run.data.params[tracking.PARAM_EVAL_SPLIT] == "real held-out"  # sklearn's held-out digits
    # No policy report for the working manifest: no policy tag rather than a stale one.
    assert tracking.TAG_POLICY not in _client(store).get_run(working.run_id).data.tags
    assert [str(v.version) for v in _client(store).search_model_versions("name = 'digits-classifier'")] == [
        "2",
        "1",
    ]


def test_share_zero_is_real_only_and_use_rejected_draws_from_every_row(built: Built, store: str):
    res = train(built.ws, SMALL.model_copy(update={"synthetic_share": 0.0}), "digits@1.0.0")
    assert (res.n_real, res.n_synthetic) == (20, 0)  # 32 real asked, the pool has 2 per digit
    params = _client(store).get_run(res.run_id).data.params
    assert (params["n_synthetic"], params["n_real"]) == ("0", "20")
    assert json.loads((built.ws / "data/digits/train/metrics.json").read_text())["n_synthetic"] == 0

    everything = SMALL.model_copy(update={"synthetic_share": 1.0, "train_size": 64, "use_rejected": True})
    res = train(built.ws, everything, "digits@working")
    params = _client(store).get_run(res.run_id).data.params
    assert (params["use_rejected"], params["synthetic_pool"]) == ("True", str(built.total))
    assert res.n_synthetic == built.total


def test_a_release_whose_manifest_changed_is_refused(built: Built, store: str):
    bad = built.ws / "releases/digits/2.0.0"
    shutil.copytree(built.ws / "releases/digits/1.0.0", bad)
    record = json.loads((bad / "release.json").read_text()) | {"version": "2.0.0"}
    (bad / "release.json").write_text(json.dumps(record))
    try:
        with (bad / "data/manifest.parquet").open("ab") as f:
            f.write(b"tampered")
        with pytest.raises(ReleaseError, match=r"run `synthreg verify digits@2\.0\.0`"):
            train(built.ws, SMALL, "digits@2.0.0")
    finally:
        shutil.rmtree(bad)


def test_a_withdrawn_release_is_trained_on_only_when_allowed_and_that_is_recorded(
    built: Built, store: str, tmp_path: Path
):
    from registry.releases.withdraw import withdraw
    from registry.store import audit

    ws = tmp_path / "ws"
    shutil.copytree(built.ws, ws, symlinks=True)
    for k, v in {"user.name": "t", "user.email": "t@example.org", "commit.gpgsign": "false"}.items():
        subprocess.run(["git", "config", k, v], cwd=ws, check=True)
    withdraw(ws, "digits@1.0.0", "consent withdrawn")
    with pytest.raises(ReleaseError, match=r"^digits@1\.0\.0 was withdrawn on .*: consent withdrawn; pass"):
        train(ws, SMALL, "digits@1.0.0")
    result = runner.invoke(app, ["train", "--dataset", "digits@1.0.0", "-w", str(ws)])
    assert result.exit_code == 1 and "`--allow-withdrawn`" in result.stderr
    res = train(ws, SMALL.model_copy(update={"epochs": 1}), "digits@1.0.0", allow_withdrawn=True)
    assert _client(store).get_run(res.run_id).data.tags["synthreg.allow_withdrawn"] == "consent withdrawn"
    allowed, trained = audit.read(ws)[-2:]  # the knowing use of a withdrawn release, then the run
    assert (allowed.kind, allowed.subject, allowed.details["run_id"]) == (
        "allow-withdrawn",
        "digits@1.0.0",
        res.run_id,
    )
    assert (trained.kind, trained.details["run_id"]) == ("train", res.run_id)


def test_a_malformed_tracking_uri_is_a_clear_error(built: Built, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mlflow.db")
    with pytest.raises(TrackingError, match=r"MLFLOW_TRACKING_URI 'mlflow.db' is not a URI; use e\.g\."):
        train(built.ws, SMALL, "digits@working")
    result = runner.invoke(app, ["train", "--dataset", "digits@working", "-w", str(built.ws)])
    assert result.exit_code == 1
    assert result.output.startswith("error: MLFLOW_TRACKING_URI 'mlflow.db' is not a URI")
    assert not (built.ws / "mlflow.db").exists()


def test_an_unusable_store_is_a_tracking_error(built: Built, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://host/x")
    with pytest.raises(TrackingError, match=r"MLflow store nosuchscheme://host/x refused the run"):
        train(built.ws, SMALL.model_copy(update={"epochs": 1}), "digits@working")


def test_unknown_datasets_are_release_errors(built: Built, store: str):
    with pytest.raises(ReleaseError, match=r"digits@9\.9\.9 is not released; see `synthreg list`"):
        train(built.ws, SMALL, "digits@9.9.9")
    with pytest.raises(ReleaseError, match=r"no releases of 'faces'"):
        train(built.ws, SMALL, "faces")
    with pytest.raises(ReleaseError, match=r"'\.\./etc@working' is not a release reference"):
        train(built.ws, SMALL, "../etc@working")


def test_the_cli_prints_accuracy_gap_run_and_version(built: Built, store: str, tmp_path: Path):
    write_yaml(
        tmp_path / "params.yaml",
        {"train": SMALL.model_dump() | {"dataset": "digits@1.0.0", "metrics": "data/digits/train/cli.json"}},
    )
    shutil.copy(tmp_path / "params.yaml", built.ws / "cli-params.yaml")
    result = runner.invoke(app, ["train", "--params", "cli-params.yaml", "-w", str(built.ws)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("trained", "MLflow run"))]
    written = json.loads((built.ws / "data/digits/train/cli.json").read_text())
    written |= json.loads((built.ws / "data/digits/train/cli.run-info.json").read_text())
    assert lines == [
        f"trained on digits@1.0.0: 16 real + 16 synthetic images; held-out accuracy "
        f"{written['accuracy']:.4f}, worst-group gap {written['worst_group_gap']:.4f}",
        f"MLflow run {written['run_id']}; model digits-classifier/1; "
        f"metrics {built.ws / 'data/digits/train/cli.json'}",
    ]


def test_the_share_really_used_is_logged_and_said(built: Built, store: str):
    """0.75 of 32 asked: 24 synthetic images, but the release holds fewer accepted ones; all are used, the
    real part fills up, and the share really used (below 0.75) is logged beside the one asked, and said."""
    res = train(built.ws, SMALL.model_copy(update={"synthetic_share": 0.75}), "digits@1.0.0")
    used = round(res.n_synthetic / (res.n_synthetic + res.n_real), 4)
    assert res.n_synthetic == built.accepted < 24 and res.synthetic_share_used == used < 0.75
    assert res.notes == [
        f"synthetic share used {used} differs from the 0.75 asked: {built.accepted} synthetic "
        f"(pool {built.accepted}) + {res.n_real} real (pool 20) images"
    ]
    run = _client(store).get_run(res.run_id)
    assert run.data.params["synthetic_share"] == "0.75"
    assert run.data.params["synthetic_share_used"] == str(used) == run.data.tags[tracking.TAG_SHARE]
    assert run.data.metrics["synthetic_share_used"] == used
    assert run.data.tags[tracking.TAG_SHARE_ASKED] == "0.75"

    from registry.store import audit

    event = audit.read(built.ws)[-1]
    assert (event.kind, event.subject) == ("train", f"digits-classifier/{res.model_version}")
    assert event.details["run_id"] == res.run_id and event.details["dataset"] == "digits@1.0.0"
    assert event.details["manifest_sha256"] == res.manifest_sha256


def test_the_model_name_follows_the_dataset_or_the_option(built: Built, store: str, tmp_path: Path):
    write_yaml(built.ws / "name-params.yaml", {"train": SMALL.model_dump() | {"dataset": "digits@1.0.0"}})
    result = runner.invoke(
        app,
        ["train", "--params", "name-params.yaml", "--model-name", "digits-experiment", "-w", str(built.ws)],
    )
    assert result.exit_code == 0, result.output
    assert "model digits-experiment/1;" in result.stdout
    assert [m.name for m in _client(store).search_registered_models()] == ["digits-experiment"]


def test_the_default_run_on_the_working_manifest_traces_to_generator_prompts_seeds_and_sources(
    built: Built, store: str
):
    """What `make run` does (train on digits@working), then trace and impact: the unreleased manifest is
    found in the workspace by content and traced like a release, marked UNRELEASED."""
    from registry.lineage.impact import impact
    from registry.lineage.trace import trace_model

    res = train(built.ws, SMALL, "digits@working")
    t = trace_model(built.ws, "digits-classifier/latest")
    assert t.run.run_id == res.run_id
    (d,) = t.datasets
    assert d.unreleased and d.resolved_from == f"workspace {MANIFEST}"
    (g,) = d.generators
    assert (g.name, g.images, len(g.weights_digest)) == ("tiny-digits", built.total, 64)
    assert d.prompt_templates == ["a handwritten digit {identity} with a {stroke} stroke"]
    assert d.samples.count == built.total and d.samples.seed_min is not None
    assert {s.name for s in d.sources} >= {"sklearn-digits"}
    assert d.drawn.count == res.n_synthetic
    found = impact(built.ws, generator="tiny-digits")
    assert res.run_id in {r.run_id for r in found.runs if r.unreleased}
    assert ("digits-classifier", res.model_version) in {(m.name, m.version) for m in found.model_versions}


def test_the_run_carries_the_releases_signed_html_report(built: Built, store: str, tmp_path: Path):
    """Issue 23: the run of a release carries its report.html, the file signed with it, byte for byte;
    one that is not as signed is not logged, and the run says why."""
    res = train(built.ws, SMALL, "digits@1.0.0")
    artifact = "synthreg/report/digits/1.0.0/report.html"
    got = _client(store).download_artifacts(res.run_id, artifact, str(tmp_path / "a"))
    assert Path(got).read_text() == REPORT_PAGE
    assert json.loads((built.ws / "data/digits/train/run-info.json").read_text())["report"] == [artifact]
    assert not any("report" in n for n in res.notes)

    page = built.ws / "releases/digits/1.0.0/report.html"
    page.write_text(REPORT_PAGE.replace("audit", "<script>alert(1)</script>"))
    try:
        res = train(built.ws, SMALL, "digits@1.0.0")
    finally:
        page.write_text(REPORT_PAGE)
    assert res.notes == [
        "digits@1.0.0's report.html is missing or not as signed, so the run carries no report; "
        "run `synthreg verify digits@1.0.0`"
    ]
    listed = [a.path for a in _client(store).list_artifacts(res.run_id, "synthreg")]
    assert "synthreg/report" not in listed and "synthreg/samples" in listed
