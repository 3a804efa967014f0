"""Ray executor against the local executor: throughput on this machine, and identical output.

Run from the repository root::

    python benchmarks/bench_ray.py [--images N] [--repeats R] [--backend tiny-digits|synthetic-pattern]
                                   [--two-nodes]

The default recipe (tiny-digits, 20 DDIM steps) scaled to N images is generated into fresh folders,
alternating local, ray, local, ray ...:

- **local**: ``generate()`` in this process with ``threads = cores`` (torch uses every core);
- **ray**: ``generate(executor="ray")`` on a local Ray started once up front with ``num_cpus = cores``,
  ``workers = cores`` actors of 1 CPU and 1 torch thread each (the pipeline loads once per actor, inside
  the timed run, as a real run pays it).

Throughput = images / wall time of the whole ``generate()`` call; the ratio ray / local is printed
with the median of each. Ray's own start-up (``ray.init``, or both nodes' ``ray start``) is printed
separately: a cluster pays it once, not per run. Output: ids, image digests and shard bytes are compared
between every run. The load average (``uptime``) is printed before and after: on a shared machine it
says how far to trust the figures. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's code, and tests/ray_nodes.py

from generators.generate import generate  # noqa: E402
from registry.records.dataset import GenerateParams  # noqa: E402

FOLDERS = {"tiny-digits": "generators/tiny_digits/model", "synthetic-pattern": "generators/synthetic_pattern"}
RECIPES = {"tiny-digits": "recipes/digits.yaml", "synthetic-pattern": "recipes/load-test.yaml"}


def output(out: Path) -> tuple[list, dict]:
    rows = duckdb.sql(
        f"SELECT sample_id, image_sha256, member FROM '{out}/manifest.parquet' ORDER BY index"
    ).fetchall()
    shards = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))
    }
    return rows, shards


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", choices=sorted(FOLDERS), default="tiny-digits")
    ap.add_argument("--shard-size", type=int, default=100)
    ap.add_argument(
        "--two-nodes", action="store_true", help="a two-node cluster (ray start) for the Ray runs"
    )
    args = ap.parse_args()
    cores = os.cpu_count() or 2
    print(f"load before: {load()}")

    import ray

    from tests.ray_nodes import two_nodes

    with contextlib.ExitStack() as stack:  # undone last in, first out: Ray, the nodes, the folders
        ws = Path(tempfile.mkdtemp(prefix="bench-ray-"))
        stack.callback(shutil.rmtree, ws, ignore_errors=True)
        shutil.copytree(REPO / FOLDERS[args.backend], ws / FOLDERS[args.backend])
        recipe = yaml.safe_load((REPO / RECIPES[args.backend]).read_text())
        recipe["images_per_identity"] = args.images // len(recipe["identities"])
        (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        images = recipe["images_per_identity"] * len(recipe["identities"])

        t0 = time.perf_counter()
        address = None
        if args.two_nodes:
            folder = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths live under it
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
            address = stack.enter_context(two_nodes(folder)).address
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        stack.callback(ray.shutdown)
        ray_start = time.perf_counter() - t0

        local = GenerateParams(batch_size=50, shard_size=args.shard_size, threads=cores)
        remote = GenerateParams(
            batch_size=50,
            shard_size=args.shard_size,
            threads=1,
            executor="ray",
            ray_address=address,
            workers=2 if args.two_nodes else cores,  # one CPU a node: an actor on each
        )
        name = "2-node" if args.two_nodes else "ray"
        med = compare(ws, images, args.repeats, {"local": local, name: remote})
        print(
            f"{args.backend}, {images} images, {cores} cores, shards of {args.shard_size}: "
            f"local {med['local']:.1f} images/s, {name} {med[name]:.1f} images/s, "
            f"{name}/local {med[name] / med['local']:.2f}x (target >= 0.9x); Ray start {ray_start:.1f} s"
        )
    print(f"load after:  {load()}")


def compare(ws: Path, images: int, repeats: int, runs: dict[str, GenerateParams]) -> dict[str, float]:
    """Median images/s of each way of running, taking turns; stops if any output differs."""
    rates: dict[str, list[float]] = {label: [] for label in runs}
    reference = None
    for r in range(repeats):
        for label, params in runs.items():
            out = f"out/{label}-{r}"
            t = time.perf_counter()
            res = generate(Path("recipe.yaml"), ws, out, params)
            rates[label].append(images / (time.perf_counter() - t))
            got = output(ws / out)
            reference = reference or got
            same = got == reference
            nodes = f"  shards per node: {sorted(res.nodes.values())}" if res.nodes else ""
            print(f"  {label:6} run {r}: {rates[label][-1]:8.1f} images/s  output identical: {same}{nodes}")
            if not same:
                raise SystemExit(f"{label} run {r} differs from the first run")
            shutil.rmtree(ws / out)
    return {label: statistics.median(v) for label, v in rates.items()}


if __name__ == "__main__":
    main()
