"""``registry.core.allocator.give_back``: free memory pinned below a live block goes back to the system."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# A fresh process makes 200 MB of 64 KiB blocks (under glibc's mmap threshold, so from the heap), frees
# all but the last, which pins the freed space below it, then prints its RSS in MB before and after
# ``give_back`` (or after nothing).
PROBE = """
import ctypes, sys
from registry.core import allocator
def rss():
    return next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmRSS")) // 1024
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
blocks = []
for _ in range(3200):
    block = libc.malloc(64 << 10)
    ctypes.memset(block, 1, 64 << 10)
    blocks.append(block)
for block in blocks[:-1]:
    libc.free(block)
before = rss()
gave = allocator.give_back() if sys.argv[1] == "trim" else None
print(before, rss(), gave)
"""


def _probe(mode: str) -> tuple[int, int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=environ
    )
    before, after, gave = out.stdout.split()
    return int(before), int(after), gave


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's",
)
def test_free_memory_pinned_below_a_live_block_goes_back():
    before, after, gave = _probe("leave")
    assert before > 200 and after > 200 and gave == "None"  # glibc alone keeps it
    before, after, gave = _probe("trim")
    assert before > 200 and after < before - 150 and gave == "True"


def test_without_glibc_it_does_nothing(monkeypatch):
    from registry.core import allocator

    allocator._trim.cache_clear()
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    try:
        assert allocator.give_back() is False
    finally:
        allocator._trim.cache_clear()
