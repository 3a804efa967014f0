"""Ray executor against the local executor: throughput on this machine, and identical output.

Run from the repository root::

    python benchmarks/bench_ray.py [--images N] [--repeats R] [--backend tiny-digits|synthetic-pattern]

The default recipe (tiny-digits, 20 DDIM steps) scaled to N images is generated into fresh folders,
alternating local, ray, local, ray ...:

- **local**: ``generate()`` in this process with ``threads = cores`` (torch uses every core);
- **ray**: ``generate(executor="ray")`` on a local Ray started once up front with ``num_cpus = cores``,
  ``workers = cores`` actors of 1 CPU and 1 torch thread each (the pipeline loads once per actor, inside
  the timed run, as a real run pays it).

Throughput = images / wall time of the whole ``generate()`` call; the ratio ray / local is printed
with the median of each. Ray's own start-up (``ray.init``) is printed separately: a cluster pays it
once, not per run. Output: ids, image digests and shard bytes are compared between every run.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import yaml

from generators.generate import generate
from registry.records.dataset import GenerateParams

REPO = Path(__file__).resolve().parent.parent
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backend", choices=sorted(FOLDERS), default="tiny-digits")
    ap.add_argument("--shard-size", type=int, default=100)
    args = ap.parse_args()
    cores = os.cpu_count() or 2

    import ray

    ws = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        shutil.copytree(REPO / FOLDERS[args.backend], ws / FOLDERS[args.backend])
        recipe = yaml.safe_load((REPO / RECIPES[args.backend]).read_text())
        recipe["images_per_identity"] = args.images // len(recipe["identities"])
        (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        images = recipe["images_per_identity"] * len(recipe["identities"])

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0

        local = GenerateParams(batch_size=50, shard_size=args.shard_size, threads=cores)
        remote = GenerateParams(
            batch_size=50, shard_size=args.shard_size, threads=1, executor="ray", workers=cores
        )
        rates: dict[str, list[float]] = {"local": [], "ray": []}
        reference = None
        for r in range(args.repeats):
            for name, params in (("local", local), ("ray", remote)):
                out = f"out/{name}-{r}"
                t = time.perf_counter()
                generate(Path("recipe.yaml"), ws, out, params)
                rates[name].append(images / (time.perf_counter() - t))
                got = output(ws / out)
                reference = reference or got
                same = got == reference
                print(f"  {name:5} run {r}: {rates[name][-1]:8.1f} images/s  output identical: {same}")
                if not same:
                    raise SystemExit(f"{name} run {r} differs from the first run")
                shutil.rmtree(ws / out)
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"{args.backend}, {images} images, {cores} cores, shards of {args.shard_size}: "
            f"local {med['local']:.1f} images/s, ray {med['ray']:.1f} images/s, "
            f"ray/local {med['ray'] / med['local']:.2f}x (target >= 0.9x); ray.init {ray_start:.1f} s"
        )
    finally:
        ray.shutdown()
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    main()
