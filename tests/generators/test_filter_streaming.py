"""The filter streams its manifest in chunks: the decisions must not depend on the chunk size, and the
near-duplicate index must give the same answer at distance 0 (a dict) as the pairwise comparison."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from generators import filter as filt
from generators.duplicates import Duplicates
from generators.generate import generate
from registry.records.dataset import FilterParams, GenerateParams
from tests.generators.test_synthetic_pattern import pattern_ws  # noqa: F401  (fixture)


def decisions(path: Path) -> list[tuple]:
    return duckdb.sql(
        "SELECT sample_id, decision, reason, duplicate_of, contrast "
        f"FROM '{path}/manifest.parquet' ORDER BY index"
    ).fetchall()


@pytest.mark.parametrize("distance", [0, 24])
def test_chunk_size_does_not_change_a_decision(
    pattern_ws: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    distance: int,
):
    generate(Path("recipe.yaml"), pattern_ws, "data/cand", GenerateParams(batch_size=5, shard_size=6))
    params = FilterParams(duplicate_distance=distance)
    whole = filt.filter_manifest("data/cand", pattern_ws, "data/whole", params)
    monkeypatch.setattr(filt, "CHUNK", 5)  # chunks that straddle shards (of 6)
    chunked = filt.filter_manifest("data/cand", pattern_ws, "data/chunked", params)
    assert (whole.total, whole.accepted, whole.reasons) == (chunked.total, chunked.accepted, chunked.reasons)
    assert decisions(pattern_ws / "data/whole") == decisions(pattern_ws / "data/chunked")
    if distance:  # a loose distance makes near-duplicates of patterns with the same identity
        assert whole.reasons.get("near_duplicate", 0) > 0


def checked(index: Duplicates, chunks: list[list[tuple]], first: int = 0) -> list:
    """``index``'s answer for each (identity, phash, sample id[, embedding]) row, fed chunk by chunk."""
    got = []
    for chunk in chunks:
        index.start(first, [r[2] for r in chunk], [r[0] for r in chunk], [r[1] for r in chunk])
        got += [index.check(i, *r[3:]) for i, r in enumerate(chunk)]
        index.end()
        first += len(chunk)
    return got


def by_row(seq: list[tuple]) -> Callable[[int], str]:
    return lambda row: seq[row][2]


def test_exact_index_agrees_with_pairwise_comparison():
    seq = [("a", "00ff00ff00ff00ff", "s1"), ("a", "00ff00ff00ff00ff", "s2"), ("b", "00ff00ff00ff00ff", "s3")]
    seq += [("a", "00ff00ff00ff00fe", "s4"), ("a", "00ff00ff00ff00fe", "s5")]
    dup = [(f"near_duplicate: of {s} (phash distance 0)", s) for s in ("s1", "s4")]
    for size in (1, 2, 5):  # earlier chunks (the sorted runs) and this chunk's rows
        chunks = [seq[k : k + size] for k in range(0, len(seq), size)]
        exact = Duplicates(0, 0.97, by_row(seq))
        pairwise = Duplicates(0, 0.97, by_row(seq))
        pairwise.distance = 0.5  # type: ignore[assignment]  (forces the comparison path at distance 0)
        got = checked(exact, chunks)
        assert got == [None, dup[0], None, None, dup[1]]
        assert checked(pairwise, chunks) == got


def test_exact_index_finds_the_first_accepted_image_across_many_runs():
    """Random hashes with repeats, over identities, in chunks of 7: the sorted runs, merged as they
    grow, give what a dict of (identity, hash) -> first sample gives, hash bytes 00 and ff included."""
    import numpy as np

    rng = np.random.default_rng(1)
    pool = [f"{h:016x}" for h in rng.integers(0, 2**63, 40)] + ["0" * 16, "f" * 16, "00" * 7 + "01"]
    seq = [(f"id{rng.integers(3)}", pool[rng.integers(len(pool))], f"s{k}") for k in range(700)]
    first: dict[tuple[str, str], str] = {}
    want = []
    for identity, phash, sid in seq:
        hit = first.setdefault((identity, phash), sid)
        want.append(None if hit == sid else (f"near_duplicate: of {hit} (phash distance 0)", hit))
    index = Duplicates(0, 0.97, by_row(seq))
    assert checked(index, [seq[k : k + 7] for k in range(0, len(seq), 7)]) == want
    assert len(index.runs) < 10  # merged: about log2(accepted / 7) runs, not one a chunk


def test_embedding_index_keeps_the_first_of_near_duplicates_per_identity_as_it_grows():
    import numpy as np

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    seq = [("a", "00" * 8, f"s{k}", v) for k, v in enumerate(vectors)]  # grows past 64 rows
    seq += [("b", "00" * 8, "t0", vectors[70]), ("a", "00" * 8, "copy", vectors[70])]
    index = Duplicates(-1, 0.99, by_row(seq))  # perceptual hashes off: embeddings only
    got = checked(index, [seq[:50], seq[50:]])
    assert got[:100] == [None] * 100  # random directions in 8 dimensions are never 0.99 alike
    assert got[100] is None  # another identity: its own index
    reason, first = got[101]  # type: ignore[misc]
    assert first == "s70" and reason == "near_duplicate_embedding: of s70 (cosine similarity 1.0000 >= 0.99)"


@pytest.mark.parametrize("sizes", [(0, 5), (7, 1), (4096, 4096), (10_000, 3), (1, 9000)])
def test_merging_two_runs_is_sorting_their_union(sizes: tuple[int, int]):
    """The merge without a sort (``_merged``, issue 22) gives what a concatenation and a stable sort
    gave: every key once, in order, each with its row; hashes that share bytes with other keys and
    end in zero bytes included (the keys are compared as 12 raw bytes)."""
    import numpy as np

    from generators.duplicates import _keys, _merged

    rng = np.random.default_rng(sum(sizes))
    n = sum(sizes)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64) & np.uint64(0xFFFF_FF00_0000_FF00)
    keys = _keys(hashes, rng.integers(0, 3, n).astype(np.uint32))
    keys, first = np.unique(keys, return_index=True)  # accepted once: unique keys
    rows = first.astype(np.int64) + 100
    split = rng.random(len(keys)) < sizes[0] / n
    runs = [(keys[m], rows[m]) for m in (split, ~split)]  # each sorted, as runs are
    merged_keys, merged_rows = _merged(runs[0], runs[1])
    assert merged_keys.tobytes() == keys.tobytes() and merged_rows.tolist() == rows.tolist()


def test_runs_stop_merging_at_their_cap_and_give_the_same_answers(monkeypatch: pytest.MonkeyPatch):
    """A merge holds both runs and the result: uncapped, the last merges held about twice the index
    (issue 22). Runs merge up to ``MAX_RUN`` images; past it they stay apart, and every answer is the
    one the uncapped index gives."""
    import numpy as np

    from generators import duplicates

    rng = np.random.default_rng(2)
    pool = [f"{h:016x}" for h in rng.integers(0, 2**63, 300)]
    seq = [(f"id{rng.integers(3)}", pool[rng.integers(len(pool))], f"s{k}") for k in range(2000)]
    chunks = [seq[k : k + 7] for k in range(0, len(seq), 7)]
    uncapped = Duplicates(0, 0.97, by_row(seq))
    want = checked(uncapped, chunks)
    monkeypatch.setattr(duplicates, "MAX_RUN", 40)
    capped = Duplicates(0, 0.97, by_row(seq))
    assert checked(capped, chunks) == want
    sizes = [len(keys) for keys, _ in capped.runs]
    assert max(sizes) <= 40 < sum(sizes) and len(capped.runs) > len(uncapped.runs)


def test_full_runs_go_to_disk_and_give_the_same_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Given a folder, a run of ``MAX_RUN / 2`` images or more goes to disk (issue 22: the index held
    200 MB at 10,000,000 images): the answers are the in-memory index's, what stays in memory is a few
    runs under half the cap, and the folder shows no file (unnamed, so a kill leaves none either)."""
    import numpy as np

    from generators import duplicates

    rng = np.random.default_rng(3)
    pool = [f"{h:016x}" for h in rng.integers(0, 2**63, 400)]
    seq = [(f"id{rng.integers(3)}", pool[rng.integers(len(pool))], f"s{k}") for k in range(3000)]
    chunks = [seq[k : k + 7] for k in range(0, len(seq), 7)]
    want = checked(Duplicates(0, 0.97, by_row(seq)), chunks)
    monkeypatch.setattr(duplicates, "MAX_RUN", 40)
    spilling = Duplicates(0, 0.97, by_row(seq), spill_to=tmp_path)
    assert checked(spilling, chunks) == want
    assert spilling.disk is not None
    on_disk = spilling.disk.runs
    assert len(on_disk) > 3 and all(20 <= len(keys) <= 40 for keys, _ in on_disk)
    assert sum(len(keys) for keys, _ in spilling.runs) < 40
    assert list(tmp_path.iterdir()) == []
    del on_disk
    spilling.close()
    assert spilling.disk.file is None and spilling.disk.map is None


def resident_mb(address: int) -> float:
    """The resident size of the mapping of this process that holds ``address`` (/proc/self/smaps)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and head == "Rss:":
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_a_run_on_disk_leaves_the_process_after_each_search(tmp_path: Path):
    """A search maps the pages of the run it touches; ``drop`` gives them back, so a run on disk is not
    the process's memory between chunks (the page cache keeps what the kernel wants to)."""
    import numpy as np

    from generators.duplicates import OnDisk, _found_in, _keys

    rng = np.random.default_rng(4)
    n = 2_000_000  # 40 MB on disk
    keys = np.sort(_keys(rng.integers(0, 2**64, n, dtype=np.uint64), np.zeros(n, np.uint32)))
    disk = OnDisk(tmp_path)
    disk.add(keys[:1000], np.arange(1000, dtype=np.int64))  # a first run: the file is mapped again
    disk.add(keys[1000:], np.arange(1000, n, dtype=np.int64))
    found = np.full(50_000, -1, np.int64)
    wanted = keys[rng.integers(0, n, 50_000)]
    del keys
    for run_keys, rows in disk.runs:
        _found_in(run_keys, rows, wanted, found)
    assert (np.concatenate([k for k, _ in disk.runs])[found] == wanted).all()  # each found, at its row
    address = disk.runs[0][1].__array_interface__["data"][0]  # the start of the mapping
    assert resident_mb(address) > 10  # the searched pages, mapped
    disk.drop(1)
    assert resident_mb(address) < 1  # what is left is the first run's 20 KB at most
    disk.close()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_the_index_leaves_no_run_on_disk_in_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each chunk searches every run on disk and gives each one's pages back after its search: once the
    chunks are in, what the process holds of the file is at most a run and the kernel's read-around,
    not the file (8 MB here)."""
    import numpy as np

    from generators import duplicates

    monkeypatch.setattr(duplicates, "MAX_RUN", 100_000)
    index = Duplicates(0, 0.97, lambda row: f"s{row}", spill_to=tmp_path)
    rng = np.random.default_rng(5)
    for first in range(0, 400_000, 20_000):
        hashes = [f"{h:016x}" for h in rng.integers(0, 2**63, 20_000)]
        index.start(first, [f"s{first + i}" for i in range(20_000)], ["a"] * 20_000, hashes)
        assert all(index.check(i) is None for i in range(20_000))
        index.end()
    assert index.disk is not None and len(index.disk.runs) >= 4
    address = index.disk.runs[0][1].__array_interface__["data"][0]
    try:
        assert resident_mb(address) < 1  # each run dropped after its search; kept, 4.5 MB here
    finally:
        index.close()


def test_no_room_for_the_index_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import errno
    import tempfile

    import numpy as np

    from generators.duplicates import OnDisk, _keys
    from registry.core.errors import WorkspaceError

    def full(**_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full)
    keys = _keys(np.arange(4, dtype=np.uint64), np.zeros(4, np.uint32))
    with pytest.raises(
        WorkspaceError, match=r"the disk is full\): it takes 20 bytes an accepted image; free space"
    ):
        OnDisk(tmp_path).add(keys, np.arange(4, dtype=np.int64))


class _Room(io.FileIO):
    """A file on a disk with ``left`` bytes free: a write gets what fits, then ENOSPC."""

    left = 0

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if _Room.left <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        k = min(len(view), _Room.left)
        _Room.left -= k
        return super().write(view[:k])


def _small_disk(**kw: Any) -> io.BufferedRandom:
    return io.BufferedRandom(_Room(os.open(kw["dir"], os.O_RDWR | os.O_TMPFILE, 0o600), "r+b"))


def test_a_disk_that_fills_while_the_index_spills_is_the_clear_error(
    pattern_ws: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    """The write that fails is often the flush, with bytes left in the file's buffer: closing the index
    on the way out must not flush them again and replace the clear error with the bare OSError, and the
    new output folder goes (a helper's review found both, 2026-12-06)."""
    import tempfile

    from generators import duplicates
    from registry.core.errors import WorkspaceError

    generate(Path("recipe.yaml"), pattern_ws, "data/cand", GenerateParams(batch_size=5, shard_size=6))
    monkeypatch.setattr(filt, "CHUNK", 3)
    monkeypatch.setattr(duplicates, "MAX_RUN", 4)
    monkeypatch.setattr(tempfile, "TemporaryFile", _small_disk)
    _Room.left = 30  # the first run's rows and keys (2 images: 40 bytes) do not fit
    with pytest.raises(WorkspaceError, match=r"near-duplicate index to .*data/out \(the disk is full\)"):
        filt.filter_manifest("data/cand", pattern_ws, "data/out")
    assert not (pattern_ws / "data/out").exists()


def test_an_index_that_cannot_write_says_why_and_is_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Not every failed write is a full disk; and after one, the index refuses rather than answering
    without the run it lost."""
    import numpy as np

    from generators import duplicates
    from generators.duplicates import Duplicates
    from registry.core.errors import WorkspaceError

    monkeypatch.setattr(duplicates, "MAX_RUN", 4)
    index = Duplicates(0, 0.9, lambda row: f"s{row}", spill_to=tmp_path / "missing")
    index.start(0, ["s0", "s1"], ["a", "a"], ["00000000000000aa", "00000000000000bb"])
    assert index.check(0) is None and index.check(1) is None
    with pytest.raises(
        WorkspaceError, match=r"missing: No such file or directory; check that the folder exists"
    ):
        index.end()  # two accepted images: half a run of 4, so it spills
    with pytest.raises(RuntimeError, match="index on disk was closed"):
        index.disk.add(np.zeros(1, np.uint64), np.zeros(1, np.int64))
    with pytest.raises(RuntimeError, match="index was closed"):
        index.start(2, ["s2"], ["a"], ["00000000000000aa"])


def test_a_write_the_disk_reports_late_is_the_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run goes to disk (fsync) before it is mapped: a file system that reports a failed write only
    then (NFS) gives the clear error, not a fault in a later search."""
    import numpy as np

    from generators.duplicates import OnDisk, _keys
    from registry.core.errors import WorkspaceError

    def late(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", late)
    disk = OnDisk(tmp_path)
    keys = _keys(np.arange(4, dtype=np.uint64), np.zeros(4, np.uint32))
    with pytest.raises(WorkspaceError, match=r"Input/output error; check that the folder exists"):
        disk.add(keys, np.arange(4, dtype=np.int64))
    assert disk.closed and disk.runs == [] and list(tmp_path.iterdir()) == []


def test_a_closed_index_refuses_rather_than_forgetting_its_runs_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from generators import duplicates
    from generators.duplicates import Duplicates

    monkeypatch.setattr(duplicates, "MAX_RUN", 4)
    index = Duplicates(0, 0.9, lambda row: f"s{row}", spill_to=tmp_path)
    index.start(0, ["s0", "s1"], ["a", "a"], ["00000000000000aa", "00000000000000bb"])
    assert index.check(0) is None and index.check(1) is None
    index.end()
    assert index.disk is not None and len(index.disk.runs) == 1  # spilled
    index.close()
    with pytest.raises(RuntimeError, match="index was closed"):
        index.start(2, ["s2"], ["a"], ["00000000000000aa"])  # s2 duplicates s0, on disk no more


def test_filter_with_its_index_on_disk_decides_the_same(
    pattern_ws: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
):
    """The filter spills its exact index into its output folder: with runs of a few images, the rows,
    reasons and counts are the ones an index in memory gives, and only the filter's files are left.
    Every four rows share a perceptual hash, so later ones are near-duplicates of rows in earlier runs."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from generators import duplicates

    generate(Path("recipe.yaml"), pattern_ws, "data/cand", GenerateParams(batch_size=5, shard_size=6))
    path = pattern_ws / "data/cand/manifest.parquet"
    table = pq.read_table(path)
    hashes = table["phash"].to_pylist()
    shared = pa.array([hashes[i - i % 4] for i in range(len(hashes))], table.schema.field("phash").type)
    pq.write_table(table.set_column(table.schema.get_field_index("phash"), "phash", shared), path)
    monkeypatch.setattr(filt, "CHUNK", 3)
    held = filt.filter_manifest("data/cand", pattern_ws, "data/held")
    monkeypatch.setattr(duplicates, "MAX_RUN", 4)
    spilled: list[int] = []
    real = duplicates.OnDisk.add

    def counted(self: duplicates.OnDisk, keys: np.ndarray, rows: np.ndarray) -> None:
        real(self, keys, rows)
        spilled.append(len(keys))

    monkeypatch.setattr(duplicates.OnDisk, "add", counted)
    on_disk = filt.filter_manifest("data/cand", pattern_ws, "data/disk")
    assert spilled, "no run went to disk"
    assert held.reasons.get("near_duplicate", 0) >= 8, held.reasons  # 16 rows, at most 8 hashes
    assert (held.total, held.accepted, held.reasons) == (on_disk.total, on_disk.accepted, on_disk.reasons)
    assert decisions(pattern_ws / "data/held") == decisions(pattern_ws / "data/disk")
    assert sorted(p.name for p in (pattern_ws / "data/disk").iterdir()) == sorted(
        p.name for p in (pattern_ws / "data/held").iterdir()
    )
