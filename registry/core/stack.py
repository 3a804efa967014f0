"""Running deep Python work in one chunk of the thread's frame stack.

CPython keeps each thread's Python frames in chunks of 16 KiB, mapped from the system one at a time.
A call that does not fit in the last chunk maps a new one, and the return from it unmaps it again. So
code that calls in a loop right at a chunk's edge maps and unmaps a chunk, and faults in its pages,
on every call (CPython issue gh-142183; fixed by keeping one chunk in 3.14 and in the 3.13 releases
after March 2026, not in 3.11 or 3.12). Where the edges fall depends on how deep the work starts.
Importing Great Expectations on validate's import thread crossed one about 49,000 times, a sixth of
the import's time (issue 22: 2.45 s against 2.07 s alone, and validate at 1,000,000 rows 4.2-4.7 s
against 3.6-4.4 s).

``deep(fn)`` calls ``fn`` from a frame that claims a 1 MiB chunk of its own, so that everything ``fn``
calls, about 470 KiB of frames (some 4,000 small ones), lives in that one chunk and never reaches an
edge; deeper than that, the chunks after it behave as before. The frame's slots past its own few are
never written, so the pages they span are never faulted in: the cost is address space, not memory.

A frame object made for that frame (by an exception passing through it, a tracer or profiler's call
event, ``inspect.stack()``) is as large, 547 KiB, mapped and likewise left untouched; a debug
allocator (``python -X dev``, ``PYTHONMALLOC=debug``) fills it. At most one a ``deep`` call.

Only on the interpreters that need it and where it is known to be safe: CPython 3.11 and 3.12, which
set up, copy and walk a frame's slots only up to the top of its value stack.
Elsewhere ``deep`` just calls ``fn``. A ``deep`` inside another one just calls ``fn`` too: a second
frame that large would not fit in the chunk, and would map and unmap 1 MiB on every call.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Slots (pointers) the frame claims. CPython maps the smallest power-of-two chunk that holds the frame
# and 1,000 slots more: 70,000 slots (547 KiB) take a 1 MiB chunk, and leave about 477 KiB of it to the
# frames that ``fn`` calls, against the 16 KiB of an ordinary chunk.
RESERVED_SLOTS = 70_000

# (3.11 and 3.12 have no build without the GIL.)
NEEDED = sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 12)

_here = threading.local()


def deep(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, with the frames under it in one chunk of 1 MiB (the module says why and
    where)."""
    if not NEEDED or claimed():
        return fn(*args, **kwargs)
    _here.claimed = True
    try:
        return _claimed(fn, args, kwargs)
    finally:
        _here.claimed = False


def claimed() -> bool:
    """Whether this thread runs under ``deep``."""
    return getattr(_here, "claimed", False)


def _claimed(fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    return fn(*args, **kwargs)


# The frame's size is the code's local slots plus its value stack's depth, which the compiler works
# out; a deeper value stack than the code uses is never read or written (above).
if NEEDED:
    _claimed.__code__ = _claimed.__code__.replace(co_stacksize=RESERVED_SLOTS)
