"""One shard of a release against its manifest rows, in a worker of ``verify`` (issue 22): ``intact``
accepts a shard exactly as release made it in batch; any other goes through ``check_shard``, image by
image, which says what is wrong. ``registry.releases.verify`` runs the workers and merges their answers.
``checked_members`` is release's and derive's check of each shard they copy, the same way round."""

from __future__ import annotations

import functools
import hashlib
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry.core.digests import sha256_bytes
from registry.core.errors import ReleaseError
from registry.core.images import all_whole
from registry.core.names import shown
from registry.store.marking import Marking, all_marked, marking_problems
from registry.store.shards import check_members, safe_members, scan, spans
from registry.store.webdataset import SIDECAR_FIELDS, sidecar_members, sidecar_texts
from registry.store.webdataset import sidecars_of as webdataset_sidecars
from registry.trust.credentials import C2PA_CHUNK, has_c2pa


@dataclass(frozen=True)
class C2pa:
    asked: bool  # the recipe asked for C2PA: an image without valid credentials fails
    anchors: str | None  # PEM trust anchors; None: the chain is not checked


IMAGE_COLUMNS = ["member", "sample_id", "image_sha256", "generator_name", "weights_digest"]
COLUMNS = [*IMAGE_COLUMNS, *(f for f in SIDECAR_FIELDS if f not in IMAGE_COLUMNS)]  # each once


def shard_job(
    path: Path, expected_sha: str, table: Any, classes: list[str] | None, c2pa: C2pa
) -> tuple[list[str], dict, dict, int]:
    """One shard, in a worker: its manifest rows (an Arrow table of ``COLUMNS``, or its Arrow IPC
    stream from another process) made into what ``check_shard`` compares with the shard's bytes.
    Returns ``check_shard``'s answer and the number of distinct members the rows name. A shard that
    ``intact`` finds exactly as release made it needs no more (issue 22); any other goes through
    ``check_shard``, which says what is wrong."""
    if isinstance(table, bytes):
        import pyarrow as pa

        table = pa.ipc.open_stream(table).read_all()
    data = path.read_bytes() if path.is_file() else None
    if data is not None and intact(data, expected_sha, table, classes, c2pa):
        return [], {}, {}, table.num_rows
    named = len(set(table.column("member").to_pylist()))
    if table.column("member").null_count or table.column("sample_id").null_count:
        import pyarrow.compute as pc  # a row without a name: the names check reports it; skipped here

        table = table.filter(
            pc.and_(pc.is_valid(table.column("member")), pc.is_valid(table.column("sample_id")))
        )
    members, sids, shas, generators, weights = (table.column(c).to_pylist() for c in IMAGE_COLUMNS)
    ms = dict(zip(members, zip(sids, shas, strict=True), strict=True))
    marks = dict(zip(sids, map(Marking, sids, generators, weights), strict=True))
    cars = functools.partial(table_sidecars, table, classes)
    return (*check_shard(path, expected_sha, ms, marks, c2pa, cars, data), named)


def intact(data: bytes, expected_sha: str, table: Any, classes: list[str] | None, c2pa: C2pa) -> bool:
    """Whether ``check_shard`` would find nothing at all in shard ``data`` against these rows, decided
    a shard at a time (issue 22): the shard as signed, walked by ``shards.spans``; every row's member
    there once, a PNG with a safe name, whole (``images.all_whole``), of the recorded sha256, with the
    marking generation writes right after its IHDR (what ``marking_problems``, ``foreign_sample`` and
    ``png_problem`` accept first); no C2PA chunk and none asked; and every other member a sidecar of
    the bytes release writes. Anything else is False, and the full check says what it is."""
    if c2pa.asked or sha256_bytes(data) != expected_sha:
        return False
    found = spans(data)
    if found is None:
        return False
    names, starts, sizes = found
    members = table.column("member").to_pylist()
    columns = (table.column(c).to_pylist() for c in IMAGE_COLUMNS)
    if not images_intact(data, found, *columns, without=C2PA_CHUNK):  # a C2PA chunk: image by image
        return False
    if len(names) > len(members):  # the sidecars release writes beside each image
        texts = sidecar_texts(table, classes or []) if _synthreg_types(table) else None
        if texts is not None:
            return sidecars_intact(data, found, members, *texts, classes is not None)
        cars = table_sidecars(table, classes)
        if len(names) != len(members) + len(cars) or any(n not in cars for n in set(names) - set(members)):
            return False
        where = {name: i for i, name in enumerate(names)}
        offsets, lengths = starts.tolist(), sizes.tolist()
        for name, (_, want) in cars.items():  # each is in the shard: the counts above say so
            i = where[name]
            if want is not None and (lengths[i] != len(want) or not data.startswith(want, offsets[i])):
                return False
    return True  # (no fewer names than members: images_intact found each member)


def sidecars_intact(
    data: bytes, walked: tuple[list[str], Any, Any], members: list[str], texts: Any, numbers: Any, cls: bool
) -> bool:
    """Whether shard ``data`` (walked by ``shards.spans``), whose images ``images_intact`` accepted,
    holds beside each image ``<key>.png`` exactly its ``<key>.json`` with ``texts``' bytes and its
    ``<key>.cls`` with ``numbers``' (``webdataset.sidecar_texts`` of the rows, in row order; the
    ``.cls`` bytes compared only when ``cls``), and nothing else. Compared as one run of bytes each,
    the members gathered in row order (issue 22: a Python bytes object and a dict entry a member cost
    5 ms a shard of 990 images)."""
    import numpy as np
    import pyarrow as pa

    names, starts, sizes = walked
    if len(names) != 3 * len(members):
        return False
    keys = [m.removesuffix(".png") for m in members]  # each a .png: images_intact says so
    for step, (suffix, column, compared) in enumerate(((".json", texts, True), (".cls", numbers, cls)), 1):
        picks = _positions(names, [key + suffix for key in keys], step)
        if picks is None:  # with 3 names an image, every name is then an image or one of its sidecars
            return False
        if not compared:
            continue
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        if column.type != pa.string() or column.null_count:  # int32 offsets, and a text every row
            return False
        ends = np.frombuffer(column.buffers()[1], np.int32, len(column) + 1, 4 * column.offset)
        at, size = starts[picks], sizes[picks]
        if (size != np.diff(ends)).any():
            return False
        got = b"".join([data[a : a + n] for a, n in zip(at.tolist(), size.tolist(), strict=True)])
        want = column.buffers()[2].slice(int(ends[0]), int(ends[-1] - ends[0]))
        if not pa.py_buffer(got).equals(want):
            return False
    return True


def images_intact(
    data: bytes,
    walked: tuple[list[str], Any, Any],
    members: list[str],
    sids: list[str],
    shas: list[str],
    generators: list[str],
    weights: list[str],
    *,
    without: bytes | None = None,
) -> bool:
    """Whether ``check_members`` finds nothing in shard ``data`` (walked by ``shards.spans``) against
    these rows (member, sample id, image sha256, and the generator and weights digest the marking
    names), decided a shard at a time (issue 22): every member there once, every name in the shard
    safe, each member a PNG, whole (``images.all_whole``), of the recorded sha256, with the marking
    generation writes right after its IHDR (``marking.all_marked``, which ``foreign_sample`` accepts
    too). False for anything else; the caller then checks image by image, which says what it is. Used
    by ``intact`` (verify) and by release and derive on the shards they copy. ``without``: a chunk
    type no image may hold (``images.all_whole``)."""
    names, starts, sizes = walked
    if None in sids or len(set(sids)) < len(sids):  # the full check holds one marking a sample id
        return False
    picks = _positions(names, members, 0)
    if picks is None or not safe_members(names):
        return False
    if not all(m.endswith(".png") for m in members):
        return False
    at, size = starts[picks], sizes[picks]
    if not all_whole(data, at, size, without=without):
        return False
    offsets, lengths = at.tolist(), size.tolist()
    sha256 = hashlib.sha256  # of slices of bytes: a third faster than of a memoryview's (issue 22)
    if [sha256(data[a : a + n]).hexdigest() for a, n in zip(offsets, lengths, strict=True)] != shas:
        return False
    return all_marked(data, offsets, sids, generators, weights)


def _positions(names: list[str], wanted: list[str], first: int) -> slice | list[int] | None:
    """Where each of ``wanted`` is among a shard's ``names`` (distinct, as ``spans`` gives them); None
    when one is missing or named twice. Read off the layout first (issue 22: a dict of 3,000 names and
    as many lookups cost verify 0.4 ms a shard): each at ``first`` among its image and two sidecars, as
    release writes a shard (``first`` 0, 1, 2 for the image, the ``.json``, the ``.cls``), or as the
    only names there are (images alone, as generate writes them; ``first`` 0)."""
    n = len(wanted)
    if first == 0 and names == wanted:
        return slice(0, n)
    if len(names) == 3 * n and names[first::3] == wanted:
        return slice(first, 3 * n, 3)
    where = {name: i for i, name in enumerate(names)}
    picks = [where.get(m, -1) for m in wanted]
    if -1 in picks or len(set(picks)) < len(picks):
        return None
    return picks


def table_sidecars(table: Any, classes: list[str] | None) -> dict[str, tuple[str, bytes | None]]:
    """``sidecars_of`` of an Arrow table's rows (the same dict, bytes for bytes), built a column at a
    time by ``webdataset.sidecars_of``, release's own builder (issue 22), when the columns have the types
    synthreg writes (strings, an int64 seed, a map of strings); a row at a time otherwise (a hostile
    manifest's float seed, or a list where a map belongs)."""
    if not _synthreg_types(table):
        return _sidecars_by_row(table, classes)
    built = webdataset_sidecars(table, classes or [])  # image member -> (.json, .cls)
    out: dict[str, tuple[str, bytes | None]] = {}
    members, sample_ids = (table.column(c).to_pylist() for c in ("member", "sample_id"))
    for member, sample_id in zip(members, sample_ids, strict=True):
        text, number = built[member]
        key = member.removesuffix(".png")
        out[f"{key}.json"] = (sample_id, text)
        out[f"{key}.cls"] = (sample_id, number if classes is not None else None)
    return out


def _synthreg_types(table: Any) -> bool:
    """Whether the sidecar columns of ``table`` have the types synthreg writes (``manifest.SCHEMA``), which
    the column-wise builders need (a string where the map belongs would fail there)."""
    from registry.store.manifest import SCHEMA

    return all(table.schema.field(f).type == SCHEMA.field(f).type for f in SIDECAR_FIELDS)


def _sidecars_by_row(table: Any, classes: list[str] | None) -> dict[str, tuple[str, bytes | None]]:
    """``sidecars_of`` of an Arrow table's rows, a row at a time; a map column (``attributes``) becomes
    the dict DuckDB's rows held, so the ``.json`` bytes are the ones release wrote."""
    import pyarrow as pa

    values = {}
    for name in table.column_names:
        column = table.column(name).to_pylist()
        if pa.types.is_map(table.schema.field(name).type):
            column = [None if v is None else dict(v) for v in column]
        values[name] = column
    columns = [values[c] for c in (*IMAGE_COLUMNS, *SIDECAR_FIELDS)]
    return sidecars_of(list(zip(*columns, strict=True)), classes)


def check_shard(
    path: Path,
    expected_sha: str,
    members: dict[str, tuple[str, str]],
    marks: dict[str, Marking],
    c2pa: C2pa = C2pa(False, None),
    sidecars: dict[str, tuple[str, bytes | None]]
    | Callable[[], dict[str, tuple[str, bytes | None]]]
    | None = None,
    data: bytes | None = None,
) -> tuple[list[str], dict, dict]:
    """members: member name -> (sample id, image sha256); marks: sample id -> the marking its record
    implies; sidecars: WebDataset member name (``<key>.json``, ``<key>.cls``) -> (sample id, the bytes
    the manifest row makes, None when unknown). Returns (problems, bad samples, marking problems of
    images whose bytes are as recorded). ``data``: the shard's bytes when the caller has read them."""
    if data is None and not path.is_file():
        return (
            [f"shard {path.name} is missing"],
            {sid: f"missing: shard {path.name} is missing" for sid, _ in members.values()},
            {},
        )
    data = path.read_bytes() if data is None else data
    problems = []
    if sha256_bytes(data) != expected_sha:
        problems.append(f"shard {path.name} does not match its signed sha256")
    try:
        scanned = scan(data)  # parsed once, for the digests and the markings
    except (tarfile.TarError, EOFError):
        scanned = None
    shard_problems, bad = check_members(data, members, path.name, scanned)  # says why it is unreadable
    unmarked: dict[str, str] = {}
    found = scanned[0] if scanned is not None else {}
    reader = None
    for member, (sid, _) in members.items():
        if member not in found:
            continue
        png = found[member]
        marking = marking_problems(png, marks[sid])
        credentials: list[str] = []
        if c2pa.asked or has_c2pa(png):
            from registry.trust.credentials import Reader

            reader = reader or Reader(c2pa.anchors, required=c2pa.asked)  # one per shard: a thread's own
            credentials = reader.problems(png, marks[sid])
        if sid in bad:  # say what the altered image claims, e.g. a stripped or edited marking
            bad[sid] += "; " + ("its marking: " + "; ".join(marking) if marking else "its marking is intact")
            if c2pa.asked or credentials:
                bad[sid] += "; " + (
                    "C2PA: " + "; ".join(credentials) if credentials else "its C2PA manifest is intact"
                )
            continue
        if credentials and c2pa.asked:  # bytes as signed, but a signer the anchor does not vouch for
            bad[sid] = "C2PA: " + "; ".join(credentials)
        notes = marking + ([] if c2pa.asked else credentials)
        if notes:
            unmarked[sid] = "; ".join(notes)
    if reader is not None:
        reader.close()
    if callable(sidecars):  # made only for a shard that holds members beside its images
        sidecars = sidecars() if len(found) > len(members) else {}
    if sidecars is not None:  # what a WebDataset loader reads as the label must be what was recorded
        unexpected = [m for m in found if m not in members and m not in sidecars]
        if unexpected:
            problems.append(
                f"shard {path.name} holds {len(unexpected)} member(s) no manifest row names, first "
                f"{shown(unexpected[0])}"
            )
        for member, (sid, want) in sidecars.items():
            got = found.get(member)
            if got is None and sidecars and sid not in bad:  # a loader would read the image without it
                bad[sid] = f"its sidecar {member} is missing from {path.name}"
            elif got is not None and want is not None and bytes(got) != want and sid not in bad:
                bad[sid] = f"its sidecar {member} in {path.name} differs from the manifest's record"
    return problems + shard_problems, bad, unmarked


def to_ipc(table: Any) -> bytes:
    """``table`` as an Arrow IPC stream: only the rows it holds, where pickling a slice sends its whole
    batch (100 shards of 1,000 rows: 9.4 s pickled, 0.02 s as IPC)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def sidecars_of(rows: list[tuple], classes: list[str] | None) -> dict[str, tuple[str, bytes | None]]:
    """The ``.json`` and ``.cls`` members release writes beside each image of these manifest rows
    (``member, sample_id, ..., *SIDECAR_FIELDS``), by ``registry.store.webdataset.sidecar_members``; a
    ``.cls``
    is None (not checked) when the record holds no recipe to number the identities."""
    out: dict[str, tuple[str, bytes | None]] = {}
    for row in rows:
        fields = dict(zip(SIDECAR_FIELDS, row[5:], strict=True))
        (json_name, json_bytes), (cls_name, cls_bytes) = sidecar_members(row[0], fields, classes or [])
        out[json_name] = (row[1], json_bytes)
        out[cls_name] = (row[1], cls_bytes if classes is not None else None)
    return out


def checked_members(
    data: bytes, shard: str, expected: dict[str, tuple[str, str]], rows: list[list[Any]]
) -> dict[str, bytes | memoryview] | None:
    """Release's check of a shard it copies: every member of shard ``data`` by name, in tar order, once
    each image the manifest names in it (``expected``: member -> (sample id, sha256); ``rows``: the
    ``IMAGE_COLUMNS``) is found whole, as recorded and marked; else a ReleaseError naming the first
    problem. A shard exactly as synthreg writes it is checked a shard at a time (``images_intact``,
    issue 22); any other image by image (``check_members``), which says what is wrong; None when the
    shard could not be parsed and that check still found nothing (``add_sidecars`` then parses it, and
    says why it cannot)."""
    walked = spans(data)
    if walked is not None and images_intact(data, walked, *rows):
        names, starts, sizes = walked
        view = memoryview(data)
        return {n: view[a : a + k] for n, a, k in zip(names, starts.tolist(), sizes.tolist(), strict=True)}
    try:  # parsed once, for the check and the sidecars (issue 22: it was parsed twice)
        scanned: tuple[dict[str, bytes | memoryview], list[str]] | None = scan(data)
    except (tarfile.TarError, EOFError):
        scanned = None  # check_members names the problem
    problems, bad_samples = check_members(data, expected, shard, scanned)
    if problems:  # e.g. a truncated tar
        raise ReleaseError(f"{problems[0]}; restore the shard (`dvc checkout`) or regenerate")
    if bad_samples:
        bad = sorted(bad_samples)
        raise ReleaseError(
            f"shard {shard} does not hold the recorded images for {len(bad)} sample(s), first {bad[0]} "
            f"({bad_samples[bad[0]]}); restore the shard (`dvc checkout`) or regenerate"
        )
    return scanned[0] if scanned is not None else None  # None: check_members reported it
