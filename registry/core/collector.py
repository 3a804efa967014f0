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
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off inside, and back on after if it was on before. The switch is the
    process's: another thread's work inside is paused too (a nested or concurrent ``paused`` leaves it on
    once the first that found it on has ended)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
