"""Released shards follow the WebDataset convention: beside each image ``<key>.png`` the tar holds
``<key>.json`` (identity, attributes, decision, reason, seed, prompt, generator, weights digest) and
``<key>.cls`` (the identity's index in the recipe, as text), so a loader gets image and label from the
shard alone, without a join with the manifest (issue 12). The decision exists only after filtering, so
the sidecars are added when a version is released (``registry.releases.publish.assemble``), not at generation.

Deterministic: the same images and records give the same tar bytes, so a derived version still shares
an untouched shard with its parent byte for byte. ``<key>`` is the member name without ``.png``:
WebDataset splits a name at its first dot, so sample ids must hold none (synthreg's plan makes none).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from registry.store.shards import members_from_bytes, tar_bytes

SIDECAR_FIELDS = (
    "sample_id",
    "identity",
    "attributes",
    "decision",
    "reason",
    "seed",
    "prompt",
    "generator_name",
    "weights_digest",
)


def sidecar(row: dict[str, Any]) -> bytes:
    """The ``.json`` member for a manifest row (the fields above, keys sorted)."""
    return json.dumps({k: row[k] for k in SIDECAR_FIELDS}, sort_keys=True).encode()


def sidecar_members(member: str, row: dict[str, Any], classes: list[str]) -> list[tuple[str, bytes]]:
    """The ``<key>.json`` and ``<key>.cls`` members beside image ``member`` of manifest ``row`` (the
    class is the identity's index in ``classes``, -1 when absent): what release writes and verify expects."""
    key = member.removesuffix(".png")
    identity = row["identity"]
    cls = str(classes.index(identity)) if identity in classes else "-1"
    return [(f"{key}.json", sidecar(row)), (f"{key}.cls", cls.encode())]


# The bytes of a string json.dumps writes as itself between quotes: printable ASCII without '"' or
# '\\', as a table ``_plain`` looks every byte of a column up in at once.
_PLAIN = np.zeros(256, bool)
_PLAIN[[b for b in range(0x20, 0x7F) if b not in b'"\\']] = True


def _plain(column: pa.ChunkedArray) -> bool:
    """Whether every string of ``column`` (Arrow strings: int32 offsets) is made of ``_PLAIN`` bytes,
    read from the bytes its values span at once (issue 22: a regular expression a column cost verify a
    quarter of a millisecond a shard). The bytes under a null may be anything: one that is not plain
    answers False, which only sends the rows to the slower builder."""
    for chunk in column.chunks:
        if not len(chunk):
            continue
        _, offsets, data = chunk.buffers()
        ends = np.frombuffer(offsets, np.int32, len(chunk) + 1, 4 * chunk.offset)
        start, stop = int(ends[0]), int(ends[-1])
        if stop > start and not _PLAIN[np.frombuffer(data, np.uint8, stop - start, start)].all():
            return False
    return True


def sidecar_texts(table: pa.Table, classes: list[str]) -> tuple[pa.Array, pa.Array] | None:
    """The ``.json`` and ``.cls`` texts of every row of ``table`` (the ``SIDECAR_FIELDS`` columns), built
    column-wise in Arrow, byte for byte what ``sidecar_members`` makes a row at a time (issue 22: a dict
    and a ``json.dumps`` a row); None when a string needs JSON escaping (non-ASCII, a quote, a control
    character), which is then left to ``sidecar_members``."""
    import pyarrow.compute as pc

    from registry.store.manifest import map_json_texts

    strings = [f for f in SIDECAR_FIELDS if f not in ("attributes", "seed")]
    if not pa.types.is_integer(table.schema.field("seed").type) or any(
        not pa.types.is_string(table.schema.field(f).type) for f in strings
    ):
        return None
    if not all(_plain(table.column(f)) for f in strings):
        return None

    def quoted(field: str) -> pa.ChunkedArray:
        col = table.column(field)
        return pc.fill_null(pc.binary_join_element_wise('"', col, '"', ""), "null")

    attributes = pc.fill_null(
        map_json_texts(table.column("attributes").combine_chunks(), sort_keys=True), "null"
    )
    seed = pc.fill_null(table.column("seed").cast(pa.string()), "null")
    # With no null string, each string's quotes go into the literal text around it, which saves a join
    # and a fill a column (issue 22: about a third of this function's time in verify).
    bare = not any(table.column(f).null_count for f in strings)
    parts: list[Any] = []
    literal = "{"
    for i, field in enumerate(sorted(SIDECAR_FIELDS)):  # json.dumps(..., sort_keys=True)
        literal += f'{", " if i else ""}"{field}": '
        if field in ("attributes", "seed"):
            parts += [literal, attributes if field == "attributes" else seed]
            literal = ""
        elif bare:
            parts += [literal + '"', table.column(field)]
            literal = '"'
        else:
            parts += [literal, quoted(field)]
            literal = ""
    texts = pc.binary_join_element_wise(*parts, literal + "}", "")
    where = pc.index_in(table.column("identity"), value_set=pa.array(classes, pa.string()))
    return texts, pc.fill_null(where, -1).cast(pa.string())


def sidecars_of(table: pa.Table, classes: list[str]) -> dict[str, tuple[bytes, bytes]]:
    """Image member -> its ``.json`` and ``.cls`` bytes, for the rows of ``table`` (``member`` and the
    ``SIDECAR_FIELDS`` columns): ``sidecar_texts``, or ``sidecar_members`` a row at a time when a string
    needs escaping."""
    members = table.column("member").to_pylist()
    built = sidecar_texts(table, classes)
    if built is not None:
        texts, cls = built
        return {
            m: (t.encode(), c.encode())
            for m, t, c in zip(members, texts.to_pylist(), cls.to_pylist(), strict=True)
        }
    rows = table.select(list(SIDECAR_FIELDS)).to_pylist()
    out = {}
    for member, row in zip(members, rows, strict=True):
        if isinstance(row["attributes"], list):  # a map as the dict DuckDB's rows held: a key twice, the last
            row["attributes"] = dict(row["attributes"])
        (_, js), (_, cls_text) = sidecar_members(member, row, classes)
        out[member] = (js, cls_text)
    return out


def with_sidecars(
    data: bytes,
    rows: dict[str, dict[str, Any]],
    classes: list[str],
    found: dict[str, bytes | memoryview] | None = None,
) -> bytes:
    """The tar ``data`` rebuilt as: for each image the manifest names (``rows``: member -> row), in the
    tar's order, the image, its ``.json`` and its ``.cls``. Other members (earlier sidecars of a parent
    version's shard) are dropped, so adding sidecars twice gives the same bytes. ``found``: the
    members of ``data`` by name, when the caller has parsed it already."""
    sidecars = {}
    for member, row in rows.items():
        (_, js), (_, cls_text) = sidecar_members(member, row, classes)
        sidecars[member] = (js, cls_text)
    return add_sidecars(data, sidecars, found)


def add_sidecars(
    data: bytes, sidecars: dict[str, tuple[bytes, bytes]], found: dict[str, bytes | memoryview] | None = None
) -> bytes:
    """``with_sidecars`` with each image's ``.json`` and ``.cls`` bytes made already (``sidecars_of``)."""
    found = members_from_bytes(data) if found is None else found
    out: list[tuple[str, bytes]] = []
    for member, blob in found.items():
        side = sidecars.get(member)
        if side is None:
            continue
        key = member.removesuffix(".png")
        out += [(member, bytes(blob)), (f"{key}.json", side[0]), (f"{key}.cls", side[1])]
    return tar_bytes(out)
