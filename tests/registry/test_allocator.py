"""``registry.core.allocator``: free memory pinned below a live block goes back to the system, and the
CLI gives Arrow jemalloc where pyarrow has it."""

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


def test_arrow_backend_is_jemalloc_exactly_where_this_pyarrow_has_it():
    """The header ``arrow_backend`` reads agrees with what the installed pyarrow says it supports."""
    import pyarrow as pa

    from registry.core import allocator

    has = "jemalloc" in pa.supported_memory_backends()
    assert allocator.arrow_backend() == ("jemalloc" if has else "system")


@pytest.mark.parametrize(
    ("header", "backend"),
    [
        ("#define ARROW_JEMALLOC\n#define ARROW_JEMALLOC_VENDORED\n", "jemalloc"),
        ("/* #undef ARROW_JEMALLOC */\n#define ARROW_MIMALLOC\n", "system"),
        ("#define ARROW_JEMALLOC_VENDORED\n", "system"),  # a longer name is not the flag
        (None, "system"),  # a build without the header: the allocator every build has
    ],
)
def test_arrow_backend_reads_the_build_flag(tmp_path, monkeypatch, header, backend):
    import importlib.machinery

    from registry.core import allocator

    package = tmp_path / "pyarrow"
    (package / "include" / "arrow" / "util").mkdir(parents=True)
    if header is not None:
        (package / "include" / "arrow" / "util" / "config.h").write_text(header)
    spec = importlib.machinery.ModuleSpec("pyarrow", None, origin=str(package / "__init__.py"))
    monkeypatch.setattr(allocator.importlib.util, "find_spec", lambda name: spec)
    assert allocator.arrow_backend() == backend


def test_the_command_gives_arrow_that_backend_unless_the_user_chose():
    """``synthreg`` sets ARROW_DEFAULT_MEMORY_POOL before Arrow's first buffer, Arrow takes it without a
    warning, and a user's own choice wins; an empty variable is no choice (Arrow would take mimalloc)."""
    from registry.core import allocator

    probe = (
        "import atexit, sys\n"
        "sys.argv = ['synthreg', '--help']\n"
        "from registry.cli import main\n"
        "atexit.register(lambda: print('pool', __import__('pyarrow').default_memory_pool().backend_name))\n"
        "main()\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    ours = allocator.arrow_backend()
    for chosen, expected in ((None, ours), ("", ours), ("mimalloc", "mimalloc")):
        env = environ if chosen is None else {**environ, "ARROW_DEFAULT_MEMORY_POOL": chosen}
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        )
        assert out.stdout.splitlines()[-1] == f"pool {expected}"
        assert "Unsupported backend" not in out.stderr, out.stderr
