"""Running deep Python work in one chunk of the thread's frame stack.

CPython keeps each thread's Python frames in chunks of 16 KiB, mapped from the system one at a time.
A call that does not fit in the last chunk maps a new one, and the return from it unmaps it again. So
code that calls in a loop right at a chunk's edge maps and unmaps a chunk, and faults in its pages,
on every call (CPython issue gh-142183, fixed in 2026 for 3.13 and later by keeping one chunk; not
in 3.11, which synthreg runs on). Importing Great Expectations does this about 49,000 times, a fifth
of its import's time (issue 22: 2.45 s against 2.07 s, and validate at 1,000,000 rows 5.1-5.9 s
against 4.1-5.1 s).

``deep(fn)`` calls ``fn`` from a frame that claims a 1 MiB chunk of its own, so that everything ``fn``
calls, to well past a thousand frames deep, lives in that one chunk and never reaches an edge. The
frame's slots past its own few are never written, so the pages they span are never faulted in: the
cost is address space, not memory. Deeper than that, the chunks after it behave as before. (A frame
object made for it, as an exception passing through it makes, is as large and as little touched.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Slots (pointers) the frame claims. CPython maps the smallest power-of-two chunk that holds the frame
# and 1,000 slots more: 70,000 slots (547 KiB) take a 1 MiB chunk, and leave about 460 KiB of it to the
# frames that ``fn`` calls, against the 16 KiB of an ordinary chunk.
RESERVED_SLOTS = 70_000


def deep(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, with the frames under it in one chunk of 1 MiB (the module says why).
    Only its first use in a thread, lowest in that thread's stack, matters; a ``deep`` inside
    another one claims a chunk it does not need, and gives it back when it returns."""
    return _claimed(fn, args, kwargs)


def _claimed(fn: Callable[..., T], args: tuple[object, ...], kwargs: dict[str, object]) -> T:
    return fn(*args, **kwargs)


# The frame's size is the code's local slots plus its value stack's depth, which the compiler works
# out; a deeper value stack than the code uses is never read or written.
_claimed.__code__ = _claimed.__code__.replace(co_stacksize=RESERVED_SLOTS)
