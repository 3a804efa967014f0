"""Tar shards of images: written deterministically, read back without unpacking to loose files."""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from registry.core.digests import sha256_bytes
from registry.core.errors import ManifestError
from registry.core.fsio import atomic_path
from registry.core.images import png_problem
from registry.core.names import MEMBER, shown
from registry.core.workspace import inside
from registry.store.marking import foreign_sample

_BLOCK = 512
_MEMBER = re.compile(MEMBER)
_END = bytes(_BLOCK)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A member as synthreg writes it: no timestamp, owner or owner names, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# The ustar header tarfile's PAX format writes for ``_tar_info``, the name and size then filled in per
# member; tarfile pads the archive to whole records.
_HEADER = _tar_info("", 0).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
_RECORD = tarfile.RECORDSIZE


def _member_header(name: str, size: int) -> bytes:
    """The header block(s) tarfile writes for member ``name`` of ``size`` bytes. A name that fits the
    ustar field as ASCII (every ``<sample id>.png``) is filled into ``_HEADER``; anything else, such as
    a long or non-ASCII name that needs a PAX header first, is left to tarfile itself."""
    if not name.isascii() or len(name) >= 100 or size >= 8**11:
        return _tar_info(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    h = bytearray(_HEADER)
    h[: len(name)] = name.encode()
    h[124:136] = b"%011o\0" % size
    # tarfile sums the header with its checksum field as spaces, then writes six octal digits, NUL, space.
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _member_headers(names: list[str], sizes: list[int]) -> list[bytes | memoryview]:
    """``_member_header`` of each (name, size), the same bytes; made in numpy for all at once when every
    name fits the ustar field as ASCII (issue 22: release and derive write 3 members an image, and the
    header a member in Python was a third of writing a shard)."""
    import numpy as np

    n = len(names)
    joined = "".join(names)
    if n < 8 or not joined.isascii() or max(map(len, names)) >= 100 or max(sizes) >= 8**11 or "\0" in joined:
        return [_member_header(name, size) for name, size in zip(names, sizes, strict=True)]
    h = np.tile(np.frombuffer(_HEADER, np.uint8), (n, 1))
    h[:, :100] = np.frombuffer(b"".join(name.encode().ljust(100, b"\0") for name in names), np.uint8).reshape(
        n, 100
    )
    octal = 8 ** np.arange(10, -1, -1, dtype=np.int64)
    h[:, 124:135] = np.asarray(sizes, np.int64)[:, None] // octal % 8 + ord("0")  # "%011o\0"
    h[:, 135] = 0
    h[:, 148:156] = ord(" ")  # summed as spaces, then written "%06o\0 " (see _member_header)
    total = h.sum(axis=1, dtype=np.int64)
    h[:, 148:154] = total[:, None] // octal[5:] % 8 + ord("0")
    h[:, 154] = 0
    view = memoryview(h.tobytes())
    return [view[i * _BLOCK : (i + 1) * _BLOCK] for i in range(n)]


_PAD = bytes(_BLOCK)


def tar_bytes(members: Iterable[tuple[str, bytes | memoryview]]) -> bytes:
    """A tar of ``members`` (name, bytes) in that order. No timestamps or owners: the same members
    give the same bytes, so a resumed or repeated run gives identical shards. The bytes are those of
    ``tarfile``'s PAX format, written here without a TarInfo and a file object a member, the headers
    of a shard made at once (issue 22)."""
    members = list(members)
    if not members:
        return bytes(_RECORD)
    sizes = [len(data) for _, data in members]
    headers = _member_headers([name for name, _ in members], sizes)
    parts: list[bytes | memoryview] = []
    size = 0
    for header, (_, data), length in zip(headers, members, sizes, strict=True):
        pad = -length % _BLOCK
        parts += (header, data, _PAD[:pad])
        size += len(header) + length + pad
    size += 2 * _BLOCK  # the end-of-archive blocks
    parts.append(bytes(2 * _BLOCK + -size % _RECORD))
    return b"".join(parts)


def write_shard(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    """``tar_bytes(members)`` written atomically to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(tar_bytes(members))


class ShardFormatError(tarfile.ReadError):
    """A shard that is not the one tar format synthreg writes (see ``index``)."""


_USTAR = b"ustar\x0000"  # POSIX ustar magic and version, as tarfile's PAX_FORMAT writes them
_NUMBERS = [(100, 108, "mode"), (108, 116, "uid"), (116, 124, "gid"), (136, 148, "mtime")]
_NUMBERS += [(329, 337, "devmajor"), (337, 345, "devminor")]
_PAX_PATH = re.compile(rb"(\d+) path=")


def _octal(field: bytes, what: str, at: int) -> int:
    digits = field.rstrip(b"\0 ")
    if not digits or not digits.isdigit() or b"8" in digits or b"9" in digits:
        raise ShardFormatError(f"header at byte {at}: {what} is not an octal number")
    return int(digits, 8)


def _field_text(field: bytes, what: str, at: int) -> bytes:
    text, _, rest = field.partition(b"\0")
    if rest.strip(b"\0"):  # bytes after the terminator: readers disagree on such names
        raise ShardFormatError(f"header at byte {at}: {what} holds bytes after its end")
    return text


def _header(data: bytes, at: int) -> tuple[bytes, bytes, int]:
    """(type, name field, size) of the ustar header at ``at``, checked strictly."""
    h = data[at : at + _BLOCK]
    if h[257:265] != _USTAR:
        raise ShardFormatError(f"header at byte {at} is not POSIX ustar (magic {bytes(h[257:265])!r})")
    stored = _octal(h[148:156], "checksum", at)
    if stored != sum(h[:148]) + 256 + sum(h[156:]):
        raise ShardFormatError(f"header at byte {at} has a wrong checksum")
    if h[345:500].strip(b"\0") or h[157:257].strip(b"\0"):
        # The prefix field joins the name in some readers and not others; a link name has no place
        # in a shard of images. Either would let a verifier and an extractor see different names.
        raise ShardFormatError(f"header at byte {at} sets a prefix or link name")
    for lo, hi, what in _NUMBERS:  # tarfile reads each (base-256 when the high bit is set)
        if h[lo:hi].strip(b"\0"):
            _octal(h[lo:hi], what, at)
    return h[156:157], _field_text(h[:100], "the name", at), _octal(h[124:136], "the size", at)


def index(data: bytes) -> dict[str, tuple[int, int]]:
    """member name -> (offset of its bytes, size): ``_index_strict``'s answer, got faster (issue 22).

    A shard exactly as ``tar_bytes`` writes it is walked by ``spans``, every header at once (what it
    accepts is fuzzed against ``_index_strict``). Otherwise one walk reads each header's type, name and
    size and checks the fields that vary between members;
    the fields that do not (magic, prefix, link name, mode, owner, time, device numbers) are checked the
    first time a given set of their bytes is seen and then recognised byte for byte, and every header's
    checksum is summed in one numpy pass. Anything the fast walk does not accept is handed to
    ``_index_strict``, so what is accepted and every error message are exactly the strict parser's."""
    walked = spans(data)  # every header at once, for a shard exactly as tar_bytes writes it
    if walked is not None:
        names, starts, sizes = walked
        return dict(zip(names, zip(starts.tolist(), sizes.tolist(), strict=True), strict=True))
    try:
        found = _index_fast(data)
    except ShardFormatError:
        found = None
    return found if found is not None else _index_strict(data)


def _index_fast(data: bytes) -> dict[str, tuple[int, int]] | None:
    """``_index_strict``'s answer when the shard is well formed; None (or ShardFormatError) otherwise."""
    import numpy as np

    out: dict[str, tuple[int, int]] = {}
    pos, n = 0, len(data)
    if n % _BLOCK:
        return None
    seen: set[bytes] = set()  # the fixed fields of headers already checked strictly
    headers: list[int] = []
    path: bytes | None = None
    while pos + _BLOCK <= n:
        if data[pos : pos + _BLOCK] == _END:
            if path is not None or data[pos:].strip(b"\0"):
                return None
            break
        fixed = data[pos + 100 : pos + 124] + data[pos + 136 : pos + 148] + data[pos + 157 : pos + 500]
        if fixed not in seen:
            _header(data, pos)  # raises on any fault (the strict walk then says which)
            seen.add(fixed)
        headers.append(pos)
        kind = data[pos + 156 : pos + 157]
        field = _field_text(data[pos : pos + 100], "the name", pos)  # checked even under a PAX path
        size = _octal(data[pos + 124 : pos + 136], "the size", pos)
        start = pos + _BLOCK
        if start + size > n:
            return None
        if kind == b"x" and path is None:
            path = _pax_path(data[start : start + size], pos)
        elif kind == b"0":
            key = (path if path is not None else field).decode("utf-8", "surrogateescape")
            if key in out:
                return None
            out[key] = (start, size)
            path = None
        else:
            return None
        pos = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    else:
        return None  # no end-of-archive block
    if headers:  # every checksum at once: the unsigned sum of the header with its checksum field as spaces
        blocks = np.frombuffer(data, np.uint8).reshape(-1, _BLOCK)[np.asarray(headers) // _BLOCK]
        sums = blocks.sum(axis=1, dtype=np.int64) - blocks[:, 148:156].sum(axis=1, dtype=np.int64) + 256
        fields = [data[at + 148 : at + 156].rstrip(b"\0 ") for at in headers]
        if not all(f.isdigit() and b"8" not in f and b"9" not in f for f in fields):
            return None
        if any(int(f, 8) != s for f, s in zip(fields, sums.tolist(), strict=True)):
            return None
    return out


def spans(data: bytes) -> tuple[list[str], Any, Any] | None:
    """(member names, offsets of their bytes, sizes) in tar order, for a shard exactly as ``tar_bytes``
    writes it from short ASCII names: ``index``'s answer, decided in numpy over every header at once
    (issue 22: verify walks every shard of a release). None for anything else (a PAX header, a size not
    written as eleven octal digits, a header whose fixed fields differ from the first one's, a member
    named twice, an inconsistent chain); ``index`` then says what is wrong, so this never accepts what
    it would refuse. The headers are found by their magic at 512-byte boundaries and then must form the
    one chain the sizes make from byte 0 to the end-of-archive blocks: a member's bytes that look like a
    header break the chain and send the shard to ``index``."""
    import numpy as np

    n = len(data)
    if n % _BLOCK or n < 2 * _BLOCK:
        return None
    powers = 8 ** np.arange(10, -1, -1, dtype=np.int64)  # the size field's eleven octal digits
    blocks = np.frombuffer(data, np.uint8).reshape(-1, _BLOCK)
    rows = np.flatnonzero((blocks[:, 257:265] == np.frombuffer(_USTAR, np.uint8)).all(axis=1))
    if not len(rows) or rows[0] != 0:
        return None
    heads = blocks[rows]
    digits = heads[:, 124:135].astype(np.int64) - ord("0")
    if ((digits < 0) | (digits > 7)).any() or heads[:, 135].any() or (heads[:, 156] != ord("0")).any():
        return None
    sizes = digits @ powers
    ends = rows + 1 + (sizes + _BLOCK - 1) // _BLOCK  # the block after each member's bytes
    if (ends[:-1] != rows[1:]).any() or ends[-1] + 2 > len(blocks) or blocks[ends[-1] :].any():
        return None
    for lo, hi in ((100, 124), (136, 148), (157, 500)):  # what ``_header`` checks, as the first header
        if (heads[:, lo:hi] != heads[0, lo:hi]).any():
            return None
    try:
        _header(data, 0)  # the first header, strictly
    except ShardFormatError:
        return None
    sums = heads.sum(axis=1, dtype=np.uint32) - heads[:, 148:156].sum(axis=1, dtype=np.uint32) + 256
    stored = heads[:, 148:154].astype(np.int64) - ord("0")  # "%06o\0 ", as tarfile writes it
    if ((stored < 0) | (stored > 7)).any() or (heads[:, 154:156] != (0, 32)).any():
        return None
    if ((stored @ powers[5:]) != sums).any():
        return None
    nul = heads[:, :100] == 0
    width = np.where(nul.any(axis=1), nul.argmax(axis=1), 100)  # up to the first NUL
    if (width != 100 - nul.sum(axis=1)).any() or not width.all():  # bytes after a name's end, or none
        return None
    lengths = width.tolist()
    starts = rows * _BLOCK
    names = [
        data[at : at + k].decode("utf-8", "surrogateescape")
        for at, k in zip(starts.tolist(), lengths, strict=True)
    ]
    if len(set(names)) < len(names):
        return None
    return names, starts + _BLOCK, sizes


def _index_strict(data: bytes) -> dict[str, tuple[int, int]]:
    """member name -> (offset of its bytes, size), for a shard in the one format synthreg writes:
    POSIX ustar headers (checksums checked) of regular files ('0'), each optionally preceded by a PAX
    header ('x') holding only its ``path``; no prefix field, link name, other type or repeated name;
    then the end-of-archive zero blocks and nothing but zeros. Anything else raises ShardFormatError
    (a ``tarfile.TarError``) naming it: ``tarfile`` and GNU tar read such headers differently (issue
    24: an altered magic with a set prefix made a verifier read one name and ``extractall`` write
    another), so the names here are the names every reader sees."""
    out: dict[str, tuple[int, int]] = {}
    pos, n = 0, len(data)
    if n % _BLOCK:
        raise ShardFormatError(f"size {n} is not a whole number of 512-byte tar blocks")
    path: bytes | None = None
    while pos + _BLOCK <= n:
        if data[pos : pos + _BLOCK] == _END:
            if path is not None or data[pos:].strip(b"\0"):
                raise ShardFormatError(f"bytes after the end of the archive at byte {pos}")
            return out
        kind, name, size = _header(data, pos)
        start = pos + _BLOCK
        if start + size > n:
            raise ShardFormatError(f"member at byte {pos} is truncated")
        if kind == b"x" and path is None:
            path = _pax_path(data[start : start + size], pos)
        elif kind == b"0":
            key = (path if path is not None else name).decode("utf-8", "surrogateescape")
            if key in out:
                raise ShardFormatError(f"member {shown(key)} appears twice")
            out[key] = (start, size)
            path = None
        else:
            raise ShardFormatError(f"header at byte {pos} is of type {kind!r}, not a regular file")
        pos = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    raise ShardFormatError("the archive has no end-of-archive block (truncated)")


def _pax_path(records: bytes, at: int) -> bytes:
    """The ``path`` of a PAX header that holds exactly one record, ``path``."""
    m = _PAX_PATH.match(records)
    if m is None or int(m.group(1)) != len(records) or not records.endswith(b"\n"):
        raise ShardFormatError(f"PAX header at byte {at} holds more than one path record")
    return records[m.end() : -1]


def members_from_bytes(data: bytes) -> dict[str, bytes | memoryview]:
    """Every member of the shard held in ``data`` by name (raises ShardFormatError if it is not one)."""
    return scan(data)[0]


def scan(data: bytes) -> tuple[dict[str, bytes | memoryview], list[str]]:
    """(every member by name, the names that extracting the tar could not place safely: a name that is
    not ``<sample id>.<extension>``, such as ``../../evil.png`` or an absolute path). Raises
    ShardFormatError when ``data`` is not a shard in synthreg's one tar format (``index``)."""
    view = memoryview(data)
    found: dict[str, bytes | memoryview] = {
        name: view[at : at + size] for name, (at, size) in index(data).items()
    }
    return found, [name for name in found if not safe_member(name)]


_MEMBERS = re.compile(rf"{MEMBER}(?:\n{MEMBER})*")


def safe_members(names: list[str]) -> bool:
    """Whether every one of ``names`` is ``safe_member``, in one match over them all."""
    joined = "\n".join(names)  # no safe name holds a newline: it must split back into ``names``
    ok = bool(_MEMBERS.fullmatch(joined)) and ".." not in joined
    return not names or (ok and joined.count("\n") == len(names) - 1)


def safe_member(name: str) -> bool:
    """Whether extracting member ``name`` places it in its folder: ``<sample id>.<extension>``."""
    return bool(_MEMBER.fullmatch(name)) and ".." not in name


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def check_members(
    data: bytes,
    expected: dict[str, tuple[str, str]],
    name: str,
    scanned: tuple[dict[str, bytes | memoryview], list[str]] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Check the tar in ``data`` against ``expected`` (member -> (sample id, image sha256)).

    Returns (problems with the shard as a whole, sample id -> what is wrong with its image).
    ``scanned``: ``scan(data)`` when the caller has it already (the tar is then not parsed again).
    """
    problems: list[str] = []
    found: dict[str, bytes | memoryview] = {}
    try:
        found, unsafe = scanned if scanned is not None else scan(data)
        if unsafe:  # never signed or verified: `tar -x` of the shard would write where the name says
            problems.append(
                f"shard {name} holds {len(unsafe)} member(s) that are not plain <sample id>.<extension> "
                f"files, first {shown(unsafe[0])}; extracting it could write outside its folder"
            )
    except (tarfile.TarError, EOFError) as e:
        problems.append(f"shard {name} cannot be read as tar ({e})")
    bad: dict[str, str] = {}
    for member, (sid, sha) in expected.items():
        if member not in found:
            bad[sid] = f"missing from shard {name}"
        elif sha256_hex(found[member]) != sha:
            bad[sid] = f"corrupted: image bytes in {name} do not match the recorded sha256"
        elif member.endswith(".png") and (
            why := png_problem(found[member]) or foreign_sample(found[member], sid)
        ):
            bad[sid] = f"{why} in {name}"
    return problems, bad


def read_members(path: Path) -> dict[str, bytes]:
    """Every regular member of shard ``path`` by name."""
    if not path.is_file():
        raise ManifestError(
            f"shard {path} is missing; restore it (`dvc pull` / `dvc checkout`) or regenerate"
        )
    try:
        return {name: bytes(data) for name, data in members_from_bytes(path.read_bytes()).items()}
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ManifestError(f"shard {path} is corrupted ({e}); restore it or regenerate it") from e


def iter_images(
    ws: Path, rows: list[tuple[str, str, str, str]], check: bool = True
) -> Iterator[tuple[str, bytes]]:
    """(sample_id, png bytes) for rows of (sample_id, shard, member, image_sha256), shard by shard.

    With ``check``, an image whose bytes do not match its recorded sha256 is an error naming the sample.
    """
    by_shard: dict[str, list[tuple[str, str, str]]] = {}
    for sample_id, shard, member, digest in rows:
        by_shard.setdefault(shard, []).append((sample_id, member, digest))
    for shard, items in by_shard.items():
        members = read_members(inside(ws, shard, "shard"))  # a shard column may not lead out
        for sample_id, member, digest in items:
            data = members.get(member)
            if data is None:
                raise ManifestError(f"sample {sample_id}: member {member} is missing from shard {shard}")
            if check and sha256_bytes(data) != digest:
                raise ManifestError(
                    f"sample {sample_id}: image in shard {shard} does not match its recorded sha256 "
                    "(the shard is corrupted); restore or regenerate it"
                )
            yield sample_id, data
