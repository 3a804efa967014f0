"""benchmarks/bench_manifest_memory.py's tiled manifests and its pieces over a folder of parts: the rows
it measures are distinct, in one file or in several, each part in the row groups of one copy, and a
piece that cannot read a folder says so."""

from __future__ import annotations

import sys

import pyarrow.parquet as pq
import pytest

from benchmarks import bench_manifest_memory as bench
from registry.core import names
from registry.store import manifest as mf
from tests.registry.test_manifest import record


def _source(tmp_path):
    path = tmp_path / "manifest.parquet"
    mf.write_manifest([record(i) for i in range(30)], path)
    return path


def test_parts_are_one_file_a_copy_with_every_row_distinct(tmp_path, monkeypatch):
    source = _source(tmp_path)
    monkeypatch.setattr(mf, "ROW_GROUP", 4)  # group_rows(30) = 15 rows, group_rows(90) = 45
    monkeypatch.setattr(mf, "MAX_GROUPS", 2)
    manifest = bench.tiled(source, tmp_path / "o'parts", 3, None, parts=True)  # a quote in the path
    (manifest / "notes.parquet").write_bytes(b"not a part")  # neither is read
    (manifest / "part-notes.txt").write_text("not a part")
    files = bench._files(manifest)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [30, 30, 30]
    assert {pq.ParquetFile(f).metadata.row_group(0).num_rows for f in files} == {15}  # one copy's groups
    assert bench.pq_groups(manifest) == "3 file(s), 6 groups of 15 rows"
    con = bench._connect(manifest)  # one view over the list, as the pieces read it
    try:
        counts = "SELECT count(*), count(DISTINCT sample_id), count(DISTINCT shard) FROM manifest"
        assert con.execute(counts).fetchone() == (90, 90, 3)
        indexes = "SELECT min(index), max(index), count(DISTINCT index) FROM manifest"
        assert con.execute(indexes).fetchone() == (0, 89, 90)
        assert names.unsafe_rows(con)[0] == 0  # every member <sample id>.png, no id twice
    finally:
        con.close()


def test_one_file_tiled_holds_the_same_rows_as_the_parts(tmp_path):
    source = _source(tmp_path)
    one = bench.tiled(source, tmp_path / "one.parquet", 3, None)
    parts = bench.tiled(source, tmp_path / "parts", 3, None, parts=True)
    assert bench._files(one) == [one]
    a, b = bench._connect(one), bench._connect(parts)
    try:
        query = "SELECT sample_id, member, shard, index FROM manifest ORDER BY index"
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    finally:
        a.close()
        b.close()


def test_the_footers_pieces_read_every_part(tmp_path, capsys):
    parts = bench.tiled(_source(tmp_path), tmp_path / "parts", 3, None, parts=True)
    for name in ("footers:list", "footers:each", "stream:8192", "names"):
        bench.piece(name, parts, tmp_path / "flat.parquet")
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["footers:list", "footers:each", "stream:8192", "names"]
    assert out[0].endswith("(3 file(s))") and out[1].endswith("(3 file(s))")
    assert out[2].endswith("(90 rows)") and "(0 unsafe rows" in out[3]


def test_a_folder_is_refused_where_a_piece_reads_one_file(tmp_path, monkeypatch):
    parts = bench.tiled(_source(tmp_path), tmp_path / "parts", 2, None, parts=True)
    with pytest.raises(SystemExit, match="not a folder of parts"):
        bench.piece("flat-compare", parts, tmp_path / "flat.parquet")
    with pytest.raises(SystemExit, match="no piece 'footers:some'"):
        bench.piece("footers:some", parts, tmp_path / "flat.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no part-\*\.parquet files"):
        bench.piece("names", tmp_path / "empty", tmp_path / "flat.parquet")
    argv = ["bench_manifest_memory.py", str(_source(tmp_path)), "--times", "2", "--parts"]
    monkeypatch.setattr(sys, "argv", argv)  # the default pieces include the flat ones
    with pytest.raises(SystemExit, match=r"flat-write:system, .* read one manifest file"):
        bench.main()  # before any tiling: nothing written
