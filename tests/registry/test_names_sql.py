"""The two DuckDB forms of the names check agree row by row (issue 22): validate counts the rows
``SQL_ANY`` keeps, and gives Great Expectations a NULL ``name_problem`` column when there are none, so a
row that ``SQL_PROBLEM`` names but ``SQL_ANY`` misses would pass the provenance rule unseen."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.core.names import MAX_SHARD, SQL_ANY, SQL_PROBLEM

COLUMNS = ("sample_id", "member", "shard", "image_sha256", "phash")
GOOD = {
    "sample_id": "digits-1",
    "member": "digits-1.png",
    "shard": "data/digits/shards/shard-00000.tar",
    "image_sha256": "a" * 64,
    "phash": "0123456789abcdef",
}
# One row for each way a row can go wrong, and NULL in each column.
BAD = [
    {"sample_id": None},
    {"sample_id": "../x"},
    {"sample_id": "a..b", "member": "a..b.png"},
    {"sample_id": "digits-1\nFORGED"},
    {"member": None},
    {"member": "../../evil.png"},
    {"member": "digits-2.png"},
    {"member": "digits-1."},
    {"shard": None},
    {"shard": "/etc/shard.tar"},
    {"shard": "../outside/shard.tar"},
    {"shard": "a/" * (MAX_SHARD // 2) + "x.tar"},
    {"image_sha256": None},
    {"image_sha256": "A" * 64},
    {"image_sha256": "a" * 63},
    {"phash": None},
    {"phash": "0123456789abcdeg"},
]


def _verdicts(rows: list[dict]) -> list[tuple[bool, str | None]]:
    """(SQL_ANY, SQL_PROBLEM) for each row, in order."""
    con = duckdb.connect()
    table = pa.table(
        {"i": pa.array(range(len(rows)))} | {c: pa.array([r[c] for r in rows], pa.string()) for c in COLUMNS}
    )
    con.register("manifest_rows", table)
    got = con.execute(
        f"SELECT coalesce({SQL_ANY}, false), {SQL_PROBLEM} FROM manifest_rows ORDER BY i"
    ).fetchall()
    con.close()
    return [(bool(a), p) for a, p in got]


def test_each_bad_row_is_caught_by_both_and_named_and_a_good_row_by_neither():
    rows = [GOOD] + [GOOD | bad for bad in BAD]
    verdicts = _verdicts(rows)
    assert verdicts[0] == (False, None)
    for bad, (caught, named) in zip(BAD, verdicts[1:], strict=True):
        assert caught and named is not None, bad


_text = st.one_of(
    st.none(),
    st.text(alphabet="abcdef0123456789ABCDEFG./-_\n\x00é ", max_size=70),
    st.sampled_from(["digits-1", "digits-1.png", "a" * 64, "0123456789abcdef", "x/y.tar"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({c: _text for c in COLUMNS}), min_size=1, max_size=20))
def test_the_count_and_the_named_problem_agree_on_any_row(rows: list[dict]):
    for caught, named in _verdicts(rows):
        assert caught == (named is not None)


_ids = st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d-1", "e.2"]), st.text(max_size=6)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=_ids, pass_ids=st.integers(1, 8), limit=st.integers(1, 5))
def test_duplicate_ids_in_passes_are_the_ids_a_counter_finds_twice(ids, pass_ids, limit):
    """However the ids are cut into passes (``PASS_IDS``), the count of rows whose id comes twice and
    the first ids in order are those a plain count finds; NULL ids count for nothing."""
    from collections import Counter

    from registry.core import names

    counts = Counter(i for i in ids if i is not None)
    twice = sorted((i, n) for i, n in counts.items() if n > 1)
    con = duckdb.connect()
    con.register("manifest", pa.table({"sample_id": pa.array(ids, pa.string())}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(names, "PASS_IDS", pass_ids)
        assert names.duplicate_ids(con, "manifest", limit) == (sum(n for _, n in twice), twice[:limit])
    con.close()
