"""Tar shards of images: written deterministically, read back without unpacking to loose files."""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from registry.core.digests import sha256_bytes
from registry.core.errors import ManifestError
from registry.core.fsio import atomic_path
from registry.core.names import MEMBER, shown
from registry.core.workspace import inside

_BLOCK = 512
_MEMBER = re.compile(MEMBER)
_END = bytes(_BLOCK)


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar of ``members`` (name, bytes) in that order. No timestamps or owners: the same members
    give the same bytes, so a resumed or repeated run gives identical shards."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            tar.addfile(*_tar_member(name, data))
    return buf.getvalue()


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    """``tar_bytes(members)`` written atomically to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(tar_bytes(members))


def _plain_ustar(data: bytes) -> dict[str, memoryview] | None:
    """Regular members of an uncompressed tar, parsed by hand; None if it holds anything else.

    ``tarfile`` spends most of a shard's verification parsing one header per small image (measured:
    verify at 0.13x ``sha256sum`` with it, see benchmarks/README.md). Shards synthreg writes are plain
    ustar regular files, so their headers are read here directly. Header checksums are not checked:
    callers verify the whole shard's sha256 against its signed or recorded digest, which covers them.
    Anything unusual (PAX/GNU long names, links, base-256 sizes) returns None and ``tarfile`` is used.
    """
    view = memoryview(data)
    out: dict[str, memoryview] = {}
    pos, n = 0, len(data)
    while pos + _BLOCK <= n:
        header = data[pos : pos + _BLOCK]
        if header == _END:
            return out
        if header[156:157] not in (b"0", b"\0") or header[124] & 0x80:
            return None
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
        try:
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
            key = ((prefix + b"/" + name) if prefix else name).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        start = pos + _BLOCK
        if start + size > n:
            return None  # truncated: let tarfile say so
        out[key] = view[start : start + size]
        pos = start + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    return out if pos >= n else None


def members_from_bytes(data: bytes) -> dict[str, bytes | memoryview]:
    """Every regular member of the tar held in ``data`` by name (raises tarfile.TarError if unreadable)."""
    return scan(data)[0]


def scan(data: bytes) -> tuple[dict[str, bytes | memoryview], list[str]]:
    """(every regular member by name, the names of members that extracting the tar could not place
    safely: a link, device or folder, or a name that is not ``<sample id>.<extension>``, such as
    ``../../evil.png`` or an absolute path). Raises tarfile.TarError if unreadable."""
    fast = _plain_ustar(data)
    if fast is not None:
        return dict(fast), [n for n in fast if not _safe_member(n)]
    found: dict[str, bytes | memoryview] = {}
    unsafe: list[str] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            if not m.isfile() or not _safe_member(m.name):
                unsafe.append(m.name)
            if m.isfile():
                f = tar.extractfile(m)
                found[m.name] = f.read() if f else b""
    return found, unsafe


def _safe_member(name: str) -> bool:
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
