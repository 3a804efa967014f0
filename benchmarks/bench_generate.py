"""Generation benchmarks: provenance overhead of ``generate()`` and throughput of the default recipe.

Run from the repository root (``make bench`` does)::

    python benchmarks/bench_generate.py [--images N] [--batch-size B] [--repeats R]

1. Provenance overhead. synthreg's ``generate()`` makes N images (the default recipe scaled to N/10
   images per digit) and is timed against a bare diffusers loop in the same process: UNet2DModel and
   DDIMScheduler loaded directly, the same per-sample seeded noise, class labels, batches and DDIM +
   classifier-free-guidance loop, images kept as uint8 arrays in memory (no files, no provenance).
   The two are checked to produce the same pixels (synthreg's PNGs decoded from its shards), so the
   ratio synthreg / bare compares like with like. Runs alternate bare, synthreg, bare, synthreg ...
   and the median of each is reported. Target: synthreg / bare <= 1.05.
2. Throughput of the default recipe (recipes/digits.yaml, 1000 images) through ``generate()`` with
   the ``generate`` section of params.yaml: images/s.
3. The load-test backend against its floor (issue 22). ``generate()`` makes M synthetic-pattern images
   (recipes/load-test.yaml, 100 identities, batch and shard 1000 as bench_e2e.py) and is timed against
   benchmarks/floor_generate.py's bare loop, which makes the same images, encodes, marks, hashes and
   tars them. The two are checked to write byte-identical shards. Runs alternate floor, synthreg, ...;
   the medians, their ratio (target <= 2) and ``uptime`` before and after are printed.
   ``--load-test-only`` runs this part alone (about a minute at the default 10,000 images).

Everything is written to a temporary workspace under the system temp folder (removed at the end):
the recipes and a copy of the tiny-digits model folder; the repository's data/ is never touched.
Figures are printed, never asserted: speed is not a test (see CONTRIBUTING.md).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import imagehash  # noqa: F401  (imported up front so no timed run pays for the import)
import numpy as np
import pyarrow.parquet as pq
import torch
import yaml
from diffusers import DDIMScheduler, UNet2DModel
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from generators.generate import generate
from generators.plan import plan
from registry.records.config import load_params, load_recipe
from registry.records.dataset import GenerateParams, GenerationRequest
from registry.store.shards import read_members

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the floor of part 3
from floor_generate import floor_inputs, run_floor
from floor_generate import make_workspace as make_load_test_workspace

REPO = Path(__file__).resolve().parent.parent
MODEL_REL = "generators/tiny_digits/model"
DEFAULT_RECIPE = REPO / "recipes" / "digits.yaml"
THREADS = 2
STROKES = ("thin", "bold")  # class = digit * 2 + stroke index
NULL_CLASS = 20  # the unconditional class used for classifier-free guidance
TARGET_RATIO = 1.05
FLOOR_TARGET = 2.0  # issue 22: generate with the load-test backend within 2x of the bare loop


# --- the bare diffusers loop (deliberately not synthreg's `sample`) -------------------------------


def bare_batches(n: int, shard_size: int, batch_size: int) -> list[tuple[int, int]]:
    """The batches generate() uses: fixed size, never straddling a shard boundary."""
    out = []
    for shard_start in range(0, n, shard_size):
        shard_stop = min(shard_start + shard_size, n)
        out += [(s, min(s + batch_size, shard_stop)) for s in range(shard_start, shard_stop, batch_size)]
    return out


def bare_generate(
    model: Path,
    seeds: list[int],
    labels: list[int],
    steps: int,
    guidance: float,
    batches: list[tuple[int, int]],
) -> list[np.ndarray]:
    """Load the model and make every image with plain diffusers: uint8 (16, 16) arrays, in memory."""
    unet = UNet2DModel.from_pretrained(model / "unet").eval()
    scheduler = DDIMScheduler.from_pretrained(model / "scheduler")
    size = int(unet.config.sample_size)
    images: list[np.ndarray] = []
    for start, stop in batches:
        x = torch.stack(
            [
                torch.randn((1, size, size), generator=torch.Generator().manual_seed(seed))
                for seed in seeds[start:stop]
            ]
        )
        cond = torch.tensor(labels[start:stop])
        null = torch.full_like(cond, NULL_CLASS)
        scheduler.set_timesteps(steps)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                if guidance > 1:
                    eps_c, eps_u = unet(
                        torch.cat([x, x]), t, class_labels=torch.cat([cond, null])
                    ).sample.chunk(2)
                    eps = eps_u + guidance * (eps_c - eps_u)
                else:
                    eps = unet(x, t, class_labels=cond).sample
                x = scheduler.step(eps, t, x).prev_sample
            out = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        images.extend(out[:, 0].numpy())
    return images


def class_label(req: GenerationRequest) -> int:
    return int(req.identity) * 2 + STROKES.index(req.attributes["stroke"])


# --- helpers ---------------------------------------------------------------------------------------


def make_workspace(root: Path, images_per_identity: int) -> tuple[Path, Path, Path]:
    """A throwaway workspace: model copy, the default recipe, and the default recipe scaled."""
    ws = root / "ws"
    shutil.copytree(REPO / MODEL_REL, ws / MODEL_REL)  # a copy: a symlink would resolve outside ws
    (ws / "recipes").mkdir(parents=True)
    default = ws / "recipes" / "digits.yaml"
    shutil.copyfile(DEFAULT_RECIPE, default)
    data = yaml.safe_load(DEFAULT_RECIPE.read_text())
    data["images_per_identity"] = images_per_identity
    scaled = ws / "recipes" / "bench.yaml"
    scaled.write_text(yaml.safe_dump(data, sort_keys=False))
    return ws, default, scaled


def stored_images(ws: Path, out_dir: Path) -> dict[str, np.ndarray]:
    """sample_id -> decoded uint8 image, read back from the run's manifest and shards."""
    table = pq.read_table(out_dir / "manifest.parquet", columns=["sample_id", "shard", "member"])
    members: dict[str, dict[str, bytes]] = {}
    out = {}
    for sample_id, shard, member in zip(
        table["sample_id"].to_pylist(), table["shard"].to_pylist(), table["member"].to_pylist(), strict=True
    ):
        if shard not in members:
            members[shard] = read_members(ws / shard)
        out[sample_id] = np.asarray(Image.open(io.BytesIO(members[shard][member])))
    return out


def check_same_images(bare: list[np.ndarray], ws: Path, out_dir: Path, ids: list[str]) -> None:
    stored = stored_images(ws, out_dir)
    assert list(stored) == ids, "synthreg's manifest does not list the planned samples in order"
    for sample_id, image in zip(ids, bare, strict=True):
        got = stored[sample_id]
        assert got.dtype == image.dtype and got.shape == image.shape, f"{sample_id}: shape/dtype differ"
        assert np.array_equal(got, image), (
            f"{sample_id}: bare-diffusers pixels differ from synthreg's stored PNG "
            f"(max abs diff {np.abs(got.astype(int) - image.astype(int)).max()})"
        )


class SamplingClock:
    """Seconds spent in the backend's ``generate`` during a synthreg run. The manifest no longer records
    per-image timings (they made its bytes differ run to run, issue 9), so the benchmark times the
    backend itself by wrapping what ``generators.generate`` loads."""

    def __init__(self) -> None:
        self.seconds = 0.0
        import generators.generate as g

        self._module, self._load = g, g.load_backend

        def load(*args, **kwargs):
            backend = self._load(*args, **kwargs)
            inner = backend.generate

            def timed(requests):
                t = time.perf_counter()
                try:
                    return inner(requests)
                finally:
                    self.seconds += time.perf_counter() - t

            backend.generate = timed
            return backend

        g.load_backend = load

    def __enter__(self) -> SamplingClock:
        return self

    def __exit__(self, *exc: object) -> None:
        self._module.load_backend = self._load


def warm_up(model: Path, batches: list[tuple[int, int]]) -> None:
    """Untimed 2-step passes at each batch shape used, so neither contender pays first-call setup."""
    for size in sorted({stop - start for start, stop in batches}):
        bare_generate(model, list(range(size)), [0] * size, steps=2, guidance=2.0, batches=[(0, size)])


class Timer:
    """Wall time and this process's CPU time (all threads) over a ``with`` block."""

    def __enter__(self) -> Timer:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        self.result = (self.wall, self.cpu)


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def fmt_row(cells: list[str], widths: list[int]) -> str:
    pairs = enumerate(zip(cells, widths, strict=True))
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="images for the overhead benchmark (x10)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2, help="alternating bare/synthreg pairs")
    ap.add_argument("--load-test-images", type=int, default=10_000, help="images for part 3 (x100)")
    ap.add_argument("--load-test-repeats", type=int, default=2, help="alternating floor/synthreg pairs")
    ap.add_argument("--load-test-only", action="store_true", help="run part 3 alone")
    args = ap.parse_args()
    if args.images < 10 or args.images % 10:
        ap.error("--images must be a positive multiple of 10 (10 digits x images per digit)")
    if args.load_test_images < 100 or args.load_test_images % 100:
        ap.error("--load-test-images must be a positive multiple of 100 (100 identities x images each)")
    if args.repeats < 1 or args.load_test_repeats < 1:
        ap.error("--repeats and --load-test-repeats must be >= 1")
    if not args.load_test_only:
        bench_overhead(args)
    bench_floor(args.load_test_images, args.load_test_repeats)


def bench_overhead(args: argparse.Namespace) -> None:
    """Parts 1 and 2: generate() with tiny-digits against a bare diffusers loop, and the default recipe."""

    torch.set_num_threads(THREADS)
    diffusers_logging.set_verbosity_error()
    repo_params = load_params(REPO / "params.yaml").generate
    params = GenerateParams(
        batch_size=args.batch_size, shard_size=repo_params.shard_size, device="cpu", threads=THREADS
    )
    default_params = repo_params.model_copy(update={"threads": THREADS})

    with tempfile.TemporaryDirectory(prefix="synthreg-bench-") as tmp:
        ws, default_recipe, scaled_recipe = make_workspace(Path(tmp).resolve(), args.images // 10)
        model = ws / MODEL_REL
        recipe = load_recipe(scaled_recipe)
        requests = plan(recipe)  # inputs for the bare loop; not timed (generate() plans in its own time)
        n = len(requests)
        ids = [r.sample_id for r in requests]
        seeds = [r.seed for r in requests]
        labels = [class_label(r) for r in requests]
        batches = bare_batches(n, params.shard_size, params.batch_size)

        print(
            f"bench_generate {date.today()}  python {platform.python_version()}  torch {torch.__version__}"
            f"  threads {torch.get_num_threads()}  machine {platform.machine()}"
        )
        print(
            f"overhead: {n} images, {recipe.steps} steps, guidance {recipe.guidance}, "
            f"batch {params.batch_size}, shard {params.shard_size}, {args.repeats} repeat(s)\n"
        )
        warm_up(model, batches)
        print(f"  load average before (1/5/15 min): {load()}", flush=True)

        bare_t: list[tuple[float, float]] = []  # (wall s, process CPU s) per repeat
        synth_t: list[tuple[float, float]] = []
        parts: list[tuple[float, float]] = []  # synthreg (sampling, the rest) s
        for i in range(args.repeats):
            with Timer() as t:
                bare = bare_generate(model, seeds, labels, recipe.steps, recipe.guidance, batches)
            bare_t.append(t.result)
            print(f"  repeat {i + 1}: bare     {t.wall:8.2f} s wall {t.cpu:8.2f} s CPU", flush=True)

            out = f"runs/synthreg-{i}"  # fresh folder: every repeat generates from scratch
            with SamplingClock() as clock, Timer() as t:
                res = generate(scaled_recipe, ws, out=out, params=params)
            synth_t.append(t.result)
            assert res.generated == n, f"synthreg generated {res.generated} of {n} images (not from scratch?)"
            print(f"  repeat {i + 1}: synthreg {t.wall:8.2f} s wall {t.cpu:8.2f} s CPU", flush=True)
            parts.append((clock.seconds, t.wall - clock.seconds))
            check_same_images(bare, ws, res.out_dir, ids)  # untimed sanity check
            shutil.rmtree(res.out_dir)
        print(f"  images identical: bare uint8 == synthreg's stored PNGs for all {n} samples")

        with Timer() as t:
            res = generate(default_recipe, ws, out="runs/default", params=default_params)
        default_t, default_n = t.result, res.images
        print(f"  load average after (1/5/15 min): {load()}\n")

    def med(values: list[tuple[float, ...]], k: int) -> float:
        return statistics.median(v[k] for v in values)

    bare_wall, synth_wall = med(bare_t, 0), med(synth_t, 0)
    ratio, cpu_ratio = synth_wall / bare_wall, med(synth_t, 1) / med(bare_t, 1)

    widths = [36, 9, 9, 9]
    print(fmt_row(["benchmark (median)", "wall s", "CPU s", "images/s"], widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for name, times, count in (
        (f"bare diffusers loop ({n})", bare_t, n),
        (f"synthreg generate() ({n})", synth_t, n),
    ):
        wall = med(times, 0)
        print(fmt_row([name, f"{wall:.2f}", f"{med(times, 1):.2f}", f"{count / wall:.1f}"], widths))
    breakdown_rows = (
        "  synthreg: sampling (backend)",
        "  synthreg: rest (PNG, hashes, records, I/O)",
    )
    for k, name in enumerate(breakdown_rows):
        print(fmt_row([name, f"{med(parts, k):.2f}", "", ""], widths))
    wall, cpu = default_t
    name = f"default recipe generate() ({default_n})"
    print(fmt_row([name, f"{wall:.2f}", f"{cpu:.2f}", f"{default_n / wall:.1f}"], widths))

    def series(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    print(f"\nper repeat, bare wall s:     {series([w for w, _ in bare_t])}")
    print(f"per repeat, synthreg wall s: {series([w for w, _ in synth_t])}")
    print(f"per repeat, ratio:         {series([s[0] / b[0] for s, b in zip(synth_t, bare_t, strict=True)])}")
    print(f"ratio of median CPU times: {cpu_ratio:.3f} (less sensitive to other processes than wall time)\n")
    verdict = "within" if ratio <= TARGET_RATIO else "ABOVE"
    print(
        f"SUMMARY: synthreg/bare = {ratio:.3f} wall ({verdict} target {TARGET_RATIO}), {cpu_ratio:.3f} CPU; "
        f"bare {n / bare_wall:.1f} img/s, synthreg {n / synth_wall:.1f} img/s; "
        f"default recipe {default_n / default_t[0]:.1f} img/s"
    )


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def bench_floor(images: int, repeats: int) -> None:
    """Part 3: generate() with the load-test backend against floor_generate.py's bare loop."""
    params = GenerateParams(batch_size=1000, shard_size=1000, threads=1)
    print(f"\nload test against the floor: {images} images, batch and shard 1000, {repeats} repeat(s)")
    with tempfile.TemporaryDirectory(prefix="synthreg-bench-floor-") as tmp:
        top = Path(tmp).resolve()
        ws, recipe = make_load_test_workspace(top, images)
        inputs = floor_inputs(recipe, ws)  # the floor's inputs, read before any clock starts
        # Untimed warm-up of both at 100 images, so neither pays for first imports and caches.
        warm_ws, warm_recipe = make_load_test_workspace(top / "warm", 100)
        run_floor(floor_inputs(warm_recipe, warm_ws), top / "warm" / "floor")
        generate(warm_recipe, warm_ws, out="runs/warm", params=params)
        print(f"  before: {uptime()}", flush=True)
        floor_t: list[float] = []
        synth_t: list[float] = []
        for i in range(repeats):
            start = time.perf_counter()
            run_floor(inputs, top / f"floor-{i}")
            floor_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            res = generate(recipe, ws, out=f"runs/synthreg-{i}", params=params)
            synth_t.append(time.perf_counter() - start)
            assert res.generated == images, f"synthreg generated {res.generated} of {images} images"
            print(f"  repeat {i + 1}: floor {floor_t[-1]:7.2f} s  synthreg {synth_t[-1]:7.2f} s", flush=True)
            ours = sorted((top / f"floor-{i}").glob("shard-*.tar"))
            theirs = sorted((res.out_dir / "shards").glob("shard-*.tar"))
            assert [p.name for p in ours] == [p.name for p in theirs], (
                "the floor and synthreg shard differently"
            )
            for a, b in zip(ours, theirs, strict=True):  # untimed: the same bytes, so the same work
                assert a.read_bytes() == b.read_bytes(), (
                    f"{a.name}: the floor's shard differs from synthreg's"
                )
            shutil.rmtree(top / f"floor-{i}")
            shutil.rmtree(res.out_dir)
        print(f"  shards identical: the floor's {len(ours)} tars are synthreg's byte for byte")
        print(f"  after:  {uptime()}\n")
    floor_wall, synth_wall = statistics.median(floor_t), statistics.median(synth_t)
    ratio = synth_wall / floor_wall
    verdict = "within" if ratio <= FLOOR_TARGET else "ABOVE"
    print(
        f"SUMMARY load test: synthreg/floor = {ratio:.2f} ({verdict} target {FLOOR_TARGET}); "
        f"floor {floor_wall:.2f} s ({images / floor_wall:.0f} img/s), "
        f"synthreg {synth_wall:.2f} s ({images / synth_wall:.0f} img/s), "
        f"{images} images, median of {repeats}"
    )


if __name__ == "__main__":
    main()
