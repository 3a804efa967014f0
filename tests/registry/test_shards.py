"""Shards are read in one strict tar format (issue 24, family 4): the names synthreg checks are the
names every reader (Python's ``tarfile``, GNU tar) would extract, or the shard is refused."""

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.store.shards import (
    ShardFormatError,
    _index_strict,
    _member_header,
    _member_headers,
    index,
    members_from_bytes,
    scan,
    tar_bytes,
)
from tests.registry.conftest import fix_checksums as fix_tar_checksums


def make_tar(members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def by_tarfile(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def reheader(data: bytes, at: int, **fields: bytes) -> bytes:
    """``data`` with the header at ``at`` given new field bytes and a correct checksum again."""
    where = {"name": (0, 100), "type": (156, 157), "size": (124, 136)}
    where |= {"magic": (257, 265), "prefix": (345, 500)}
    h = bytearray(data[at : at + 512])
    for field, value in fields.items():
        lo, hi = where[field]
        h[lo:hi] = value.ljust(hi - lo, b"\0")
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return data[:at] + bytes(h) + data[at + 512 :]


def test_what_synthreg_writes_is_read_as_tarfile_reads_it():
    members = {f"digits-{i}.png": bytes([i]) * (i * 97 + 1) for i in range(20)} | {"empty.png": b""}
    members["x" * 150 + ".png"] = b"a long name: a PAX path record"
    data = tar_bytes(list(members.items()))
    assert {k: bytes(v) for k, v in members_from_bytes(data).items()} == members == by_tarfile(data)


def test_an_altered_magic_with_a_prefix_is_refused_where_readers_disagree():
    data = tar_bytes([("a.png", b"abc")])
    forged = reheader(data, 0, magic=b"ustaX\x0000", prefix=b"../../outside")
    assert list(by_tarfile(forged)) == ["../../outside/a.png"]  # what extractall would write
    with pytest.raises(ShardFormatError, match="not POSIX ustar"):
        index(forged)
    with pytest.raises(ShardFormatError, match="prefix"):
        index(reheader(data, 0, prefix=b"../../outside"))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d[:148] + b"0000000\0" + d[156:], "checksum"),
        (lambda d: reheader(d, 0, type=b"2"), "not a regular file"),
        (lambda d: reheader(d, 0, type=b"5"), "not a regular file"),
        (lambda d: reheader(d, 0, type=b"\0"), "not a regular file"),
        (lambda d: reheader(d, 0, magic=b"ustar  \0"), "not POSIX ustar"),  # GNU: no prefix field
        (lambda d: reheader(d, 0, name=b"a.png\0junk"), "after its end"),
        (lambda d: reheader(d, 0, size=b"0000000009\0"), "octal"),
        (lambda d: d + b"trailing" + bytes(504), "after the end"),
        (lambda d: d[:2560], "no end-of-archive"),
        (lambda d: d[:700], "whole number"),
    ],
)
def test_anything_but_the_one_format_is_named(edit, message):
    data = tar_bytes([("a.png", b"a" * 600), ("b.png", b"b")])
    with pytest.raises(ShardFormatError, match=message):
        index(edit(data))


def test_other_tar_layouts_are_refused():
    with pytest.raises(ShardFormatError, match="prefix"):  # USTAR splits a long name into the prefix
        index(make_tar({"d/" * 60 + "a.png": b"x"}, fmt=tarfile.USTAR_FORMAT))
    with pytest.raises(ShardFormatError, match="not POSIX ustar"):
        index(make_tar({"a.png": b"x"}, fmt=tarfile.GNU_FORMAT))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.png")
        info.size, info.mtime = 1, 1.5  # a float time: a PAX mtime record beside the path
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ShardFormatError):
        index(buf.getvalue())


def test_a_repeated_member_is_refused():
    with pytest.raises(ShardFormatError, match="appears twice"):
        index(tar_bytes([("a.png", b"1"), ("a.png", b"2")]))


def test_unsafe_names_are_listed_not_hidden():
    found, unsafe = scan(tar_bytes([("a.png", b"1"), ("../../evil.png", b"2")]))
    assert unsafe == ["../../evil.png"] and bytes(found["a.png"]) == b"1"


@pytest.mark.skipif(shutil.which("tar") is None, reason="GNU tar is not installed")
def test_gnu_tar_extracts_exactly_the_names_index_reads(tmp_path: Path):
    members = [("a.png", b"a"), ("y" * 180 + ".png", b"long")]
    (tmp_path / "s.tar").write_bytes(tar_bytes(members))
    (tmp_path / "out").mkdir()
    subprocess.run(["tar", "-xf", str(tmp_path / "s.tar"), "-C", str(tmp_path / "out")], check=True)
    extracted = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert extracted == {k: bytes(v) for k, v in members_from_bytes(tar_bytes(members)).items()}


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(0, 2047),
    value=st.integers(0, 255),
    long_name=st.booleans(),
)
def test_any_header_edit_is_refused_or_read_as_tarfile_reads_it(position: int, value: int, long_name: bool):
    """Fuzz: one byte of the headers changed (and the checksum made right again): either the shard is
    refused, or the names and bytes are exactly what tarfile would extract."""
    first = ("z" * 120 if long_name else "a") + ".png"
    data = bytearray(tar_bytes([(first, b"a" * 10), ("b.png", b"b" * 3)]))
    data[position] = value
    headers = [0, 1024, 2048] if long_name else [0, 1024]
    fix_tar_checksums(data, headers)
    try:
        ours = {k: bytes(v) for k, v in members_from_bytes(bytes(data)).items()}
    except ShardFormatError:
        return
    assert ours == by_tarfile(bytes(data))


def outcome(parse, data: bytes) -> object:
    try:
        return parse(data)
    except ShardFormatError as e:
        return ("refused", str(e))


@settings(max_examples=400, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=3),
    fix_checksums=st.booleans(),
    long_name=st.booleans(),
)
def test_the_fast_walk_answers_exactly_as_the_strict_one(
    edits: list[tuple[int, int]], fix_checksums: bool, long_name: bool
):
    """Issue 22: ``index`` recognises header fields it has already checked and sums every checksum at
    once; on any shard (here: bytes of a 3-member shard changed, checksums made right or not) it accepts
    exactly what the strict walk accepts, with the same names and offsets, and refuses with its message."""
    first = ("z" * 120 if long_name else "a") + ".png"
    data = bytearray(tar_bytes([(first, b"a" * 10), ("b.png", b"b" * 3), ("c.png", b"c" * 700)]))
    for position, value in edits:
        data[position % len(data)] = value
    if fix_checksums:
        fix_tar_checksums(data)
    assert outcome(index, bytes(data)) == outcome(_index_strict, bytes(data))


def tarfile_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """What ``tar_bytes`` wrote before issue 22: Python's tarfile, PAX format, fixed member metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@settings(max_examples=200, deadline=None)
@given(
    members=st.lists(
        st.tuples(
            st.one_of(
                st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=130),
                st.text(min_size=1, max_size=40).filter(lambda s: "\0" not in s),
            ),
            st.binary(max_size=1500),
        ),
        max_size=6,
        unique_by=lambda m: m[0],
    )
)
def test_tar_bytes_are_the_bytes_tarfile_writes(members: list[tuple[str, bytes]]):
    """Issue 22: shards are written header by header, not through tarfile; the bytes stay tarfile's,
    for names that fit the ustar field and for long or non-ASCII ones that need a PAX header."""
    assert tar_bytes(members) == tarfile_bytes(members)


def test_a_shard_of_sample_images_is_byte_for_byte_tarfiles():
    members = [(f"load-test-id{i:03d}-{i:06d}-0123abcd.png", bytes([i]) * (300 + 7 * i)) for i in range(50)]
    members += [("x" * 99 + ".png", b"long"), ("ü.png", b""), ("a.png", b"a" * 512)]
    assert tar_bytes(members) == tarfile_bytes(members)
    assert tar_bytes([]) == tarfile_bytes([])


@settings(max_examples=150, deadline=None)
@given(
    members=st.lists(
        st.tuples(
            st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=99),
            st.one_of(st.binary(max_size=1100), st.sampled_from([b"", b"x" * 511, b"y" * 512, b"z" * 513])),
        ),
        min_size=8,
        max_size=40,
        unique_by=lambda m: m[0],
    )
)
def test_headers_made_at_once_are_tarfiles_headers(members: list[tuple[str, bytes]]):
    """Issue 22: a shard's headers are made in numpy for all its members at once when every name fits the
    ustar field as ASCII (8 or more members); the bytes are still tarfile's, header by header too."""
    names, sizes = [n for n, _ in members], [len(d) for _, d in members]
    assert [bytes(h) for h in _member_headers(names, sizes)] == [
        _member_header(n, k) for n, k in zip(names, sizes, strict=True)
    ]
    assert tar_bytes(members) == tarfile_bytes(members)
