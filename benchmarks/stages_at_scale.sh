#!/usr/bin/env bash
# Each stage after generate at one size, each under memory_timeline.py (sampled every 0.05 s, with the
# kernel's peak beside): how a stage's time and memory grow from 1M to 10M images (issue 22,
# benchmarks/README.md, "The same stages sampled every 0.05 s").
#
#     N=1000000 bash benchmarks/stages_at_scale.sh TOP     # TOP: a new folder (10M: about 39 GB)
#
# It builds a lean workspace in TOP/ws (bench_e2e.workspace, then build_direct.py: candidates made with
# generate's own code, no generate run), then runs filter, validate, release (--no-push), verify,
# derive (every other row of the first 2% of shards, at least one: 1% at scale; --no-push) and verify of the derived
# version, each writing TOP/<stage>.log; a line a stage here, its log's last. The candidates' shards
# are deleted after the release (the released copies are what the rest reads), so a release cannot
# run again in TOP. PYTHON: the interpreter with synthreg's dependencies (default: the repo's .venv).
set -u
TOP=${1:?usage: N=IMAGES bash benchmarks/stages_at_scale.sh NEW_FOLDER}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
N=${N:-1000000}
if ! [[ $N =~ ^[1-9][0-9]*$ ]]; then
  echo "N must be a whole number of images, such as 1000000, not '$N'" >&2
  exit 2
fi
if [ -e "$TOP" ]; then
  echo "$TOP exists; name a new folder" >&2
  exit 2
fi
TOP=$(mkdir -p "$TOP" && cd "$TOP" && pwd)
export PYTHONPATH=$ROOT SYNTHREG_TRUST=$TOP/trust.yaml
"$PY" - "$TOP" "$N" "$ROOT" <<'PYEOF' || exit 1
import subprocess, sys, time
from pathlib import Path
top, n, root = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
sys.path.insert(0, str(root / "benchmarks"))
import bench_e2e
ws = bench_e2e.workspace(top, n, True)
started = time.perf_counter()
subprocess.run([sys.executable, str(root / "benchmarks" / "build_direct.py"), str(ws)], check=True)
print(f"built {n} images in {time.perf_counter() - started:.1f} s", flush=True)
PYEOF
cd "$TOP/ws" || exit 1
stage() {
  local name=$1
  shift
  "$PY" "$ROOT/benchmarks/memory_timeline.py" --every 0.05 -- "$PY" -m registry.cli "$@" > "$TOP/$name.log" 2>&1
  local rc=$?
  echo "$name: $(tail -1 "$TOP/$name.log")"
  [ $rc -eq 0 ] || exit $rc
}
stage filter filter data/load-test/candidates
stage validate validate data/load-test/filtered
git add -f data/load-test/filtered/manifest.parquet && git add -A && git commit -qm validated
stage release release load-test --version 1.0.0 --key "$TOP/key.pem" --no-push
rm -rf data/load-test/candidates/shards
stage verify verify load-test@1.0.0
"$PY" - "$TOP/exclude.txt" <<'PYEOF' || exit 1
import sys
import duckdb
m = "data/load-test/filtered/manifest.parquet"
q = f"""SELECT sample_id FROM (SELECT sample_id, dense_rank() OVER (ORDER BY shard) AS k,
  row_number() OVER (PARTITION BY shard ORDER BY sample_id) AS r FROM '{m}')
  WHERE k <= greatest(1, (SELECT count(DISTINCT shard) FROM '{m}') // 50) AND r % 2 = 0"""
with open(sys.argv[1], "w") as out:
    out.writelines(r[0] + "\n" for r in duckdb.sql(q).fetchall())
PYEOF
stage derive derive load-test@1.0.0 --version 1.0.1 --reason "load test: drop 1%" \
  --exclude-samples "$TOP/exclude.txt" --key "$TOP/key.pem" --no-push
stage verify-derived verify load-test@1.0.1
