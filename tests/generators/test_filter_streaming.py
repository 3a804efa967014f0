"""The filter streams its manifest in chunks: the decisions must not depend on the chunk size, and the
near-duplicate index must give the same answer at distance 0 (a dict) as the pairwise comparison."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

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
