"""Time lineage on a 1,000,000-sample release: trace a registered model back to its generators, seeds and
sources, and find everything a generator reached (impact), with 1,000 MLflow runs in the store.

    python benchmarks/bench_lineage.py [--rows 1000000] [--runs 1000] [--working 100] [--repeats 3]

Target (issues 5 and 11): `trace_model` and `impact(generator=...)` each under 1 s (median of warm runs),
with `--runs` runs in the store of which `--working` trained on an unreleased working manifest.
The manifests are built column-wise with pyarrow by bench_validate's builder (not timed): the release's
(`--rows`) and a working one (`data/digits/filtered/manifest.parquet`, half as many rows, so another
content digest). A release.json is written by hand (real `Release` record, no signature). The runs log
their input by the registry.downstream.tracking conventions (a working run with the profile
`registry.downstream.track`
writes: sha256 and DVC md5); every tenth run registers a model version (`bench-model` for runs on the
release, `bench-working` for runs on the working manifest). All in a SQLite store in a temporary
workspace that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_validate import build_manifest  # noqa: E402

from registry.core.digests import sha256_file  # noqa: E402
from registry.downstream import tracking  # noqa: E402
from registry.records.dataset import IntendedUse, SourceRef  # noqa: E402
from registry.records.release import Counts, GeneratorUse, Release  # noqa: E402
from registry.store import manifest as mf  # noqa: E402

WEIGHTS = "a" * 64  # what build_manifest writes for every row
WORKING_MANIFEST = "data/digits/filtered/manifest.parquet"


def write_release(ws: Path, rows: int) -> Release:
    folder = ws / "releases" / "digits" / "1.0.0"
    manifest = folder / "data" / "manifest.parquet"
    build_manifest(rows, manifest)
    con = mf.connect(manifest)
    (total, accepted), *_ = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE decision = 'accepted') FROM manifest"
    ).fetchall()
    per_identity: dict[str, dict[str, int]] = {}
    for identity, decision, n in con.execute(
        "SELECT identity, decision, count(*) FROM manifest GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        per_identity.setdefault(identity, {})[decision] = n
    record = Release(
        name="digits",
        version="1.0.0",
        manifest_sha256=sha256_file(manifest),
        shards=[],
        counts=Counts(
            total=total,
            accepted=accepted,
            rejected=total - accepted,
            per_identity=per_identity,
            reasons={"ok": accepted},
        ),
        generators=[
            GeneratorUse(
                name="tiny-digits",
                backend="tiny-digits",
                weights_digest=WEIGHTS,
                licence="CC-BY-4.0",
                pipeline_class="TinyDigits",
                scheduler="DDIMScheduler",
                images=total,
            )
        ],
        sources=[
            SourceRef(name="sklearn-digits", licence="CC-BY-4.0", role="filtering"),
            SourceRef(name="sklearn-digits", licence="CC-BY-4.0", role="generator-training"),
        ],
        prompt_templates=["a handwritten digit {identity} with a {stroke} stroke"],
        seed=20240607,
        policy_report_sha256="0" * 64,
        policy_passed=True,
        policy_results={},
        intended_use=IntendedUse(commercial=False, purposes=["research"]),
        dataset_licence="CC-BY-4.0",
        git_commit="0" * 40,
        created_at=datetime.now(UTC),
        actor="bench",
    )
    (folder / "release.json").write_text(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
    return record


def log_runs(ws: Path, record: Release, runs: int, working: int) -> tuple[str, str]:
    """``runs`` runs, the last ``working`` of them on the working manifest; every tenth registers a model
    version. -> (first run on the release, first run on the working manifest)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from registry.downstream.track import describe

    c = tracking.client(ws)
    exp = c.create_experiment("bench", artifact_location=(ws / "artifacts").as_uri())
    name = f"{record.name}@{record.version}"
    source = tracking.dataset_source(record.name, record.version, record.git_commit)
    # MLflow keeps at most 36 characters of a dataset digest; the full sha256 is in the tag.
    released = Dataset(name=name, digest=record.manifest_sha256[:36], source_type="synthreg", source=source)
    profile = describe(ws, "digits", "working", ws / WORKING_MANIFEST)
    work = Dataset(
        name="digits@working",
        digest=profile.manifest_sha256[:36],
        source_type="synthreg",
        source=tracking.dataset_source("digits", "working", "0" * 40),
        profile=profile.model_dump_json(),
    )
    c.create_registered_model("bench-model")
    c.create_registered_model("bench-working")
    first: dict[bool, str] = {}
    for i in range(runs):
        on_working = i >= runs - working
        ds, tags = (
            (work, {tracking.TAG_DATASET: work.name, tracking.TAG_MANIFEST: profile.manifest_sha256})
            if on_working
            else (released, {tracking.TAG_DATASET: name, tracking.TAG_MANIFEST: record.manifest_sha256})
        )
        run = c.create_run(exp, tags=tags)
        c.log_inputs(run.info.run_id, [DatasetInput(ds, [InputTag("mlflow.data.context", "training")])])
        c.set_terminated(run.info.run_id)
        first.setdefault(on_working, run.info.run_id)
        if i % 10 == 0 or run.info.run_id == first[on_working]:
            model = "bench-working" if on_working else "bench-model"
            c.create_model_version(model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    return first[False], first.get(True, "")


def image_or_none(ws: Path, image: Path) -> Any:
    """trace_image of an image no version holds: both scans run (sha256, then phash distance)."""
    from registry.core.errors import ReleaseError
    from registry.lineage.image import trace_image

    try:
        return trace_image(ws, image)
    except ReleaseError as e:
        return {"error": str(e)}


def describe_image(out: Any) -> str:
    """An ImageTrace, or {"error": ...} when no version holds the image."""
    if isinstance(out, dict):
        return "in no version (exact and perceptual scans)"
    return f"{len(out.images)} image(s)"


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, list[float], Any]:
    t = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - t)
    return cold, statistics.median(warm), warm, out


def setup(ws: Path, rows: int, runs: int, working: int) -> None:
    """Build the release and the MLflow store (run in a child process, so the timed process starts cold)."""
    t = time.perf_counter()
    record = write_release(ws, rows)
    build_manifest(rows // 2, ws / WORKING_MANIFEST)
    manifest = ws / "releases/digits/1.0.0/data/manifest.parquet"
    print(
        f"built a {rows:,}-sample release and a {rows // 2:,}-sample working manifest in "
        f"{time.perf_counter() - t:.1f} s (release manifest {manifest.stat().st_size / 1e6:.1f} MB)"
    )
    t = time.perf_counter()
    run_id, working_id = log_runs(ws, record, runs, working)
    print(
        f"MLflow store: {runs} runs ({working} on the working manifest), a model version every tenth run, "
        f"in {time.perf_counter() - t:.1f} s (not timed)"
    )
    print(f"{run_id} {working_id}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--working", type=int, default=100, help="of the runs, how many on the working manifest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--setup", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.setup:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.setup}/mlflow.db"
        setup(args.setup, args.rows, args.runs, args.working)
        return
    ws = Path(tempfile.mkdtemp(prefix="synthreg-bench-lineage-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{ws}/mlflow.db"
    try:
        setup_args = ["--rows", str(args.rows), "--runs", str(args.runs), "--working", str(args.working)]
        proc = subprocess.run(
            [sys.executable, __file__, "--setup", str(ws), *setup_args],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            sys.exit(f"setup failed:\n{proc.stderr}")
        *lines, ids = proc.stdout.strip().splitlines()
        run_id, working_id = ids.split()
        models = sum(1 for i in range(args.runs) if i % 10 == 0) + (
            1 if args.working and (args.runs - args.working) % 10 else 0
        )
        print("\n".join(lines))

        from registry.lineage.impact import impact
        from registry.lineage.trace import trace_model
        from registry.records.lineage import Impact, RunTrace

        def check_trace(out: RunTrace) -> str:
            d = out.datasets[0]
            assert d.digest_matches and d.samples.count == args.rows, d.samples
            assert d.generators[0].weights_digest == WEIGHTS
            s = d.samples
            return f"{s.count:,} samples, seeds {s.seed_min}..{s.seed_max}"

        def check_working(out: RunTrace) -> str:
            d = out.datasets[0]
            assert d.unreleased and d.resolved and d.samples.count == args.rows // 2, d
            return f"UNRELEASED, found in {d.resolved_from}, {d.samples.count:,} samples"

        def check_impact(out: Impact) -> str:
            c = out.counts
            want = (args.rows + args.rows // 2, args.runs, models, 0)
            assert (c.samples, c.runs, c.model_versions, c.unresolved_runs) == want, c
            n = c.model_versions
            return f"{c.versions} versions, {c.samples:,} samples, {c.runs} runs, {n} model versions"

        image = ws / "probe.png"
        import numpy as np

        from generators.shard import encode_png

        noise = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
        image.write_bytes(encode_png(noise))
        cases: list[tuple[str, Callable[[], Any], Callable[[Any], str] | None]] = [
            ("trace_model('bench-model/1')", lambda: trace_model(ws, "bench-model/1"), check_trace),
            (
                "trace_model('bench-working/latest')",
                lambda: trace_model(ws, "bench-working/1"),
                check_working,
            ),
            ("impact(generator='tiny-digits')", lambda: impact(ws, generator="tiny-digits"), check_impact),
            ("impact(generator=digest prefix)", lambda: impact(ws, generator=WEIGHTS[:12]), check_impact),
            ("impact(prompt=r'digit 7 .* thin')", lambda: impact(ws, prompt=r"digit 7 .* thin"), None),
            ("impact(sample='digits-123456')", lambda: impact(ws, sample="digits-123456"), None),
            ("impact(source='sklearn-digits')", lambda: impact(ws, source="sklearn-digits"), None),
            ("trace_image(unknown image)", lambda: image_or_none(ws, image), describe_image),
        ]
        print("\nin one process; the first call of the first row also imports MLflow and opens the store")
        print(f"{'call':36} {'first s':>7} {'warm median s':>14}   warm runs")
        for label, fn, check in cases:
            cold, median, warm, out = timed(fn, args.repeats)
            what = check(out) if check else f"{out.counts.samples:,} samples"
            runs = ", ".join(f"{w:.3f}" for w in warm)
            print(f"{label:36} {cold:7.3f} {median:14.3f}   [{runs}]  {what}")
        print(
            f"\nfresh process, end to end (Python start, imports, query, output), median of {args.repeats}:"
        )
        for cli in (
            ["trace", "model", "bench-model/1"],
            ["trace", "run", run_id],
            ["trace", "model", "bench-working/latest"],
            ["trace", "run", working_id],
            ["impact", "--generator", "tiny-digits"],
        ):
            walls = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "registry.cli", *cli, "--json", "-w", str(ws)],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                )
                walls.append(time.perf_counter() - t)
                assert proc.returncode == 0, proc.stderr
            label = "synthreg " + " ".join(c if len(c) < 20 else c[:8] + "..." for c in cli)
            print(f"  {label:44} {statistics.median(walls):6.2f} s")
    finally:
        shutil.rmtree(ws)


if __name__ == "__main__":
    main()
