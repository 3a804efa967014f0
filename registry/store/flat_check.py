"""Whether a release's flat copy (``manifest.FLAT``, for Hugging Face `datasets`) says what its manifest
says, row for row: verify's check of a signed file it cannot take on trust.

    flat_differences(manifest, flat, released_shards(record.shards))  # 0: the copy write_flat made
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from registry.store.manifest import NULLABLE, SCHEMA, batches, flat_table, map_json_texts


def flat_differences(
    manifest: Path, flat: Path, shards: Mapping[str, str] | None, batch_rows: int = 10_000
) -> int:
    """How many rows of ``flat`` are not exactly ``flat_table(manifest's row, shards)`` at the same
    position (a missing or extra row counts); every row when its schema (columns, types, metadata) is
    not the one ``write_flat`` writes, since `datasets` reads those too. 0 for the copy ``write_flat``
    made. The JSON text of map columns is compared to the letter (``_texts_differ``).

    A few columns at a time (``_column_groups``), ``batch_rows`` rows at a time: a reader holds a row
    group of the columns it reads, and a manifest's row groups grow with its rows (``MAX_GROUPS``), so
    reading every column at once held two whole row groups (issue 22: verify at 10,000,000 images
    788-798 MB for its whole process tree, 703 MB a few columns at a time). A row that differs is
    marked in a bitmap of the rows (a bit a row), so it counts once. Rows are counted as read, never
    taken from a footer's ``num_rows``, which nothing checks against the row groups."""
    ours_file = pq.ParquetFile(manifest)
    try:
        if not pq.read_schema(flat).equals(flat_table(SCHEMA.empty_table()).schema, check_metadata=True):
            return max(1, ours_file.metadata.num_rows)
        theirs_file = pq.ParquetFile(flat)
    except (OSError, pa.ArrowException):  # not Parquet: nothing in it matches
        return max(1, ours_file.metadata.num_rows)
    differ = _Bits()
    unmatched = 0  # rows one file has and the other lacks
    for names in _column_groups(ours_file):
        counted = _columns_differ(ours_file, theirs_file, names, shards, batch_rows, differ)
        if counted is None:
            return max(1, ours_file.metadata.num_rows)
        unmatched = max(unmatched, abs(counted[0] - counted[1]))
    return unmatched + differ.count()


class _Bits:
    """A bitmap of rows that grows as rows are marked (a bit a row: 1.25 MB at 10,000,000)."""

    def __init__(self) -> None:
        self.bytes = np.zeros(1 << 12, np.uint8)

    def mark(self, rows: np.ndarray) -> None:
        if not len(rows):
            return
        need = int(rows.max()) // 8 + 1
        if need > len(self.bytes):
            self.bytes = np.concatenate([self.bytes, np.zeros(max(need, 2 * len(self.bytes)), np.uint8)])
        np.bitwise_or.at(self.bytes, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))

    def count(self) -> int:
        return int(np.bitwise_count(self.bytes).sum())


def _column_groups(file: pq.ParquetFile) -> list[list[str]]:
    """``SCHEMA``'s columns, in order, in groups that each decode to about as much as the largest one
    alone (by the first row group's uncompressed sizes): a few passes, each no larger than one column's."""
    size = dict.fromkeys(SCHEMA.names, 0)
    if file.metadata.num_row_groups:
        group = file.metadata.row_group(0)
        for i in range(group.num_columns):
            name = group.column(i).path_in_schema.split(".")[0]
            if name in size:
                size[name] += group.column(i).total_uncompressed_size
    cap = max(size.values())
    groups: list[list[str]] = []
    held = cap + 1
    for name in SCHEMA.names:
        if held + size[name] > cap:
            groups.append([])
            held = 0
        groups[-1].append(name)
        held += size[name]
    return groups


def _columns_differ(
    ours_file: pq.ParquetFile,
    theirs_file: pq.ParquetFile,
    names: list[str],
    shards: Mapping[str, str] | None,
    batch_rows: int,
    differ: _Bits,
) -> tuple[int, int] | None:
    """Mark in ``differ`` the rows (of those both files have) where a column of ``names`` differs, and
    give the rows read of each file, (manifest, flat); None when the manifest's columns cannot be read
    as synthreg's types (no row can match). Every batch of the manifest is read and cast, also past the
    end of the flat copy."""
    schema = pa.schema([NULLABLE.field(name) for name in names])
    # On this thread alone: verify runs this beside the workers that check the images, on every core.
    theirs = batches(theirs_file, batch_rows, names, use_threads=False)
    held: pa.Table | None = None
    ours_rows = theirs_rows = 0  # read so far
    for batch in batches(ours_file, batch_rows, names, use_threads=False):
        # Cast as read_table does, nulls allowed: verify compares a signed manifest that may hold a null
        # digest (issue 24: casting to SCHEMA raised, and verify ended in a traceback); the names check
        # names that row. A column of another type: no row can match.
        try:
            table = pa.Table.from_batches([batch]).cast(schema)
            ours = _flat_but_maps(table, shards if "shard" in names else None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        while held is None or held.num_rows < ours.num_rows:
            more = next(theirs, None)
            if more is None:
                break
            theirs_rows += more.num_rows
            more_t = pa.Table.from_batches([more])
            held = more_t if held is None else pa.concat_tables([held, more_t])
        n = min(ours.num_rows, held.num_rows if held is not None else 0)
        if n:
            _mark_differences(ours.slice(0, n), held.slice(0, n), ours_rows, differ)  # type: ignore[union-attr]
            held = held.slice(n)  # type: ignore[union-attr]
        ours_rows += ours.num_rows
    theirs_rows += sum(b.num_rows for b in theirs)  # rows beyond the manifest's
    return ours_rows, theirs_rows


def _flat_but_maps(table: pa.Table, shards: Mapping[str, str] | None) -> pa.Table:
    """``flat_table(table, shards)`` with its map columns left as maps: ``_mark_differences`` compares
    each with the flat copy's JSON text (``_texts_differ``) without writing a text a row."""
    kept = [f.name for f in table.schema if not pa.types.is_map(f.type)]
    flat = flat_table(table.select(kept), shards)
    return pa.Table.from_arrays(
        [flat.column(f.name) if f.name in kept else table.column(f.name) for f in table.schema],
        names=table.column_names,
    )


def _texts_differ(maps: pa.Array, texts: pa.Array) -> pa.Array | None:
    """None when every row's JSON text in ``texts`` is exactly ``map_json_texts`` of its map in ``maps``
    (null for a null map), as ``write_flat`` writes it; else a boolean mask of the rows where it is not.

    Decided on the texts' distinct values (a few: the maps of a manifest repeat), each read once: a text
    that is a JSON object of strings, written back exactly as ``json.dumps`` writes it, names its map,
    and if every row's map is the one its text names, entry for entry, every text is the one
    ``map_json_texts`` would write (the same entries in the same order are the same ``dict``). Anything
    else, such as a map with a key twice (two maps, one text) or a text with a number in it, is decided
    row by row as before, by writing the texts (issue 22: that took about 0.6 s of verify's CPU at
    1,000,000 rows)."""
    import json

    encoded = texts.dictionary_encode()
    named: list[list[tuple[str, str]] | None] = []
    for text in encoded.dictionary.to_pylist():
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
        if not (
            isinstance(value, dict)
            and all(isinstance(v, str) for v in value.values())
            and json.dumps(value) == text
        ):
            named = []  # a text no map writes this way: row by row
            break
        named.append(list(value.items()))
    if named or not len(encoded.dictionary):
        try:
            expected = pa.array(named, maps.type).take(encoded.indices)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            expected = None
        if expected is not None and expected.equals(maps):
            return None
    return _rows_differ(map_json_texts(maps), texts)


def _rows_differ(x: Any, y: Any) -> Any:
    """A boolean mask of the rows where ``x`` and ``y`` (same length) differ in value or in being null."""
    return pc.or_(pc.not_equal(pc.is_null(x), pc.is_null(y)), pc.fill_null(pc.not_equal(x, y), False))


def _mark_differences(a: pa.Table, b: pa.Table, first: int, differ: _Bits) -> None:
    """Mark the rows ``first``.. where tables ``a`` and ``b`` (same columns, same length) differ; a map
    column of ``a`` against the JSON texts of ``b``'s (``_texts_differ``)."""
    mask = None
    for x, y in zip(a.columns, b.columns, strict=True):
        if pa.types.is_map(x.type):
            one = _texts_differ(x.combine_chunks(), y.combine_chunks())
        elif x.equals(y):  # the usual case, in one pass: the same values and nulls (a NaN is unequal)
            one = None
        else:
            one = _rows_differ(x, y)
        if one is not None:
            mask = one if mask is None else pc.or_(mask, one)
    if mask is not None:
        differ.mark(np.flatnonzero(mask.to_numpy(zero_copy_only=False)) + first)
