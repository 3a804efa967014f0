"""``stack.deep`` keeps a thread's frames in one chunk (issue 22): calls at a chunk's edge, which on
CPython 3.11 map and unmap a chunk and fault in a page each time, do neither under it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from registry.core import stack

# Calls a leaf function CALLS times at every depth from 0 to 600 frames: a chunk of 16 KiB holds about
# 170 of these frames, so a few of those depths are at a chunk's edge. Prints the page faults of the
# sweep run plainly and run under ``deep``, each in a thread of its own (a new thread's stack starts at
# the bottom of its first chunk, so the edges fall where the sweep reaches them).
SWEEP = textwrap.dedent(
    """
    import json, resource, threading
    from registry.core import stack

    CALLS = 300

    def leaf():
        return None

    def down(n):
        if n:
            return down(n - 1)
        for _ in range(CALLS):
            leaf()

    def sweep():
        for depth in range(600):
            down(depth)

    def faults(run):
        out = {}
        def measured():
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            run()
            out["faults"] = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
        t = threading.Thread(target=measured)
        t.start()
        t.join()
        return out["faults"]

    print(json.dumps({"calls": CALLS, "plain": faults(sweep), "deep": faults(lambda: stack.deep(sweep))}))
    """
)


def test_calls_at_a_chunk_edge_stay_in_the_chunk_deep_claims():
    done = subprocess.run([sys.executable, "-c", SWEEP], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    if got["plain"] < got["calls"]:
        pytest.skip(f"this Python keeps a chunk at its edge (gh-142183 fixed): {got}; nothing to show")
    # Plainly, every call at an edge maps a new chunk and faults in its first page.
    assert got["deep"] < got["calls"] / 4, got


def test_deep_passes_arguments_results_and_errors_through():
    assert stack.deep(lambda a, b=0: (a, b), 1, b=2) == (1, 2)

    def fails() -> None:
        raise KeyError("a missing thing")

    with pytest.raises(KeyError, match="a missing thing"):
        stack.deep(fails)


def test_deep_frames_are_deep_enough_for_the_recursion_limit():
    def down(n: int) -> int:
        return down(n - 1) + 1 if n else 0

    depth = sys.getrecursionlimit() - 50
    assert stack.deep(down, depth) == depth
