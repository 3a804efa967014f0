"""DuckDB connections are capped (issue 22): a query bigger than the cap spills to a folder of this process
under the system temp folder, never the workspace, and the folder goes when the connection closes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from registry.core import duck
from registry.core.errors import ConfigError


def test_a_connection_is_capped_and_spills_outside_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    ws, temp = tmp_path / "ws", tmp_path / "temp"
    ws.mkdir(), temp.mkdir()
    monkeypatch.chdir(ws)  # DuckDB's own default spills to .tmp here
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "64MB")
    con = duck.connect()
    limit, progress = con.execute(
        "SELECT current_setting('memory_limit'), current_setting('enable_progress_bar')"
    ).fetchone()
    assert limit.endswith("MiB") and float(limit.split()[0]) <= 64 and progress is False
    # Two million distinct ids grouped: more than 64 MB of hash table, so it spills rather than fail.
    (n,) = con.execute(
        "SELECT count(*) FROM (SELECT id FROM (SELECT 'sample-' || i::VARCHAR || '-' || md5(i::VARCHAR) "
        "AS id FROM range(2000000) t(i)) GROUP BY id HAVING count(*) > 1)"
    ).fetchone()
    assert n == 0
    spill = temp / f"synthreg-duckdb-{os.getpid()}"
    assert list(ws.iterdir()) == []  # nothing in the working folder
    assert spill.is_dir()  # it did spill, under the temp folder
    con.close()
    assert not spill.exists()


def test_a_bad_cap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "lots")
    with pytest.raises(ConfigError, match="SYNTHREG_DUCKDB_MEMORY to a size such as 512MB"):
        duck.connect()
