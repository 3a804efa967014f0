"""``synthreg`` ends without the interpreter's teardown of its modules (``registry.cli.leave``, issue
22: 0.8 s after a validate that imported Great Expectations), but with everything else a normal exit
does: exit status, waiting for threads, ``atexit`` functions, flushed output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )


def test_leave_waits_for_threads_runs_atexit_and_flushes_then_exits_with_the_status(tmp_path: Path):
    code = (
        "import atexit, sys, tempfile, time\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from pathlib import Path\n"
        "from registry.cli import leave\n"
        f"out = Path({str(tmp_path)!r})\n"
        "pool = ThreadPoolExecutor(1)  # never shut down by the caller\n"
        "pool.submit(lambda: (time.sleep(0.3), (out / 'thread').write_text('done')))\n"
        "atexit.register(lambda: (out / 'atexit').write_text('ran'))\n"
        "kept = tempfile.TemporaryDirectory()  # its finalizer runs at exit\n"
        "(out / 'tmp').write_text(kept.name)\n"
        "sys.stdout.write('x' * 100000)  # buffered: a pipe, not a terminal\n"
        "leave(3)\n"
        "print('never')\n"
    )
    done = _run(code, tmp_path)
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout == "x" * 100000
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not Path((tmp_path / "tmp").read_text()).exists()


def test_leave_keeps_what_sys_exit_does_with_none_and_a_message(tmp_path: Path):
    for arg, status, err in (("None", 0, ""), ("'went wrong'", 1, "went wrong\n")):
        done = _run(f"from registry.cli import leave\nleave({arg})\n", tmp_path)
        assert (done.returncode, done.stderr) == (status, err)


def test_leave_ends_the_normal_way_while_a_duckdb_spill_folder_of_the_process_is_left(tmp_path: Path):
    # DuckDB removes a connection's spill folder when the connection is freed, which the teardown does.
    code = (
        "import os, tempfile\n"
        "from pathlib import Path\n"
        "from registry.cli import leave\n"
        "from registry.core.duck import SPILL_PREFIX\n"
        "spill = Path(tempfile.gettempdir()) / f'{SPILL_PREFIX}{os.getpid()}-abc'\n"
        "spill.mkdir()\n"
        "os._exit = lambda status: print('fast', status)\n"
        "try:\n"
        "    leave(4)\n"
        "except SystemExit as e:\n"
        "    print('normal', e.code)\n"
    )
    done = _run(code, tmp_path)
    assert done.stdout.strip() == "normal 4", done.stderr[-2000:]
    no_spill = code.replace("spill.mkdir()\n", "")
    assert _run(no_spill, tmp_path).stdout.strip() == "fast 4"


def test_the_command_line_keeps_its_exit_status_and_output(tmp_path: Path):
    cli = [sys.executable, "-m", "registry.cli"]
    helped = subprocess.run([*cli, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert helped.returncode == 0 and "verify" in helped.stdout and helped.stdout.rstrip().endswith("─╯")
    refused = subprocess.run([*cli, "verify", "x"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stderr


def test_output_that_cannot_be_written_ends_with_status_120_as_the_interpreter_does(tmp_path: Path):
    # A full disk under `synthreg show --json > record.json` must not end as a success.
    code = "import sys\nfrom registry.cli import leave\nsys.stdout.write('x' * 10)\nleave(0)\n"
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-c", code],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)},  # buffered, as a normal run is
        )
    assert done.returncode == 120 and "could not be written" in done.stderr, done.stderr
