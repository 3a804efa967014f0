"""Giving the C allocator's free memory back to the system between the passes of a long command.

glibc's ``malloc`` keeps what is freed in its heaps for later requests, and gives back only what lies at
the top of a heap. A pass over a large manifest (Arrow's Parquet reader, the batches it is read in)
frees most of what it made, but the small blocks it leaves live pin the freed space below them, so the
next pass runs on top of memory the process no longer uses. ``malloc_trim`` returns every free page of
every heap (glibc 2.8 and later). Issue 22, on the 10,000,000-image load test: after a pass comparing a
release's manifest with its flat copy the process held 343 MB, 147 MB after the trim, and writing the
flat copy after it peaked at 441 MB against 487 MB. So a pass over a whole manifest that follows
another in the same process starts with ``give_back``: ``manifest.tables_by_shard`` (verify's image
checks, the shard copy of release and derive), ``manifest.write_flat`` (the flat copy), and derive's
passes after its check of the parent.

Tried and left: fixing glibc's mmap threshold (``mallopt``), so that freed large blocks go back at once,
cut verify's peak at 10,000,000 images from 648 to 530 MB but made it 25% slower (every block of 128 KiB
or more then costs fresh pages), and trimming within a pass (every few batches) did not lower the pass's
own peak.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from functools import cache


@cache
def _trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # a C library without it (musl)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def give_back() -> bool:
    """Return the free memory of the C allocator's heaps to the system, where the C library can (glibc);
    True when it gave some back. Costs a walk of the heaps: call it between passes, not within one."""
    trim = _trim()
    return bool(trim and trim(0))
