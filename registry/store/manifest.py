"""Manifests: Parquet (zstd) with one SampleRecord per row, queried through DuckDB.

The Arrow schema is derived from ``SampleRecord`` so the model stays the one source of schema.
Reading a manifest validates its columns against that schema, never its rows one by one: a
million-row manifest is queried in DuckDB, not loaded into Python objects.
"""

from __future__ import annotations

import contextlib
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from registry.core import allocator, duck
from registry.core.errors import ManifestError
from registry.core.fsio import atomic_path
from registry.core.names import shown
from registry.records.dataset import SampleRecord
from registry.store import groups
from registry.store.groups import GroupWriter

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _arrow_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arrow_type(args[0])[0], True
    if origin is typing.Literal:
        return pa.string(), False
    if origin is dict:
        k, v = typing.get_args(annotation)
        return pa.map_(_arrow_type(k)[0], _arrow_type(v)[0]), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for {annotation!r}")


def _schema() -> pa.Schema:
    fields = []
    for name, info in SampleRecord.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields)


SCHEMA = _schema()
# Rows a row group, at least: filter scores 4,096 rows a chunk; derive and filter write groups of
# ``group_rows`` rows, generate groups of whole shards of at least as many. A reader holds a row group of
# the columns it reads, so larger groups cost more to stream (verify of a derived 1,000,000-image release
# written in groups of 65,536 rows peaked at 505 MB, its parent at 363 MB), and the metadata of every
# group, 30-45 KB a group of these 39 columns (a 245-group footer kept: 7.7 MB in pyarrow, 10.8 MB in
# DuckDB; benchmarks/README.md, "A manifest in several files, tried"), so more groups cost more
# to open: 2,440 groups of 4,096 rows made about 100 MB a reader of a 10,000,000-row manifest, and
# derive, with a few readers of the parent and of the new manifest open, peaked at 1,058 MB (issue 22).
# So a manifest has at most ``MAX_GROUPS`` groups (about 8-11 MB of metadata a reader), and its groups grow
# past ``ROW_GROUP`` rows only past ``ROW_GROUP * MAX_GROUPS`` rows (1,048,576).
ROW_GROUP = 4096
MAX_GROUPS = 256


def group_rows(rows: int) -> int:
    """Rows a row group of a manifest of ``rows`` rows: ``ROW_GROUP``, or more where that would make more
    than ``MAX_GROUPS`` groups (39,063 at 10,000,000 rows)."""
    return max(ROW_GROUP, -(-rows // MAX_GROUPS))


# Bytes of a data page and of a dictionary page in a ``large`` manifest, one whose row groups grow past
# ``ROW_GROUP`` rows (about: Arrow's writer looks at the sizes every 1,024 values). Smaller manifests,
# up to 1,048,576 rows, keep Arrow's 1 MiB of each, so their bytes are what they were. A reader holds
# a page and a dictionary of each column it reads, and DuckDB also a group's column chunks read ahead,
# unless ``connect`` turns that off. Issue 22, benchmarks/README.md, peak of a process above its start:
# DuckDB's stream of verify's columns over the 1M filtered manifest in 26 groups of 39,063 rows took
# 51-55 MB, 45-46 MB unprefetched, and 34 MB unprefetched in these pages, as in 245 groups of 4,096
# (32-36 MB). At 10,000,000 rows (256 groups of 39,063) the stream went from 152 to 130 MB, the flat
# write from 229 to 192 MB, and the flat comparison from 125 to 117 MB (1M: 112, 130 and 90 MB).
SMALL_PAGE = 32 * 1024


def large(rows: int) -> bool:
    """Whether a manifest of ``rows`` rows has row groups of more than ``ROW_GROUP`` rows (``group_rows``:
    past ``ROW_GROUP * MAX_GROUPS`` rows), so that it is written in pages of ``SMALL_PAGE`` bytes."""
    return group_rows(rows) > ROW_GROUP


def writer_options(rows: int) -> dict[str, Any]:
    """``pq.ParquetWriter``'s settings for a manifest (or its flat copy) of ``rows`` rows: zstd, and pages
    and dictionaries of at most ``SMALL_PAGE`` bytes where it is ``large``."""
    if not large(rows):
        return {"compression": "zstd"}
    return {"compression": "zstd", "data_page_size": SMALL_PAGE, "dictionary_pagesize_limit": SMALL_PAGE}


@contextlib.contextmanager
def grouped_writer(path: Path, schema: pa.Schema, rows: int, *, manifest_rows: int) -> Iterator[GroupWriter]:
    """Write a Parquet file (zstd) at ``path`` atomically, in row groups of ``rows`` rows (for a manifest,
    ``group_rows`` of the rows it will hold), with ``writer_options(manifest_rows)``: ``manifest_rows``
    is the rows of the manifest the groups were sized for. In a ``large`` manifest, whose groups grow
    with it, a group is held with its text as views (``groups.writing``: the same bytes in less memory;
    the flat copy of 10,000,000 rows held 72 -> 57 MB of Arrow at most). A crash, or an error in the
    ``with`` block, leaves the old file (or none)."""
    options = writer_options(manifest_rows)
    with (
        atomic_path(path) as tmp,
        groups.writing(tmp, schema, rows, views=large(manifest_rows), **options) as grouped,
    ):
        yield grouped


NULLABLE = pa.schema([f.with_nullable(True) for f in SCHEMA])  # SCHEMA, nulls allowed (a read manifest)


def to_table(records: Iterable[SampleRecord | dict]) -> pa.Table:
    rows = [r.model_dump() if isinstance(r, SampleRecord) else r for r in records]
    for r in rows:
        for k in ("attributes", "library_versions", "observed_attributes"):
            if isinstance(r.get(k), dict):
                r[k] = list(r[k].items())
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def columns_table(rows: int, per_row: Mapping[str, Sequence[Any]], shared: Mapping[str, Any]) -> pa.Table:
    """``to_table`` of ``rows`` records given as columns: ``per_row`` maps a field to its ``rows`` values,
    ``shared`` to the one value every row has, and a field named in neither takes SampleRecord's default.
    The same table ``to_table`` makes of the records, with no Python object or dict a row (issue 22:
    generation writes a thousand rows a batch). The values are taken as given: the caller has validated
    them (generation validates a batch's first row as a SampleRecord, so the shared values are checked)."""
    unknown = sorted(set(per_row).union(shared).difference(SCHEMA.names))
    if unknown:
        raise ValueError(f"no manifest column {unknown[0]!r}; the columns are SampleRecord's fields")
    columns = []
    for f in SCHEMA:
        if f.name in per_row:
            values = list(per_row[f.name])
            if len(values) != rows:
                raise ValueError(f"column {f.name} has {len(values)} values for {rows} rows")
        elif f.name in shared:
            values = [shared[f.name]] * rows
        elif SampleRecord.model_fields[f.name].is_required():
            raise ValueError(f"column {f.name} has no values and SampleRecord gives it no default")
        else:
            values = [SampleRecord.model_fields[f.name].get_default(call_default_factory=True)] * rows
        if pa.types.is_map(f.type):
            values = [None if v is None else list(v.items()) for v in values]
        columns.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def write_table(table: pa.Table, path: Path) -> None:
    """Write atomically: a crash leaves the old manifest (or none), never half of a new one."""
    if table.schema != SCHEMA:
        table = table.cast(SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def write_manifest(records: Sequence[SampleRecord], path: Path) -> None:
    write_table(to_table(records), path)


# Hugging Face `datasets` (5.2) has no feature type for an Arrow map ("does not have a datasets dtype
# equivalent"), so a release also carries this flat copy: each map column as the JSON text of its
# dict, keys in the manifest's order (what the shards' .json sidecars hold):
# load_dataset("parquet", data_files=f"{release}/data/{FLAT}"). Not a second `configs:` entry in the
# card: `datasets` reads every config of a folder with the builder inferred from the first (webdataset).
# Its `shard` column names the released file, the path inside the release folder
# (``data/shards/<sha256>.tar``), so a plain tool needs no join through release.json (issue 23); the
# validated manifest keeps the workspace path it was validated with, byte for byte as signed, and
# release.json's ``shards[].source`` maps one to the other.
# The main manifest keeps its map columns, which DuckDB and every reader here use.
FLAT = "manifest-flat.parquet"


def flat_table(table: pa.Table, shards: Mapping[str, str] | None = None) -> pa.Table:
    """``table`` with every map column as a nullable string column of JSON objects, and, with
    ``shards`` (workspace shard path -> released path), the ``shard`` column as the released path (a
    shard ``shards`` does not name becomes null)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_map(f.type):
            texts = map_json_texts(table.column(i).combine_chunks())
            table = table.set_column(i, pa.field(f.name, pa.string(), f.nullable), texts)
    if shards is not None:
        i = table.schema.get_field_index("shard")
        sources = pa.array(list(shards), pa.string())
        where = pc.index_in(table.column(i), value_set=sources)
        released = pc.take(pa.array(list(shards.values()), pa.string()), where)
        table = table.set_column(i, table.schema.field(i), released)
    return table


# Separators of a map's entries in the text ``map_json_texts`` groups rows by; a map whose keys or values
# hold one of them is written row by row instead, so that two different maps never share a text.
_ENTRY, _PAIR = "\x1e", "\x1f"


def map_json_texts(column: pa.Array, sort_keys: bool = False) -> pa.Array:
    """``json.dumps(dict(v), sort_keys=sort_keys)`` of each map of ``column`` (None for a null map), as a
    string array. The
    maps of a manifest repeat (a few attribute combinations, one set of library versions), so the rows
    are grouped by their entries in Arrow and each distinct map is written once (issue 22: a million
    rows made a million Python dicts). The same text as row by row: equal entries, in order, are the
    same dict and the same ``json.dumps``."""
    import json

    if not len(column):
        return pa.array([], pa.string())
    kv = column.type
    entries_type = pa.list_(pa.struct([("key", kv.key_type), ("value", kv.item_type)]))
    if not (pa.types.is_string(kv.key_type) and pa.types.is_string(kv.item_type)):
        entries = None
    else:
        entries = column.cast(entries_type)
        flat = pc.list_flatten(entries)
        keys, values = flat.field("key"), flat.field("value")
        if values.null_count or any(
            pc.any(pc.match_substring(a, sep)).as_py() for a in (keys, values) for sep in (_ENTRY, _PAIR)
        ):
            entries = None
    if entries is None:  # e.g. a null inside a map, or a separator in a key: row by row
        return pa.array(
            [None if v is None else json.dumps(dict(v), sort_keys=sort_keys) for v in column.to_pylist()],
            pa.string(),
        )
    lengths = pc.fill_null(pc.list_value_length(entries), 0)
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())])
    pairs = pc.binary_join_element_wise(keys, values, _PAIR)
    grouped = pc.binary_join(pa.ListArray.from_arrays(offsets, pairs), _ENTRY)
    grouped = pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), grouped)
    encoded = grouped.dictionary_encode()
    first = pc.index_in(encoded.dictionary, value_set=grouped)  # a row holding each distinct map
    texts = pa.array(
        [json.dumps(dict(column[i].as_py()), sort_keys=sort_keys) for i in first.to_pylist()], pa.string()
    )
    return pc.take(texts, encoded.indices)


# The most rows ``batches`` asks pyarrow's reader for at a time: a row group of a manifest up to
# 1,048,576 rows (``ROW_GROUP``), so that pyarrow decodes the same batches of a larger manifest as of a
# smaller (it still reads each column chunk of the larger group whole; measured in ``batches``).
READ_ROWS = ROW_GROUP


def batches(
    source: Path | pq.ParquetFile,
    batch_rows: int,
    columns: Sequence[str] | None = None,
    use_threads: bool = True,
) -> Iterator[pa.RecordBatch]:
    """The batches ``pq.ParquetFile(source).iter_batches(batch_size=batch_rows, columns=columns)`` gives
    for a manifest (the same rows, the same boundaries, so what is written from them is the same bytes;
    pyarrow also ends a batch at each row group for a column read as dictionary codes, as only
    ``dataset_of`` and ``datasets_and_columns`` read one, for its values alone), read a row group at a
    time. pyarrow 25's reader over a whole file holds decoded pages of
    the row groups ahead of the batch it gives: about 100 bytes a row of a manifest, 100 MB at 1,000,000
    rows and 1 GB at 10,000,000 (issue 22). Here at most one row group's column chunks and about two
    batches (the pieces and the batch joined from them) are held.
    pyarrow is asked for at most ``READ_ROWS`` rows at a time, joined here into ``batch_rows``: what
    its reader holds grows with the batch it decodes, several times the batch's own size (issue 22:
    every column of a 10,000,000-row flat copy, in groups of 39,063 rows, read in batches of 10,000
    took +72 MB, of 4,096 +37 MB, as a 1,000,000-row one in groups of 4,096 does at either).
    ``use_threads=False`` decodes the columns on this thread alone: less CPU in all (verify's flat
    comparison, 2.5-2.8 s against 2.2-2.3 s of CPU at 1,000,000 rows) where the other cores are busy."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, not {batch_rows}")
    file = source if isinstance(source, pq.ParquetFile) else pq.ParquetFile(source)
    held: list[pa.RecordBatch] = []
    have = 0
    for group in range(file.num_row_groups):
        for batch in file.iter_batches(
            batch_size=min(batch_rows, READ_ROWS),
            row_groups=[group],
            columns=columns,
            use_threads=use_threads,
        ):
            held.append(batch)
            have += batch.num_rows
            while have >= batch_rows:
                table = pa.Table.from_batches(held)
                yield table.slice(0, batch_rows).combine_chunks().to_batches()[0]
                rest = table.slice(batch_rows)
                held, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(held).combine_chunks().to_batches()[0]


def released_shards(shard_refs: Iterable[Any]) -> dict[str, str]:
    """Workspace shard path -> its path inside the release folder, from a record's ``shards``
    (``ShardRef``: ``source`` and ``path``, relative to ``data/``)."""
    return {s.source: f"data/{s.path}" for s in shard_refs}


def write_flat(manifest: Path, out: Path, shards: Mapping[str, str], batch_rows: int = 10_000) -> None:
    """Write the flat copy of ``manifest`` (see ``FLAT``) to ``out``, row for row, ``batch_rows`` at a
    time: a million-row manifest is never held whole (issue 13). Row groups of ``batch_rows`` rows, or
    of ``group_rows`` where that is more (past 2,560,000 rows with the default). ``shards``: workspace
    shard path -> released path (``released_shards``); every shard the manifest names must be in it. The
    manifest is one synthreg wrote and validated (a release copies it only when its digest is the policy
    report's)."""
    allocator.give_back()  # what the pass before freed, not left under this one (issue 22)
    schema = flat_table(SCHEMA.empty_table()).schema
    source = pq.ParquetFile(manifest)
    n = source.metadata.num_rows
    rows = max(batch_rows, group_rows(n))  # at most MAX_GROUPS row groups
    with grouped_writer(out, schema, rows, manifest_rows=n) as writer:
        for batch in batches(source, batch_rows, SCHEMA.names):
            flat = flat_table(pa.Table.from_batches([batch]).cast(SCHEMA), shards)
            if flat.column("shard").null_count:
                missing = pc.filter(batch.column("shard"), pc.is_null(flat.column("shard")))[0]
                raise ManifestError(f"manifest {manifest}: shard {shown(missing.as_py())} was not released")
            writer.write(flat)


def read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `synthreg generate` (or `dvc repro`) first")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise ManifestError(f"manifest {path} is not a readable Parquet file ({e}); regenerate it") from e
    missing = [n for n in SCHEMA.names if n not in table.schema.names]
    if missing:
        raise ManifestError(f"manifest {path} lacks columns {missing}; it was not written by synthreg")
    try:
        table = table.select(SCHEMA.names).cast(NULLABLE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        bad = [f.name for f in SCHEMA if not table.schema.field(f.name).type.equals(f.type)]
        raise ManifestError(
            f"manifest {path} has columns of the wrong type ({', '.join(bad[:5])}); it was not written by "
            "synthreg: regenerate it"
        ) from e
    for f in SCHEMA:  # columnar null counts: cheap on a million rows
        column = table[f.name]
        if not f.nullable and column.null_count:
            import pyarrow.compute as pc

            first = pc.index(pc.is_null(column), True).as_py()
            raise ManifestError(
                f"manifest {path}: sample {shown(table['sample_id'][first].as_py())} has no {f.name} "
                f"({column.null_count} row(s) lack it); it was not written by synthreg: regenerate it"
            )
    return table.cast(SCHEMA)


def records(table: pa.Table) -> list[SampleRecord]:
    """Rows as validated records. For small tables (a shard, a lookup), not for whole manifests."""
    out = []
    for row in table.to_pylist():
        for k in ("attributes", "library_versions", "observed_attributes"):
            if row.get(k) is not None:
                row[k] = dict(row[k])
        out.append(SampleRecord.model_validate(row))
    return out


def connect(path: Path, view: str = "manifest", threads: int | None = None):
    """A DuckDB connection (``duck.connect(threads)``) with the manifest at ``path`` as a view named
    ``view``; for a ``large`` one, without DuckDB's prefetching of a row group's column chunks, so that a
    reader holds about a page of each column it reads, as in 1M's groups (issue 22)."""
    import duckdb

    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist; run `synthreg generate` (or `dvc repro`) first")
    con = duck.connect(threads)
    literal = str(path).replace("'", "''")  # CREATE VIEW cannot take a prepared parameter
    try:
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet('{literal}')")
        con.execute(f"DESCRIBE {view}").fetchall()  # reads the footer: a file that is not Parquet fails here
        if _large_file(path):  # a page of a column at a time (``SMALL_PAGE``), not a group's chunks ahead
            con.execute("SET GLOBAL disable_parquet_prefetching = true")  # GLOBAL: its cursors' too
    except duckdb.Error as e:
        con.close()
        first = str(e).splitlines()[0][:200]
        raise ManifestError(
            f"manifest {path} is not a readable Parquet file ({first}); restore it (`dvc checkout`) or "
            "make it again (`synthreg generate` / `synthreg filter`)"
        ) from None
    return con


def _large_file(path: Path) -> bool:
    """Whether the Parquet file at ``path`` holds a ``large`` manifest's rows (by its footer's count;
    False for a footer pyarrow cannot read, which the caller's own reading then reports)."""
    try:
        return large(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException):
        return False


def dataset_of(path: Path) -> str | None:
    """The one dataset a manifest's rows name; None when the file is missing, unreadable, empty or names
    several, or is one ``datasets_and_columns`` leaves to DuckDB (the command's own checks then say what
    is wrong with it)."""
    read = datasets_and_columns(path)
    names = [n for n in read[0] if n is not None] if read else []
    return names[0] if len(names) == 1 else None


def datasets_and_columns(path: Path) -> tuple[list[Any], list[str]] | None:
    """(the distinct values of a manifest's ``dataset`` column, sorted, NULL last, as DuckDB's ``SELECT
    DISTINCT dataset ... ORDER BY 1`` gives them; the manifest's columns), from its Parquet footer and
    the column's dictionary codes, a row group at a time: without a DuckDB connection (issue 22: 0.03 s
    at 1,000,000 rows, against 0.14 s). No datasets when the column is missing. None where the answer
    could differ from what the checks, which read through DuckDB, would see: a file pyarrow cannot read
    (the caller's own DuckDB connection then says what is wrong with it), two columns whose names differ
    only in case (DuckDB's names ignore case, so ``dataset`` may mean ``Dataset`` there), or a dataset
    column that is not text (DuckDB sorts and compares numbers, NaN included, its own way)."""
    try:
        schema = pq.ParquetFile(path).schema_arrow
        columns = schema.names
        if len({c.lower() for c in columns}) != len(columns):
            return None
        if "dataset" not in columns:
            return [], columns
        if not pa.types.is_string(schema.field("dataset").type):
            return None
        file = pq.ParquetFile(path, read_dictionary=["dataset"])  # refused for a missing column
        values: set[Any] = set()
        null = False
        for batch in batches(file, 65536, ["dataset"]):
            column = batch.column(0)
            null = null or column.null_count > 0
            values.update(v for v in pc.unique(column).to_pylist() if v is not None)
    except Exception:
        return None
    return sorted(values) + ([None] if null else []), columns


def missing_columns(con: Any, view: str = "manifest") -> list[str]:
    """The columns of synthreg's manifest schema that ``view`` lacks (a manifest synthreg did not write)."""
    have = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    return [c for c in SCHEMA.names if c not in have]


def rows_by_shard(
    con: Any, columns: list[str], shards_per_query: int = 16
) -> Iterator[tuple[str | None, list[tuple]]]:
    """(shard, its rows of ``columns`` in manifest order) for every shard of ``con``'s manifest, in shard
    name order, a few shards a query: release and verify hold one batch of shards at a time, not the
    whole manifest as Python objects (~3 KB a row: 3 GB at 1,000,000 rows, issue 13)."""
    found = [r[0] for r in con.execute("SELECT DISTINCT shard FROM manifest ORDER BY 1").fetchall()]
    shards = [s for s in found if s is not None]
    cols = ", ".join(columns)
    for i in range(0, len(shards), shards_per_query):
        batch: dict[str, list[tuple]] = {s: [] for s in shards[i : i + shards_per_query]}
        for shard, *row in con.execute(
            f"SELECT shard, {cols} FROM manifest WHERE list_contains($shards, shard)",
            {"shards": list(batch)},
        ).fetchall():
            batch[shard].append(tuple(row))
        yield from batch.items()
    if len(shards) < len(found):  # rows that name no shard: the caller says what is wrong with them
        yield (
            None,
            [tuple(r) for r in con.execute(f"SELECT {cols} FROM manifest WHERE shard IS NULL").fetchall()],
        )


def tables_by_shard(
    con: Any, columns: list[str], batch_rows: int = 8192
) -> Iterator[tuple[str | None, pa.Table]]:
    """(shard, its rows of ``columns`` as an Arrow table, in manifest order) for every shard, each given
    once all its rows are read, from one pass over the manifest; rows that name no shard come last, as
    shard None. verify hands a shard's columns to a worker process whole, with no Python object a row;
    issue 22: a query for a few shards at a time re-read the whole manifest for each, quadratic in its
    size. Held at any time: the shards whose rows are not all read yet, which for a manifest written
    shard by shard (as generate, filter, release and derive write them) is one; a manifest whose shards
    interleave holds more (all of it, at worst), and each shard's rows are given as one chunk.

    DuckDB reads the manifest on one thread, on a cursor of ``con``, in batches of ``batch_rows`` rows,
    and the database's own thread count is back once the stream ends or is left. On two threads a stream
    held more the larger a manifest's row groups (``group_rows``), presumably as each thread reads a group
    of its own and the order kept holds the group read ahead until the one before is given. Issue 22, the
    stream of verify's columns alone, peak of the process: at 1,000,000 rows (groups of 4,096) 228 MB on
    two threads, 202-209 MB on one; at 10,000,000 (groups of 39,063) 279 MB in 3.5 s on two, 241-242 MB in
    4.4-4.7 s on one (single runs on a busy machine). In verify the stream runs beside the workers that
    hash the shards. Batches of 65,536 rows held 100 MB more than 8,192 at 10,000,000 rows (on two
    threads).

    ``manifest`` must be a view of ``con``'s database (as ``connect`` makes it), not one connection's
    own (a registered relation, a temporary view), since the cursor is another connection. The thread
    count is the database's: its other connections read on one thread too while a stream runs, and two
    streams at once on one database could leave it at one (none of synthreg's callers runs two)."""
    import duckdb
    import numpy as np

    allocator.give_back()  # what the pass before freed, not left under this one (issue 22)
    counts = dict(con.execute("SELECT shard, count(*) FROM manifest GROUP BY shard").fetchall())
    parts: dict[str | None, list[pa.RecordBatch]] = {}
    have: dict[str | None, int] = {}
    threads = int(con.execute("SELECT current_setting('threads')").fetchone()[0])
    stream = None
    try:
        stream = con.cursor()  # the same database; its open result leaves ``con`` free to set threads back
        stream.execute("SET threads = 1")  # the database's setting, not the cursor's
        reader = stream.sql(f"SELECT shard, {', '.join(columns)} FROM manifest").to_arrow_reader(batch_rows)
        for batch in reader:
            if not batch.num_rows:
                continue
            encoded = pc.dictionary_encode(batch.column(0))
            codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            starts = [0, *(np.flatnonzero(codes[1:] != codes[:-1]) + 1).tolist()]
            rows = batch.drop_columns(["shard"])
            for at, stop in zip(starts, [*starts[1:], batch.num_rows], strict=True):
                shard = None if codes[at] < 0 else encoded.dictionary[codes[at]].as_py()
                parts.setdefault(shard, []).append(rows.slice(at, stop - at))
                have[shard] = have.get(shard, 0) + stop - at
                if shard is not None and have[shard] == counts[shard]:
                    yield shard, pa.Table.from_batches(parts.pop(shard)).combine_chunks()
    finally:
        if stream is not None:
            stream.close()
        with contextlib.suppress(duckdb.ConnectionException):  # ``con`` closed first: nothing to restore
            con.execute(f"SET threads = {threads}")
    if None in parts:  # rows that name no shard: the caller says what is wrong with them
        yield None, pa.Table.from_batches(parts.pop(None)).combine_chunks()


def find_sample(path: Path, sample_id: str) -> SampleRecord:
    con = connect(path)
    table = con.sql("SELECT * FROM manifest WHERE sample_id = ?", params=[sample_id]).to_arrow_table()
    if table.num_rows == 0:
        raise ManifestError(
            f"sample {sample_id!r} is not in manifest {path}; check the id (query the manifest with DuckDB)"
        )
    return records(table.select(SCHEMA.names).cast(SCHEMA))[0]
