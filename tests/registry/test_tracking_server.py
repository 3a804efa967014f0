"""MLflow on a server: a throwaway PostgreSQL 15 cluster (the machine's binaries, run as the ``postgres``
user because initdb refuses root) behind ``mlflow server`` on 127.0.0.1; ``synthreg train``,
``trace model`` and ``impact`` against ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``; and a database
that refuses connections named in one clear line. Skips, with the reason, without the binaries, root
or the PostgreSQL driver. Slow: initdb and the server's migrations take ~30 s."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import TrackingError
from registry.downstream.train import train
from tests.conftest import write_yaml
from tests.registry.conftest import table_rows
from tests.registry.test_train import SMALL, Built, built  # noqa: F401  (the module's dataset fixture)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MLFLOW = Path(sys.executable).parent / "mlflow"
pytestmark = pytest.mark.slow
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*cmd: str) -> None:
    proc = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 cluster on a free loopback port, owned by ``postgres``; yields its MLflow URI."""
    if not (PG_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL 15 binaries in {PG_BIN} (apt-get install postgresql-15)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to run initdb as the postgres user")
    pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install 'synthreg[server]'")
    top = Path(tempfile.mkdtemp(prefix="synthreg-pg-"))  # not under pytest's root-only tmp folders
    shutil.chown(top, "postgres", "postgres")
    port = free_port()
    data = top / "data"
    as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    opts = f"-k {top} -p {port} -h 127.0.0.1"
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(top / "log"), "-o", opts, "-w", "start")
    try:
        as_postgres(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(top, ignore_errors=True)


def start_mlflow(store: str, artifacts: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` on a free port; waits for /health, or fails with the server's own output."""
    port = free_port()
    log = artifacts.parent / "mlflow-server.log"
    cmd = [str(MLFLOW), "server", "--backend-store-uri", store, "--artifacts-destination", str(artifacts)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    artifacts = tmp_path_factory.mktemp("mlflow") / "artifacts"
    proc, url = start_mlflow(postgres, artifacts)
    try:
        yield url
    finally:
        stop(proc)


def test_train_trace_and_impact_through_a_server_on_postgresql(
    built: Built,  # noqa: F811
    server: str,
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    write_yaml(built.ws / "server-params.yaml", {"train": SMALL.model_dump() | {"dataset": "digits@1.0.0"}})
    res = runner.invoke(app, ["train", "--params", "server-params.yaml", "-w", str(built.ws)])
    assert res.exit_code == 0, res.output
    run_line = next(line for line in res.output.splitlines() if line.startswith("MLflow run"))
    run_id = run_line.split()[2].rstrip(";")
    model = f"{SMALL.registered_model or 'digits-classifier'}/1"  # the name follows the dataset

    traced = runner.invoke(app, ["trace", "model", model, "-w", str(built.ws)])
    assert traced.exit_code == 0, traced.output
    lines = [line.rstrip() for line in traced.stdout.splitlines()]
    rows = table_rows(traced.stdout)
    assert lines[0] == f"model {model}"
    assert rows[0] == ["model", f"{model} (READY)"] and rows[1][1].startswith(f"{run_id} (")
    assert ["tracking URI", server] in rows
    assert "dataset digits@1.0.0 (training)" in lines

    hit = runner.invoke(app, ["impact", "--prompt", "handwritten", "-w", str(built.ws)])
    assert hit.exit_code == 0, hit.output
    assert [model, "READY", run_id] in table_rows(hit.stdout)

    # The run is in PostgreSQL, not in a file beside the workspace.
    assert not (built.ws / "mlflow.db").exists()
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres)
    try:
        with engine.connect() as con:
            stored = con.execute(sqlalchemy.text("SELECT run_uuid FROM runs")).scalars().all()
    finally:
        engine.dispose()  # close the pooled connection (an unclosed one is a ResourceWarning, an error here)
    assert run_id in stored


def test_a_database_that_refuses_connections_is_one_clear_line(
    built: Built,  # noqa: F811
    postgres: str,
    monkeypatch: pytest.MonkeyPatch,
):
    closed = f"postgresql://synthreg:s3cret@127.0.0.1:{free_port()}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", closed)
    started = time.monotonic()
    with pytest.raises(TrackingError) as err:
        train(built.ws, SMALL, "digits@working")
    assert time.monotonic() - started < 60  # not MLflow's ~100 s of retries
    shown = closed.replace("s3cret", "***")
    assert str(err.value).startswith(f"MLflow store {shown} refuses connections (connection failed: ")
    assert str(err.value).endswith("Connection refused); start the database or fix MLFLOW_TRACKING_URI")
    assert "s3cret" not in str(err.value)
