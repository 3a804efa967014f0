"""`synthreg --help` start-up (target < 0.5 s, issue 18), next to the floor measured in the same run.

    python benchmarks/bench_help.py [--repeats 15]

Prints the median wall time of `synthreg --help`, of every command's `--help` taken together (one process
each), and of a bare `python -c pass` (the interpreter's own start-up, which no CLI can beat), with the
load average: the machines are shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    synthreg = [sys.executable, "-m", "registry.cli"]
    floor = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    root = median_seconds([*synthreg, "--help"], args.repeats)
    release = median_seconds([*synthreg, "release", "--help"], args.repeats)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"python -c pass          {floor:.3f} s (floor)")
    print(f"synthreg --help         {root:.3f} s ({root / floor:.1f}x the floor; target < 0.5 s)")
    print(f"synthreg release --help {release:.3f} s ({release / floor:.1f}x the floor)")


if __name__ == "__main__":
    main()
