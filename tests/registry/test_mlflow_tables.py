"""registry.downstream.mlflow_tables: trace and impact read a current SQLite store's tables with no
``import mlflow`` (issue 22), and answer exactly as MLflow's client does on the same store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from registry.core.errors import TrackingError
from registry.downstream import mlflow_tables, tracking
from registry.lineage.impact import impact
from registry.lineage.trace import trace_model, trace_run
from tests.registry import test_lineage
from tests.registry.test_lineage import World, copy_world

world, ws = test_lineage.world, test_lineage.ws  # the lineage tests' store: releases, runs, models


def test_the_head_revision_is_mlflows_own() -> None:
    from mlflow.entities import ViewType
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert mlflow_tables.head_revision() == _get_latest_schema_revision()
    assert mlflow_tables.VIEW_ALL == ViewType.ALL


def _with_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, trace and impact read through MLflow's client, as before issue 22."""
    monkeypatch.setattr(tracking, "open_tables", lambda uri, fallback: None)
    monkeypatch.setattr(tracking, "_READERS", {})


def _answers(ws: Path, world: World) -> list[str]:
    out = [trace_run(ws, run_id).model_dump_json() for run_id in sorted(world.runs.values())]
    out += [
        trace_model(ws, ref).model_dump_json()
        for ref in ("digit-clf/1", "digit-clf/2", "digit-clf/latest", "digit-clf@champion")
    ]
    for selector in (
        {"generator": "tiny-digits"},
        {"generator": "sd-mini"},
        {"source": "mnist-cond"},
        {"prompt": "digit [0-3]"},
        {"sample": "digits-tiny-digits-00001"},
        {"version": "digits@1.0.0"},
    ):
        out.append(impact(ws, **selector).model_dump_json())
    return out


def _errors(ws: Path) -> list[str]:
    out = []
    for ask in (
        lambda: trace_run(ws, "nope"),
        lambda: trace_model(ws, "clf/1"),
        lambda: trace_model(ws, "digit-clf/9"),
        lambda: trace_model(ws, "digit-clf@nope"),  # names the aliases the model has
    ):
        with pytest.raises(TrackingError) as e:
            ask()
        out.append(str(e.value))
    return out


def test_the_tables_answer_as_mlflows_client(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every trace and impact over a store with aliases, tags, params, a metric logged twice and a
    deleted run: the same JSON, byte for byte, and the same errors."""
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    c = tracking.client(ws)
    a = world.runs["a"]
    for key, value in (("zeta", "1"), ("alpha", "2"), ("mid", "3")):
        c.set_tag(a, key, value)
        c.log_param(a, f"p_{key}", value)
        c.set_model_version_tag("digit-clf", "1", key, value)
    c.log_metric(a, "loss", 0.5, step=3)
    c.log_metric(a, "loss", 0.25, step=7)
    c.set_registered_model_alias("digit-clf", "champion", "1")
    c.set_registered_model_alias("digit-clf", "baseline", "1")
    c.delete_run(world.runs["wrong"])

    assert isinstance(tracking.reader(ws), mlflow_tables.Tables)
    fast, fast_errors = _answers(ws, world), _errors(ws)
    assert "champion" in fast[len(world.runs)] and '"alpha":"2"' in fast[len(world.runs)]
    _with_client(monkeypatch)
    assert not isinstance(tracking.reader(ws), mlflow_tables.Tables)
    assert _answers(ws, world) == fast
    assert _errors(ws) == fast_errors


def test_a_store_that_is_not_current_is_read_by_mlflow(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    uri = tracking.tracking_uri(ws)
    assert mlflow_tables.open_tables(uri, lambda: None) is not None
    absent = mlflow_tables.open_tables(uri.replace("mlflow.db", "absent.db"), lambda: None)
    assert isinstance(absent, mlflow_tables.NoStore)  # no store yet: no runs (the next test)
    assert mlflow_tables.open_tables(f"sqlite:///{ws}", lambda: None) is None  # a folder, not a store
    # a store in a folder that is not there (a typo in MLFLOW_TRACKING_URI): MLflow's error, not "no runs"
    assert mlflow_tables.open_tables(f"sqlite:///{ws}/nowhere/mlflow.db", lambda: None) is None
    assert mlflow_tables.open_tables("postgresql://u@localhost/db", lambda: None) is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert mlflow_tables.open_tables(uri, lambda: None) is None
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    with sqlite3.connect(ws / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")  # an older revision
    db.close()
    assert mlflow_tables.open_tables(uri, lambda: None) is None
    # MLflow's client then says the schema is out of date, as before
    with pytest.raises(TrackingError, match="out-of-date database schema"):
        trace_run(ws, world.runs["a"])


def test_trace_and_impact_on_a_current_store_import_no_mlflow(
    world: World, ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a fresh process, `trace model` and `impact` print what MLflow's client path gives, and
    MLflow is never imported (issue 22: the import alone is 1-3 s)."""
    code = (
        "import sys\nfrom registry.cli import app\n"
        "try:\n    app(sys.argv[1:])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('MLFLOW', 'mlflow' in sys.modules)"
    )
    outs = []
    for args in (["trace", "model", "digit-clf/1"], ["impact", "--generator", "tiny-digits"]):
        cmd = [sys.executable, "-c", code, *args, "--json", "-w", str(ws)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        assert out.rstrip().endswith("MLFLOW False")
        outs.append(json.loads(out.rstrip().removesuffix("MLFLOW False")))
    _with_client(monkeypatch)
    assert outs[0] == json.loads(trace_model(ws, "digit-clf/1").model_dump_json())
    assert outs[1] == json.loads(impact(ws, generator="tiny-digits").model_dump_json())


def test_without_a_store_trace_and_impact_find_no_runs_and_create_none(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workspace that never tracked a run has no mlflow.db. `impact` answers from its releases alone, as
    MLflow's client would on the empty store it creates, without importing MLflow or leaving a store;
    `trace model` gets MLflow's own "not found" error, as before."""
    ws = copy_world(world, tmp_path / "ws", monkeypatch)
    (ws / "mlflow.db").unlink()
    code = (
        "import sys\nfrom registry.cli import app\n"
        "try:\n    app(sys.argv[1:])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "print('MLFLOW', 'mlflow' in sys.modules)"
    )
    cmd = [sys.executable, "-c", code, "impact", "--generator", "tiny-digits", "--json", "-w", str(ws)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.rstrip().endswith("MLFLOW False")
    answer = json.loads(out.rstrip().removesuffix("MLFLOW False"))
    assert not (ws / "mlflow.db").exists()
    assert answer["versions"] and answer["runs"] == [] and answer["model_versions"] == []
    with pytest.raises(TrackingError) as no_store:
        trace_model(ws, "digit-clf/1")
    (ws / "mlflow.db").unlink()  # MLflow's client made one to say so; start again without it
    _with_client(monkeypatch)
    assert answer == json.loads(impact(ws, generator="tiny-digits").model_dump_json())
    with pytest.raises(TrackingError) as by_client:
        trace_model(ws, "digit-clf/1")
    assert str(no_store.value) == str(by_client.value)
