"""benchmarks/bench_e2e.py's ratios: each of issue 22's targets against its floor from the same run, and
`not run` (never a ratio) for a stage or floor the run lacks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import bench_e2e
from benchmarks.bench_e2e import ratios

FLOORS = [("floor: sha256sum release shards", 2.0, 15, 0), ("floor: dvc add shards", 3.0, 65, 0)]


def test_ratios_name_a_run_without_pushes_as_such_and_leave_the_rest_not_run():
    """--lean pushes nothing: release and derive are compared with `sha256sum` + `dvc add` alone, and
    their lines say so rather than reading "pushed"."""
    rows = [
        ("release", 10.0, 300, 0),
        ("derive (exclude 1%)", 20.0, 500, 0),
        ("verify", 4.0, 310, 0),
        *FLOORS,
    ]
    got = dict(ratios(rows))
    assert got["release (signed), not pushed, floor without dvc push"].startswith(
        "2.00x its floor, 10.0 s / 5.0 s"
    )
    assert got["derive (exclude 1%), not pushed, floor without dvc push"].startswith("4.00x its floor")
    assert got["verify"] == "0.50x sha256sum release shards throughput (target >= 0.8x)"
    for what in ("verify (derived)", "generate", "pull + verify after pull"):
        assert got[what] == "not run"
    assert "release (signed, pushed)" not in got
    assert got["peak memory of any stage"].startswith("500 MB")  # floors' memory is not a stage's


def test_ratios_with_a_push_floor_keep_the_targets_names():
    rows = [("release", 10.0, 300, 0), *FLOORS, ("floor: dvc push shards", 5.0, 70, 0)]
    got = dict(ratios(rows))
    assert got["release (signed, pushed)"].startswith("1.00x its floor, 10.0 s / 10.0 s")
    assert got["derive (exclude 1%)"] == "not run"


def test_cold_drops_the_page_cache_before_each_command_and_says_why_it_cannot(tmp_path, monkeypatch):
    """--cold: every stage and floor starts from the disk (a floor reading what was just written would
    otherwise find it in memory); where the cache cannot be dropped, the run stops before any work."""
    drop = tmp_path / "drop_caches"
    drop.write_text("0\n")
    monkeypatch.setattr(bench_e2e, "DROP", drop)
    monkeypatch.setattr(bench_e2e, "COLD", True)
    rows: list = []
    bench_e2e.run(tmp_path, "a command", [sys.executable, "-c", "pass"], [], rows)
    assert drop.read_text() == "3\n" and rows[0][0] == "a command"
    monkeypatch.setattr(bench_e2e, "DROP", tmp_path / "no" / "such" / "file")
    with pytest.raises(SystemExit, match=r"--cold: cannot drop the page cache .* run as root on Linux"):
        bench_e2e.run(tmp_path, "another", [sys.executable, "-c", "pass"], [], rows)
    assert len(rows) == 1  # nothing ran


HOLDERS = """
import os, signal, time
ready_r, ready_w = os.pipe()
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        held = bytes(range(256)) * (60 << 12)  # 60 MB, every page touched
        os.write(ready_w, b"x")
        time.sleep(60)
        os._exit(0)
    pids.append(pid)
for _ in pids:
    os.read(ready_r, 1)  # both hold their 60 MB from here
time.sleep(1.5)  # several samples
for pid in pids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the tree is read from Linux's /proc")
def test_a_stages_memory_counts_its_worker_processes_together(tmp_path):
    """`ru_maxrss` is the largest one process: two workers holding 60 MB each read as one. The sampled
    tree figure counts both, the parent's pages they share once: no one process holds 120 MB here.
    (`ru_maxrss` is not compared: Linux gives a command the size of the process it was forked from, at
    least, and under pytest that is the test worker's.)"""
    rows: list = []
    bench_e2e.run(tmp_path, "two workers", [sys.executable, "-c", HOLDERS], [], rows)
    tree = rows[0][4]
    assert 120 < tree < 400
    assert dict(ratios(rows))["peak memory of any stage, all its processes"].startswith(f"{tree:.0f} MB")


def test_the_stage_table_takes_rows_with_and_without_a_tree_figure():
    """A floor's own clock has no process of its own to sample (the 1M run of 2026-12-06 ended in an
    IndexError at that row, after every stage had run)."""
    rows = [("verify", 4.0, 310.0, 2, 450.0), ("floor: bare generate loop (own clock)", 9.5, 0, 0)]
    lines = bench_e2e.stage_table({1000: rows, 2000: rows})
    assert lines[2] == "| verify | 4.0 / 310 / 450 / 2 | 4.0 / 310 / 450 / 2 |"
    assert lines[3] == "| floor: bare generate loop (own clock) | 9.5 / 0 / - / 0 | 9.5 / 0 / - / 0 |"


def test_the_growth_table_compares_each_size_with_the_one_before():
    """Time and the largest process's memory as ratios from each size to the next, beside the floors'
    own; a row without a process of its own has no memory ratio."""
    small = [("filter", 10.0, 200.0, 5, 250.0), ("floor: bare generate loop (own clock)", 2.0, 0, 0)]
    large = [("filter", 100.0, 250.0, 50, 300.0), ("floor: bare generate loop (own clock)", 21.0, 0, 0)]
    larger = [("filter", 1000.0, 260.0, 500, 310.0), ("floor: bare generate loop (own clock)", 210.0, 0, 0)]
    lines = bench_e2e.growth_table({1000: small, 10000: large, 100000: larger})
    assert lines[0] == "| stage | 1,000 -> 10,000: time / memory | 10,000 -> 100,000: time / memory |"
    assert lines[2] == "| filter | 10.0x / 1.25x (+50 MB) | 10.0x / 1.04x (+10 MB) |"
    assert lines[3] == "| floor: bare generate loop (own clock) | 10.5x / - | 10.0x / - |"


def test_the_growth_table_matches_rows_by_label_and_says_which_did_not_run():
    """A row one size lacks is `not run` there, never compared with the row that took its place."""
    small = [("filter", 10.0, 200.0, 5), ("validate", 2.0, 300.0, 1)]
    large = [("validate", 4.0, 330.0, 1), ("filter", 100.0, 250.0, 50), ("verify", 8.0, 310.0, 0)]
    lines = bench_e2e.growth_table({1000: small, 10000: large})
    assert lines[2:] == [
        "| filter | 10.0x / 1.25x (+50 MB) |",
        "| validate | 2.0x / 1.10x (+30 MB) |",
        "| verify | not run |",
    ]


def test_the_memory_timeline_says_which_process_held_the_peak(tmp_path):
    """benchmarks/memory_timeline.py: the peak is the tree's, and its parts name each worker's 60 MB
    beside the parent; the command's lines come through, timed, and its exit status is returned."""
    script = HOLDERS + "print('holders done', flush=True)\nraise SystemExit(3)\n"
    csv = tmp_path / "samples.csv"
    tool = bench_e2e.REPO / "benchmarks/memory_timeline.py"
    done = subprocess.run(
        [sys.executable, str(tool), "--csv", str(csv), "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert re.search(r"^\[ *[0-9.]+s\] holders done$", done.stdout, re.M)
    last = done.stdout.strip().splitlines()[-1]
    peak = re.match(
        r"exit 3, [0-9.]+ s; tree peak (\d+) MB at [0-9.]+ s \| (.*); "
        r"anonymous (\d+) MB at most; its largest process",
        last,
    )
    assert peak, last
    parts = [float(p.split(":")[1]) for p in peak.group(2).split()]
    assert len(parts) == 3  # the command's process, then its two workers
    assert all(55 < p < 200 for p in parts[1:])
    assert 120 < int(peak.group(1)) < 400
    assert 100 < int(peak.group(3)) <= int(peak.group(1))  # the workers' 60 MB each are their own heap
    assert csv.read_text().startswith("seconds,total_mb,processes\n")
    assert len(csv.read_text().splitlines()) > 3  # a sample every 0.25 s over 1.5 s and more


def test_the_memory_timeline_gives_the_kernels_peak_a_sample_misses(tmp_path):
    """A peak of a few milliseconds between two samples a second apart: the sampled tree peak misses it,
    the kernel's count of the command's process (``ru_maxrss``) does not."""
    script = "import time\nb = bytearray(300_000_000)\ndel b\ntime.sleep(1.5)\n"
    tool = bench_e2e.REPO / "benchmarks/memory_timeline.py"
    done = subprocess.run(
        [sys.executable, str(tool), "--every", "1", "--", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    found = re.search(r"tree peak (\d+) MB .* largest process peaked at (\d+) MB RSS", last)
    assert found, last
    assert int(found.group(1)) < 200 < 280 < int(found.group(2)), last  # 300,000,000 bytes: 286 MiB


def test_the_memory_timeline_stops_its_command_when_its_own_output_is_gone():
    """Read into `head`, say: once memory_timeline cannot print, it kills and reaps the command rather
    than leave it running (this command survives its own broken pipe)."""
    script = (
        "import os, time\n"
        "print(os.getpid(), flush=True)\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        print('x', flush=True)\n"
        "    except OSError:\n"
        "        pass\n"
        "    time.sleep(0.1)\n"
    )
    tool = bench_e2e.REPO / "benchmarks/memory_timeline.py"
    proc = subprocess.Popen(
        [sys.executable, str(tool), "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    try:
        child = next(
            int(m.group(1)) for line in proc.stdout if (m := re.match(r"^\[ *[0-9.]+s\] (\d+)$", line))
        )
    finally:
        proc.stdout.close()
    assert proc.wait(timeout=30) != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError(f"the command {child} was left running")


def test_stages_at_scale_runs_every_stage_after_generate_under_the_timeline(tmp_path):
    """benchmarks/stages_at_scale.sh at 2,000 images: a line a stage, each its timeline's last (exit 0,
    the sampled peak, the kernel's); a folder that exists is refused, not written into."""
    script = bench_e2e.REPO / "benchmarks/stages_at_scale.sh"
    env = {**os.environ, "N": "2000", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "top")], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stages = ["filter", "validate", "release", "verify", "derive", "verify-derived"]
    lines = [line for line in done.stdout.splitlines() if line.split(":")[0] in stages]
    assert [line.split(":")[0] for line in lines] == stages
    assert all(re.search(r": exit 0, .* largest process peaked at \d+ MB RSS", line) for line in lines)
    assert (tmp_path / "top" / "exclude.txt").read_text().count("\n") > 0
    again = subprocess.run(
        ["bash", str(script), str(tmp_path / "top")], capture_output=True, text=True, env=env, timeout=60
    )
    assert again.returncode == 2 and "exists; name a new folder" in again.stderr
    bad = subprocess.run(
        ["bash", str(script), str(tmp_path / "other")],
        capture_output=True,
        text=True,
        env={**env, "N": "1e6"},
        timeout=60,
    )
    assert bad.returncode == 2 and "N must be a whole number of images" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_the_memory_timeline_refuses_no_command():
    tool = bench_e2e.REPO / "benchmarks/memory_timeline.py"
    done = subprocess.run([sys.executable, str(tool), "--"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "name the command to run after --" in done.stderr
