"""Which allocator Arrow uses in the ``synthreg`` command, and giving the C allocator's free memory back
to the system between the passes of a long command.

Arrow allocates a manifest's column buffers, and three allocators are built into pyarrow's wheels. Its
default, mimalloc, kept what a pass freed for Arrow alone, so each pass over a manifest added to the
process (derive of 1,000,000 images: 984 MB, against 672 MB with the C library's). The C library's
(glibc) mixes Arrow's buffers with Python's and numpy's blocks in the same heaps, and its freed space
fragments: writing the flat copy of a 10,000,000-row manifest climbed from 353 to 446 MB over its 31 s,
with nothing live growing. jemalloc, with Arrow's own settings (freed pages go back after 1 s), held that
pass flat at 326-357 MB in the same time, and 265 against 283 MB at 1,000,000 (issue 22). So the CLI
gives Arrow jemalloc where this pyarrow has it (``arrow_backend``), the C library's otherwise.

glibc's ``malloc`` keeps what is freed in its heaps for later requests, and gives back only what lies at
the top of a heap. A pass over a large manifest (Python's and numpy's blocks; Arrow's buffers too where
Arrow uses the C library's allocator) frees most of what it made, but the small blocks it leaves live
pin the freed space below them, so the next pass runs on top of memory the process no longer uses.
``malloc_trim`` returns every free page of every heap (glibc 2.8 and later). Issue 22, on the
10,000,000-image load test, Arrow on the C library's allocator: after a pass comparing a release's
manifest with its flat copy the process held 343 MB, 147 MB after the trim, and writing the flat copy
after it peaked at 441 MB against 487 MB. So a pass over a whole manifest that follows another in the
same process starts with ``give_back``: ``manifest.tables_by_shard`` (verify's image checks, the shard
copy of release and derive), ``manifest.write_flat`` (the flat copy), and derive's passes after its
check of the parent. So does publish's ``dvc add`` step, whose process runs beside this one: derive of
10,000,000 images held 514 MB there, 471 MB after the trim.

Tried and left: fixing glibc's mmap threshold (``mallopt``), so that freed large blocks go back at once,
cut verify's peak at 10,000,000 images from 648 to 530 MB but made it 25% slower (every block of 128 KiB
or more then costs fresh pages), and trimming within a pass (every few batches) did not lower the pass's
own peak.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path


def arrow_backend() -> str:
    """``jemalloc`` where the installed pyarrow was built with it, else ``system`` (the C library's), for
    ``ARROW_DEFAULT_MEMORY_POOL``. Found without importing pyarrow (most commands never load it), from the
    build's own configuration header, which pyarrow's wheels ship (``include/arrow/util/config.h``): a
    backend Arrow lacks would be refused with a warning, and it would fall back to mimalloc. No header
    (builds that leave the headers out of the package, as Nix's and Gentoo's do): ``system``, which
    every build has, even where jemalloc is there too; set ARROW_DEFAULT_MEMORY_POOL to choose."""
    spec = importlib.util.find_spec("pyarrow")
    if spec is None or spec.origin is None:
        return "system"
    try:
        config = (Path(spec.origin).parent / "include" / "arrow" / "util" / "config.h").read_text()
    except (OSError, UnicodeDecodeError):
        return "system"
    return "jemalloc" if "#define ARROW_JEMALLOC" in config.splitlines() else "system"


POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def arrow_pool() -> str:
    """The allocator synthreg gives Arrow, in its command and in its Ray actors: the user's own
    ``ARROW_DEFAULT_MEMORY_POOL``, else ``arrow_backend``. An empty variable is no choice: Arrow would read
    it as its default, mimalloc."""
    return os.environ.get(POOL_VARIABLE) or arrow_backend()


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
