"""Names that come from files and become paths: sample ids, tar member names, shard paths.

A sample id names a tar member (``<sample_id>.<ext>``) that anyone may extract from a released shard,
so a ``/``, a ``..``, a newline or a NUL in one would write outside the extraction folder, forge a line
of a report, or cut a C string short. Names are checked where they enter (the ``SampleRecord``
validators) and again, over whole manifests, by filter, validate (the provenance rule), release, verify
and the release loader, since a manifest is a file anyone with write access can edit. The manifest checks
are one DuckDB query with RE2 regular expressions over the columns, never a Python loop over rows.

    check_manifest(con, "manifest data/x/manifest.parquet")   # ManifestError naming the first sample
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from registry.core.errors import ConfigError, ManifestError, ReleaseError

# A sample id: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 200 characters,
# and no '..'. Ids synthreg plans are `<dataset>-<identity slug>-<k>-<digest>` (generators/plan.py).
SAMPLE_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}"
# A member's extension after `<sample_id>.`: png today; WebDataset sidecars (json, txt...) fit too.
EXTENSION = r"[A-Za-z0-9]{1,16}"
MEMBER = rf"{SAMPLE_ID}\.{EXTENSION}"
# A shard path relative to the workspace: '/'-separated parts of the same characters, none starting
# with '.' (so neither '..' nor a hidden folder), at most MAX_SHARD characters. (RE2, which DuckDB uses,
# refuses nested repetition counts over 1,000, hence a length check rather than a count of parts.)
_PART = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
SHARD = rf"{_PART}(/{_PART})*"
MAX_SHARD = 1024

_SAMPLE_ID = re.compile(SAMPLE_ID)
_MEMBER = re.compile(MEMBER)
_SHARD = re.compile(SHARD)
SHOWN = 20  # unsafe names listed by verify; the count is always complete


def shown(value: Any, limit: int = 80) -> str:
    """``value`` for an error message: repr (so a newline or NUL shows as an escape), cut at ``limit``."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # a newline or control character


def one_line(value: str) -> str:
    """``value`` as is when it is one line of printable text, else escaped as :func:`shown` does: a
    name read from a signed record (any key can sign one) cannot add a line to a message (issue 24)."""
    return shown(value) if CONTROL.search(value) else value


def check_line(value: str | None, what: str) -> str | None:
    """``value`` (an actor, a reason, a name) when it is one line of printable text; a ReleaseError naming
    ``what`` otherwise. A newline or control character in it would forge a line of `synthreg log`,
    `list`, `show` or `verify` (issue 24); it is refused where it enters, before anything is written."""
    if value is not None and CONTROL.search(value):
        raise ReleaseError(
            f"{what} {shown(value)} holds a newline or control character; give it as one line of text"
        )
    return value


def sample_id_problem(value: str) -> str | None:
    if not _SAMPLE_ID.fullmatch(value) or ".." in value:
        return (
            "is not a safe sample id (1-200 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit, no '..')"
        )
    return None


def member_problem(member: str, sample_id: str) -> str | None:
    if not _MEMBER.fullmatch(member) or ".." in member or not member.startswith(sample_id + "."):
        return f"member name {shown(member)} is not <sample id>.<extension> (letters and digits)"
    return None


def shard_problem(shard: str) -> str | None:
    if not _SHARD.fullmatch(shard) or ".." in shard or len(shard) > MAX_SHARD:
        return (
            f"shard path {shown(shard)} is not a relative path of safe names (letters, digits, '.', '_', "
            f"'-'; no '..', no leading '/'; at most {MAX_SHARD} characters)"
        )
    return None


def check_sample_id(value: str) -> str:
    problem = sample_id_problem(value)
    if problem:
        raise ValueError(f"{shown(value)} {problem}")
    return value


def _tests(bad_shard: str) -> list[tuple[str, str]]:
    """(DuckDB test over a manifest row, what it means), in the order a row's problem is named.
    ``bad_shard`` is the SQL test for an unsafe shard path."""
    return [
        ("sample_id IS NULL", "has no sample id"),
        (
            f"NOT regexp_full_match(sample_id, '{SAMPLE_ID}') OR contains(sample_id, '..')",
            "sample id is not a safe name (letters, digits, ''.'', ''_'', ''-''; no ''..'')",
        ),
        (
            "member IS NULL OR NOT starts_with(member, sample_id || '.') "
            f"OR NOT regexp_full_match(substr(member, length(sample_id) + 2), '{EXTENSION}')",
            "member name is not <sample id>.<extension>",
        ),
        (bad_shard, "shard path is not a relative path of safe names (no ''..'', no leading ''/'')"),
        (
            "image_sha256 IS NULL OR NOT regexp_full_match(image_sha256, '[0-9a-f]{64}')",
            "image_sha256 is missing or not a sha256 (64 hex digits)",
        ),
        (
            "phash IS NULL OR NOT regexp_full_match(phash, '[0-9a-f]{16}')",
            "phash is missing or not a perceptual hash (16 hex digits)",
        ),
    ]


def _sql_problem(bad_shard: str) -> str:
    """A DuckDB expression over a manifest row: what is unsafe about its names or digests, or NULL."""
    whens = "\n".join(f"WHEN {test} THEN '{what}'" for test, what in _tests(bad_shard))
    return f"CASE {whens} END"


def _sql_any(bad_shard: str) -> str:
    """True for a row with any problem: the WHERE clause that does the work. The CASE naming the problem
    runs on the rows it keeps only (on 1,000,000 rows, busy 2-core machine: 8 s as a CASE over every row;
    as a WHERE, see benchmarks/README.md). RE2 (DuckDB's regex engine) over unique hex digests measured
    3-6x faster than ``ltrim`` or ``translate`` with a hex alphabet."""
    return " OR ".join(f"({test})" for test, _ in _tests(bad_shard))


_BAD_SHARD = (
    f"shard IS NULL OR NOT regexp_full_match(shard, '{SHARD}') OR contains(shard, '..') "
    f"OR length(shard) > {MAX_SHARD}"
)
# Per row, for validate's provenance rule (a column of the Great Expectations batch).
SQL_PROBLEM = _sql_problem(_BAD_SHARD)
# True exactly where SQL_PROBLEM is not NULL (a CASE takes a WHEN whose test is true, as WHERE keeps a
# row whose OR is true; a NULL test is neither), and cheaper to count.
SQL_ANY = _sql_any(_BAD_SHARD)


def unsafe_rows(con: Any, view: str = "manifest", limit: int = SHOWN) -> tuple[int, list[tuple[Any, str]]]:
    """(how many rows of ``view`` have unsafe names or digests, the first ``limit`` as (sample id, problem)).

    Shard paths repeat (about 1,000 rows a shard), so they are checked once per distinct value here."""
    bad = [
        s for (s,) in con.execute(f"SELECT DISTINCT shard FROM {view}").fetchall() if s and shard_problem(s)
    ]
    shard_test = "shard IS NULL OR list_contains(?::VARCHAR[], shard)"
    rows = con.execute(
        f"SELECT sample_id, {_sql_problem(shard_test)}, count(*) OVER () FROM {view} "
        f"WHERE {_sql_any(shard_test)} LIMIT ?",
        [bad, bad, limit],
    ).fetchall()
    # A sample id names its member, its sidecars and its row: two rows of one id make two records of
    # one image (a loader reads it twice, a row's label stands for another's), so it is refused with the
    # unsafe names (issue 24: a duplicated id crashed filter and release's re-check).
    n_twice, twice = duplicate_ids(con, view, limit)
    found = [(sid, problem) for sid, problem, _ in rows]
    found += [(sid, f"sample id is not unique: {n} rows name it") for sid, n in twice]
    return (rows[0][2] if rows else 0) + n_twice, found[:limit]


# Sample ids a pass of ``duplicate_ids`` groups, at most about: so many fit DuckDB's one-thread cap.
PASS_IDS = 1 << 20


def duplicate_ids(con: Any, view: str = "manifest", limit: int = SHOWN) -> tuple[int, list[tuple[str, int]]]:
    """(how many rows of ``view`` share their sample id with another row, the first ``limit`` such ids in
    order, each with its count of rows).

    A pass groups the 64-bit hashes of its ids (DuckDB's ``hash``), not the ids, and only the ids whose
    hash came twice are grouped again, so that a hash that two different ids share counts for nothing.
    The ids are cut by hash into a pass per ``PASS_IDS`` rows, so that no pass groups more than about
    so many, whatever the manifest's length: grouping 10,000,000 ids at once reached one thread's cap and
    spilled (+86 MB above the process's start, against +59 MB for 1,000,000); hashed, in 10 passes, +38 MB
    against +37 MB for 1,000,000, in 4.5 s against 2.4 s (issue 22, 2026-12-07; beside verify's image
    checks).
    A manifest whose ids were chosen to fall into one pass only makes that pass spill, as before; one
    with many ids twice costs each such pass a second grouping (1,000,000 rows, half of them twice, in
    10 passes forced: 0.05 -> 0.68 s). Ids are compared byte for byte, as text: a manifest's
    ``sample_id`` is a VARCHAR without a collation (``hash`` ignores one, so two ids a collation calls
    equal would not be found here), and the first ids are given in the order of their bytes."""
    [(n_rows,)] = con.execute(f"SELECT count(*) FROM {view}").fetchall()
    passes = max(1, -(-int(n_rows) // PASS_IDS))
    total = 0
    first: list[tuple[str, int]] = []
    for part in range(passes):
        mine = f"sample_id IS NOT NULL AND hash(sample_id) % {passes} = {part}"
        hashes = f"SELECT hash(sample_id) AS h FROM {view} WHERE {mine}"
        twice = f"SELECT h FROM ({hashes}) GROUP BY h HAVING count(*) > 1"
        if con.execute(f"SELECT EXISTS ({twice})").fetchall() == [(False,)]:
            continue  # the usual answer; the query below would group again to say the same
        got = con.execute(
            f"SELECT sample_id, count(*), sum(count(*)) OVER () FROM {view} "
            f"WHERE {mine} AND hash(sample_id) IN ({twice}) "
            "GROUP BY sample_id HAVING count(*) > 1 ORDER BY sample_id LIMIT ?",
            [limit],
        ).fetchall()
        total += int(got[0][2]) if got else 0
        first = sorted(first + [(sid, int(n)) for sid, n, _ in got])[:limit]
    return total, first


def check_manifest(con: Any, what: str, view: str = "manifest") -> None:
    """Refuse a manifest with an unsafe name: a ManifestError naming the first sample and the count."""
    n, first = unsafe_rows(con, view, 1)
    if n:
        sid, problem = first[0]
        raise ManifestError(
            f"{what}: sample {shown(sid)}: {problem} ({n} row(s) with unsafe names or digests); "
            "it was not written by synthreg or was edited since: regenerate it"
        )


def check_table(table: Any, what: str) -> None:
    """``check_manifest`` over a pyarrow table."""
    from registry.core import duck

    con = duck.connect()
    con.register("names_check", table)
    check_manifest(con, what, "names_check")


def read_id_file(path: Path, max_bytes: int = 64 << 20) -> list[str]:
    """Sample ids from a text file, one a line (blank lines skipped). The file may be anything the
    user can read (a list of ids is often personal), so no message repeats a byte of it."""
    if not path.is_file():
        raise ConfigError(f"sample id file {path} does not exist; give one id a line")
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"sample id file {path} cannot be read ({e.strerror}); check it") from None
    if len(raw) > max_bytes:
        raise ConfigError(f"sample id file {path} is over {max_bytes >> 20} MiB; split it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"sample id file {path} is not UTF-8 text (byte {e.start}); give one sample id a line"
        ) from None
    ids = []
    for n, line in enumerate(text.splitlines(), 1):
        sid = line.strip()
        if sid and sample_id_problem(sid):
            raise ConfigError(
                f"line {n} of sample id file {path} is not a sample id (letters, digits, '.', '_', '-'); "
                "give one sample id a line"
            )
        if sid:
            ids.append(sid)
    return ids
