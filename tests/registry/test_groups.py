"""``groups.GroupWriter`` holds a row group's text as string views (issue 22): the file must be byte for
byte what a plain ``ParquetWriter`` makes of the same tables, in the same groups, and read back as the
plain schema; and what it holds must be smaller where the text repeats."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.store import groups
from registry.store import manifest as mf

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("often", pa.string()),  # few distinct values, some long, some null
        pa.field("n", pa.int64()),
        pa.field("tags", pa.map_(pa.string(), pa.string())),  # nested: left as it is
        pa.field("note", pa.string()),
    ]
).with_metadata({b"made-by": b"a test"})

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
row = st.fixed_dictionaries(
    {
        "often": st.one_of(
            st.none(), st.sampled_from(["", "short", "a value longer than twelve bytes", "é" * 30])
        ),
        "n": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "tags": st.one_of(st.none(), st.dictionaries(st.sampled_from(["k", "torch"]), text, max_size=2)),
        "note": st.one_of(st.none(), text),
    }
)


def _tables(rows: list[dict], cuts: list[int], chunked: bool = False) -> list[pa.Table]:
    """The rows as tables cut at ``cuts``; ``chunked``: each table a few chunks (the writer writes each
    chunk on its own, so a page ends where a chunk does)."""
    columns = {name: [r[name] for r in rows] for name in ("often", "n", "note")}
    columns["id"] = [f"id-{i}" for i in range(len(rows))]
    columns["tags"] = [None if r["tags"] is None else list(r["tags"].items()) for r in rows]
    whole = pa.table({f.name: pa.array(columns[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)
    bounds = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    tables = [whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)]
    if chunked:
        tables = [pa.concat_tables([t.slice(0, t.num_rows // 3), t.slice(t.num_rows // 3)]) for t in tables]
    return tables


def _plain(tables: list[pa.Table], rows: int, options: dict) -> bytes:
    """The file a plain ParquetWriter makes of the tables in groups of ``rows`` rows."""
    out = io.BytesIO()
    whole = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    with pq.ParquetWriter(out, SCHEMA, **options) as writer:
        for start in range(0, whole.num_rows, rows):
            writer.write_table(whole.slice(start, rows), row_group_size=rows)
    return out.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row, min_size=0, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=8),
    group=st.integers(1, 25),
    large=st.booleans(),
    chunked=st.booleans(),
)
def test_held_as_views_the_file_is_the_bytes_of_the_plain_columns(
    tmp_path: Path, rows: list[dict], cuts: list[int], group: int, large: bool, chunked: bool
) -> None:
    options = mf.writer_options(10_000_000 if large else 100)
    tables = _tables(rows, cuts, chunked)
    path = tmp_path / "t.parquet"
    with groups.writing(path, SCHEMA, group, **options) as writer:
        for t in tables:
            writer.write(t)
            assert writer.have < group
    written = path.read_bytes()
    assert hashlib.sha256(written).hexdigest() == hashlib.sha256(_plain(tables, group, options)).hexdigest()
    back = pq.read_table(path)
    assert back.schema == SCHEMA and back.equals(pa.concat_tables(tables) if tables else SCHEMA.empty_table())


@pytest.mark.parametrize("manifest_rows", [50, 10_000_000])
def test_a_manifest_and_its_flat_copy_are_the_bytes_pyarrow_writes(
    tmp_path: Path, manifest_rows: int
) -> None:
    """The writers synthreg uses (``grouped_writer``: filter, derive, the flat copy) on a manifest's
    schema and on the flat copy's, holding text as views only for a ``large`` manifest (elsewhere a
    group is one table, so nothing is held over, and hashing the text would only cost time)."""
    from tests.registry.test_manifest import record

    table = mf.to_table([record(i) for i in range(50)])
    flat = mf.flat_table(table, {"s.tar": f"data/shards/{'a' * 64}.tar"})
    for schema, t in ((mf.SCHEMA, table), (flat.schema, flat)):
        path = tmp_path / "m.parquet"
        with mf.grouped_writer(path, schema, 16, manifest_rows=manifest_rows) as writer:
            assert bool(writer.views) is mf.large(manifest_rows)
            for start in range(0, 50, 7):
                writer.write(t.slice(start, 7))
        plain = io.BytesIO()
        with pq.ParquetWriter(plain, schema, **mf.writer_options(manifest_rows)) as w:
            for start in range(0, 50, 16):
                w.write_table(t.slice(start, 16), row_group_size=16)
        assert path.read_bytes() == plain.getvalue()


def test_repeated_text_is_held_once_a_batch() -> None:
    """What a group holds of text that repeats: a view a row and the value once, not the value a row
    (the flat copy's library versions, 177 bytes a row; issue 22)."""
    long = "x" * 177
    table = pa.table({"v": pa.array([long] * 4096), "u": pa.array([f"{i:064d}" for i in range(4096)])})
    out = io.BytesIO()
    with pq.ParquetWriter(out, groups.viewed(table.schema), store_schema=False) as writer:
        grouped = groups.GroupWriter(writer, 10_000, table.schema)
        grouped.write(table)
        held = grouped.held[0]
        assert held.column("v").nbytes < 20 * 4096 < table.column("v").nbytes / 8
        assert held.column("v").to_pylist() == table.column("v").to_pylist()
        assert held.column("u").to_pylist() == table.column("u").to_pylist()  # distinct: views of its bytes


def test_a_chunked_table_of_distinct_text_keeps_its_pages_where_the_plain_writer_ends_them(
    tmp_path: Path,
) -> None:
    """In small pages (a ``large`` manifest's), a page ends where a chunk does: a review found that
    joining the chunks before holding them moved the page breaks (4,645 bytes against 4,602)."""
    schema = pa.schema([pa.field("s", pa.string())])
    values = [f"{i:0100d}" for i in range(2000)]
    table = pa.table([pa.chunked_array([pa.array(values[:700]), pa.array(values[700:])])], schema=schema)
    options = mf.writer_options(10_000_000)
    path = tmp_path / "t.parquet"
    with groups.writing(path, schema, 2000, **options) as writer:
        writer.write(table)
    plain = io.BytesIO()
    with pq.ParquetWriter(plain, schema, **options) as w:
        w.write_table(table, row_group_size=2000)
    assert path.read_bytes() == plain.getvalue()


@pytest.mark.parametrize(
    "given",
    [
        pa.table({"b": ["B"] * 3, "a": ["A"] * 3}),  # the columns in another order
        pa.table({"a": ["A"] * 3, "c": ["B"] * 3}),  # another name
        pa.table({"a": ["A"] * 3, "b": pa.array(["B"] * 3, pa.large_string())}),  # another type
        pa.table({"a": ["A"] * 3, "b": [1, 2, 3]}),
    ],
)
def test_a_table_of_another_schema_is_refused_as_the_plain_writer_refuses_it(
    tmp_path: Path, given: pa.Table
) -> None:
    """Views are built a column at a time by position, so a table whose columns are not the schema's is
    refused, never written under the wrong names (a review found it mislabelled swapped columns)."""
    schema = pa.schema([pa.field("a", pa.string()), pa.field("b", pa.string())])
    with (
        pq.ParquetWriter(io.BytesIO(), schema) as plain,
        pytest.raises(ValueError, match="schema does not match"),
    ):
        plain.write_table(given)
    with (
        pytest.raises(ValueError, match="schema does not match"),
        groups.writing(tmp_path / "t.parquet", schema, 2) as writer,
    ):
        writer.write(given)


def test_asked_to_store_no_arrow_schema_it_writes_plain_columns(tmp_path: Path) -> None:
    table = pa.table({"a": ["x" * 20] * 4})
    with groups.writing(tmp_path / "t.parquet", table.schema, 2, store_schema=False) as writer:
        assert writer.views == []
        writer.write(table)
    assert pq.read_table(tmp_path / "t.parquet").equals(table)
