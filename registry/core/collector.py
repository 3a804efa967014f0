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
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_pauses = 0  # how many ``paused`` blocks are open, in any thread
_was_on = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off inside, and back on after if it was on before. The switch is the
    process's, so the blocks of every thread count together: the first to begin switches it off, and
    the last to end puts it back as the first found it, however they overlap."""
    global _pauses, _was_on
    with _lock:
        if _pauses == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_on:
                gc.enable()
