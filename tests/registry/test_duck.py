"""DuckDB connections are capped (issue 22): a query bigger than the cap spills to a folder of this process
under the system temp folder, never the workspace, and the folder goes when the connection closes."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
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
    (spill,) = temp.glob(f"synthreg-duckdb-{os.getpid()}-*")  # it did spill, under the temp folder
    assert list(ws.iterdir()) == []  # nothing in the working folder
    other = duck.connect()  # a second connection spills to a folder of its own
    other.execute("SELECT count(*) FROM (SELECT DISTINCT md5(i::VARCHAR) FROM range(2000000) t(i))")
    assert len(list(temp.iterdir())) == 2
    con.close()
    assert not spill.exists()
    other.close()
    assert list(temp.iterdir()) == []


def test_the_cap_follows_the_threads(monkeypatch: pytest.MonkeyPatch):
    """64 MB a thread, a thread a core up to 8: each thread needs its own buffers (a sort of 10,000,000
    rows failed with 16 threads in 512 MB)."""
    monkeypatch.delenv("SYNTHREG_DUCKDB_MEMORY", raising=False)
    for cores, threads in ((1, 1), (2, 2), (8, 8), (64, 8)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        con = duck.connect()
        query = "SELECT current_setting('memory_limit'), current_setting('threads')"
        limit, got = con.execute(query).fetchone()
        con.close()
        assert got == threads
        assert abs(float(limit.split()[0]) - 64 * threads * 1e6 / 2**20) < 1  # DuckDB says MiB
    # At most so many threads, for a query beside other work (verify's name check): the cap follows.
    for cores, asked, threads in ((8, 1, 1), (8, 2, 2), (2, 4, 2), (64, 16, 8)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        con = duck.connect(threads=asked)
        limit, got = con.execute(query).fetchone()
        con.close()
        assert got == threads
        assert abs(float(limit.split()[0]) - 64 * threads * 1e6 / 2**20) < 1


def test_a_bad_cap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "lots")
    with pytest.raises(ConfigError, match="SYNTHREG_DUCKDB_MEMORY to a size such as 512MB"):
        duck.connect()


def test_a_query_over_the_cap_is_a_clear_error_not_an_internal_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """A cap too small for a query (a user's SYNTHREG_DUCKDB_MEMORY) fails as an input error naming the
    variable, exit 1, rather than as a bug."""
    import typer

    from registry.cli.common import errors

    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "1KB")
    con = duck.connect()
    with pytest.raises(typer.Exit) as done, errors():
        con.execute("SELECT list(i ORDER BY i DESC) FROM range(300000) t(i)").fetchall()
    assert done.value.exit_code == 1
    err = capsys.readouterr().err
    assert "DuckDB needed more memory than its cap (1KB)" in err and "SYNTHREG_DUCKDB_MEMORY higher" in err
    # Read through Arrow's stream (verify's shard tables), DuckDB's error reaches Python as Arrow's
    # OSError, with DuckDB's text (as a 1M-row verify under a 32 MB cap showed).
    streamed = OSError("Out of Memory Error: failed to allocate data of size 1.0 MiB (29.6/30.5 MiB used)")
    with pytest.raises(typer.Exit) as done, errors():
        raise streamed
    assert done.value.exit_code == 1
    assert "DuckDB needed more memory than its cap (1KB)" in capsys.readouterr().err
    assert duck.out_of_memory(ValueError("Out of Memory Error: x")) is None  # not DuckDB's
    assert duck.out_of_memory(OSError("No space left on device")) is None


def test_duckdb_out_of_memory_is_found_under_the_errors_raised_from_it():
    """SQLAlchemy wraps DuckDB's error in its own, and Great Expectations raises its own from that (its
    test query on a connection out of memory): still the memory advice, not an internal error."""
    import duckdb

    def raised(outer: Exception, inner: BaseException, *, implicit: bool = False) -> Exception:
        try:
            try:
                raise inner
            except BaseException as e:
                if implicit:
                    raise outer  # noqa: B904 - the context only, as a bug in an ``except`` block makes
                raise outer from e
        except Exception as e:
            return e

    oom = duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block (60.8/61.0 MiB used)")
    wrapped = raised(RuntimeError("test connection failed"), raised(RuntimeError("(OperationalError)"), oom))
    assert "DuckDB needed more memory than its cap" in (duck.out_of_memory(wrapped) or "")
    assert "60.8/61.0 MiB used" in (duck.out_of_memory(wrapped) or "")
    # raised while handling one, not from it (a bug in an except block, say): not the cap's fault
    assert duck.out_of_memory(raised(RuntimeError("x"), oom, implicit=True)) is None
    assert duck.out_of_memory(raised(RuntimeError("x"), ValueError("Out of Memory Error: x"))) is None
    looped = RuntimeError("a")  # a chain that refers back to itself ends
    looped.__cause__ = RuntimeError("b")
    looped.__cause__.__cause__ = looped
    assert duck.out_of_memory(looped) is None


def test_lineage_queries_name_the_cap_not_the_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Trace and impact query every release manifest at once; over the cap they say so (a ConfigError
    naming SYNTHREG_DUCKDB_MEMORY), not that the manifests cannot be queried."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from registry.lineage.common import query_manifests

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"sample_id": [f"s{i}" for i in range(50000)]}), path)
    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "1KB")
    with pytest.raises(ConfigError, match="SYNTHREG_DUCKDB_MEMORY higher"):
        query_manifests({str(path): "d@1.0.0"}, "list(sample_id ORDER BY sample_id DESC)")


def test_verify_checks_names_beside_a_paused_stream_of_large_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """verify streams the manifest shard by shard and checks names and duplicate ids beside it; the
    stream, paused while workers check its shards, holds its row group pinned. On one capped database the
    duplicate-id aggregate then failed for a manifest of large row groups (issue 22: a derived 10,000,000
    image release); on verify's two connections it passes at the same cap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from registry.core.names import unsafe_rows
    from registry.releases.verify import _connection
    from registry.store import manifest as mf

    n = 200_000
    ids = [f"ds-id{i % 100:03d}-{i:07d}-{(i * 2654435761) % 2**32:08x}" for i in range(n)]
    path = tmp_path / "manifest.parquet"
    table = pa.table(
        {
            "sample_id": ids,
            "shard": [f"shards/shard-{i // 1000:05d}.tar" for i in range(n)],
            "member": [f"{s}.png" for s in ids],
            "image_sha256": [f"{i:064x}" for i in range(n)],
            "phash": [f"{i:016x}" for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=n)  # one row group, as mf.write_table writes up to 1M rows
    monkeypatch.setenv("SYNTHREG_DUCKDB_MEMORY", "32MB")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with _connection(path) as con, _connection(path) as side:
        stream = mf.tables_by_shard(con, ["member", "sample_id", "image_sha256"])
        next(stream)  # paused, as while the first shards are checked
        assert unsafe_rows(side) == (0, [])
        # The same query on a cursor of the stream's own database is what failed.
        with pytest.raises(duckdb.OutOfMemoryException):
            unsafe_rows(con.cursor())
        assert sum(t.num_rows for _, t in stream) == n - 1000  # the stream goes on to the end


def _dead_pid() -> int:
    """The id of a process that has ended (reaped, so no longer running here)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_process_s_spill_folder_is_removed_by_the_next_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A process killed while its connection had spilled leaves its folder, spill files and all (DuckDB
    removes it only when the connection closes). The next process's first connection removes it: only a
    real folder of this user, named for a process gone, untouched for an hour."""
    import signal
    import subprocess
    import sys
    import time

    temp = tmp_path / "temp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), SYNTHREG_DUCKDB_MEMORY="64MB")
    code = (
        "import os, signal\n"
        "from registry.core import duck\n"
        "con = duck.connect()\n"
        "con.execute(\"SELECT count(*) FROM (SELECT 'sample-' || i::VARCHAR || md5(i::VARCHAR) AS id \"\n"
        "            'FROM range(2000000) t(i)) GROUP BY id').fetchall()\n"  # spills past 64 MB
        "os.kill(os.getpid(), signal.SIGKILL)\n"  # killed with the connection open
    )
    killed = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(duck.__file__).parents[2])
    assert killed.returncode == -signal.SIGKILL
    (left,) = temp.iterdir()
    assert any(left.iterdir())  # what it spilled is still there
    later = time.time() + 2 * duck.STALE_AFTER_S

    dead = _dead_pid()
    recent = temp / f"{duck.SPILL_PREFIX}{dead}-recent"  # a process elsewhere may still be using it
    recent.mkdir()
    (recent / "spill.tmp").write_bytes(b"x")
    os.utime(recent, (later - 60, later - 60))
    (recent / "spill.tmp").touch()  # written just now, as `later` counts
    os.utime(recent / "spill.tmp", (later - 60, later - 60))
    running = temp / f"{duck.SPILL_PREFIX}{os.getppid()}-parent"  # its process still runs
    running.mkdir()
    mine = temp / f"{duck.SPILL_PREFIX}{os.getpid()}-mine"
    mine.mkdir()
    outside = tmp_path / "outside"  # a link named like a left-over folder: neither it nor its target goes
    outside.mkdir()
    (outside / "keep").write_text("keep")
    link = temp / f"{duck.SPILL_PREFIX}{dead}-link"
    link.symlink_to(outside)
    odd = temp / f"{duck.SPILL_PREFIX}notapid-x"
    odd.mkdir()
    huge = temp / f"{duck.SPILL_PREFIX}{10**30}-x"  # os.kill would overflow on it
    huge.mkdir()
    other_digits = temp / f"{duck.SPILL_PREFIX}\u0661\u0662-x"  # digits, but not ASCII ones
    other_digits.mkdir()

    assert duck.remove_stale_spills(temp, now=time.time()) == []  # nothing an hour old yet
    assert duck.remove_stale_spills(temp, now=later) == [left]
    assert sorted(p.name for p in temp.iterdir()) == sorted(
        p.name for p in (recent, running, mine, link, odd, huge, other_digits)
    )
    assert (outside / "keep").read_text() == "keep"


def test_the_first_connection_of_a_process_sweeps_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    stale = tmp_path / f"{duck.SPILL_PREFIX}{_dead_pid()}-old"
    stale.mkdir()
    (stale / "spill.tmp").write_bytes(b"x")
    old = time.time() - 2 * duck.STALE_AFTER_S
    for path in (stale / "spill.tmp", stale):
        os.utime(path, (old, old))
    monkeypatch.setattr(duck, "_swept", True)  # this process swept already: left alone
    duck.connect().close()
    assert stale.exists()
    monkeypatch.setattr(duck, "_swept", False)
    duck.connect().close()
    assert not stale.exists()
