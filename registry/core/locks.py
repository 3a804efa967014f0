"""Output-folder locks: one ``generate`` or ``filter`` at a time writes into a folder.

    with folder_lock(ws, out_dir, "generate"):
        ...  # write into out_dir

A second run into the same folder refuses at once (it does not wait: a generation can take hours, and a
queued second run would only redo or overwrite the first one's work), with a message naming the folder
and the holder: its pid, host, command and since when. The lock is an flock on ``<folder>/.synthreg.lock``,
which holds those and is removed when the run ends; the kernel drops the flock when a process dies, so a
killed run leaves at most an unlocked file that the next run takes over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from registry.core.errors import FolderBusyError
from registry.core.names import shown as _shown

LOCK_NAME = ".synthreg.lock"


def _holder(fd: int) -> dict:
    for _ in range(20):  # the holder writes its pid just after taking the lock
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
            if isinstance(data, dict):
                return data
        time.sleep(0.01)
    return {}


def describe(holder: dict) -> str:
    """The holder as a message shows it. The file is writable by anyone who can write the folder, so its
    values are shown escaped (a newline cannot forge a line of the message)."""

    def value(key: str) -> str:
        v = holder.get(key)
        if v is None:
            return "unknown"
        text = str(v)
        return text if text.isprintable() and len(text) <= 80 else _shown(text)

    return (
        f"`synthreg {value('command')}` (pid {value('pid')} on host {value('host')}, since {value('since')})"
    )


@contextlib.contextmanager
def folder_lock(ws: Path, folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock while writing into it; a FolderBusyError when another run holds it. Folders
    it had to create are removed again if the run left them empty (a refused input writes nothing)."""
    created = []
    p = folder
    while not p.exists():
        created.append(p)
        p = p.parent
    path = folder / LOCK_NAME
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a finishing run removed the empty folder just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            where = folder.relative_to(ws) if folder.is_relative_to(ws) else folder
            raise FolderBusyError(
                f"output folder {where} is in use by {describe(holder)}; "
                "wait for it to finish or stop it, then run again"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    try:
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": since}
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked, so nobody takes a file about to vanish
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        for p in created:  # deepest first; stops at the first that is not empty
            try:
                p.rmdir()
            except OSError:
                break
