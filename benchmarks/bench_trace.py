"""Time `synthreg trace model` and `synthreg impact --generator` in fresh processes, 1,000 runs in the store.

    python benchmarks/bench_trace.py [--runs 1000] [--rows 10000] [--repeats 5] [--rebuild]

Target (issue 22): each command <= 1.5 s wall, Python start to exit, on a quiet machine.
The workspace (a release of `--rows` samples, a working manifest, and a SQLite MLflow store of `--runs`
runs, a model version every tenth run) is built by bench_lineage's setup in a child process, not timed,
and kept in the temporary folder for the next run (`--rebuild` makes it again; building 1,000 runs takes
about a minute and a half on 2 shared cores). Beside the commands it times the floors every fresh process
pays: a bare Python start, `import mlflow`, and the import of MLflow's SQLAlchemy stores. It prints the
load average (1, 5, 15 min) before and after, since the figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINEAGE = REPO / "benchmarks" / "bench_lineage.py"
WEIGHTS_PREFIX = "a" * 12  # bench_validate's build_manifest writes weights digest "a" * 64 on every row


def build(ws: Path, runs: int, rows: int) -> None:
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db"}
    args = ["--rows", str(rows), "--runs", str(runs), "--working", str(runs // 10)]
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(LINEAGE), "--setup", str(ws), *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        shutil.rmtree(ws, ignore_errors=True)
        sys.exit(f"setup failed:\n{proc.stderr}")
    (ws / "built").write_text(proc.stdout)
    print(f"built the workspace in {time.perf_counter() - t:.1f} s (not timed): {ws}")


def wall(cmd: list[str], env: dict[str, str], repeats: int) -> tuple[float, list[float]]:
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return statistics.median(walls), walls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    ws = Path(tempfile.gettempdir()) / f"synthreg-bench-trace-{args.runs}-{args.rows}"
    if args.rebuild or not (ws / "built").is_file():
        build(ws, args.runs, args.rows)
    else:
        print(f"reusing {ws} (--rebuild to make it again)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db", "PYTHONPATH": str(REPO)}
    py = sys.executable
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    # with it set, no .pyc is written and every start compiles synthreg's modules again (about 0.2 s here)
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}")
    rows = [
        ("python -c pass (floor)", [py, "-c", "pass"]),
        ("python -c 'import mlflow' (floor)", [py, "-c", "import mlflow"]),
        (
            "import MLflow's SQLAlchemy stores (floor)",
            [
                py,
                "-c",
                "import mlflow.store.tracking.sqlalchemy_store, mlflow.store.model_registry.sqlalchemy_store",
            ],
        ),
        ("synthreg list", [py, "-m", "registry.cli", "list", "-w", str(ws)]),
        ("synthreg trace model bench-model/1", [py, "-m", "registry.cli", "trace", "model", "bench-model/1"]),
        (
            "synthreg impact --generator <digest>",
            [py, "-m", "registry.cli", "impact", "--generator", WEIGHTS_PREFIX],
        ),
    ]
    print(f"fresh process, median of {args.repeats}, seconds")
    for label, cmd in rows:
        if cmd[3:4] in (["trace"], ["impact"]):
            cmd = [*cmd, "--json", "-w", str(ws)]
        median, walls = wall(cmd, env, args.repeats)
        print(f"  {label:44} {median:6.2f}   [{', '.join(f'{w:.2f}' for w in walls)}]")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
