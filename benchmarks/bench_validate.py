"""Validate every default pack on a 1,000,000-row manifest; compare it with the same provenance checks
written in plain DuckDB, timed in the same run.

    python benchmarks/bench_validate.py [--rows 1000000]

Target (issue 22): validate within 3x the DuckDB-only checks, and under 5 s on a quiet machine. The
manifest is built column-wise with pyarrow (10 identities, thin/bold strokes, 20 distinct prompts, filter
scores filled), so building it is not part of the figure. Importing Great Expectations is timed apart (a
fresh `synthreg validate` pays it once); the load average is printed, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policies.checks import provenance  # noqa: E402
from policies.engine import validate  # noqa: E402
from registry.core.names import SQL_PROBLEM  # noqa: E402
from registry.store import manifest as mf  # noqa: E402


def _map(keys: list[str], values: np.ndarray) -> pa.MapArray:
    n = len(values)
    offsets = pa.array(np.arange(0, n + 1, dtype=np.int32))
    return pa.MapArray.from_arrays(offsets, pa.array(np.repeat(keys, n)), pa.array(values))


def build_manifest(n: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    idx = np.arange(n)
    identity = (idx % 10).astype(str)
    stroke = np.where((idx // 10) % 2 == 0, "thin", "bold")
    observed = np.where(rng.random(n) < 0.5, "thin", "bold")
    hexes = np.array([hashlib.sha256(str(i).encode()).hexdigest() for i in range(min(n, 1000))])
    digests = hexes[idx % len(hexes)]
    prompt = np.char.add(np.char.add("a handwritten digit ", identity), np.char.add(" with a ", stroke))
    cols = {
        "dataset": pa.array(np.repeat("digits", n)),
        "sample_id": pa.array(np.char.add("digits-", idx.astype(str))),
        "index": pa.array(idx),
        "identity": pa.array(identity),
        "attributes": _map(["stroke"], stroke),
        "prompt": pa.array(prompt),
        "negative_prompt": pa.array(np.repeat("", n)),
        "seed": pa.array(rng.integers(0, 2**60, n)),
        "steps": pa.array(np.full(n, 20)),
        "guidance": pa.array(np.full(n, 2.0)),
        "width": pa.array(np.full(n, 16)),
        "height": pa.array(np.full(n, 16)),
        "generator_name": pa.array(np.repeat("tiny-digits", n)),
        "generator_backend": pa.array(np.repeat("tiny-digits", n)),
        "generator_source": pa.array(np.repeat("generators/tiny_digits/model", n)),
        "weights_digest": pa.array(np.repeat("a" * 64, n)),
        "generator_licence": pa.array(np.repeat("CC-BY-4.0", n)),
        "pipeline_class": pa.array(np.repeat("TinyDigits", n)),
        "scheduler": pa.array(np.repeat("DDIMScheduler", n)),
        "scheduler_config_digest": pa.array(np.repeat("b" * 64, n)),
        "image_sha256": pa.array(digests),
        "phash": pa.array(np.char.ljust(np.char.mod("%x", idx), 16, "0")),
        "shard": pa.array(np.char.add("data/digits/candidates/shards/shard-", (idx // 1000).astype(str))),
        "member": pa.array(np.char.add(np.char.add("digits-", idx.astype(str)), ".png")),
        "batch": pa.array(idx // 128),
        "batch_size": pa.array(np.full(n, 128)),
        "library_versions": _map(["torch"], np.repeat("2.13.0", n)),
        "device": pa.array(np.repeat("cpu", n)),
        "identity_pred": pa.array(identity),
        "identity_confidence": pa.array(np.full(n, 0.99)),
        "contrast": pa.array(np.full(n, 0.4)),
        "nn_distance": pa.array(np.full(n, 0.2)),
        "duplicate_of": pa.nulls(n, pa.string()),
        "observed_attributes": _map(["stroke"], observed),
        "decision": pa.array(np.repeat("accepted", n)),
        "reason": pa.array(np.repeat("ok: passed every check", n)),
    }
    mf.write_table(pa.table(cols).cast(mf.SCHEMA), path)


DUCKDB_CHECKS = """
SELECT
  count(*) FILTER (WHERE sample_id IS NULL) + count(*) FILTER (WHERE weights_digest IS NULL)
  + count(*) FILTER (WHERE image_sha256 IS NULL) + count(*) FILTER (WHERE seed IS NULL)
  + count(*) FILTER (WHERE prompt IS NULL) + count(*) FILTER (WHERE generator_licence IS NULL)
  + count(*) FILTER (WHERE generator_name IS NULL) + count(*) FILTER (WHERE scheduler IS NULL)
  + count(*) FILTER (WHERE shard IS NULL) + count(*) FILTER (WHERE member IS NULL) AS nulls,
  count(*) - count(DISTINCT sample_id) AS duplicate_ids,
  count(*) FILTER (WHERE NOT regexp_full_match(weights_digest, '[0-9a-f]{64}')) AS bad_weights,
  count(*) FILTER (WHERE NOT regexp_full_match(image_sha256, '[0-9a-f]{64}')) AS bad_images,
  count(*) FILTER (WHERE NOT regexp_full_match(phash, '[0-9a-f]{16}')) AS bad_phash,
  count(*) FILTER (WHERE seed < 0) AS bad_seed,
  count(*) FILTER (WHERE steps NOT BETWEEN 1 AND 1000) AS bad_steps,
  count(*) FILTER (WHERE guidance NOT BETWEEN 0 AND 100) AS bad_guidance,
  count(*) FILTER (WHERE width NOT BETWEEN 1 AND 4096 OR height NOT BETWEEN 1 AND 4096) AS bad_size,
  count(*) FILTER (WHERE ({SQL_PROBLEM}) IS NOT NULL) AS bad_names
FROM manifest
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    ws = Path(tempfile.mkdtemp(prefix="synthreg-bench-validate-"))
    try:
        recipe = yaml.safe_load((REPO / "recipes/digits.yaml").read_text())
        (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        (ws / "policies").mkdir()
        shutil.copy(REPO / "policies/withdrawn.yaml", ws / "policies/withdrawn.yaml")
        manifest = ws / "data/digits/filtered/manifest.parquet"
        t = time.perf_counter()
        build_manifest(args.rows, manifest)
        print(
            f"built a {args.rows:,}-row manifest in {time.perf_counter() - t:.1f} s "
            f"({manifest.stat().st_size / 1e6:.1f} MB)"
        )

        load_before = os.getloadavg()
        t = time.perf_counter()
        import great_expectations  # noqa: F401  (what a fresh process pays once, timed apart)

        gx_import = time.perf_counter() - t
        t = time.perf_counter()
        report = validate("data/digits/filtered", ws, "recipe.yaml")
        total = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB, building included
        statuses = {s: sum(r.status == s for r in report.results) for s in ("pass", "fail", "warn", "waived")}

        con = mf.connect(manifest)
        t = time.perf_counter()
        result = provenance.run_suite(con)
        gx_seconds = time.perf_counter() - t
        t = time.perf_counter()
        duck = con.execute(DUCKDB_CHECKS.replace("{SQL_PROBLEM}", SQL_PROBLEM)).fetchone()
        duck_seconds = time.perf_counter() - t
        load_after = os.getloadavg()
        assert result["success"], [r["expectation_config"] for r in result["results"] if not r["success"]]
        assert not any(duck), duck

        n_exp = len(result["results"])
        print(
            f"\nload average (1, 5, 15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
            f"after {', '.join(f'{x:.2f}' for x in load_after)} ({os.cpu_count()} CPUs)"
        )
        print(f"import great_expectations                {gx_import:6.2f} s  (once per process)")
        print(
            f"validate, all default packs ({len(report.results)} rules)  {total:6.2f} s  "
            f"(target < 5 s quiet) -> {statuses}; peak RSS so far {peak:.0f} MB"
        )
        print(f"  provenance suite alone, GX in DuckDB   {gx_seconds:6.2f} s  ({n_exp} expectations)")
        print(f"  same checks in plain DuckDB            {duck_seconds:6.2f} s")
        print(
            f"validate / DuckDB-only = {total / duck_seconds:.1f}x (target <= 3x); with the import "
            f"{(total + gx_import) / duck_seconds:.1f}x; provenance suite / DuckDB-only = "
            f"{gx_seconds / duck_seconds:.1f}x"
        )
    finally:
        shutil.rmtree(ws)


if __name__ == "__main__":
    main()
