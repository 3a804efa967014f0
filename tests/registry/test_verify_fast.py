"""verify decides a shard at a time whether it is exactly as release made it (issue 22: ``intact``, with
``shards.spans``, ``images.all_whole`` and ``marking.all_marked``); only a shard it cannot accept goes
through the image-by-image check. The batch checks must never accept what the image-by-image ones
would report: each is fuzzed against its reference here, and a real release's shards must take the
batch path (else the speed-up is not used)."""

from __future__ import annotations

import hashlib
import multiprocessing
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generators.shard import encode_png
from registry.core.errors import ReleaseError
from registry.core.images import all_whole, png_problem
from registry.releases.shard_check import (
    COLUMNS,
    IMAGE_COLUMNS,
    C2pa,
    check_shard,
    checked_members,
    images_intact,
    intact,
    shard_job,
    table_sidecars,
    to_ipc,
)
from registry.releases.verify import verify
from registry.store import manifest as mf
from registry.store.marking import Marking, all_marked, foreign_sample, marking_problems
from registry.store.shards import (
    ShardFormatError,
    _index_strict,
    check_members,
    index,
    scan,
    spans,
    tar_bytes,
)
from registry.store.webdataset import SIDECAR_FIELDS, sidecar, sidecars_of
from registry.trust.credentials import C2PA_CHUNK, has_c2pa
from tests.registry.conftest import Built, folder
from tests.registry.conftest import fix_checksums as fix_tar_checksums

WEIGHTS = "cd" * 32
NO_C2PA = C2pa(False, None)


def pngs(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    return [
        encode_png((rng.random((8, 8)) * 255).astype(np.uint8), Marking(f"s-{i}", "gen", WEIGHTS))
        for i in range(n)
    ]


def shard_tables(ws: Path) -> list[tuple[Path, str, pa.Table]]:
    """(shard file, signed sha256, its manifest rows) for every shard of digits 1.0.0 in ``ws``."""
    record_folder = folder(ws, "1.0.0")
    import json

    shards = json.loads((record_folder / "release.json").read_text())["shards"]
    by_source = {s["source"]: s for s in shards}
    con = mf.connect(record_folder / "data" / "manifest.parquet")
    out = []
    for shard, table in mf.tables_by_shard(con, COLUMNS):
        ref = by_source[shard]
        out.append((record_folder / "data" / ref["path"], ref["sha256"], table))
    return out


def test_a_released_shard_takes_the_batch_path_and_verifies(released: Built) -> None:
    shards = shard_tables(released.ws)
    assert len(shards) == 2
    for path, sha, table in shards:
        data = path.read_bytes()
        assert len(index(data)) == 3 * table.num_rows  # each image with its .json and .cls sidecars
        classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
        assert intact(data, sha, table, classes, NO_C2PA), path.name
        assert intact(data, "0" * 64, table, classes, NO_C2PA) is False  # not the signed bytes
        assert intact(data, sha, table, classes, C2pa(True, None)) is False  # C2PA asked: image by image
    assert verify(released.ws, "digits@1.0.0").ok


def test_verify_checks_names_on_a_connection_of_one_thread(
    released: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name and duplicate-id check runs beside the workers on a connection of its own with one thread,
    so one thread's cap (issue 22: 132 -> 85 MB at 10,000,000 rows); the stream keeps the default."""
    import duckdb

    from registry.core import names

    made: list[int | None] = []
    connect = mf.connect
    monkeypatch.setattr(mf, "connect", lambda *a, **k: made.append(k.get("threads")) or connect(*a, **k))
    seen: list[str] = []
    unsafe_rows = names.unsafe_rows

    def spied(con: duckdb.DuckDBPyConnection, *a: object) -> tuple:
        seen.append(con.execute("SELECT current_setting('threads')").fetchone()[0])
        return unsafe_rows(con, *a)

    monkeypatch.setattr("registry.releases.verify.unsafe_rows", spied)
    assert verify(released.ws, "digits@1.0.0").ok
    assert sorted(made, key=str) == [1, None] and seen == [1]


def test_verify_keeps_no_answer_of_a_clean_shard(released: Built) -> None:
    """issue 22: what each shard's check found is kept to be merged at the end only when it found
    something (a path, lists and maps of every clean shard took 7.7 MB at 10,000 shards). Read off the
    frame that reports progress, once per shard checked."""
    import sys

    held: list[int] = []

    def progress(done: int, total: int) -> None:
        held.append(len(sys._getframe(1).f_locals["answers"]))

    assert verify(released.ws, "digits@1.0.0", threads=2, progress=progress).ok
    assert held == [0, 0]  # two shards, both clean


def test_verify_holds_neither_the_record_nor_the_signed_statement_through_the_image_checks(
    released: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    """issue 22: at 10,000 shards the record is 18 MB of Python objects (1.8 KB a ``ShardRef``) and the
    signed statement, the record again as parsed JSON, 11.5 MB; the image checks need of them only each
    shard's source, file, sha256 and members (``Shard``), the classes and the signed subjects. Counted
    with the garbage collector when the image checks start, against the count before verify."""
    import gc

    from registry.records.release import Release, ShardRef
    from registry.releases import verify as module

    def held() -> tuple[int, int]:
        gc.collect()
        objects = gc.get_objects()
        records = sum(isinstance(o, Release | ShardRef) for o in objects)
        statements = sum(isinstance(o, dict) and "predicateType" in o for o in objects)
        return records, statements

    during: list[tuple[int, int]] = []
    check_images = module._check_images

    def spied(*a: object, **k: object) -> object:
        during.append(held())
        return check_images(*a, **k)

    monkeypatch.setattr(module, "_check_images", spied)
    before = held()
    assert verify(released.ws, "digits@1.0.0").ok
    assert during == [before]


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")
def test_workers_leave_what_they_inherit_uncollected_so_its_pages_stay_shared() -> None:
    """Forked workers' collections skip the objects they inherited (``gc.freeze`` before the fork): a
    collection walking them would copy their pages into every worker (issue 22: each verify worker held
    92 -> 79 MB at 1,000,000 images). The parent collects as before."""
    import gc

    from registry.releases.verify import _pool

    with _pool(2) as pool:
        assert gc.get_freeze_count() == 0
        assert pool.submit(gc.get_freeze_count).result() > 1000


def test_the_stream_of_shard_tables_holds_every_row_once(released: Built, tmp_path: Path) -> None:
    """``tables_by_shard`` reads the manifest once and gives each shard when its rows are all read, also
    for a manifest whose shards are interleaved (rows of one shard apart from each other)."""
    manifest = folder(released.ws, "1.0.0") / "data" / "manifest.parquet"
    table = mf.read_table(manifest)
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    path = tmp_path / "m.parquet"
    mf.write_table(shuffled, path)
    got = dict(mf.tables_by_shard(mf.connect(path), ["sample_id"], batch_rows=3))
    want = {}
    for shard, sid in zip(
        shuffled.column("shard").to_pylist(), shuffled.column("sample_id").to_pylist(), strict=True
    ):
        want.setdefault(shard, []).append(sid)
    assert {s: t.column("sample_id").to_pylist() for s, t in got.items()} == want


def test_the_stream_of_shard_tables_is_the_same_in_any_batch_size(tmp_path: Path) -> None:
    """Past the default batch (8,192 rows): 30,000 rows in groups of 7,000, a shard's rows apart from
    each other and some naming no shard, give the same shards, rows and order, each shard as one chunk,
    at the default batch as at batches of 1,000 and 65,536, and as the rows say."""
    import pyarrow.parquet as pq

    n = 30_000
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 40, n)
    shards = [None if i % 97 == 0 else f"shards/{int(k):03d}.tar" for i, k in enumerate(codes)]
    table = pa.table({"sample_id": [f"s{i:06d}" for i in range(n)], "shard": shards})
    path = tmp_path / "m.parquet"
    pq.write_table(table, path, row_group_size=7000)
    want: dict[str | None, list[str]] = {}
    for shard, sid in zip(shards, table.column("sample_id").to_pylist(), strict=True):
        want.setdefault(shard, []).append(sid)
    runs = [list(mf.tables_by_shard(mf.connect(path), ["sample_id"]))]
    runs += [list(mf.tables_by_shard(mf.connect(path), ["sample_id"], batch_rows=b)) for b in (1000, 65_536)]
    for got in runs:
        assert [s for s, _ in got] == [s for s, _ in runs[0]] and got[-1][0] is None
        assert {s: t.column("sample_id").to_pylist() for s, t in got} == want
        assert all(t.column("sample_id").num_chunks == 1 for _, t in got)


def test_the_stream_reads_on_one_thread_and_gives_the_connection_its_threads_back(tmp_path: Path) -> None:
    """One DuckDB thread while the stream runs (issue 22: on two a stream held more the larger the row
    groups), and the connection's own count again once it ends, whether it was read to the end or left
    midway; a stream whose connection closed first is left without an error."""
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"sample_id": [f"s{i}" for i in range(50)], "shard": [f"{i // 10}.tar" for i in range(50)]}),
        path,
    )
    con = mf.connect(path)
    con.execute("SET threads = 3")

    def threads() -> int:
        return int(con.execute("SELECT current_setting('threads')").fetchone()[0])

    stream = mf.tables_by_shard(con, ["sample_id"], batch_rows=7)
    assert next(stream)[0] == "0.tar" and threads() == 1
    assert [s for s, _ in stream] == ["1.tar", "2.tar", "3.tar", "4.tar"] and threads() == 3
    left = mf.tables_by_shard(con, ["sample_id"], batch_rows=7)
    next(left)
    left.close()  # a caller that stops early (an error in a shard, say)
    assert threads() == 3
    orphan = mf.tables_by_shard(con, ["sample_id"], batch_rows=7)
    next(orphan)
    con.close()
    orphan.close()  # its connection closed first: nothing to set back, and no error


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3),
    fix_checksums=st.booleans(),
)
def test_the_batch_path_never_accepts_what_the_full_check_reports(
    released: Built, edits: list[tuple[int, int]], fix_checksums: bool
) -> None:
    """Fuzz: bytes of a released shard changed anywhere (tar checksums made right again or not), the
    shard's sha256 taken as signed so the checks go past it: when ``intact`` accepts the shard, the
    image-by-image check finds nothing either; and the job's answer is the full check's."""
    path, _, table = shard_tables(released.ws)[0]
    classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
    data = bytearray(path.read_bytes())
    for position, value in edits:
        data[position % len(data)] = value
    if fix_checksums:
        fix_tar_checksums(data)
    blob = bytes(data)
    sha = hashlib.sha256(blob).hexdigest()
    members, sids, shas, generators, weights = (
        table.column(c).to_pylist()
        for c in ("member", "sample_id", "image_sha256", "generator_name", "weights_digest")
    )
    ms = dict(zip(members, zip(sids, shas, strict=True), strict=True))
    marks = dict(zip(sids, map(Marking, sids, generators, weights), strict=True))
    full = check_shard(path, sha, ms, marks, NO_C2PA, table_sidecars(table, classes), blob)
    if intact(blob, sha, table, classes, NO_C2PA):
        assert full == ([], {}, {})


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=0, max_size=3))
def test_spans_answer_as_index_or_not_at_all(edits: list[tuple[int, int]]) -> None:
    images = pngs(3)
    data = bytearray(tar_bytes([(f"s-{i}.png", png) for i, png in enumerate(images)]))
    for position, value in edits:
        data[position % len(data)] = value
    blob = bytes(data)
    found = spans(blob)
    try:  # the strict walk, the reference (``index`` itself now asks ``spans`` first)
        want = _index_strict(blob)
    except ShardFormatError:
        assert found is None
        with pytest.raises(ShardFormatError):
            index(blob)
        return
    assert index(blob) == want
    if found is not None:
        names, starts, sizes = found
        assert dict(zip(names, zip(starts.tolist(), sizes.tolist(), strict=True), strict=True)) == want
    if not edits:
        assert found is not None  # what tar_bytes writes is what the batch walk is for


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=0, max_size=3))
def test_all_whole_accepts_only_what_png_problem_accepts(edits: list[tuple[int, int]]) -> None:
    images = [bytearray(p) for p in pngs(3)]
    for position, value in edits:
        victim = images[position % 3]
        victim[position % len(victim)] = value
    blob = b"".join(images)
    starts = np.cumsum([0] + [len(p) for p in images[:-1]])
    sizes = np.array([len(p) for p in images])
    if all_whole(blob, starts, sizes):
        assert all(png_problem(bytes(p)) is None for p in images)
    if not edits:
        assert all_whole(blob, starts, sizes)


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=0, max_size=2),
    ids=st.lists(
        st.sampled_from(["s-0", "s-1", "s-2", "s-10", 's-"0', "s&1", "s-0\ns-1"]), min_size=3, max_size=3
    ),
)
def test_all_marked_accepts_only_what_the_marking_checks_accept(
    edits: list[tuple[int, int]], ids: list[str]
) -> None:
    images = [bytearray(p) for p in pngs(3)]
    for position, value in edits:
        victim = images[position % 3]
        victim[position % len(victim)] = value
    blob = b"".join(images)
    starts = np.cumsum([0] + [len(p) for p in images[:-1]]).tolist()
    sizes = [len(p) for p in images]
    whole = all_whole(blob, np.array(starts), np.array(sizes))  # what all_marked's caller checks first
    if whole and all_marked(blob, starts, ids, ["gen"] * 3, [WEIGHTS] * 3):
        for png, sid in zip(images, ids, strict=True):
            assert marking_problems(bytes(png), Marking(sid, "gen", WEIGHTS)) == []
            assert foreign_sample(bytes(png), sid) is None
    if not edits and ids == ["s-0", "s-1", "s-2"]:
        assert all_marked(blob, starts, ids, ["gen"] * 3, [WEIGHTS] * 3)
    assert not all_marked(blob, starts, ids, ["gen"] * 3, ["ef" * 32] * 3)  # another generator's weights


def test_ashard_job_sent_to_a_process_reads_its_rows_from_arrowto_ipc(released: Built) -> None:
    path, sha, table = shard_tables(released.ws)[0]
    classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
    assert shard_job(path, sha, to_ipc(table), classes, NO_C2PA) == ([], {}, {}, table.num_rows)
    assert len(to_ipc(table.slice(0, 1))) < len(to_ipc(table))  # a slice sends its rows, not its batch


TEXT = st.one_of(st.none(), st.text(max_size=12))
ROW = st.fixed_dictionaries(
    {
        "sample_id": st.text(max_size=12),
        "identity": TEXT,
        "attributes": st.one_of(st.none(), st.lists(st.tuples(st.text(max_size=5), TEXT), max_size=3)),
        "decision": TEXT,
        "reason": TEXT,
        "seed": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "prompt": TEXT,
        "generator_name": TEXT,
        "weights_digest": TEXT,
    }
)


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(ROW, max_size=5))
def test_sidecars_a_column_at_a_time_are_the_bytes_of_each_row(rows: list[dict]) -> None:
    """``webdataset.sidecars_of`` (what release writes and verify compares) gives ``sidecar(row)`` for
    every row, for any text (quotes, control characters, non-ASCII), None, large seeds and attribute
    maps (key order, a key twice: the last wins, as in ``dict``)."""
    schema = pa.schema([mf.SCHEMA.field(f).with_nullable(True) for f in SIDECAR_FIELDS])
    table = pa.table({f: pa.array([row[f] for row in rows], schema.field(f).type) for f in SIDECAR_FIELDS})
    table = table.append_column("member", pa.array([f"m-{i}.png" for i in range(len(rows))], pa.string()))
    want = [
        sidecar({k: dict(v) if k == "attributes" and v is not None else v for k, v in row.items()})
        for row in rows
    ]
    assert [text for text, _ in sidecars_of(table, []).values()] == want


def test_what_a_review_found_goes_image_by_image(tmp_path: Path) -> None:
    """A review's finds (issue 22): two rows of one sample id (the full check holds one marking a sample
    id, so its note must come from there), and a marking whose CRC alone is wrong (the full check then
    parses the packet, which a 64 KB cut can change) are never accepted in batch."""
    images = pngs(2)
    data = tar_bytes([("s-0.png", images[0]), ("s-1.png", images[1])])
    shas = [hashlib.sha256(p).hexdigest() for p in images]
    rows = {
        "member": ["s-0.png", "s-1.png"],
        "sample_id": ["s-0", "s-1"],
        "image_sha256": shas,
        "generator_name": ["gen", "gen"],
        "weights_digest": [WEIGHTS, WEIGHTS],
    }
    rows |= {f: ["v", "w"] for f in SIDECAR_FIELDS if f not in rows}
    rows |= {"seed": [1, 2]}
    schema = pa.schema([mf.SCHEMA.field(c) for c in COLUMNS])
    rows["attributes"] = pa.array([[("stroke", "thin")], []], schema.field("attributes").type)
    table = pa.table(rows, schema=schema)
    sha = hashlib.sha256(data).hexdigest()
    assert intact(data, sha, table, None, NO_C2PA)
    twice = table.set_column(1, "sample_id", pa.array(["s-0", "s-0"]))
    assert not intact(data, sha, twice, None, NO_C2PA)
    crc = bytearray(images[1])
    crc[crc.index(b"IDAT") - 5] ^= 1  # the last byte of the marking chunk's CRC
    broken = tar_bytes([("s-0.png", images[0]), ("s-1.png", bytes(crc))])
    table = table.set_column(2, "image_sha256", pa.array([shas[0], hashlib.sha256(bytes(crc)).hexdigest()]))
    assert not intact(broken, hashlib.sha256(broken).hexdigest(), table, None, NO_C2PA)


def test_sidecars_of_other_column_types_are_built_row_by_row() -> None:
    """A manifest whose sidecar columns are not the types synthreg writes (a float seed: 0.0 and -0.0;
    a list where a map belongs) gets the sidecars the row-by-row builder makes, and no crash."""
    base = {"member": ["s-0.png", "s-1.png"], "sample_id": ["s-0", "s-1"]}
    base |= {f: ["x", "y"] for f in ("image_sha256", "generator_name", "weights_digest")}
    base |= {f: ["v", "w"] for f in SIDECAR_FIELDS if f not in base}
    for seed, attributes in (
        (pa.array([0.0, -0.0]), pa.array([None, None], pa.map_(pa.string(), pa.string()))),
        (pa.array([1, 2]), pa.array([["ab", "cd"], ["ef"]])),
        (pa.array([1, 2]), pa.array([[("k", ["a"])], None], pa.map_(pa.string(), pa.list_(pa.string())))),
    ):
        table = pa.table(base | {"seed": seed, "attributes": attributes})
        rows = [
            {
                k: dict(v)
                if k == "attributes" and isinstance(v, list) and v and isinstance(v[0], tuple)
                else v
                for k, v in r.items()
            }
            for r in table.to_pylist()
        ]
        want = {}
        for r in rows:
            key = r["member"].removesuffix(".png")
            want[f"{key}.json"] = (r["sample_id"], sidecar(r))
            want[f"{key}.cls"] = (r["sample_id"], None)
        assert table_sidecars(table, None) == want


def test_a_row_without_a_sample_id_is_reported_not_a_traceback(released: Built) -> None:
    """A manifest row with no sample id (the names check names it) no longer crashes the shard's check
    (before issue 22's review: a TypeError in the marking check); its image is then a member no row names."""
    path, sha, table = shard_tables(released.ws)[0]
    classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
    sids = table.column("sample_id").to_pylist()
    table = table.set_column(1, "sample_id", pa.array([None, *sids[1:]], pa.string()))
    problems, _, _, named = shard_job(path, sha, table, classes, NO_C2PA)
    assert named == table.num_rows
    assert problems and "member(s) no manifest row names" in problems[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=0, max_size=3),
    fix_checksums=st.booleans(),
    with_sidecars=st.booleans(),
)
def test_release_copies_by_the_batch_check_only_what_the_member_check_accepts(
    released: Built, edits: list[tuple[int, int]], fix_checksums: bool, with_sidecars: bool
) -> None:
    """Fuzz: release and derive check the shards they copy a shard at a time (``images_intact``, issue
    22) and else image by image (``check_members``). A shard of images (as generated) or of images and
    sidecars (as released), bytes changed anywhere: when the batch check accepts it, the member check
    finds nothing, and the members handed on are the strict parser's, in its order; when it does not,
    release's answer is the member check's (its error, or the same members)."""
    path, _, table = shard_tables(released.ws)[0]
    data = path.read_bytes()
    if not with_sidecars:
        data = tar_bytes([(m, bytes(v)) for m, v in scan(data)[0].items() if m.endswith(".png")])
    edited = bytearray(data)
    for position, value in edits:
        edited[position % len(edited)] = value
    if fix_checksums:
        fix_tar_checksums(edited)
    blob = bytes(edited)
    rows = [table.column(c).to_pylist() for c in IMAGE_COLUMNS]
    expected = dict(zip(rows[0], zip(rows[1], rows[2], strict=True), strict=True))
    walked = spans(blob)
    fast = walked is not None and images_intact(blob, walked, *rows)
    problems, bad = check_members(blob, expected, "s")
    if fast:
        assert (problems, bad) == ([], {})
    if not edits:
        assert fast  # what release writes, and what generate writes, take the batch path
    if problems or bad:
        with pytest.raises(ReleaseError):
            checked_members(blob, "s", expected, rows)
        return
    got = checked_members(blob, "s", expected, rows)
    assert got is not None
    want = {n: blob[s : s + k] for n, (s, k) in _index_strict(blob).items()}
    assert list(got) == list(want) and {n: bytes(v) for n, v in got.items()} == want


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


def test_the_batch_walk_refuses_a_c2pa_chunk_wherever_the_full_check_would_find_it() -> None:
    """verify's batch path leaves an image with a C2PA chunk to the image-by-image check, which reads
    it (``credentials.has_c2pa``); the batch walk sees every chunk that walk would (issue 22: it
    replaced a search of the whole shard for the chunk type), so one after IEND is refused too."""
    png = pngs(1)[0]
    iend = png.index(b"IEND") - 4
    inside = png[:iend] + png_chunk(C2PA_CHUNK, b"jumbf") + png[iend:]
    after = png + png_chunk(C2PA_CHUNK, b"jumbf")
    trailing = png + b"\0"
    for image in (png, inside, after, trailing):
        one = (np.array([0]), np.array([len(image)]))
        assert png_problem(image) is None and all_whole(image, *one)  # whole, as png_problem says
        refused = not all_whole(image, *one, without=C2PA_CHUNK)
        assert refused == (image != png)
        assert has_c2pa(image) == (image in (inside, after))


def test_a_shard_whose_image_carries_c2pa_unasked_goes_image_by_image() -> None:
    images = pngs(2)
    signed = images[1] + png_chunk(C2PA_CHUNK, b"jumbf")  # bytes as recorded: only the full check reads it
    data = tar_bytes([("s-0.png", images[0]), ("s-1.png", signed)])
    rows = {
        "member": ["s-0.png", "s-1.png"],
        "sample_id": ["s-0", "s-1"],
        "image_sha256": [hashlib.sha256(p).hexdigest() for p in (images[0], signed)],
        "generator_name": ["gen", "gen"],
        "weights_digest": [WEIGHTS, WEIGHTS],
    }
    table = pa.table(rows, schema=pa.schema([mf.SCHEMA.field(c) for c in IMAGE_COLUMNS]))
    sha = hashlib.sha256(data).hexdigest()
    assert not intact(data, sha, table, None, NO_C2PA)
    ms = {"s-0.png": ("s-0", rows["image_sha256"][0]), "s-1.png": ("s-1", rows["image_sha256"][1])}
    marks = {s: Marking(s, "gen", WEIGHTS) for s in ("s-0", "s-1")}
    problems, bad, unmarked = check_shard(Path("x.tar"), sha, ms, marks, NO_C2PA, None, data)
    assert not problems and not bad and "C2PA" in unmarked["s-1"]  # noted, as the batch path cannot


def test_sidecars_edited_in_a_released_shard_are_never_accepted_in_batch(released: Built) -> None:
    """The sidecars compared as one run of bytes (``sidecars_intact``): a byte of a ``.json`` or a
    ``.cls`` changed, two images' sidecars swapped, one more member: never accepted, and the full check
    names a sample or the shard, a missing sidecar included (before, the full check compared only the
    sidecars a shard held). Without a recipe (no classes) the ``.cls`` is not compared, by either
    check."""
    path, _, table = shard_tables(released.ws)[0]
    classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
    members = list(index(path.read_bytes()).items())
    assert len(members) == 3 * table.num_rows  # an image, its .json and its .cls
    found = dict(members)

    def edited(change) -> bytes:
        return tar_bytes([(n, change(n, bytes(path.read_bytes()[a : a + s]))) for n, (a, s) in members])

    def flip(target: str):
        return lambda n, b: (bytes([b[0] ^ 1]) + b[1:]) if n == target else b

    first = table.column("member")[0].as_py().removesuffix(".png")
    second = table.column("member")[1].as_py().removesuffix(".png")

    def swap(n: str, b: bytes) -> bytes:
        a0, s0 = found[f"{first}.json"]
        a1, s1 = found[f"{second}.json"]
        blob = path.read_bytes()
        return {f"{first}.json": blob[a1 : a1 + s1], f"{second}.json": blob[a0 : a0 + s0]}.get(n, b)

    rows = {c: table.column(c).to_pylist() for c in IMAGE_COLUMNS}
    ms = dict(zip(rows["member"], zip(rows["sample_id"], rows["image_sha256"], strict=True), strict=True))
    marks = {
        s: Marking(s, g, w)
        for s, g, w in zip(rows["sample_id"], rows["generator_name"], rows["weights_digest"], strict=True)
    }
    cases = [edited(flip(f"{first}.json")), edited(flip(f"{first}.cls")), edited(swap)]
    blob = path.read_bytes()
    cases.append(tar_bytes([*((n, blob[a : a + s]) for n, (a, s) in members), (f"{first}.txt", b"x")]))
    for i, data in enumerate(cases):
        sha = hashlib.sha256(data).hexdigest()
        assert not intact(data, sha, table, classes, NO_C2PA), i
        full = check_shard(path, sha, ms, marks, NO_C2PA, table_sidecars(table, classes), data)
        assert full != ([], {}, {}), i
    missing = tar_bytes([(n, blob[a : a + s]) for n, (a, s) in members if n != f"{first}.cls"])
    sha = hashlib.sha256(missing).hexdigest()
    assert not intact(missing, sha, table, classes, NO_C2PA)
    _, bad, _ = check_shard(path, sha, ms, marks, NO_C2PA, table_sidecars(table, classes), missing)
    sid = table.column("sample_id")[0].as_py()
    assert bad == {sid: f"its sidecar {first}.cls is missing from {path.name}"}
    cls_flipped = cases[1]
    sha = hashlib.sha256(cls_flipped).hexdigest()
    assert intact(cls_flipped, sha, table, None, NO_C2PA)  # no classes: a .cls is not compared
    assert check_shard(path, sha, ms, marks, NO_C2PA, table_sidecars(table, None), cls_flipped) == (
        [],
        {},
        {},
    )
    assert intact(blob, hashlib.sha256(blob).hexdigest(), table, classes, NO_C2PA)


def test_a_shard_whose_rows_type_the_attributes_otherwise_is_checked_not_a_crash(released: Built) -> None:
    """A signed manifest whose ``attributes`` is a string column rather than a map (a review's find):
    the batch path leaves it to the row-by-row builder, as before, rather than failing in Arrow."""
    path, sha, table = shard_tables(released.ws)[0]
    classes = list(released.record.recipe.identities) if released.record.recipe else None  # type: ignore[union-attr]
    i = table.schema.get_field_index("attributes")
    texts = pa.array([None if v is None else str(dict(v)) for v in table.column(i).to_pylist()], pa.string())
    odd = table.set_column(i, pa.field("attributes", pa.string()), texts)
    assert intact(path.read_bytes(), sha, odd, classes, NO_C2PA) is False
    _, bad, _, named = shard_job(path, sha, odd, classes, NO_C2PA)
    assert named == table.num_rows and bad and all("sidecar" in why for why in bad.values())


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 6),
    layout=st.sampled_from(["images", "release", "shuffled"]),
    drop=st.integers(-1, 17),
    twice=st.booleans(),
)
def test_positions_read_off_the_layout_are_the_positions_by_name(
    n: int, layout: str, drop: int, twice: bool
) -> None:
    """issue 22: where each image and sidecar lies is read off the layout generate and release write,
    else looked up by name; either way the answer is each wanted name's place among the names, and
    None when one is missing or wanted twice."""
    import random

    from registry.releases.shard_check import _positions

    keys = [f"s{i}" for i in range(n)]
    names = [f"{k}.png" for k in keys]
    if layout != "images":
        names = [f"{k}{suffix}" for k in keys for suffix in (".png", ".json", ".cls")]
    if layout == "shuffled":
        random.Random(n).shuffle(names)
    if 0 <= drop < len(names):
        del names[drop]
    for first, suffix in enumerate((".png", ".json", ".cls")):
        wanted = [f"{k}{suffix}" for k in keys] + ([f"{keys[0]}{suffix}"] if twice and keys else [])
        got = _positions(names, wanted, first)
        where = {name: i for i, name in enumerate(names)}
        if any(w not in where for w in wanted) or len(set(wanted)) < len(wanted):
            assert got is None
        else:
            assert np.arange(len(names))[got].tolist() == [where[w] for w in wanted]  # as numpy indexes


@pytest.mark.parametrize("nulls", [False, True])
def test_sidecars_of_plain_strings_with_and_without_nulls_are_the_bytes_of_each_row(nulls: bool) -> None:
    """The column-wise sidecars put each string's quotes in the text around it when no string is null
    (issue 22), and quote each column otherwise: the bytes of ``sidecar(row)`` either way, for plain
    strings that take that path (hypothesis's texts above mostly need escaping, and go row by row)."""
    from registry.store.webdataset import sidecar_texts

    rows = [
        {
            "sample_id": f"s-{i}",
            "identity": "id7",
            "attributes": [("tone", "dark"), ("size", str(i))] if i % 3 else None,
            "decision": "accepted",
            "reason": None if nulls and i == 1 else "",
            "seed": i * 10**12 if i != 2 else None,
            "prompt": "a plain prompt, with: punctuation! #1 (ok)",
            "generator_name": "g",
            "weights_digest": "ab" * 32,
        }
        for i in range(5)
    ]
    schema = pa.schema([mf.SCHEMA.field(f).with_nullable(True) for f in SIDECAR_FIELDS])
    table = pa.table({f: pa.array([row[f] for row in rows], schema.field(f).type) for f in SIDECAR_FIELDS})
    texts, _ = sidecar_texts(table, [])  # type: ignore[misc]
    want = [
        sidecar({k: dict(v) if k == "attributes" and v is not None else v for k, v in row.items()}).decode()
        for row in rows
    ]
    assert texts.to_pylist() == want
