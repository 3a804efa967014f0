"""Forge the row count a Parquet file's footer states (``FileMetaData.num_rows``, Thrift compact field
3), leaving its row groups as they are: what an insider who edits a signed file might do, since nothing
in a reader checks that count against the row groups. A test helper; nothing else should want it."""

from __future__ import annotations

import struct
from pathlib import Path


def _varint(b: bytes, p: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[p]
        p += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, p


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _skip(b: bytes, p: int, kind: int) -> int:
    """The position after a value of Thrift compact type ``kind`` at ``p``."""
    if kind in (1, 2):  # booleans live in the field header
        return p
    if kind == 3:
        return p + 1
    if kind in (4, 5, 6):
        return _varint(b, p)[1]
    if kind == 7:
        return p + 8
    if kind == 8:
        n, p = _varint(b, p)
        return p + n
    if kind in (9, 10):  # list, set
        head = b[p]
        p += 1
        n, element = head >> 4, head & 15
        if n == 15:
            n, p = _varint(b, p)
        for _ in range(n):
            p = p + 1 if element in (1, 2) else _skip(b, p, element)
        return p
    if kind == 11:  # map
        n, p = _varint(b, p)
        if n:
            types = b[p]
            p += 1
            for _ in range(n):
                p = _skip(b, _skip(b, p, types >> 4), types & 15)
        return p
    if kind == 12:  # struct
        while True:
            head = b[p]
            p += 1
            if head == 0:
                return p
            if head >> 4 == 0:
                p = _varint(b, p)[1]
            p = _skip(b, p, head & 15)
    raise ValueError(f"Thrift compact type {kind}")


def set_num_rows(path: Path, rows: int) -> None:
    data = path.read_bytes()
    size = struct.unpack("<I", data[-8:-4])[0]
    start = len(data) - 8 - size
    footer, p, field = data[start : start + size], 0, 0
    while True:
        head = footer[p]
        p += 1
        field += head >> 4  # FileMetaData's fields are written in order, as deltas
        if field == 3:
            end = _varint(footer, p)[1]
            forged = footer[:p] + _varint_bytes(rows << 1) + footer[end:]  # zigzag of a count >= 0
            path.write_bytes(data[:start] + forged + struct.pack("<I", len(forged)) + b"PAR1")
            return
        p = _skip(footer, p, head & 15)
