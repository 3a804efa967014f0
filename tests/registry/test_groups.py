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


def _tables(rows: list[dict], cuts: list[int]) -> list[pa.Table]:
    columns = {name: [r[name] for r in rows] for name in ("often", "n", "note")}
    columns["id"] = [f"id-{i}" for i in range(len(rows))]
    columns["tags"] = [None if r["tags"] is None else list(r["tags"].items()) for r in rows]
    whole = pa.table({f.name: pa.array(columns[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)
    bounds = sorted({0, len(rows), *(c % (len(rows) + 1) for c in cuts)})
    return [whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)]


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
)
def test_held_as_views_the_file_is_the_bytes_of_the_plain_columns(
    tmp_path: Path, rows: list[dict], cuts: list[int], group: int, large: bool
) -> None:
    options = mf.writer_options(10_000_000 if large else 100)
    tables = _tables(rows, cuts)
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
        grouped = groups.GroupWriter(writer, 10_000)
        grouped.write(table)
        held = grouped.held[0]
        assert held.column("v").nbytes < 20 * 4096 < table.column("v").nbytes / 8
        assert held.column("v").to_pylist() == table.column("v").to_pylist()
        assert held.column("u").to_pylist() == table.column("u").to_pylist()  # distinct: views of its bytes
