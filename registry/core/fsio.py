"""Writing files so that a crash never leaves a half-written one: temporary name, fsync, rename. And
reading a file so that it can later be linked, not copied, only while it is still what was read
(``read_stamped``, ``link_unchanged``)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Stamp:
    """A regular file as it was read: its path, and its device, inode, size and times then."""

    path: Path
    key: tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_soon(path: Path) -> None:
    """Ask the kernel to start reading regular file ``path`` into the page cache now
    (``posix_fadvise(WILLNEED)``), so that a read coming later finds it there: the shards queued for
    verify's workers come off the disk while the workers check the ones before them (issue 22: a
    1,000,000-image verify from a cold cache read each shard only when a worker asked for it). Like the
    workers (``is_file``, then the read), it opens only what is a regular file when it looks (a device
    in a shard's place may act on being opened; one swapped in between the look and the open is not
    seen, as by the workers), never blocks (a FIFO is opened non-blocking, then left), and does nothing
    where the platform has no fadvise or the file cannot be opened: the read then says what is wrong."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_stamped(path: Path) -> tuple[bytes, Stamp | None]:
    """The bytes of file ``path``, and its ``Stamp`` when ``path`` itself is a regular file (not a link
    to one) that nothing changed while it was read; None for the stamp otherwise."""
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        data = f.read()
        after = os.fstat(f.fileno())
    named = os.lstat(path)
    whole = stat.S_ISREG(named.st_mode) and _key(before) == _key(after) == _key(named)
    return data, Stamp(path, _key(after)) if whole and len(data) == after.st_size else None


def link_unchanged(stamp: Stamp, dest: Path) -> bool:
    """Hard-link the file ``stamp`` was taken of at ``dest``, while it is still that file, unchanged
    since (its change time says so: a write, a chmod or a new time all move it): a second name for
    bytes already on disk rather than a second copy of them. False, with nothing linked, when it
    changed or moved, ``dest`` exists, or the file system cannot link there; then write the bytes.

    A write to the file in the instant between the check and the link is not seen. It is the same as
    a write to either name afterwards, which `synthreg verify` finds against the signed sha256."""
    try:
        if _key(os.lstat(stamp.path)) != stamp.key:
            return False
        os.link(stamp.path, dest, follow_symlinks=False)
    except OSError:  # gone, moved, exists, another device, links not allowed
        return False
    now = os.lstat(dest)
    if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != stamp.key[:4]:
        dest.unlink()  # the path named another file by the time it was linked
        return False
    return True
