"""``stack.deep`` keeps a thread's frames in one chunk (issue 22): calls at a chunk's edge, which on
CPython 3.11 map and unmap a chunk and fault in a page each time, do neither under it; and the places
that do deep work (a command, GX's import thread, release's models thread) run under it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from registry.core import stack

ROOT = Path(__file__).resolve().parents[2]

# Descends 3,000 frames, calling a leaf function CALLS times at every depth on the way: a chunk of 16 KiB
# holds about 140 of these frames, so the descent meets about twenty edges, and the 3,000 frames (about
# 330 KiB) fit in the chunk ``deep`` claims only if it claims about as much as it says. Prints the page
# faults of the descent run plainly and under ``deep``, each in a new thread (whose stack starts at the
# bottom of its first chunk).
SWEEP = textwrap.dedent(
    """
    import json, resource, sys, threading
    from registry.core import stack

    CALLS, DEPTH = 300, 3_000
    sys.setrecursionlimit(DEPTH + 1_000)

    def leaf():
        return None

    def down(n):
        for _ in range(CALLS):
            leaf()
        if n:
            down(n - 1)

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

    print(json.dumps({
        "calls": CALLS,
        "plain": faults(lambda: down(DEPTH)),
        "deep": faults(lambda: stack.deep(down, DEPTH)),
    }))
    """
)


@pytest.mark.skipif(not hasattr(resource, "RUSAGE_THREAD"), reason="counts a thread's page faults (Linux)")
@pytest.mark.skipif(
    not stack.NEEDED, reason="deep only calls on this interpreter (CPython 3.11 and 3.12 need it)"
)
def test_calls_at_chunk_edges_stay_in_the_chunk_deep_claims():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDEVMODE", "PYTHONMALLOC", "COVERAGE_PROCESS_START")
    }
    env["PYTHONPATH"] = str(ROOT)  # this checkout's registry, wherever pytest runs from
    done = subprocess.run(
        [sys.executable, "-c", SWEEP], capture_output=True, text=True, check=True, cwd=ROOT, env=env
    )
    got = json.loads(done.stdout)
    # Plainly, every call at an edge maps a new chunk and faults in its first page: about twenty edges.
    assert got["plain"] > 10 * got["calls"], got
    assert got["deep"] * 20 < got["plain"], got


def test_deep_passes_arguments_results_and_errors_through():
    assert stack.deep(lambda a, b=0: (a, b), 1, b=2) == (1, 2)

    def fails() -> None:
        raise KeyError("a missing thing")

    with pytest.raises(KeyError, match="a missing thing"):
        stack.deep(fails)
    assert not stack.claimed()  # given back after an error too


def test_a_deep_inside_another_only_calls():
    outer = stack.deep(lambda: sys._getframe(1).f_code)
    assert outer is (stack._claimed.__code__ if stack.NEEDED else stack.deep.__code__)
    inner = stack.deep(stack.deep, lambda: sys._getframe(1).f_code)
    assert inner is stack.deep.__code__  # the inner deep called it straight, with no frame of its own


def test_release_models_thread_runs_under_it():
    from registry.releases import release

    assert release._aside(stack.claimed)() is stack.NEEDED


# A command as installed (``registry.cli:main``), and the thread that imports Great Expectations ahead,
# in a process of their own: main ends its process, and the import thread starts once a process.
PLACES = textwrap.dedent(
    """
    import sys
    import registry.cli as cli
    from policies.checks import provenance
    from registry.core import stack

    def defer(name):
        print("import thread", stack.claimed())
        raise RuntimeError("stops before importing GX")

    provenance.defer = defer
    provenance.import_ahead()
    provenance.imported()
    cli.app = lambda: print("command", stack.claimed())
    cli.main()
    """
)


def test_a_command_and_the_import_thread_of_great_expectations_run_under_it():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PLACES], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"import thread {stack.NEEDED}", f"command {stack.NEEDED}"]
