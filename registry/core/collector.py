"""Pausing Python's cyclic garbage collector around work that allocates many objects that live on.

The collector runs after every 700 allocations of container objects, and each of its full collections
walks every object the process holds. Work that makes a great many objects and keeps them (reading an
audit log, importing a large library) pays for those walks again and again, and finds nothing to free:
such work makes few cycles, and those it makes live as long as the process. Reference counting still
frees everything else at once, so pausing the collector there costs no memory worth counting.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_open: dict[int, int] = {}  # thread id -> how many ``paused`` blocks it has open
_was_on = False  # whether the collector was on when the first open block began


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off inside, and back on after if it was on before. The switch is the
    process's, so the blocks of every thread count together: the first to begin switches it off, and
    the last to end puts it back as the first found it, however they overlap."""
    global _was_on
    me = threading.get_ident()
    with _lock:
        if not _open:
            _was_on = gc.isenabled()
            gc.disable()
        _open[me] = _open.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _open[me] -= 1
            if not _open[me]:
                del _open[me]
            if not _open and _was_on:
                gc.enable()


def _after_fork_in_child() -> None:
    """A forked child has only the thread that forked: the blocks the other threads had open never end
    there, so they are dropped (and the collector put back as they found it, if none of the forking
    thread's own is open), and the lock, perhaps held at the fork, is a new one."""
    global _lock, _open
    _lock = threading.Lock()
    _open = {t: n for t, n in _open.items() if t == threading.get_ident()}
    if not _open and _was_on:
        gc.enable()


os.register_at_fork(after_in_child=_after_fork_in_child)
