"""Runs logged with the public API (``registry.log_dataset``), from plain MLflow code: a working manifest
is traced from the workspace, the DVC cache or the DVC remote, or said to resolve nowhere; impact
reaches unreleased runs and names only the runs that drew a sample; model references by latest and
alias; ``synthreg models``; the ``mlflow.dataset_source`` entry point in a fresh process.

The world (the released 12-image digits workspace of conftest.py, three runs, one registered model) is
built once per module; a test that deletes anything works on a copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

import registry
from registry.cli import app
from registry.core.digests import sha256_file
from registry.core.errors import TrackingError
from registry.downstream import tracking
from registry.downstream.track import md5_file
from registry.lineage.trace import trace_model, trace_run
from registry.records.profile import DatasetProfile
from tests.registry.conftest import DVC, Built, clone, sh, table_rows

runner = CliRunner()
MANIFEST = "data/digits/filtered/manifest.parquet"
MODEL = "digits-classifier"


@dataclass
class World:
    ws: Path
    uri: str
    exp: str
    runs: dict[str, str]
    ids: list[str]  # sample ids of the working manifest, in order
    md5: str
    sha: str


def log_plain(ws: Path, exp: str, ref: str, samples: list[str] | None) -> str:
    """What a user's own training script does: a plain MLflow run that logs its synthreg dataset."""
    import mlflow

    with mlflow.start_run(experiment_id=exp) as run:
        registry.log_dataset(ws, ref, samples=samples)
        mlflow.log_metric("accuracy", 0.5)
    return run.info.run_id


@pytest.fixture(scope="module")
def world(released: Built, tmp_path_factory: pytest.TempPathFactory) -> World:
    top = tmp_path_factory.mktemp("track")
    ws = clone(released.ws, top / "ws")
    uri = f"sqlite:///{top}/mlflow.db"
    con = duckdb.connect()
    ids = [r[0] for r in con.execute(f"SELECT sample_id FROM '{ws / MANIFEST}' ORDER BY index").fetchall()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        c = tracking.client(ws)
        exp = c.create_experiment("plain", artifact_location=(top / "artifacts").as_uri())
        runs = {
            "drew": log_plain(ws, exp, "digits@working", ids[:2]),
            "unrecorded": log_plain(ws, exp, "digits@working", None),
            "released": log_plain(ws, exp, "digits@1.0.0", [ids[5]]),
        }
        c.create_registered_model(MODEL)
        for key in ("drew", "released"):
            c.create_model_version(MODEL, f"runs:/{runs[key]}/model", run_id=runs[key])
        c.set_registered_model_alias(MODEL, "champion", "1")
    manifest = ws / MANIFEST
    return World(ws, uri, exp, runs, ids, md5_file(manifest), sha256_file(manifest))


@pytest.fixture
def ws(world: World, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.uri)
    return world.ws


@pytest.fixture
def copy(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the workspace (same MLflow store: nothing here writes to it)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.uri)
    return clone(world.ws, tmp_path / "ws")


def cached(ws: Path, md5: str) -> Path:
    return ws / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


# --- what a run logs -----------------------------------------------------------------------------------


def test_the_profile_names_the_manifest_by_content(world: World, ws: Path) -> None:
    run = tracking.client(ws).get_run(world.runs["drew"])
    (inp,) = run.inputs.dataset_inputs
    p = DatasetProfile.model_validate_json(inp.dataset.profile)
    assert (inp.dataset.name, inp.dataset.digest) == ("digits@working", world.sha[:36])
    assert (p.manifest_sha256, p.dvc_md5, p.manifest_path) == (world.sha, world.md5, MANIFEST)
    assert [g.name for g in p.generators] == ["tiny-digits"] and p.rows == 12
    assert p.recipe_sha256 and p.policy.passed is True  # the report made for this very manifest
    assert {s.name for s in p.sources} >= {"sklearn-digits", "volunteer-sevens"}
    assert run.data.tags[tracking.TAG_DVC_MD5] == world.md5
    assert run.data.tags["synthreg.samples.digits.working"].startswith("2 ")


def test_log_dataset_needs_an_active_run(ws: Path) -> None:
    with pytest.raises(TrackingError, match=r"^no active MLflow run; call log_dataset inside"):
        registry.log_dataset(ws, "digits@working")


def test_get_source_works_in_a_fresh_process(world: World, ws: Path) -> None:
    """The entry point, not `synthreg train`, registers the source: a new interpreter that never
    imported synthreg's training code parses the input back."""
    code = (
        "import sys, mlflow; from mlflow import MlflowClient\n"
        "c = MlflowClient(tracking_uri=sys.argv[1])\n"
        "s = mlflow.data.get_source(c.get_run(sys.argv[2]).inputs.dataset_inputs[0])\n"
        "print(type(s).__name__, s.uri)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, world.uri, world.runs["released"]], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    commit = registry.load_release(ws, "digits@1.0.0").git_commit
    assert out.stdout.split() == ["SynthregDatasetSource", tracking.dataset_source("digits", "1.0.0", commit)]


# --- trace of a working manifest -----------------------------------------------------------------------


def test_a_working_run_traces_to_generators_seeds_and_sources(world: World, ws: Path) -> None:
    t = trace_run(ws, world.runs["drew"])
    (d,) = t.datasets
    assert d.unreleased and d.resolved and d.resolved_from == f"workspace {MANIFEST}"
    assert [(g.name, g.images) for g in d.generators] == [("tiny-digits", 12)]
    assert len(d.generators[0].weights_digest) == 64
    assert d.samples.count == 12 and d.samples.seed_min is not None
    assert d.prompt_templates == ["a handwritten digit {identity} with a {stroke} stroke"]
    assert {s.name for s in d.sources} >= {"sklearn-digits", "volunteer-sevens"}
    assert d.drawn.count == 2
    assert t.unresolved == []
    assert t.warnings[0] == (
        f"UNRELEASED: digits@working is a working manifest, not a release; found by content in workspace "
        f"{MANIFEST}"
    )


def test_a_deleted_working_manifest_is_found_in_the_dvc_cache(world: World, copy: Path) -> None:
    (copy / MANIFEST).unlink()
    assert cached(copy, world.md5).is_file()  # released content is in the cache under its md5
    d = trace_run(copy, world.runs["drew"]).datasets[0]
    assert d.resolved_from == f"DVC cache .dvc/cache/files/md5/{world.md5[:2]}/{world.md5[2:]}"
    assert d.samples.count == 12


def test_then_in_the_dvc_remote(world: World, copy: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    sh(copy, DVC, "remote", "add", "-q", "-d", "store", str(remote))
    sh(copy, DVC, "push", "-q")
    (copy / MANIFEST).unlink()
    cached(copy, world.md5).unlink()
    d = trace_run(copy, world.runs["drew"]).datasets[0]
    assert d.resolved_from == f"DVC remote store ({remote}/files/md5), fetched into the DVC cache"
    assert cached(copy, world.md5).is_file()  # fetched as `dvc fetch` would


def test_a_manifest_found_nowhere_is_an_error_after_what_the_run_logged(world: World, copy: Path) -> None:
    (copy / MANIFEST).unlink()
    cached(copy, world.md5).unlink()
    subprocess.run([DVC, "remote", "default", "--unset"], cwd=copy, check=True)  # releases pushed there
    t = trace_run(copy, world.runs["drew"])
    (d,) = t.datasets
    assert not d.resolved and [g.name for g in d.generators] == ["tiny-digits"]  # as logged
    looked = [
        "the workspace (1 manifest(s) under data/)",
        f"the DVC cache (.dvc/cache/files/md5/{world.md5[:2]}/{world.md5[2:]})",
        "no DVC remote (none is configured as default)",
    ]
    assert d.looked == looked

    result = runner.invoke(app, ["trace", "run", world.runs["drew"], "-w", str(copy)])
    assert result.exit_code == 1
    out = result.output.splitlines()
    rows = table_rows(result.stdout)
    assert any(r[:3] == ["tiny-digits", "tiny-digits", "CC-BY-4.0"] and r[3] for r in rows)  # + weights
    assert ["status", "UNRELEASED"] in rows
    assert any(r[0] == "found in" and r[1].startswith("NOT FOUND; looked in the workspace") for r in rows)
    assert out[-1] == (
        f"error: digits@working (manifest sha256 {world.sha}) resolves nowhere; looked in "
        f"{'; '.join(looked)}; restore it (git/dvc checkout, dvc pull) to trace its images"
    )

    res = registry.impact(copy, generator="tiny-digits")
    assert {u.run_id for u in res.unresolved_runs} == {world.runs["drew"], world.runs["unrecorded"]}
    assert [v.release for v in res.versions] == ["digits@1.0.0"]


def test_a_run_without_a_synthreg_dataset_is_an_error(world: World, ws: Path) -> None:
    import mlflow

    with mlflow.start_run(experiment_id=world.exp) as run:
        mlflow.log_param("lr", 0.1)
    result = runner.invoke(app, ["trace", "run", run.info.run_id, "-w", str(ws)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"error: run {run.info.run_id} logged no synthreg dataset input (inputs: none; no synthreg.dataset "
        "tag), so it cannot be traced; log its data with registry.log_dataset(ws, 'NAME@X.Y.Z') "
        "inside the run"
    )


# --- impact --------------------------------------------------------------------------------------------


def test_impact_of_the_generator_reaches_unreleased_runs_and_models(world: World, ws: Path) -> None:
    res = registry.impact(ws, generator="tiny-digits")
    assert [(v.release, v.unreleased, v.samples) for v in res.versions] == [
        ("digits@1.0.0", False, 12),
        ("digits@working", True, 12),
    ]
    assert {r.run_id: r.unreleased for r in res.runs} == {
        world.runs["released"]: False,
        world.runs["drew"]: True,
        world.runs["unrecorded"]: True,
    }
    assert {(m.name, m.version) for m in res.model_versions} == {(MODEL, "1"), (MODEL, "2")}
    assert res.unresolved_runs == []
    result = runner.invoke(app, ["impact", "--generator", "tiny-digits", "-w", str(ws)])
    assert result.exit_code == 0
    runs = {r[0]: r for r in table_rows(result.stdout) if r[0] in world.runs.values()}
    assert runs[world.runs["drew"]][5] == "UNRELEASED" and runs[world.runs["released"]][5] == "released"


def test_impact_of_a_sample_names_only_the_runs_that_drew_it(world: World, ws: Path) -> None:
    res = registry.impact(ws, sample=world.ids[0])
    assert {r.run_id: r.drew for r in res.runs} == {
        world.runs["drew"]: True,
        world.runs["unrecorded"]: None,  # recorded no ids: listed, and warned about
    }
    assert res.counts.runs_without_the_sample == 1  # the released run drew another sample
    assert [m.version for m in res.model_versions] == ["1"]
    assert any(w.startswith(f"UNKNOWN DRAW: run {world.runs['unrecorded']} ") for w in res.warnings)

    drawn = registry.impact(ws, sample=world.ids[5])
    assert {r.run_id for r in drawn.runs} == {world.runs["released"], world.runs["unrecorded"]}


def test_impact_of_a_conditioning_source_reaches_only_its_identities_unreleased_too(
    world: World, ws: Path
) -> None:
    """volunteer-sevens conditioned identity 7 only: 4 of the 12 images, in the release and in the
    working manifest (whose sources come from what its runs logged)."""
    res = registry.impact(ws, source="volunteer-sevens")
    assert [(v.release, v.unreleased, v.samples) for v in res.versions] == [
        ("digits@1.0.0", False, 4),
        ("digits@working", True, 4),
    ]
    assert len(res.runs) == 3


def test_a_run_that_logged_only_a_digest_prefix_is_reached_with_the_others(
    world: World, copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-logged input with MLflow's 36-character digest only (no profile, no tag) names the same
    working manifest as a run logged with the whole sha256: one version, both runs."""
    from mlflow.entities import Dataset, DatasetInput

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/prefix.db")
    c = tracking.client(copy)
    exp = c.create_experiment("prefix", artifact_location=(tmp_path / "artifacts").as_uri())
    full = log_plain(copy, exp, "digits@working", None)
    run = c.create_run(exp)
    ds = Dataset(name="digits@working", digest=world.sha[:36], source_type="synthreg", source="synthreg://x")
    c.log_inputs(run.info.run_id, [DatasetInput(ds, [])])
    res = registry.impact(copy, generator="tiny-digits")
    assert [(v.release, v.manifest_sha256) for v in res.versions] == [
        ("digits@1.0.0", world.sha),
        ("digits@working", world.sha),
    ]
    assert {r.run_id for r in res.runs} == {full, run.info.run_id}
    assert res.unresolved_runs == []


# --- model references and `synthreg models` ------------------------------------------------------------


def test_latest_and_alias_name_a_version(world: World, ws: Path) -> None:
    assert trace_model(ws, f"{MODEL}/latest").model.version == "2"
    champion = trace_model(ws, f"{MODEL}@champion")
    assert (champion.model.version, champion.model.run_id) == ("1", world.runs["drew"])
    result = runner.invoke(app, ["trace", "model", f"{MODEL}@nope", "-w", str(ws)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"error: model '{MODEL}' has no alias 'nope' in {world.uri}; aliases: champion "
        "(set one with MlflowClient().set_registered_model_alias)"
    )
    with pytest.raises(TrackingError, match=r"is not NAME/VERSION, NAME/latest or NAME@ALIAS"):
        trace_model(ws, MODEL)


def test_models_lists_versions_with_their_datasets(world: World, ws: Path) -> None:
    result = runner.invoke(app, ["models", "--json", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["models"]
    assert [(r["name"], r["version"], r["dataset"], r["aliases"], r["unreleased"]) for r in rows] == [
        (MODEL, "2", "digits@1.0.0", [], False),
        (MODEL, "1", "digits@working", ["champion"], True),
    ]
    text = runner.invoke(app, ["models", "-w", str(ws)]).output.splitlines()
    (i,) = [i for i, line in enumerate(text) if line.startswith(f"{MODEL}/1 @champion  digits@working [UNR")]
    assert text[i].startswith(f"{MODEL}/1 @champion  digits@working [UNRELEASED]  share -  accuracy 0.5")
    assert text[i + 1].startswith("    claim recorded: audit event "), text  # log_dataset's own event


def test_models_says_when_there_are_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/empty.db")
    result = runner.invoke(app, ["models", "-w", str(tmp_path)])
    assert (result.exit_code, result.stdout) == (0, "no registered models (train one: `synthreg train`)\n")


# --- the README's plain-PyTorch script -----------------------------------------------------------------


@pytest.mark.slow
def test_a_plain_pytorch_script_is_traced_and_reached(world: World, copy: Path, tmp_path: Path) -> None:
    """examples/train_plain.py trains with its own loop and logs with registry.log_dataset; trace and
    impact then find its model like any `synthreg train` model."""
    from tests.conftest import REPO

    uri = f"sqlite:///{tmp_path}/plain.db"
    # MLflow's set_registry_uri in this process also set $MLFLOW_REGISTRY_URI (to the world's store).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples/train_plain.py"), "--dataset", "digits@1.0.0", "--epochs", "1"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = proc.stdout.split()[1].rstrip(";")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # restored by the `copy` fixture's monkeypatch
    t = trace_model(copy, "digits-plain/latest")
    assert t.run.run_id == run_id
    (d,) = t.datasets
    assert d.release == "digits@1.0.0" and d.digest_matches and d.drawn.count > 0
    res = registry.impact(copy, generator="tiny-digits")
    assert [r.run_id for r in res.runs] == [run_id]
    assert [(m.name, m.version) for m in res.model_versions] == [("digits-plain", "1")]


def test_log_dataset_appends_an_audit_event(
    world: World, copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: a run logged by a user's own script is in the audit log, as `synthreg train`'s are."""
    import mlflow

    from registry.store import audit

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/audited.db")  # not the world's store
    before = len(audit.read(copy))
    exp = tracking.client(copy).create_experiment("audited", artifact_location=(tmp_path / "a").as_uri())
    run_id = log_plain(copy, exp, "digits@1.0.0", world.ids[:3])
    events = audit.read(copy)[before:]
    assert [(e.kind, e.subject) for e in events] == [("log-dataset", "digits@1.0.0")]
    d = events[0].details
    assert (d["run_id"], d["context"], d["samples_drawn"]) == (run_id, "training", 3)
    assert d["manifest_sha256"] == registry.load_release(copy, "digits@1.0.0").manifest_sha256
    assert audit.verify(copy) == []
    assert mlflow.get_run(run_id).data.tags[tracking.TAG_DATASET] == "digits@1.0.0"


def test_the_source_reads_without_synthreg_as_the_guide_says(
    world: World, copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 23: in a process where synthreg cannot be imported, `mlflow.data.get_source` fails for a
    synthreg input (a custom source type), and docs/guide/downstream.md's plain-JSON reading works."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path}/plain.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    exp = tracking.client(copy).create_experiment("plain", artifact_location=(tmp_path / "a").as_uri())
    run_id = log_plain(copy, exp, "digits@1.0.0", world.ids[:3])
    code = f"""
import sys
class NoSynthreg:
    def find_spec(self, name, path=None, target=None):
        if name == "registry" or name.startswith("registry."):
            raise ImportError("synthreg is not installed here")
sys.meta_path.insert(0, NoSynthreg())
import json, mlflow
mlflow.set_tracking_uri({uri!r})
run = mlflow.get_run({run_id!r})
for di in run.inputs.dataset_inputs:
    d = di.dataset
    if d.source_type == "synthreg":
        print(d.name, json.loads(d.source)["uri"], sorted(json.loads(d.profile))[:1])
        try:
            mlflow.data.get_source(di)
            print("get_source worked")
        except Exception as e:
            print("get_source failed:", type(e).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("digits@1.0.0 synthreg://releases/digits/1.0.0"), out.stdout
    assert lines[1].startswith("get_source failed"), out.stdout


# --- issue 24: a run's claim is shown as unsigned unless a signed record backs it ---------------------


def test_a_runs_claim_is_signed_only_when_a_signed_checkpoint_covers_synthregs_own_record(
    world: World, copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that merely claims digits@1.0.0 with the release's digest is traced as trained on it only as
    an UNSIGNED claim (trace, impact, models; text and --json). A run logged by synthreg's log_dataset is
    `recorded` (its audit event is later than every signed checkpoint) until a signed record's
    checkpoint covers the event (here: a signed withdrawal), then `signed`."""
    from mlflow.entities import Dataset, DatasetInput

    from registry.downstream.model_index import format_models, list_models
    from registry.lineage.impact import impact
    from registry.releases.withdraw import withdraw
    from registry.store.releases import load_release

    store = tmp_path / "mlflow.db"  # a copy of the store: this test adds a run and a model version
    store.write_bytes(Path(world.uri.removeprefix("sqlite:///")).read_bytes())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    sha = load_release(copy, "digits@1.0.0").manifest_sha256
    c = tracking.client(copy)
    forged = c.create_run(world.exp, tags={tracking.TAG_DATASET: "digits@1.0.0", tracking.TAG_MANIFEST: sha})
    ds = Dataset(name="digits@1.0.0", digest=sha[:36], source_type="synthreg", source="synthreg://x")
    c.log_inputs(forged.info.run_id, [DatasetInput(ds, [])])
    honest = world.runs["released"]

    def claim(run_id: str) -> tuple[str, str]:
        (d,) = trace_run(copy, run_id).datasets
        assert d.digest_matches and d.claim is not None
        return d.claim.status, d.claim.why

    status, why = claim(forged.info.run_id)
    assert status == "unsigned" and "no train or log-dataset event for this run" in why, why
    status, why = claim(honest)
    assert status == "recorded" and "no signed checkpoint covers it yet" in why, why
    out = runner.invoke(app, ["trace", "run", forged.info.run_id, "-w", str(copy)])
    assert out.exit_code == 0 and "UNSIGNED CLAIM" in out.output, out.output
    out = runner.invoke(app, ["trace", "run", forged.info.run_id, "--json", "-w", str(copy)])
    assert json.loads(out.stdout)["datasets"][0]["claim"]["status"] == "unsigned"

    withdraw(copy, "digits@1.0.0", "a signed checkpoint over the log", actor="Auditor")
    assert claim(honest)[0] == "signed"
    assert claim(forged.info.run_id)[0] == "unsigned"
    res = impact(copy, version="digits@1.0.0")
    assert {r.run_id: r.claim.status for r in res.runs if r.claim} == {
        honest: "signed",
        forged.info.run_id: "unsigned",
    }
    assert any(
        w.startswith(f"UNSIGNED CLAIM: that run {forged.info.run_id} trained on") for w in res.warnings
    )
    out = runner.invoke(app, ["impact", "--version", "digits@1.0.0", "--json", "-w", str(copy)])
    assert {r["run_id"]: r["claim"]["status"] for r in json.loads(out.stdout)["runs"]}[honest] == "signed"
    c.create_model_version(MODEL, f"runs:/{forged.info.run_id}/model", run_id=forged.info.run_id)
    rows = {m.run_id: m for m in list_models(copy, MODEL)}
    assert rows[forged.info.run_id].claim.status == "unsigned"  # type: ignore[union-attr]
    assert rows[honest].claim.status == "signed"  # type: ignore[union-attr]
    assert "    UNSIGNED CLAIM: only the MLflow run says so" in "\n".join(format_models(list(rows.values())))
    out = runner.invoke(app, ["models", MODEL, "--json", "-w", str(copy)])
    assert out.exit_code == 0 and '"unsigned"' in out.stdout, out.output


def test_the_store_is_opened_once_a_process_per_uri(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.tracking

    opened: list[str] = []
    real = mlflow.tracking.MlflowClient

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(str(kwargs.get("tracking_uri")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking, "_CLIENTS", {})
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", counting)
    uri = tracking.tracking_uri(ws)
    first = tracking.client(ws)
    assert tracking.client(ws) is first  # trace_model and trace_run share one store
    assert opened == [uri]
    other = f"sqlite:///{tmp_path}/other.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert tracking.client(ws) is not first  # another store is another client
    assert opened == [uri, other]
    assert mlflow.get_tracking_uri() == other  # the fluent API follows the store last asked for
