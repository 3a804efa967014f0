"""A derived version's shards that lost nothing are the parent's file under a second name, not a second
copy (issue 22: at 10,000,000 images a copy of a release is 35 GB), and only while that file is still
exactly what derive read and checked (``fsio.read_stamped``, ``fsio.link_unchanged``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from registry.core.fsio import link_unchanged, read_stamped
from registry.releases.derive import derive
from registry.releases.verify import verify
from tests.registry.conftest import Built, folder, sh, sha256
from tests.registry.test_derive import REASON, parent_rows


@pytest.fixture
def shard(tmp_path: Path) -> Path:
    path = tmp_path / "a.tar"
    path.write_bytes(b"x" * 4096)
    return path


def test_an_unchanged_file_is_linked(shard: Path):
    data, stamp = read_stamped(shard)
    assert data == b"x" * 4096 and stamp is not None
    dest = shard.with_name("b.tar")
    assert link_unchanged(stamp, dest)
    assert os.path.samefile(shard, dest) and shard.stat().st_nlink == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda p: p.write_bytes(b"y" * 4096), id="rewritten in place, same size"),
        pytest.param(lambda p: p.chmod(0o600), id="chmod"),
        pytest.param(lambda p: os.utime(p, ns=(0, 0)), id="its times set back"),
        pytest.param(lambda p: p.unlink(), id="removed"),
        pytest.param(
            lambda p: (p.with_name("other").write_bytes(b"x" * 4096), p.with_name("other").replace(p)),
            id="another file renamed over it",
        ),
    ],
)
def test_a_file_changed_since_it_was_read_is_not_linked(shard: Path, change):
    _, stamp = read_stamped(shard)
    assert stamp is not None
    change(shard)
    dest = shard.with_name("b.tar")
    assert not link_unchanged(stamp, dest)
    assert not dest.exists()


def test_a_symlink_gives_no_stamp_and_an_existing_destination_is_kept(shard: Path):
    link = shard.with_name("link.tar")
    link.symlink_to(shard)
    data, stamp = read_stamped(link)
    assert data == b"x" * 4096 and stamp is None  # a link's target can change under its name
    _, stamp = read_stamped(shard)
    assert stamp is not None
    there = shard.with_name("there.tar")
    there.write_bytes(b"mine")
    assert not link_unchanged(stamp, there)
    assert there.read_bytes() == b"mine"


def spied(monkeypatch: pytest.MonkeyPatch, before=None) -> list[tuple[str, bool]]:
    """What ``assemble`` linked: (the shard's file name, linked?) for each link it tried."""
    import registry.releases.publish as publish

    tried: list[tuple[str, bool]] = []

    def link(stamp, dest: Path) -> bool:
        if before:
            before(stamp.path)
        tried.append((dest.name, link_unchanged(stamp, dest)))
        return tried[-1][1]

    monkeypatch.setattr(publish, "link_unchanged", link)
    return tried


def test_derive_links_the_shards_that_lost_nothing(
    released_copy: Path, released: Built, monkeypatch: pytest.MonkeyPatch
):
    ws = released_copy
    rows = parent_rows(ws)
    first = rows[0]["shard"]
    gone = [r["sample_id"] for r in rows if r["shard"] == first][:2]
    tried = spied(monkeypatch)

    record = derive(ws, "digits@1.0.0", "1.0.1", REASON, exclude_samples=gone, key=released.key)

    untouched = [f"{r.sha256}.tar" for r in record.shards if r.source != first]
    assert untouched and tried == [(name, True) for name in untouched]
    for ref in record.shards:
        assert sha256(folder(ws, "1.0.1") / "data" / ref.path) == ref.sha256
    assert verify(ws, "digits@1.0.1").ok and verify(ws, "digits@1.0.0").ok
    assert sh(ws, "git", "status", "--porcelain", "--untracked-files=all") == ""


def test_derive_writes_a_copy_when_the_parent_changed_after_it_was_read(
    released_copy: Path, released: Built, monkeypatch: pytest.MonkeyPatch
):
    """A parent shard touched between derive's read and its link is written from the bytes derive
    checked, never linked."""
    ws = released_copy
    rows = parent_rows(ws)
    gone = [r["sample_id"] for r in rows if r["shard"] == rows[0]["shard"]][:2]
    tried = spied(monkeypatch, before=os.utime)  # an insider's touch in between: its change time moves

    record = derive(ws, "digits@1.0.0", "1.0.1", REASON, exclude_samples=gone, key=released.key)

    assert tried and not any(linked for _, linked in tried)
    for ref in record.shards:
        assert sha256(folder(ws, "1.0.1") / "data" / ref.path) == ref.sha256
    assert verify(ws, "digits@1.0.1").ok


def test_read_soon_asks_for_a_regular_file_and_never_blocks_on_anything_else(tmp_path: Path):
    """verify asks the kernel for the shards it queues (``fsio.read_soon``); a FIFO in a shard's place
    must not hang it (opening one for reading waits for a writer), nor a missing file raise."""
    from registry.core.fsio import read_soon

    shard = tmp_path / "s.tar"
    shard.write_bytes(b"x" * 100_000)
    fifo = tmp_path / "f.tar"
    os.mkfifo(fifo)
    done = threading.Event()

    def ask() -> None:
        for path in (shard, fifo, tmp_path / "missing.tar", tmp_path):
            read_soon(path)
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(10), "read_soon blocked"
    assert shard.read_bytes() == b"x" * 100_000  # asked for, not changed


def test_read_soon_asks_only_for_what_is_a_regular_file_when_it_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A release's shard that is a link to a device (``/dev/watchdog`` acts on being opened) is never
    opened by ``read_soon``; verify's workers do not open it either (``is_file`` is false)."""
    from registry.core import fsio

    opened: list[str] = []
    advised: list[int] = []
    real, advise = os.open, os.posix_fadvise
    monkeypatch.setattr(fsio.os, "open", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k))
    monkeypatch.setattr(fsio.os, "posix_fadvise", lambda fd, *a: advised.append(fd) or advise(fd, *a))
    link = tmp_path / "s.tar"
    link.symlink_to("/dev/null")
    fifo = tmp_path / "f.tar"
    os.mkfifo(fifo)
    fsio.read_soon(link)
    fsio.read_soon(fifo)
    assert opened == []
    regular = tmp_path / "r.tar"
    regular.write_bytes(b"x")
    fsio.read_soon(regular)
    assert opened == [str(regular)] and len(advised) == 1  # the kernel was asked for it
