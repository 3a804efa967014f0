"""Where in a command its memory peaks: the whole process tree sampled over time, process by process.

Run from a workspace (or anywhere the command runs)::

    python benchmarks/memory_timeline.py [--every 0.25] [--csv FILE] -- synthreg verify NAME@VERSION

``bench_e2e.py`` gives a stage's peak; this says when it came and which process held it. Every
``--every`` seconds it reads the proportional set size of the command's process and of every process
under it (``bench_e2e.tree_rollup``: a page shared with a forked worker counts once), and prints, with
the seconds since the start:

- each line the command writes (its progress shows which phase is running);
- a sample line whenever the tree's total reaches a new peak, and otherwise one every 2 seconds:
  ``tree <MB> (peak <MB>) | <pid>:<MB> ...``, the command's own process first;

and at the end the peak, when it came, and each process's share of it, and the largest anonymous
part of the tree sampled (``Pss_Anon``: its heaps, without the pages of mapped files, libraries and
the files a stage maps, which the kernel can drop and other processes share, so that they vary with
what else runs). ``--csv`` also writes every
sample (seconds, total MB, then ``pid:MB`` pairs). A peak shorter than ``--every`` can be missed; the
exit status is the command's. The last line also gives the peak resident set of its largest process
as the kernel counted it (``ru_maxrss`` of the command's process and of the children it waited for, a
stage's joined workers say), which no sampling misses: a stage of a few seconds can peak between two
samples (validate at 1,000,000 images: 319 MB sampled every 0.25 s in one run, 404-429 MB every
0.05 s in five; benchmarks/README.md). Figures are printed, never asserted. Issue 22 used it to find which
phase of release, verify and derive holds their peak at 10,000,000 images (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_e2e import TreeSampler, tree_rollup


def _shown(parts: dict[int, float]) -> str:
    return " ".join(f"{pid}:{mb:.0f}" for pid, mb in parts.items())


class Timeline(TreeSampler):
    """bench_e2e's sampler of a tree, printing as the module says; ``peak``, ``peak_at`` and
    ``peak_parts`` describe the largest sample."""

    def __init__(self, pid: int, t0: float, every: float, csv: Path | None) -> None:
        super().__init__(pid, every)
        self.t0, self.csv = t0, csv
        self.peak_at, self.peak_parts = 0.0, {}
        self.anon = 0.0  # the largest Pss_Anon of the tree sampled (its own peak, not the total's)
        self.samples: list[tuple[float, float, dict[int, float]]] = []

    def run(self) -> None:
        shown = 0.0
        while not self.done.is_set():
            rollup = tree_rollup(self.pid, "Pss", "Pss_Anon")
            parts = {p: v["Pss"] for p, v in rollup.items()}
            total, now = sum(parts.values()), time.perf_counter() - self.t0
            self.anon = max(self.anon, sum(v["Pss_Anon"] for v in rollup.values()))
            if self.csv is not None:
                self.samples.append((now, total, parts))
            if total > self.peak:
                self.peak, self.peak_at, self.peak_parts = total, now, parts
            if total >= self.peak or now - shown >= 2:
                print(
                    f"[{now:8.1f}s] tree {total:6.0f} MB (peak {self.peak:.0f}) | {_shown(parts)}", flush=True
                )
                shown = now
            self.done.wait(self.every)

    def stop(self) -> float:
        peak = super().stop()
        if self.csv is not None:
            lines = [f"{t:.2f},{m:.1f},{_shown(p)}" for t, m, p in self.samples]
            self.csv.write_text("seconds,total_mb,processes\n" + "\n".join(lines) + "\n")
        return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=float, default=0.25, help="seconds between samples")
    ap.add_argument("--csv", type=Path, help="also write every sample to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("name the command to run after --")
    if args.every <= 0:
        ap.error(f"--every must be more than 0 seconds, not {args.every}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    except OSError as e:
        ap.error(f"cannot run {command[0]!r}: {e}")
    timeline = Timeline(proc.pid, t0, args.every, args.csv)
    timeline.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            print(f"[{time.perf_counter() - t0:8.1f}s] {line.rstrip()}", flush=True)
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted, or our stdout closed: no command left running unreaped
        proc.kill()
        proc.wait()
        raise
    finally:
        timeline.stop()
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    print(
        f"exit {code}, {time.perf_counter() - t0:.1f} s; tree peak {timeline.peak:.0f} MB at "
        f"{timeline.peak_at:.1f} s | {_shown(timeline.peak_parts)}; anonymous {timeline.anon:.0f} MB at "
        f"most; its largest process peaked at {usage.ru_maxrss / 1024:.0f} MB RSS (the kernel's count of the "
        "command's process and of the children it waited for, not a sample)"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
