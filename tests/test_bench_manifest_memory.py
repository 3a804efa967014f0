"""benchmarks/bench_manifest_memory.py's tiled manifests: the rows it measures are distinct, in one
file or in several, so a piece's figure is that of a manifest synthreg could have written."""

from __future__ import annotations

import pyarrow.parquet as pq

from benchmarks import bench_manifest_memory as bench
from registry.core import names
from registry.store import manifest as mf
from tests.registry.test_manifest import record


def _source(tmp_path):
    path = tmp_path / "manifest.parquet"
    mf.write_manifest([record(i) for i in range(30)], path)
    return path


def test_parts_are_one_file_a_copy_with_every_row_distinct(tmp_path):
    manifest = bench.tiled(_source(tmp_path), tmp_path / "parts", 3, 8, parts=True)
    files = bench._files(manifest)
    assert [f.name for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [30, 30, 30]
    assert pq.ParquetFile(files[1]).metadata.row_group(0).num_rows == 8
    assert bench.pq_groups(manifest) == "3 file(s), 12 groups of 8 rows"
    con = bench._connect(manifest)  # one view over the list, as the pieces read it
    try:
        assert con.execute(
            "SELECT count(*), count(DISTINCT sample_id), count(DISTINCT shard) FROM manifest"
        ).fetchone() == (90, 90, 3)
        assert con.execute(
            "SELECT min(index), max(index), count(DISTINCT index) FROM manifest"
        ).fetchone() == (0, 89, 90)
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
