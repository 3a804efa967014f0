from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from registry.core.errors import ManifestError
from registry.core.fsio import atomic_write_text
from registry.records.dataset import SampleRecord
from registry.store import manifest as mf
from registry.store.flat_check import _column_groups, flat_differences


def record(i: int) -> SampleRecord:
    return SampleRecord(
        dataset="d",
        sample_id=f"d-1-{i:06d}",
        index=i,
        identity="1",
        attributes={"stroke": "thin"},
        prompt="p",
        negative_prompt="",
        seed=i,
        steps=8,
        guidance=2.0,
        width=16,
        height=16,
        generator_name="g",
        generator_backend="tiny-digits",
        generator_source="model",
        weights_digest="a" * 64,
        generator_licence="CC-BY-4.0",
        pipeline_class="P",
        scheduler="S",
        scheduler_config_digest="b" * 64,
        image_sha256=f"{i:064x}",
        phash="0" * 16,
        shard="s.tar",
        member=f"d-1-{i:06d}.png",
        batch=0,
        batch_size=2,
        library_versions={"torch": "x"},
        device="cpu",
    )


def test_arrow_schema_has_every_model_field():
    assert mf.SCHEMA.names == list(SampleRecord.model_fields)
    assert mf.SCHEMA.field("decision").nullable and not mf.SCHEMA.field("seed").nullable


def test_round_trip_and_duckdb_lookup(tmp_path: Path):
    path = tmp_path / "m.parquet"
    mf.write_manifest([record(0), record(1)], path)
    assert pq.read_metadata(path).row_group(0).column(0).compression == "ZSTD"
    assert mf.records(mf.read_table(path)) == [record(0), record(1)]
    assert mf.find_sample(path, "d-1-000001") == record(1)
    with pytest.raises(ManifestError, match="sample 'nope' is not in manifest"):
        mf.find_sample(path, "nope")


def test_missing_or_corrupted_manifest(tmp_path: Path):
    with pytest.raises(ManifestError, match="does not exist; run `synthreg generate`"):
        mf.read_table(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ManifestError, match="is not a readable Parquet file"):
        mf.read_table(tmp_path / "bad.parquet")


def test_failed_write_keeps_the_old_file(tmp_path: Path):
    path = tmp_path / "m.parquet"
    mf.write_manifest([record(0)], path)
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        mf.write_table("not a table", path)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no temporary left behind


def test_atomic_write_gives_normal_permissions(tmp_path: Path):
    atomic_write_text(tmp_path / "x.json", "{}")
    assert (tmp_path / "x.json").stat().st_mode & 0o044  # readable by group/others, unlike mkstemp's 0600


@pytest.mark.parametrize(("batch_rows", "groups"), [(4, [13, 13, 13, 11]), (20, [20, 20, 10])])
def test_the_flat_copy_has_row_groups_of_its_batches_or_of_group_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, groups: list[int]
):
    """Issue 22: the flat copy's readers hold every row group's metadata too. It is read ``batch_rows``
    at a time and written in groups of as many rows, or of ``group_rows`` where that is more (here 50 rows,
    at most 4 groups: 13)."""
    monkeypatch.setattr(mf, "ROW_GROUP", 3)
    monkeypatch.setattr(mf, "MAX_GROUPS", 4)
    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(50)], manifest)
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released, batch_rows=batch_rows)
    meta = pq.ParquetFile(flat).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == groups
    assert flat_differences(manifest, flat, released) == 0


def test_flat_differences_finds_a_flat_copy_that_says_something_else(tmp_path: Path):
    """The flat copy (for Hugging Face `datasets`) is signed as the releaser made it; verify also checks
    that it says what the manifest says, row for row, map columns included."""
    import json

    import pyarrow as pa

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(5)], manifest)
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released, batch_rows=2)
    assert flat_differences(manifest, flat, released) == 0
    table = pq.read_table(flat)
    attrs = table.column("attributes").to_pylist()
    attrs[3] = json.dumps({**json.loads(attrs[3]), "stroke": "edited"})
    i = table.schema.get_field_index("attributes")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(attrs)), flat)
    assert flat_differences(manifest, flat, released, batch_rows=2) == 1
    pq.write_table(table.slice(0, 4), flat)  # a row left out
    assert flat_differences(manifest, flat, released, batch_rows=3) == 1
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), flat)  # a row added
    assert flat_differences(manifest, flat, released) == 1
    pq.write_table(table.take([1, 0, 2, 3, 4]), flat)  # two rows swapped
    assert flat_differences(manifest, flat, released) == 2
    # What `datasets` would read differently although DuckDB's casts would call it equal: the map's
    # JSON with a number, a column of another type, an extra column.
    attrs = table.column("attributes").to_pylist()
    attrs[0] = '{"stroke": 1}'
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(attrs)), flat)
    assert flat_differences(manifest, flat, released) == 1
    g = table.schema.get_field_index("guidance")
    pq.write_table(table.set_column(g, "guidance", table.column(g).cast(pa.float32())), flat)
    assert flat_differences(manifest, flat, released) == 5  # another schema: every row
    pq.write_table(table.append_column("label_override", pa.array(["x"] * 5)), flat)
    assert flat_differences(manifest, flat, released) == 5
    flat.write_bytes(b"not parquet")
    assert flat_differences(manifest, flat, released) == 5


@pytest.mark.parametrize("batch_rows", [3, 8, 1000])
def test_a_row_that_differs_in_several_columns_counts_once(tmp_path: Path, batch_rows: int):
    """The columns are compared one at a time (a reader holds a row group of what it reads, issue 22);
    each row that differs is marked once, wherever it falls in the batches and the bitmap's bytes."""
    import pyarrow as pa

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(50)], manifest)
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released)
    table = pq.read_table(flat)
    for name, rows in {"prompt": [7, 8, 49], "seed": [8, 23], "identity_confidence": [8, 23, 0]}.items():
        i = table.schema.get_field_index(name)
        values = table.column(i).to_pylist()
        for r in rows:
            values[r] = "edited" if name == "prompt" else (values[r] or 0) + 1
        table = table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    pq.write_table(table, flat)
    assert flat_differences(manifest, flat, released, batch_rows=batch_rows) == 5  # rows 0, 7, 8, 23, 49
    pq.write_table(table.slice(0, 40), flat)  # ten rows gone, row 49 with them
    assert flat_differences(manifest, flat, released, batch_rows=batch_rows) == 10 + 4


def test_a_forged_row_count_in_the_flat_copys_footer_changes_nothing(tmp_path: Path):
    """Rows are counted as read: a footer's ``num_rows`` is not checked against its row groups by any
    reader, so a flat copy with rows dropped or added and the manifest's count in its footer is still
    caught, and one whose footer says fewer rows than it has neither passes nor crashes."""
    import pyarrow as pa

    from tests.registry.forged_parquet import set_num_rows

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(30)], manifest)
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released)
    table = pq.read_table(flat)
    pq.write_table(table.slice(0, 20), flat, row_group_size=10)  # ten rows gone
    set_num_rows(flat, 30)
    assert pq.ParquetFile(flat).metadata.num_rows == 30 and pq.read_table(flat).num_rows == 20
    assert flat_differences(manifest, flat, released, batch_rows=7) == 10
    pq.write_table(pa.concat_tables([table, table.slice(0, 10)]), flat, row_group_size=10)  # ten added
    set_num_rows(flat, 30)
    assert flat_differences(manifest, flat, released, batch_rows=7) == 10
    prompts = table.column("prompt").to_pylist()
    prompts[27] = "edited"
    i = table.schema.get_field_index("prompt")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(prompts)), flat, row_group_size=10)
    for stated in (20, 0):
        set_num_rows(flat, stated)
        assert flat_differences(manifest, flat, released, batch_rows=7) == 1


def test_every_manifest_batch_is_cast_also_past_the_end_of_the_flat_copy(tmp_path: Path):
    """A manifest value that cannot be synthreg's type, after the rows the flat copy has: no row can
    match, whatever the batch size."""
    import pyarrow as pa

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(30)], manifest)
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released)
    pq.write_table(pq.read_table(flat).slice(0, 10), flat)
    table = pq.read_table(manifest)
    i = table.schema.get_field_index("seed")
    seeds = [float(s) for s in table.column(i).to_pylist()]
    seeds[25] = 1.5  # not an integer: the cast to int64 fails at this row only
    pq.write_table(table.set_column(i, pa.field("seed", pa.float64()), pa.array(seeds)), manifest)
    for batch_rows in (7, 10, 1000):
        assert flat_differences(manifest, flat, released, batch_rows=batch_rows) == 30


def test_the_flat_comparison_reads_every_column_once_in_a_few_groups(tmp_path: Path):
    """Each pass reads a group of columns that decodes to about as much as the largest column alone:
    every column once, in order, in fewer passes than columns and more than one."""
    manifest = tmp_path / "m.parquet"
    mf.write_manifest([record(i) for i in range(50)], manifest)
    file = pq.ParquetFile(manifest)
    groups = _column_groups(file)
    assert [name for group in groups for name in group] == mf.SCHEMA.names
    assert 1 < len(groups) < len(mf.SCHEMA.names)
    size = {file.schema_arrow.names[0]: 0}
    meta = file.metadata.row_group(0)
    for i in range(meta.num_columns):
        top = meta.column(i).path_in_schema.split(".")[0]
        size[top] = size.get(top, 0) + meta.column(i).total_uncompressed_size
    largest = max(size.values())
    assert all(len(g) == 1 or sum(size[n] for n in g) <= largest for g in groups)


def test_map_columns_are_compared_with_the_texts_write_flat_writes(tmp_path: Path):
    """verify reads each distinct JSON text of a map column once and compares the maps it names (issue
    22), with the answer the texts written a row at a time give: a map with a key twice is the text of
    its last value, and any other spelling of the same map (no spaces, keys swapped, a key twice in the
    text) is a text `datasets` would read differently, so it differs."""
    import pyarrow as pa

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    mf.write_manifest([record(i) for i in range(6)], manifest)
    table = pq.read_table(manifest)
    i = table.schema.get_field_index("attributes")
    maps = [[("stroke", "thin"), ("size", "big")]] * 6
    maps[2] = [("stroke", "thin"), ("stroke", "bold")]  # a key twice: dict() keeps the last
    maps[4] = []
    pq.write_table(
        table.set_column(i, table.schema.field(i), pa.array(maps, table.schema.field(i).type)), manifest
    )
    released = {"s.tar": f"data/shards/{'a' * 64}.tar"}
    mf.write_flat(manifest, flat, released, batch_rows=4)
    written = pq.read_table(flat)
    assert written.column("attributes").to_pylist()[2:5] == [
        '{"stroke": "bold"}',
        '{"stroke": "thin", "size": "big"}',
        "{}",
    ]
    assert flat_differences(manifest, flat, released) == 0
    for row, text in {
        0: '{"stroke":"thin","size":"big"}',  # no spaces
        1: '{"size": "big", "stroke": "thin"}',  # keys swapped
        2: '{"stroke": "thin", "stroke": "bold"}',  # the key twice, as the map holds it
        3: '{"stroke": "thin", "size": 1}',  # a number
        4: "null",  # for an empty map
        5: "{}",
    }.items():
        texts = written.column("attributes").to_pylist()
        texts[row] = text
        j = written.schema.get_field_index("attributes")
        pq.write_table(written.set_column(j, written.schema.field(j), pa.array(texts, pa.string())), flat)
        assert flat_differences(manifest, flat, released, batch_rows=2) == 1, text  # rows 0-1 alone
    k = written.schema.get_field_index("observed_attributes")  # nullable: null in every row here
    texts = written.column(k).to_pylist()
    texts[0], texts[1] = "null", "{}"  # a text where there is no map
    pq.write_table(written.set_column(k, written.schema.field(k), pa.array(texts, pa.string())), flat)
    assert flat_differences(manifest, flat, released) == 2


def test_the_flat_copy_names_each_rows_released_shard(tmp_path: Path):
    """Issue 23: the flat copy's `shard` is the file inside the release folder, so a plain tool reads
    the image without a join through release.json; the manifest keeps its workspace path."""
    import pyarrow as pa

    manifest, flat = tmp_path / "m.parquet", tmp_path / "f.parquet"
    rows = [record(i).model_copy(update={"shard": f"data/d/shards/{i % 2}.tar"}) for i in range(5)]
    mf.write_manifest(rows, manifest)
    released = {f"data/d/shards/{k}.tar": f"data/shards/{c * 64}.tar" for k, c in ((0, "a"), (1, "b"))}
    mf.write_flat(manifest, flat, released, batch_rows=2)
    assert pq.read_table(flat).column("shard").to_pylist() == [
        f"data/shards/{'ab'[i % 2] * 64}.tar" for i in range(5)
    ]
    assert pq.read_table(manifest).column("shard").to_pylist() == [r.shard for r in rows]
    assert flat_differences(manifest, flat, released) == 0
    # Another mapping (a shard said to be another file) and the workspace path both differ.
    assert (
        flat_differences(manifest, flat, dict(zip(released, reversed(released.values()), strict=True))) == 5
    )
    table = pq.read_table(flat)
    i = table.schema.get_field_index("shard")
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array([r.shard for r in rows])), flat)
    assert flat_differences(manifest, flat, released) == 5
    with pytest.raises(ManifestError, match=r"shard 'data/d/shards/1\.tar' was not released"):
        mf.write_flat(manifest, flat, {"data/d/shards/0.tar": "data/shards/x.tar"})


def test_a_table_built_from_columns_is_the_table_of_the_records():
    """Issue 22: generation builds a batch's rows as columns; the table is the one the records make,
    shared values and SampleRecord's defaults included."""
    rows = [record(0), record(1), record(2).model_copy(update={"attributes": {"stroke": "bold", "b": "x"}})]
    per_row = {
        name: [getattr(r, name) for r in rows]
        for name in ("sample_id", "index", "seed", "image_sha256", "member", "attributes")
    }
    shared = {
        name: getattr(rows[0], name)
        for name in mf.SCHEMA.names
        if name not in per_row and name in rows[0].model_fields_set
    }
    table = mf.columns_table(3, per_row, shared)
    assert table.equals(mf.to_table(rows)) and table.schema == mf.SCHEMA
    assert mf.records(table) == rows
    with pytest.raises(ValueError, match="no manifest column 'colour'"):
        mf.columns_table(3, per_row, {**shared, "colour": "red"})
    with pytest.raises(ValueError, match="column device has no values and SampleRecord gives it no default"):
        mf.columns_table(3, per_row, {k: v for k, v in shared.items() if k != "device"})
    with pytest.raises(ValueError, match="column sample_id has 3 values for 2 rows"):
        mf.columns_table(2, per_row, shared)


MAPS = [
    [("tone", "light"), ("texture", "fine")],
    None,
    [],
    [("tone", "light"), ("texture", "fine")],
    [("texture", "fine"), ("tone", "light")],  # the same dict in another order: another text
    [("a", "1"), ("a", "2")],  # a repeated key: dict() keeps the last
    [("é", 'ü\n"q"')],  # escaped by json.dumps
    [("a", "1\x1eb")],  # a separator of the grouping: row by row
    [("x", None)],  # a null value: row by row
]


@pytest.mark.parametrize("rows", [MAPS[:5], MAPS[:7], MAPS, [None, None], [], MAPS[2:3] * 4])
@pytest.mark.parametrize("sort_keys", [False, True])
def test_map_texts_made_per_distinct_map_equal_json_dumps_of_each_row(rows, sort_keys):
    """issue 22: the flat manifest's map columns are written once per distinct map, not once a row; the
    text is json.dumps of the row's dict, byte for byte, in every slice."""
    import json

    import pyarrow as pa

    column = pa.array(rows, pa.map_(pa.string(), pa.string()))
    for part in (column, column.slice(1), column.slice(2, 3)):
        expected = [None if v is None else json.dumps(dict(v), sort_keys=sort_keys) for v in part.to_pylist()]
        assert mf.map_json_texts(part, sort_keys).to_pylist() == expected


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 10, 64])
def test_batches_are_pyarrows_batches_read_a_row_group_at_a_time(tmp_path: Path, batch_rows: int):
    """``mf.batches`` gives the batches of ``iter_batches`` over the whole file (rows and boundaries: a
    writer makes a row group of each, so the bytes written from them stay the same), across row groups
    of every size, a batch that spans several of them and a last one short."""
    path = tmp_path / "m.parquet"
    ids = [f"s{k:03d}" for k in range(47)]
    table = pa.table({"sample_id": ids, "n": list(range(47)), "x": [str(k % 3) for k in range(47)]})
    with pq.ParquetWriter(path, table.schema) as writer:
        at = 0
        for size in (5, 1, 20, 3, 18):  # row groups of uneven sizes
            writer.write_table(table.slice(at, size))
            at += size
    assert pq.ParquetFile(path).num_row_groups == 5
    whole = list(pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["sample_id", "n"]))
    ours = list(mf.batches(path, batch_rows, ["sample_id", "n"]))
    assert [b.num_rows for b in ours] == [b.num_rows for b in whole]
    assert all(a.equals(b) for a, b in zip(ours, whole, strict=True))
    alone = list(mf.batches(path, batch_rows, ["sample_id", "n"], use_threads=False))  # verify's way
    assert [b.num_rows for b in alone] == [b.num_rows for b in whole]
    assert all(a.equals(b) for a, b in zip(alone, whole, strict=True))
    assert pa.Table.from_batches(ours).column("sample_id").to_pylist() == ids


@pytest.mark.parametrize("batch_rows", [3, 4, 7, 10, 64])
def test_batches_ask_pyarrow_for_at_most_read_rows_and_give_the_same_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int
):
    """issue 22: pyarrow's reader holds several times the batch it decodes, so ``mf.batches`` asks it for
    at most ``READ_ROWS`` rows (a row group of a manifest up to 1,048,576 rows) and joins them: the same
    rows and boundaries as one ``iter_batches`` of ``batch_rows`` over the whole file; the same values of
    a column read as dictionary codes (whose batches pyarrow ends at each row group)."""
    path = tmp_path / "m.parquet"
    table = pa.table(
        {
            "sample_id": [f"s{k:03d}" for k in range(47)],
            "x": pa.array([str(k % 3) for k in range(47)]).dictionary_encode(),
        }
    )
    with pq.ParquetWriter(path, table.schema) as writer:
        at = 0
        for size in (5, 1, 20, 3, 18):
            writer.write_table(table.slice(at, size))
            at += size
    whole = list(pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["sample_id"]))
    asked: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        asked.append(kwargs["batch_size"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mf, "READ_ROWS", 4)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    ours = list(mf.batches(path, batch_rows, ["sample_id"]))
    assert asked and max(asked) == min(batch_rows, 4)
    assert [b.num_rows for b in ours] == [b.num_rows for b in whole]
    assert all(a.equals(b) for a, b in zip(ours, whole, strict=True))
    codes = pa.Table.from_batches(list(mf.batches(path, batch_rows, ["x"]))).column("x")
    assert pa.types.is_dictionary(codes.type)
    assert codes.to_pylist() == table.column("x").to_pylist()


def test_dataset_of_reads_the_column_a_batch_at_a_time_and_says_none_when_unsure(tmp_path: Path):
    """The one dataset a manifest names, read in batches (issue 22: the whole column added about 95 MB at
    10M rows); None for several, none, nulls only, no such column, not Parquet or no file."""
    cases = {
        "one.parquet": pa.table({"dataset": ["a", "a", None, "a"]}),
        "two.parquet": pa.table({"dataset": ["a", "a", "a", "b"]}),
        "none.parquet": pa.table({"dataset": pa.array([], pa.string())}),
        "nulls.parquet": pa.table({"dataset": pa.array([None, None], pa.string())}),
        "other.parquet": pa.table({"x": [1]}),
    }
    for name, table in cases.items():
        pq.write_table(table, tmp_path / name, row_group_size=1)
    (tmp_path / "text.parquet").write_text("not parquet")
    got = {n: mf.dataset_of(tmp_path / n) for n in [*cases, "text.parquet", "missing.parquet"]}
    assert got == {n: ("a" if n == "one.parquet" else None) for n in got}


def test_datasets_and_columns_are_what_duckdb_reads_and_none_when_pyarrow_cannot(tmp_path: Path):
    """validate's dataset check reads the footer and the column's dictionary codes, not a DuckDB scan
    (issue 22): the same distinct values in DuckDB's order (NULL last), and the same columns."""
    import duckdb

    cases = {
        "one.parquet": (pa.table({"dataset": ["a", "a", None, "a"], "x": [1, 2, 3, 4]}), {}),
        "several.parquet": (pa.table({"dataset": ["b", "a", "c", "a"]}), {}),
        "plain.parquet": (pa.table({"dataset": ["b", None, "a"]}), {"use_dictionary": False}),
        "none.parquet": (pa.table({"dataset": pa.array([], pa.string())}), {}),
        "nulls.parquet": (pa.table({"dataset": pa.array([None, None], pa.string())}), {}),
        "other.parquet": (pa.table({"x": [1]}), {}),
    }
    con = duckdb.connect()
    for name, (table, options) in cases.items():
        path = tmp_path / name
        pq.write_table(table, path, row_group_size=1, **options)
        columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}')").fetchall()]
        expected = (
            [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT dataset FROM read_parquet('{path}') ORDER BY 1"
                ).fetchall()
            ]
            if "dataset" in columns
            else []
        )
        assert mf.datasets_and_columns(path) == (expected, columns), name
    # Left to DuckDB: what pyarrow cannot read, names that differ only in case (for DuckDB, `dataset`
    # is then the first of them), and a dataset column that is not text.
    (tmp_path / "text.parquet").write_text("not parquet")
    pq.write_table(pa.table({"Dataset": ["x"], "dataset": ["a"]}), tmp_path / "cased.parquet")
    pq.write_table(pa.table({"dataset": [3.0, float("nan"), 1.0]}), tmp_path / "numbers.parquet")
    for name in ("text.parquet", "missing.parquet", "cased.parquet", "numbers.parquet"):
        assert mf.datasets_and_columns(tmp_path / name) is None, name


def test_derive_writes_the_kept_rows_in_row_groups_as_filter_does(tmp_path: Path):
    """Issue 22: derive wrote groups of 65,536 rows, and a reader holds a group of the columns it reads,
    so verify of a derived release took more memory than of its parent (at 10,000,000 images, more than
    DuckDB's cap). Now at most ``mf.ROW_GROUP`` rows a group, the same rows in the same order."""
    from registry.releases.derive import _write_kept

    rows = [record(i) for i in range(10_000)]
    parent, out = tmp_path / "parent.parquet", tmp_path / "derived.parquet"
    mf.write_manifest(rows, parent)  # one group of 10,000 rows
    _write_kept(parent, out, [r.sample_id for r in rows[::3]], set())
    meta = pq.ParquetFile(out).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sizes == [mf.ROW_GROUP, 6666 - mf.ROW_GROUP]
    assert pq.read_table(out).column("sample_id").to_pylist() == [r.sample_id for r in rows if r.index % 3]


def test_derive_writes_at_most_max_groups_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 22: every reader holds the metadata of every row group (derive of a 10,000,000-image release,
    whose new manifest had 2,420 groups of 4,096 rows, peaked at 1,058 MB). Past ``ROW_GROUP *
    MAX_GROUPS`` rows the groups grow instead: here the parent's 10,000 rows make groups of 2,500."""
    from registry.releases.derive import _write_kept

    monkeypatch.setattr(mf, "ROW_GROUP", 1000)
    monkeypatch.setattr(mf, "MAX_GROUPS", 4)
    rows = [record(i) for i in range(10_000)]
    parent, out = tmp_path / "parent.parquet", tmp_path / "derived.parquet"
    mf.write_manifest(rows, parent)
    _write_kept(parent, out, [r.sample_id for r in rows[::3]], set())
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [2500, 2500, 1666]
    assert pq.read_table(out).column("sample_id").to_pylist() == [r.sample_id for r in rows if r.index % 3]


def test_derive_decides_what_to_drop_over_many_batches_and_keeps_the_rest_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """What to drop is decided 16 batches at a time, the rows written a batch at a time: with batches of
    7 rows, 1,000 rows take 9 decisions, the last one short; samples and a whole identity are dropped."""
    from registry.releases.derive import _write_kept

    monkeypatch.setattr(mf, "ROW_GROUP", 7)
    rows = [record(i).model_copy(update={"identity": str(i % 4)}) for i in range(1000)]
    parent, out = tmp_path / "parent.parquet", tmp_path / "derived.parquet"
    mf.write_manifest(rows, parent)
    dropped = {r.sample_id for r in rows[::5]}
    _write_kept(parent, out, sorted(dropped), {"3"})
    kept = [r.sample_id for r in rows if r.sample_id not in dropped and r.identity != "3"]
    assert pq.read_table(out).column("sample_id").to_pylist() == kept
    assert pq.read_table(out).equals(
        pq.read_table(parent).filter(pa.array([r.sample_id in kept for r in rows]))
    )


@pytest.mark.parametrize("other", ["reordered", "shorter", "longer"])
def test_derive_refuses_a_parent_that_reads_differently_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: str
):
    """The parent is read twice (what to drop, then the rows): if the two reads do not give the same ids
    in the same order, derive stops with what to do, and writes nothing."""
    from registry.core.errors import ReleaseError
    from registry.releases.derive import _write_kept

    monkeypatch.setattr(mf, "ROW_GROUP", 7)
    rows = [record(i) for i in range(200)]
    changed = {"reordered": rows[::-1], "shorter": rows[:150], "longer": [*rows, record(200)]}[other]
    parent, edited, out = (
        tmp_path / "parent.parquet",
        tmp_path / "edited.parquet",
        tmp_path / "derived.parquet",
    )
    mf.write_manifest(rows, parent)
    mf.write_manifest(changed, edited)
    batches = mf.batches

    def second_read_differs(source, batch_rows, columns=None):  # the decision's read sees the edited file
        return batches(edited if columns == ["sample_id", "identity"] else source, batch_rows, columns)

    monkeypatch.setattr(mf, "batches", second_read_differs)
    with pytest.raises(ReleaseError, match="changed while derive read it; derive again"):
        _write_kept(parent, out, [rows[3].sample_id], set())
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "edited.parquet",
        "parent.parquet",
    ]


def test_group_rows_caps_the_groups_of_a_manifest():
    assert mf.group_rows(0) == mf.group_rows(1) == mf.group_rows(mf.ROW_GROUP * mf.MAX_GROUPS) == mf.ROW_GROUP
    assert mf.group_rows(10_000_000) == 39_063
    for rows in (1, 4096, 4097, 1_048_577, 10_000_000, 123_456_789):
        assert -(-rows // mf.group_rows(rows)) <= mf.MAX_GROUPS


@pytest.mark.parametrize("rows", [1, 3, 7, 10])
def test_grouped_writer_writes_groups_of_exactly_its_rows_however_the_tables_come(tmp_path: Path, rows: int):
    """pyarrow starts a row group at every ``write_table``; ``GroupWriter`` holds what it is given until a
    whole group is there, so the groups do not follow the tables, and the rows are the same, in order."""
    import random

    rng = random.Random(rows)
    sizes = [rng.choice([0, 1, 2, 5, 11, 23]) for _ in range(40)]
    tables, start = [], 0
    for n in sizes:
        tables.append(pa.table({"i": pa.array(range(start, start + n), pa.int64())}))
        start += n
    path = tmp_path / "t.parquet"
    with pq.ParquetWriter(path, tables[0].schema) as writer:
        grouped = mf.GroupWriter(writer, rows)
        for t in tables:
            grouped.write(t)
            assert grouped.have < rows  # never more than a group held
        grouped.flush()
    meta = pq.ParquetFile(path).metadata
    got = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert got == [rows] * (start // rows) + ([start % rows] if start % rows else [])
    assert pq.read_table(path).column("i").to_pylist() == list(range(start))


def test_grouped_writer_leaves_no_file_when_its_block_fails(tmp_path: Path):
    path = tmp_path / "m.parquet"
    with (
        pytest.raises(RuntimeError),
        mf.grouped_writer(path, mf.SCHEMA, mf.group_rows(10), manifest_rows=10) as writer,
    ):
        writer.write(mf.to_table([record(0)]))
        raise RuntimeError("killed mid-write")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def _dictionary_page_bytes(path: Path, column: str) -> int:
    """The compressed bytes of the first row group's dictionary page of ``column`` (and its header)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    for i in range(meta.num_columns):
        chunk = meta.column(i)
        if chunk.path_in_schema == column:
            assert chunk.has_dictionary_page
            return chunk.data_page_offset - chunk.dictionary_page_offset
    raise AssertionError(column)


def test_a_large_manifest_is_written_in_small_pages_and_read_without_prefetching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Issue 22: past ``ROW_GROUP * MAX_GROUPS`` rows a manifest's row groups grow with it, and a reader
    holds a page and a dictionary of each column it reads, and DuckDB a group's column chunks read ahead;
    so a ``large`` manifest is written in pages and dictionaries of ``SMALL_PAGE`` bytes and read through
    ``connect`` without DuckDB's prefetching (on every cursor of the connection). Below that size, and
    for the flat copy of a manifest below it, the writer's settings are Arrow's defaults, as before, so
    those bytes are unchanged. (Here ``MAX_GROUPS`` is 2: 8,192 rows are large.)"""
    import json

    monkeypatch.setattr(mf, "MAX_GROUPS", 2)
    rows = 3 * mf.ROW_GROUP  # 12,288 rows: large, in 2 groups of 6,144
    assert mf.large(rows) and not mf.large(mf.ROW_GROUP * mf.MAX_GROUPS)
    assert mf.writer_options(100) == {"compression": "zstd"}
    import hashlib

    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)]  # as incompressible
    table = mf.to_table([record(i).model_copy(update={"image_sha256": d}) for i, d in enumerate(digests)])
    written = {}
    for name, n in (("small", rows // 2), ("large", rows)):
        path = tmp_path / f"{name}.parquet"
        with mf.grouped_writer(path, mf.SCHEMA, mf.group_rows(n), manifest_rows=n) as writer:
            writer.write(table.slice(0, n))
        written[name] = path
    # 6,144 distinct 64-digit image digests: about 400 KB of dictionary under Arrow's 1 MiB limit, and
    # in the large manifest one small page of it, then plain pages (the writer looks at the dictionary's
    # size every 1,024 values, so a page can pass SMALL_PAGE by up to as many values).
    assert _dictionary_page_bytes(written["small"], "image_sha256") > 4 * mf.SMALL_PAGE
    assert _dictionary_page_bytes(written["large"], "image_sha256") <= 2 * mf.SMALL_PAGE
    assert pq.read_table(written["large"]).equals(table)
    prefetch = "SELECT current_setting('disable_parquet_prefetching')"
    for name, disabled in (("small", False), ("large", True)):
        con = mf.connect(written[name])
        try:
            assert con.execute(prefetch).fetchone()[0] is disabled
            assert con.cursor().execute(prefetch).fetchone()[0] is disabled  # tables_by_shard's cursor
            assert con.execute("SELECT count(*) FROM manifest").fetchone()[0] == (
                rows if disabled else rows // 2
            )
        finally:
            con.close()
    # The flat copy takes its manifest's settings (its groups are at least 10,000 rows either way).
    flat = tmp_path / "flat.parquet"
    mf.write_flat(written["large"], flat, {"s.tar": f"data/shards/{'a' * 64}.tar"})
    assert _dictionary_page_bytes(flat, "image_sha256") <= 2 * mf.SMALL_PAGE
    assert json.loads(pq.read_table(flat).column("attributes")[0].as_py()) == {"stroke": "thin"}
    mf.write_flat(written["small"], flat, {"s.tar": f"data/shards/{'a' * 64}.tar"})
    assert _dictionary_page_bytes(flat, "image_sha256") > 4 * mf.SMALL_PAGE
