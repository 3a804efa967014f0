"""Writing a Parquet file in row groups of exactly N rows, holding each group compactly (issue 22).

pyarrow writes a row group at every ``write_table`` and has no writer that adds to a group, so a group
is held as Arrow until it is whole. A manifest's groups grow past ``manifest.ROW_GROUP`` rows with it (at
most ``manifest.MAX_GROUPS`` groups: each costs its readers about 30-45 KB of footer), so the group held
grew with the manifest: 39,063 rows of the flat copy of a 10,000,000-row manifest are 37 MB of Arrow,
against 4,096 rows and 3.9 MB below 1,048,576. Most of it is text that repeats row after row (the library
versions, 177 bytes a row; the weights and scheduler digests, the shard, the prompt, the licence).

So a ``GroupWriter`` whose writer takes string views (``viewed``) holds each text column as views: a
16-byte view a row, and each distinct value's bytes once a batch where the values repeat (``compact``).
Parquet stores a string view column as it stores a string column, so the pages are the same bytes; what
differs is the Arrow schema pyarrow stores in the footer, and ``writing`` stores the one a string column
gives (``stored_metadata``), so the file is byte for byte what writing the plain columns makes, and
reads back as plain strings. The 10,000,000-row flat copy's two first groups: 74 -> 50 MB held.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

VIEW = pa.string_view()
ARROW_SCHEMA = b"ARROW:schema"
PROBE = 256  # values ``compact`` looks at first
_VIEW_BYTES = np.dtype((np.void, 16))  # one string view: length, prefix, buffer and offset (or inline)


def viewed(schema: pa.Schema) -> pa.Schema:
    """``schema`` with each top-level string column as string views, which ``GroupWriter`` holds compactly
    (nested columns, such as a map's keys and values, are left as they are)."""
    return pa.schema([f.with_type(VIEW) if f.type == pa.string() else f for f in schema])


def stored_metadata(schema: pa.Schema, **options: Any) -> dict[bytes, bytes]:
    """The key-value metadata, in order, that pyarrow stores in the footer of a file of ``schema`` written
    with ``options``: the schema's own, then the serialized Arrow schema (``ARROW:schema``). A writer
    opened with ``store_schema=False`` stores none of it, and its ``add_key_value_metadata`` keeps the
    order it is given (a file read back gives the keys sorted)."""
    out = io.BytesIO()
    pq.write_table(schema.empty_table(), out, **options)
    stored = pq.ParquetFile(pa.BufferReader(out.getvalue())).metadata.metadata or {}
    own = {k: v for k, v in (schema.metadata or {}).items() if k != ARROW_SCHEMA}
    return own | ({ARROW_SCHEMA: stored[ARROW_SCHEMA]} if ARROW_SCHEMA in stored else {})


def compact(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A string column as string views: where its values repeat (fewer distinct values than half its
    rows, and than half its first ``PROBE``), views of each distinct value's bytes, held once; else
    views of the bytes it has. A chunked column a chunk at a time: the writer writes each chunk on its
    own, so its pages end where the chunks do."""
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([compact(c) for c in values.chunks], VIEW)
    first = values.slice(0, PROBE)  # mostly distinct there: not worth hashing every value to find out
    if 2 * pc.count_distinct(first, mode="all").as_py() > len(first):
        return values.cast(VIEW)
    encoded = pc.dictionary_encode(values)
    distinct = encoded.dictionary
    if len(distinct) == 0 or 2 * len(distinct) > len(values):
        return values.cast(VIEW)
    views = distinct.cast(VIEW)
    buffers = views.buffers()
    each = np.frombuffer(buffers[1], dtype=_VIEW_BYTES)[views.offset : views.offset + len(views)]
    taken = each[encoded.indices.fill_null(0).to_numpy()]  # a null's view is never read
    return pa.Array.from_buffers(
        VIEW,
        len(values),
        [encoded.indices.buffers()[0], pa.py_buffer(taken), *buffers[2:]],
        null_count=encoded.indices.null_count,
    )


class GroupWriter:
    """Writes the tables it is given to ``writer`` in row groups of exactly ``rows`` rows, however they
    come (the last group may hold fewer, once ``flush`` is called): pyarrow starts a row group at every
    ``write_table``. Holds at most one group's rows. With ``given``, the schema of the tables it is given,
    a column the writer takes as string views (opened with ``viewed(given)``) is held as ``compact``
    views, and a table of another schema is refused as the writer refuses one."""

    def __init__(self, writer: pq.ParquetWriter, rows: int, given: pa.Schema | None = None) -> None:
        if rows < 1:
            raise ValueError(f"a row group holds at least 1 row, not {rows}")
        self.writer, self.rows, self.given = writer, rows, given
        self.schema: pa.Schema = writer.schema
        self.views = [i for i, f in enumerate(self.schema) if f.type == VIEW] if given is not None else []
        self.held: list[pa.Table] = []
        self.have = 0

    def _compact(self, table: pa.Table) -> pa.Table:
        if self.given is None or not table.schema.equals(self.given):  # columns are taken by position
            raise ValueError(
                f"Table schema does not match the writer's. table: {table.schema!r} writer: {self.given!r}"
            )
        columns = list(table.columns)
        for i in self.views:
            columns[i] = compact(columns[i])
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _whole(self) -> pa.Table:
        return pa.concat_tables(self.held) if len(self.held) > 1 else self.held[0]

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self.views:
            table = self._compact(table)
        self.held.append(table)
        self.have += table.num_rows
        if self.have < self.rows:
            return
        whole = self._whole()
        full = whole.num_rows - whole.num_rows % self.rows
        self.writer.write_table(whole.slice(0, full), row_group_size=self.rows)
        rest = whole.slice(full)
        self.held, self.have = ([rest] if rest.num_rows else []), rest.num_rows

    def flush(self) -> None:
        if self.have:
            self.writer.write_table(self._whole(), row_group_size=self.rows)
        self.held, self.have = [], 0


@contextlib.contextmanager
def writing(
    path: Path, schema: pa.Schema, rows: int, *, views: bool = True, **options: Any
) -> Iterator[GroupWriter]:
    """A ``GroupWriter`` of row groups of ``rows`` rows into a Parquet file at ``path`` (``options``:
    ``pq.ParquetWriter``'s), given tables of ``schema``, and with ``views`` holding their text as views:
    the file is the bytes a ``ParquetWriter`` of ``schema`` makes of the same tables either way, and
    reads back as ``schema``. Views cost time (hashing every text value: the flat copy of 10,000,000
    rows took 25.4 -> 26.8 s), and save memory only where a group is held over several tables. Asked to
    store no Arrow schema (``store_schema=False``), it writes the plain columns: nothing to restore."""
    views = views and options.get("store_schema", True) is not False
    stored = stored_metadata(schema, **options) if views else {}
    opened = (viewed(schema), {**options, "store_schema": False}) if views else (schema, options)
    with pq.ParquetWriter(path, opened[0], **opened[1]) as writer:
        grouped = GroupWriter(writer, rows, schema if views else None)
        yield grouped
        grouped.flush()
        if stored:
            writer.add_key_value_metadata(stored)
