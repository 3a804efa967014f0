"""The filter's near-duplicate index: the images accepted so far, per identity, in plan order.

The first of a near-duplicate stays; a later one is rejected and names it. Two measures: perceptual
hashes (every dataset) and, with an embedding model, the cosine similarity of embeddings.

The index holds numbers, never a Python object an image (issue 22: a dict of ``(identity, phash) ->
sample id`` took about 300 bytes an accepted image, 680 MB at 1,000,000 and 3 GB at 10,000,000). What
it keeps an accepted image:

- at distance 0 (the default): its hash, its identity's code and its row, 20 bytes, in sorted runs that
  merge as they grow (a log-structured index): a chunk's rows are looked up with one vectorised search
  a run, and the newest run is merged into the one before it while that one is at most twice its size
  and the result holds at most ``MAX_RUN`` (about a million) images, so there are about log2(images)
  runs below that size and one a million above it, and each row is merged at most about 20 times.
  Given a folder (``spill_to``; the filter gives its output folder), a run that reaches ``MAX_RUN / 2``
  images goes to disk, into a file with no name that vanishes with the process, even a killed one
  (``OnDisk``); it merges no more. So the memory the index holds stays under about ``MAX_RUN`` images
  (20 MB, and a merge's copy) however many images there are (issue 22: 200 MB more at 10,000,000);
  the disk holds 20 bytes an accepted image, and the kernel's page cache what it keeps of it;
- at a larger distance: its hash and row (16 bytes), compared with every earlier accepted image of its
  identity, which grows as images x accepted-per-identity;
- with embeddings: its row and its vector (4 bytes a dimension), compared the same way.

A row is the image's place in the manifest; the sample id of the earlier image is read back from the
manifest (``Names``) only for a duplicate found, which is what the reason names.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from registry.core.errors import WorkspaceError

KEY = [("phash", ">u8"), ("who", ">u4")]  # sorted as bytes: hash first, then the identity's code


class Names:
    """The sample id of a manifest row, read from the manifest's row group (a few kept)."""

    def __init__(self, source: pq.ParquetFile) -> None:
        sizes = [source.metadata.row_group(g).num_rows for g in range(source.metadata.num_row_groups)]
        self.source, self.starts = source, np.cumsum([0, *sizes])
        self.held: dict[int, pa.Array] = {}  # the last two row groups read

    def __call__(self, row: int) -> str:
        group = int(np.searchsorted(self.starts, row, side="right")) - 1
        if group not in self.held:
            if len(self.held) >= 2:
                del self.held[next(iter(self.held))]
            ids = self.source.read_row_group(group, columns=["sample_id"]).column(0)
            self.held[group] = ids.combine_chunks()
        return str(self.held[group][row - int(self.starts[group])].as_py())


class Duplicates:
    """Near-duplicates among accepted images, chunk by chunk: ``start`` a chunk, ``check`` its rows in
    order (a row that passes is remembered), then ``end`` it."""

    def __init__(
        self, distance: int, similarity: float, name_of: Callable[[int], str], spill_to: Path | None = None
    ) -> None:
        self.distance, self.similarity, self.name_of = distance, similarity, name_of
        self.codes: dict[str, int] = {}  # identity -> its code in the keys
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (keys sorted, rows), older runs first
        self.disk = OnDisk(spill_to) if spill_to is not None else None  # full runs, merged no more
        self.closed = False
        self.near: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # code -> (hashes, rows, used)
        self.vectors: dict[int, tuple[np.ndarray, np.ndarray, int]] = {}  # code -> (vectors, rows, used)

    def start(self, first_row: int, sample_ids: list[str], identities: list[str], phashes: list[str]) -> None:
        """A chunk of rows ``first_row``.. in manifest order; its exact matches in earlier chunks are
        looked up now, all at once."""
        if self.closed or (self.disk is not None and self.disk.closed):
            raise RuntimeError("the near-duplicate index was closed; start a new index")
        self.first, self.ids = first_row, sample_ids
        self.who = np.array([self.codes.setdefault(i, len(self.codes)) for i in identities], np.uint32)
        self.hashes = np.frombuffer(bytes.fromhex("".join(phashes)), ">u8").astype(np.uint64)
        self.pending: dict[tuple[int, int], int] = {}  # this chunk's accepted exact keys -> chunk row
        self.kept: list[int] = []  # this chunk's accepted rows, in order
        self.earlier = self._lookup() if self.distance == 0 else None

    def check(self, i: int, embedding: np.ndarray | None = None) -> tuple[str, str] | None:
        """(the reason, the earlier image's sample id) when chunk row ``i`` is a near-duplicate of an
        accepted image of its identity; else None, and the row is remembered as accepted."""
        hit = self._by_hash(i)
        if hit:
            name = self._name(hit[0])
            return f"near_duplicate: of {name} (phash distance {hit[1]})", name
        near = self._by_embedding(i, embedding) if embedding is not None else None
        if near:
            name = self._name(near[0])
            return (
                f"near_duplicate_embedding: of {name} (cosine similarity {near[1]:.4f} >= {self.similarity})",
                name,
            )
        self._remember(i, embedding)
        return None

    def end(self) -> None:
        """The chunk's accepted rows join the exact index as a run."""
        if self.distance != 0 or not self.kept:
            return
        at = np.array(self.kept, np.int64)
        keys = _keys(self.hashes[at], self.who[at])
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], at[order] + self.first))
        while len(self.runs) > 1 and _merges(len(self.runs[-2][0]), len(self.runs[-1][0])):
            newer = self.runs.pop()
            self.runs.append(_merged(self.runs.pop(), newer))
        # Only the newest run grows (a merge makes the newest), so it is the only one that can be full.
        if self.disk is not None and 2 * len(self.runs[-1][0]) >= MAX_RUN:
            self.disk.add(*self.runs.pop())

    def close(self) -> None:
        """Let go of the runs on disk (their file vanishes); the index answers no more after it: ``start``
        refuses, rather than answering without the runs it no longer has."""
        self.closed = True
        if self.disk is not None:
            self.disk.close()

    def _name(self, row: int) -> str:
        local = row - self.first
        return self.ids[local] if 0 <= local < len(self.ids) else self.name_of(row)

    def _lookup(self) -> np.ndarray:
        """For each row of the chunk, the row of the accepted image of earlier chunks with the same
        identity and hash, or -1."""
        found = np.full(len(self.hashes), -1, np.int64)
        wanted = _keys(self.hashes, self.who)
        for keys, rows in self.runs:
            _found_in(keys, rows, wanted, found)
        if self.disk is not None:  # keys are unique (a key is accepted once): the order does not matter
            for run, (keys, rows) in enumerate(self.disk.runs):
                _found_in(keys, rows, wanted, found)
                self.disk.drop(run)
        return found

    def _by_hash(self, i: int) -> tuple[int, int] | None:
        if self.distance < 0:
            return None
        if self.distance == 0:
            assert self.earlier is not None
            if self.earlier[i] >= 0:
                return int(self.earlier[i]), 0
            first = self.pending.get((int(self.who[i]), int(self.hashes[i])))
            return (first + self.first, 0) if first is not None else None
        hashes, rows, used = self.near.get(int(self.who[i]), (_EMPTY_U64, _EMPTY_I64, 0))
        if not used:
            return None
        dist = np.bitwise_count(hashes[:used] ^ self.hashes[i])
        k = int(dist.argmin())  # the first of equals: deterministic
        return (int(rows[k]), int(dist[k])) if dist[k] <= self.distance else None

    def _by_embedding(self, i: int, embedding: np.ndarray) -> tuple[int, float] | None:
        vectors, rows, used = self.vectors.get(int(self.who[i]), (_EMPTY_F32, _EMPTY_I64, 0))
        if not used:
            return None
        sims = vectors[:used] @ embedding
        k = int(sims.argmax())  # the first of equals: deterministic
        return (int(rows[k]), float(sims[k])) if sims[k] >= self.similarity else None

    def _remember(self, i: int, embedding: np.ndarray | None) -> None:
        who, row = int(self.who[i]), self.first + i
        if self.distance == 0:
            self.pending[(who, int(self.hashes[i]))] = i
            self.kept.append(i)
        elif self.distance > 0:
            self.near[who] = _appended(self.near.get(who), self.hashes[i], row)
        if embedding is not None:
            self.vectors[who] = _appended(self.vectors.get(who), embedding, row)


def _found_in(keys: np.ndarray, rows: np.ndarray, wanted: np.ndarray, found: np.ndarray) -> None:
    """``found[i]`` = the row of ``wanted[i]`` in the sorted run (``keys``, ``rows``), where it is there."""
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    hit = keys[at] == wanted
    found[hit] = rows[at[hit]]


class OnDisk:
    """The full runs of an index, one after another in one unnamed temporary file in ``folder``
    (``O_TMPFILE``: no name to clean up, none left by a kill), mapped read-only as a whole: one file
    and one mapping however many runs (a file each would take a file descriptor a run). ``drop``
    unmaps the pages a search touched from the process: they stay in the kernel's page cache, which
    keeps or evicts them as memory allows, so they are not the process's memory (its RSS and PSS) and
    a lookup costs at most re-mapping them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.file: Any = None  # opened at the first run
        self.map: mmap.mmap | None = None
        self.spans: list[tuple[int, int, np.dtype]] = []  # (offset, images, key dtype) a run
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (keys, rows) a run, views of the map
        self.closed = False

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Append a run (its rows, then its keys) and map the file again with it. A write that fails
        (a full disk, often only at the flush) closes the whole index: the run is lost with it, so no
        later lookup may answer without it (``closed``)."""
        if self.closed:
            raise RuntimeError("the near-duplicate index on disk was closed; start a new index")
        try:
            if self.file is None:
                self.file = tempfile.TemporaryFile(dir=self.folder)  # noqa: SIM115  (closed by close)
            at = self.file.seek(0, 2)
            self.file.write(np.ascontiguousarray(rows, np.int64).data)  # at a multiple of 8: aligned
            self.file.write(np.ascontiguousarray(keys).data)
            self.file.write(bytes(-self.file.tell() % 8))  # the next run's rows aligned too
            self.file.flush()
            # On disk before it is mapped: a file system that reports a failed write only later (NFS)
            # would otherwise drop the pages and fault the search on bytes that never arrived.
            os.fsync(self.file.fileno())
            whole = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            self.close()  # what it buffered is dropped, not written again at the close of a failed run
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                why = (
                    " (the disk is full): it takes 20 bytes an accepted image; free space there and run "
                    "filter again"
                )
            else:
                why = (
                    f": {e.strerror or e}; check that the folder exists and can be written, then run "
                    "filter again"
                )
            raise WorkspaceError(f"cannot write the near-duplicate index to {self.folder}{why}") from e
        self.spans.append((at, len(keys), keys.dtype))
        # The views of the old mapping go with it (it is unmapped once nothing refers to it).
        self.map, self.runs = (
            whole,
            [
                (np.frombuffer(whole, dtype, n, offset + 8 * n), np.frombuffer(whole, np.int64, n, offset))
                for offset, n, dtype in self.spans
            ],
        )

    def drop(self, run: int) -> None:
        """Unmap the pages of run number ``run`` from the process: a run at a time, after its search,
        so that at most one run is the process's at any time."""
        if self.map is None or not hasattr(mmap, "MADV_DONTNEED"):  # elsewhere the kernel decides
            return
        offset, n, dtype = self.spans[run]
        start = offset - offset % mmap.PAGESIZE  # madvise takes whole pages (a neighbour's edge too)
        self.map.madvise(mmap.MADV_DONTNEED, start, offset + n * (8 + dtype.itemsize) - start)

    def close(self) -> None:
        """Unmap and close the file (it goes with its last descriptor); no run is left to search, and the
        index takes no more (``add`` refuses). Never raises: it runs on error paths too, where a flush of
        what a failed write left buffered would fail again and hide the first error."""
        self.closed = True
        whole, self.map, self.runs, self.spans = self.map, None, [], []
        if whole is not None:
            with contextlib.suppress(BufferError):  # a caller still holds a view: unmapped with it
                whole.close()
        file, self.file = self.file, None
        if file is not None:
            with contextlib.suppress(OSError):  # the index is thrown away: its unwritten bytes too
                file.close()


_EMPTY_U64, _EMPTY_I64 = np.empty(0, np.uint64), np.empty(0, np.int64)
_EMPTY_F32 = np.empty((0, 0), np.float32)


MAX_RUN = 1 << 20  # accepted images a run holds at most (20 MB)


def _merges(older: int, newer: int) -> bool:
    """Whether the newest run merges into the one before it: while that one is at most twice its size,
    and the merged run holds at most ``MAX_RUN`` images. A merge holds both runs and the result, so
    without the cap the last merges held about twice the whole index (filter at 10,000,000 images rose
    by 100 MB at one merge, issue 22); with it, a merge holds at most about 45 MB, and 10,000,000
    accepted images are about 10 full runs and a few smaller, each searched once a chunk (spilled at
    half the cap, as filter does: 10 to 20 runs on disk)."""
    return older <= 2 * newer and older + newer <= MAX_RUN


def _merged(
    older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs (keys, rows) as one sorted run, with no sort: each newer key goes where a binary
    search puts it among the older ones (after an equal one, though keys are unique: a key is accepted
    once). It holds the two runs, the result and a position a newer key; a concatenation and an
    argsort held about twice that (the index alone at 10,000,000 images: 539 MB peak before, 393 MB
    after; issue 22)."""
    (k1, r1), (k2, r2) = older, newer
    at = np.searchsorted(k1, k2, side="right") + np.arange(len(k2))  # newer keys' places in the result
    older_places = np.ones(len(k1) + len(k2), bool)
    older_places[at] = False
    keys, rows = np.empty(len(older_places), k1.dtype), np.empty(len(older_places), r1.dtype)
    keys[at], rows[at] = k2, r2
    keys[older_places], rows[older_places] = k1, r1
    return keys, rows


def _keys(hashes: np.ndarray, who: np.ndarray) -> np.ndarray:
    """One sortable key a row: the hash, then the identity's code, as 12 big-endian bytes."""
    keys = np.empty(len(hashes), KEY)
    keys["phash"], keys["who"] = hashes, who
    return keys.view("S12")


def _appended(
    held: tuple[np.ndarray, np.ndarray, int] | None, value: np.ndarray | np.uint64, row: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(values, rows, used) with one more: arrays that grow by doubling, amortised O(1) a row."""
    values, rows, used = held if held is not None else (None, _EMPTY_I64, 0)
    if values is None or used == len(rows):
        size = max(64, 2 * used)
        shape = (size, *np.shape(value))
        grown = np.empty(shape, np.float32 if np.ndim(value) else np.uint64)
        grown_rows = np.empty(size, np.int64)
        if values is not None:
            grown[:used], grown_rows[:used] = values[:used], rows[:used]
        values, rows = grown, grown_rows
    values[used], rows[used] = value, row
    return values, rows, used + 1
