"""The filter streams its manifest in chunks: the decisions must not depend on the chunk size, and the
near-duplicate index must give the same answer at distance 0 (a dict) as the pairwise comparison."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from generators import filter as filt
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


def test_exact_index_agrees_with_pairwise_comparison():
    exact, pairwise = filt._Duplicates(0), filt._Duplicates(0)
    pairwise.distance = 0.5  # type: ignore[assignment]  (forces the comparison path at distance 0)
    seq = [("a", "00ff00ff00ff00ff", "s1"), ("a", "00ff00ff00ff00ff", "s2"), ("b", "00ff00ff00ff00ff", "s3")]
    seq += [("a", "00ff00ff00ff00fe", "s4"), ("a", "00ff00ff00ff00fe", "s5")]
    got = [exact.check(*x) for x in seq]
    dup = [(f"near_duplicate: of {s} (phash distance 0)", s) for s in ("s1", "s4")]
    assert got == [None, dup[0], None, None, dup[1]]
    assert [pairwise.check(*x) for x in seq] == got


def test_embedding_index_keeps_the_first_of_near_duplicates_per_identity_as_it_grows():
    import numpy as np

    index = filt._Duplicates(-1, similarity=0.99)  # perceptual hashes off: embeddings only
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    got = [index.check("a", "00" * 8, f"s{k}", v) for k, v in enumerate(vectors)]  # grows past 64 rows
    assert got == [None] * 100  # random directions in 8 dimensions are never 0.99 alike
    assert index.check("b", "00" * 8, "t0", vectors[70]) is None  # another identity: its own index
    reason, first = index.check("a", "00" * 8, "copy", vectors[70])  # type: ignore[misc]
    assert first == "s70" and reason == "near_duplicate_embedding: of s70 (cosine similarity 1.0000 >= 0.99)"
