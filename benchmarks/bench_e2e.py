"""End to end at scale: every stage of a synthetic-pattern dataset of N images, as separate processes.

Run from the repository root::

    python benchmarks/bench_e2e.py --images 10000 [--images 100000 ...] [--keep]
    python benchmarks/bench_e2e.py --direct --images 10000000      # the stages after generate

For each N, a fresh git + DVC workspace under the system temp folder gets the load-test recipe
(recipes/load-test.yaml: 100 identities x 4 attribute combinations, N/100 images each) and a local DVC
remote, then runs, each as its own process (``synthreg ...`` or a floor command):

    generate, filter, validate, release (signed, pushed to the remote by its push step), verify,
    derive (1% of the samples left out; pushed too), synthreg pull of the derived release into a
    fresh git clone and verify there, trace image, impact --generator
    floors: the bare generate loop (floor_generate.py), the same checks as validate in plain DuckDB,
    sha256sum, dvc add and dvc push of the first release's shards (images and sidecars), and dvc pull
    of them into a fresh clone followed by sha256sum there

and prints per stage: wall seconds, peak RSS of the process (``ru_maxrss`` from ``wait4``: the largest
one process of the stage's tree, its waited-for children included, not this script), the peak of
the whole tree sampled every 0.25 s (the proportional set size of each process summed, so a worker
process counts beside the main one and the pages they share count once) and files written (files under the
workspace and the remote whose mtime is newer than the stage's start). With more than one size, it
prints how each stage and floor grows from one size to the next: time and the largest process's memory,
each as a ratio, so that a stage's growth reads beside its floors'. It then prints each of issue
22's targets as a ratio against its floor, measured in the same run. The signer's key and trust root,
and the signed waivers of the rules a pattern set cannot meet, are made before the first stage (not
timed). Figures are printed, never asserted.

With ``--cold`` (Linux, root), the page cache is dropped before every stage and floor, so each reads
its inputs from the disk; without it, a command finds in memory whatever the commands before it left
there, which favours the floors that read what was just written (``dvc pull`` from the remote ``dvc
push`` has just filled, say).

With ``--direct``, ``benchmarks/build_direct.py`` writes the candidates instead of ``synthreg generate``:
the same bytes, made by a process a core (tests/generators/test_build_direct.py holds them equal).
That build is shown but is not a stage, and generate and its floor are not run.

With ``--lean`` (for 10,000,000 images, where a released image takes about 3.5 KB and every copy of
the release 35 GB), the run keeps one copy of the released bytes: the workspace's DVC cache links
(``cache.type hardlink``), there is no remote (release and derive are ``--no-push``, and pull is not
run: the derived version is verified in the workspace instead), the candidates' shards are removed
once the first release is verified, derive leaves out 1% of the samples
from 2% of the shards (every other sample of each; the rest it links, not copies), and the floors'
own workspace links the release's shards rather than copying them, so its floors are ``sha256sum``
and ``dvc add`` only.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYNTHREG, DVC = str(BIN / "synthreg"), str(BIN / "dvc")
NAME = "load-test"
# Rules a pattern set cannot meet (no domain, so identity consistency is not measured); waived in the
# benchmark workspace, as a real load test would. The bias rules waived here before issue 19 are no
# longer in the default pack (they moved to the digits pack), and `waive` refuses a rule no pack has.
WAIVED = ["quality.identity-consistency"]


DROP = Path("/proc/sys/vm/drop_caches")
COLD = False  # --cold: every stage and floor starts with nothing of its files in the page cache


def drop_caches() -> None:
    """Write dirty pages out, then drop the page cache (Linux, root), so that the command timed next
    reads its inputs from the disk: otherwise a floor that reads what the stage before it wrote finds it
    in memory while the stage it is compared with did not (at 1,000,000 images the release's 3.4 GB of
    shards fit in this machine's page cache; at 10,000,000 they do not)."""
    os.sync()
    try:
        DROP.write_text("3\n")
    except OSError as e:
        raise SystemExit(
            f"--cold: cannot drop the page cache ({e}); run as root on Linux, or without --cold"
        ) from e


def tree_rollup(pid: int, *fields: str) -> dict[int, dict[str, float]]:
    """Lines ``fields`` of ``smaps_rollup`` (``Pss``, ``Pss_Anon``, ...), in MB, of ``pid`` and of every
    process under it, by process id, ``pid`` first (Linux; empty elsewhere). ``Pss``, the proportional
    set size: a page its processes share (a forked worker's imports) counts once in their sum.
    ``Pss_Anon``: the same of the processes' own memory (their heaps), without the pages of files
    they map (libraries, a file read through a map), which other processes share and the kernel can
    drop."""
    parts: dict[int, dict[str, float]] = {}
    stack = [pid]
    keys = {f"{f}:": f for f in fields}
    while stack:
        p = stack.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack += [int(c) for c in f.read().split()]
            with open(f"/proc/{p}/smaps_rollup") as f:
                found = {keys[x.split()[0]]: int(x.split()[1]) / 1024 for x in f if x.split()[0] in keys}
            parts[p] = {f: found.get(f, 0.0) for f in fields}
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not Linux
            continue
    return parts


def tree_pss(pid: int) -> dict[int, float]:
    """``tree_rollup``'s ``Pss`` of each process: what the tree holds, a shared page counted once."""
    return {p: v["Pss"] for p, v in tree_rollup(pid, "Pss").items()}


def _tree_pss_mb(pid: int) -> float:
    """What ``pid``'s whole tree holds together, in MB (``tree_pss`` summed)."""
    return sum(tree_pss(pid).values())


class TreeSampler(threading.Thread):
    """The largest ``_tree_pss_mb`` of a process seen every ``every`` seconds until ``stop``: a sample,
    so a peak shorter than ``every`` can be missed (``ru_maxrss`` is exact, but of one process)."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, _tree_pss_mb(self.pid))
            self.done.wait(self.every)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


def run(cwd: Path, label: str, cmd: list[str], roots: list[Path], rows: list, env: dict | None = None) -> str:
    """Run ``cmd`` as its own process; record wall time, peak RSS (its largest process), the sampled
    peak of its whole tree (``TreeSampler``) and files written under ``roots``. With ``COLD``, the page
    cache is dropped first (not timed)."""
    if COLD:
        drop_caches()
    start = time.time()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            tree = sampler.stop()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        text = out.read().decode(errors="replace")
    code = proc.returncode
    if code != 0:
        raise SystemExit(f"{label} failed ({code}): {' '.join(cmd)}\n{text[-3000:]}")
    written = sum(
        1
        for root in roots
        for dirpath, _, files in os.walk(root)
        if "/.git" not in dirpath
        for f in files
        if os.lstat(os.path.join(dirpath, f)).st_mtime >= start - 1
    )
    rows.append((label, wall, usage.ru_maxrss / 1024, written, tree))
    print(
        f"    {label:28} {wall:9.1f} s {usage.ru_maxrss / 1024:9.0f} MB {tree:9.0f} MB tree "
        f"{written:9d} files",
        flush=True,
    )
    return text


def sh(cwd: Path, *cmd: str) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def workspace(top: Path, images: int, lean: bool) -> Path:
    ws = top / "ws"
    ws.mkdir()
    sh(ws, "git", "init", "-q")
    for k, v in {"user.name": "Bench", "user.email": "bench@example.org", "commit.gpgsign": "false"}.items():
        sh(ws, "git", "config", k, v)
    sh(ws, "git", "config", "tag.gpgsign", "false")
    sh(ws, DVC, "init", "-q")
    sh(ws, DVC, "config", "core.analytics", "false")
    if lean:  # one copy of the released bytes: the cache links, and nothing is pushed
        sh(ws, DVC, "config", "cache.type", "hardlink")
    else:
        sh(ws, DVC, "remote", "add", "-d", "local", str(top / "remote"))
    for part in ("generators/synthetic_pattern", "policies/packs/default.yaml", "policies/licenses.yaml"):
        src, dst = REPO / part, ws / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    recipe = yaml.safe_load((REPO / "recipes/load-test.yaml").read_text())
    recipe["identities"] = [f"id{i:03d}" for i in range(100)]
    recipe["images_per_identity"] = images // 100
    (ws / "recipes").mkdir()
    (ws / "recipes/load-test.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    entry = params["datasets"].pop("digits")  # the load test's own entry, with the generic pack only
    entry.update(recipe="recipes/load-test.yaml", generator=recipe["generator"]["path"])
    entry["validate"]["packs"] = ["policies/packs/default.yaml"]
    entry["train"]["dataset"] = f"{NAME}@working"
    params["datasets"] = {NAME: entry}
    params["generate"].update(batch_size=1000, shard_size=1000, threads=1)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    waivers = [
        {
            "rule_id": r,
            "scope": NAME,
            "reason": "load test: patterns, not data",
            "expires": "2099-12-31",
        }
        for r in WAIVED
    ]
    (ws / ".gitignore").write_text("/data\n/mlflow.db\n")
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "load test")
    # A solo signer from a trust root outside the workspace ($SYNTHREG_TRUST, set in main); it signs
    # the waivers the validate stage counts (waivers are signed records), the release and the derive.
    key = str(top / "key.pem")
    sh(ws, SYNTHREG, "keygen", "--key", key, "--name", "Bench")
    for w in waivers:
        sh(
            ws,
            SYNTHREG,
            "waive",
            w["rule_id"],
            "--scope",
            NAME,
            "--reason",
            w["reason"],
            "--expires",
            w["expires"],
            "--key",
            key,
        )
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "signer and waivers")
    return ws


# The 1% derive leaves out: every hundredth sample of each identity, so every shard loses members; with
# --lean every other sample of the first 2% of the shards, so the other shards are linked, not copied.
SPREAD = "SELECT sample_id FROM '{m}' WHERE index % 100 = 7"
CONCENTRATED = """SELECT sample_id FROM (
    SELECT sample_id, dense_rank() OVER (ORDER BY shard) AS k,
           row_number() OVER (PARTITION BY shard ORDER BY sample_id) AS r FROM '{m}')
WHERE k <= greatest(1, (SELECT count(DISTINCT shard) FROM '{m}') // 50) AND r % 2 = 0"""


def bench(images: int, keep: bool, direct: bool, lean: bool = False) -> list:
    top = Path(tempfile.mkdtemp(prefix=f"bench-e2e-{images}-"))
    rows: list = []
    print(f"  {images} images in {top}", flush=True)
    os.environ["SYNTHREG_TRUST"] = str(top / "trust.yaml")  # pinned outside the workspace
    try:
        ws = workspace(top, images, lean)
        roots = [ws, top / "remote"]
        cand, filt = f"data/{NAME}/candidates", f"data/{NAME}/filtered"
        if direct:
            t = time.perf_counter()
            subprocess.run([sys.executable, str(REPO / "benchmarks/build_direct.py"), str(ws)], check=True)
            print(f"    {'(candidates built directly)':28} {time.perf_counter() - t:9.1f} s", flush=True)
        else:
            run(ws, "generate", [SYNTHREG, "generate"], roots, rows)
        run(ws, "filter", [SYNTHREG, "filter", cand], roots, rows)
        run(ws, "validate", [SYNTHREG, "validate", filt], roots, rows)
        # No dvc.yaml here: the filtered manifest is committed to git itself, which is how a release
        # names the exact manifest it was made from in a workspace without a `dvc repro` pipeline.
        sh(ws, "git", "add", "-f", f"{filt}/manifest.parquet")
        sh(ws, "git", "add", "-A")
        sh(ws, "git", "commit", "-q", "-m", "validated")
        key = ["--key", str(top / "key.pem"), *(["--no-push"] if lean else [])]
        run(ws, "release", [SYNTHREG, "release", NAME, "--version", "1.0.0", *key], roots, rows)
        run(ws, "verify", [SYNTHREG, "verify", f"{NAME}@1.0.0"], roots, rows)
        first = next((ws / cand / "shards").glob("*.tar"))  # an image for `trace image`
        member = sh(ws, "tar", "-tf", str(first)).split()[0]
        sh(ws, "tar", "-xf", str(first), "-C", str(top), member)
        if lean:  # nothing after the release reads the candidates; at 10M that is 15 GB back
            shutil.rmtree(ws / cand / "shards")
        query = (CONCENTRATED if lean else SPREAD).format(m=f"{filt}/manifest.parquet")
        code = (  # no progress bar: at 10M the query is slow enough for DuckDB to print one on stdout
            "import duckdb; con = duckdb.connect(); con.execute('SET enable_progress_bar = false'); "
            f"[print(r[0]) for r in con.sql({query!r}).fetchall()]"
        )
        ids = sh(ws, sys.executable, "-c", code)
        (top / "exclude.txt").write_text(ids)
        run(
            ws,
            "derive (exclude 1%)",
            [
                SYNTHREG,
                "derive",
                f"{NAME}@1.0.0",
                "--version",
                "1.0.1",
                "--reason",
                "load test: drop 1%",
                "--exclude-samples",
                str(top / "exclude.txt"),
                *key,
            ],
            roots,
            rows,
        )
        if lean:  # nothing was pushed: the derived version is verified where it was made
            run(ws, "verify (derived)", [SYNTHREG, "verify", f"{NAME}@1.0.1"], roots, rows)
        else:
            # release and derive pushed what they added (their push step, to the workspace's DVC
            # remote); a second person clones the repository and pulls the derived release from it.
            clone = top / "clone"
            sh(top, "git", "clone", "-q", str(ws), str(clone))
            pulled = [clone, top / "remote"]
            run(clone, "synthreg pull (fresh clone)", [SYNTHREG, "pull", f"{NAME}@1.0.1"], pulled, rows)
            run(clone, "verify after pull", [SYNTHREG, "verify", f"{NAME}@1.0.1"], pulled, rows)
            shutil.rmtree(clone)  # its bytes are the release's again; at 10M the disk wants them back
        run(ws, "trace image", [SYNTHREG, "trace", "image", str(top / member)], roots, rows)
        run(ws, "impact --generator", [SYNTHREG, "impact", "--generator", "synthetic-pattern"], roots, rows)
        floors(top, ws, images, direct, lean, rows)
    finally:
        if not keep:
            shutil.rmtree(top, ignore_errors=True)
    return rows


# The same checks as the provenance suite of validate, in one DuckDB query (bench_validate.py's).
DUCKDB_FLOOR = """
import sys, duckdb
sys.path.insert(0, {bench!r})
from bench_validate import DUCKDB_CHECKS
from registry.core.names import SQL_PROBLEM
con = duckdb.connect()
con.execute("CREATE VIEW manifest AS SELECT * FROM read_parquet({manifest!r})")
assert not any(con.execute(DUCKDB_CHECKS.replace("{{SQL_PROBLEM}}", SQL_PROBLEM)).fetchone())
"""


def floors(top: Path, ws: Path, images: int, direct: bool, lean: bool, rows: list) -> None:
    """The floor commands, over the same bytes as the stages: the filtered manifest, and the shards of
    the first release (images and their sidecars), which release writes and pushes and verify reads;
    derive writes, and a second person pulls, the same shards less 1% of the images."""
    released = ws / f"releases/{NAME}/1.0.0/data"
    manifest = ws / f"data/{NAME}/filtered/manifest.parquet"
    code = DUCKDB_FLOOR.format(bench=str(REPO / "benchmarks"), manifest=str(manifest))
    run(ws, "floor: DuckDB checks", [sys.executable, "-c", code], [], rows)
    if not direct:
        # The bare loop makes the same images in its own temporary workspace; its own clock starts
        # after it has read the plan, so that time (printed) is the floor, not the process's wall.
        out = run(
            ws,
            "floor: bare generate loop",
            [sys.executable, str(REPO / "benchmarks/floor_generate.py"), "--images", str(images)],
            [],
            rows,
        )
        clock = re.findall(r"^floor: \d+ images in ([0-9.]+) s", out, re.M)[-1]
        rows.append(("floor: bare generate loop (own clock)", float(clock), 0, 0))  # no tree: not a process
    shards = sorted(str(p) for p in (released / "shards").glob("*.tar"))
    run(ws, "floor: sha256sum release shards", ["sha256sum", *shards], [], rows)
    peer = top / "peer"
    peer.mkdir()
    sh(peer, "git", "init", "-q")
    for k, v in {"user.name": "Bench", "user.email": "bench@example.org", "commit.gpgsign": "false"}.items():
        sh(peer, "git", "config", k, v)
    sh(peer, DVC, "init", "-q")
    sh(peer, DVC, "config", "core.analytics", "false")
    if lean:  # the release's own bytes, linked: dvc add hashes them and links them into its cache
        sh(peer, DVC, "config", "cache.type", "hardlink")
        (peer / "shards").mkdir()
        for p in (released / "shards").glob("*.tar"):
            os.link(p, peer / "shards" / p.name)
        run(peer, "floor: dvc add shards", [DVC, "add", "-q", "shards"], [peer], rows)
        shutil.rmtree(peer)
        return
    sh(peer, DVC, "remote", "add", "-d", "local", str(top / "peer-remote"))
    shutil.copytree(released / "shards", peer / "shards")
    run(peer, "floor: dvc add shards", [DVC, "add", "-q", "shards"], [peer], rows)
    run(peer, "floor: dvc push shards", [DVC, "push", "-q"], [peer, top / "peer-remote"], rows)
    sh(peer, "git", "add", "-A")
    sh(peer, "git", "commit", "-q", "-m", "shards")
    clone = top / "peer-clone"
    sh(top, "git", "clone", "-q", str(peer), str(clone))
    shutil.rmtree(peer)
    run(clone, "floor: dvc pull (fresh clone)", [DVC, "pull", "-q"], [clone], rows)
    pulled = sorted(str(p) for p in (clone / "shards").glob("*.tar"))
    run(clone, "floor: sha256sum after pull", ["sha256sum", *pulled], [], rows)
    shutil.rmtree(clone)


# Issue 22's targets: (what, stages, floors, how the two compare, target). A floor marked "?" is left
# out of the sum when the run has none (--lean pushes nothing, so release and derive are not pushed).
TARGETS = [
    ("verify", ["verify"], ["floor: sha256sum release shards"], "throughput", 0.8),
    ("verify (derived)", ["verify (derived)"], ["floor: sha256sum release shards"], "throughput", 0.8),
    (
        "release (signed, pushed)",
        ["release"],
        ["floor: sha256sum release shards", "floor: dvc add shards", "?floor: dvc push shards"],
        "time",
        3.0,
    ),
    (
        "derive (exclude 1%)",
        ["derive (exclude 1%)"],
        ["floor: sha256sum release shards", "floor: dvc add shards", "?floor: dvc push shards"],
        "time",
        3.0,
    ),
    ("validate (own process, GX import included)", ["validate"], ["floor: DuckDB checks"], "time", 3.0),
    ("generate", ["generate"], ["floor: bare generate loop (own clock)"], "time", 2.0),
    (
        "pull + verify after pull",
        ["synthreg pull (fresh clone)", "verify after pull"],
        ["floor: dvc pull (fresh clone)", "floor: sha256sum after pull"],
        "time",
        1.5,
    ),
]


def ratios(rows: list) -> list[tuple[str, str]]:
    """Each target's ratio in one run: (what, "ratio (target)"); a stage not run reads `not run`."""
    secs = {label: wall for label, wall, *_ in rows}
    out = []
    for what, stages, wanted, how, target in TARGETS:
        floor = [k.lstrip("?") for k in wanted if not k.startswith("?") or k[1:] in secs]
        if len(floor) < len(wanted):  # --lean: the stage pushed nothing, and its floor has no `dvc push`
            what = what.replace("(signed, pushed)", "(signed)") + ", not pushed, floor without dvc push"
        if not all(k in secs for k in stages + floor):
            out.append((what, "not run"))
            continue
        mine, base = sum(secs[k] for k in stages), sum(secs[k] for k in floor)
        if how == "throughput":
            out.append((what, f"{base / mine:.2f}x {floor[0][7:]} throughput (target >= {target}x)"))
        else:
            ratio = f"{mine / base:.2f}x its floor, {mine:.1f} s / {base:.1f} s"
            out.append((what, f"{ratio} (target <= {target}x)"))
    stages = [row for row in rows if not row[0].startswith("floor")]
    peak = max((row[2] for row in stages), default=0)
    out.append(("peak memory of any stage", f"{peak:.0f} MB (target <= 1024 MB at 1M, flat from 100K)"))
    if any(len(row) > 4 for row in stages):  # a stage's processes together (sampled), workers included
        tree = max(row[4] for row in stages if len(row) > 4)
        out.append(("peak memory of any stage, all its processes", f"{tree:.0f} MB (sampled PSS)"))
    return out


def stage_table(results: dict[int, list]) -> list[str]:
    """The markdown table of every stage and floor at each size: seconds, largest process's MB, the
    tree's MB (`-` for a row that has none, as a floor's own clock) and files written."""
    sizes = list(results)
    lines = ["| stage | " + " | ".join(f"{n:,}: s / peak MB / tree MB / files" for n in sizes) + " |"]
    lines.append("|---|" + "---|" * len(sizes))
    for i, (label, *_) in enumerate(results[sizes[0]]):
        cells = []
        for n in sizes:
            _, wall, mb, files, *tree = results[n][i]
            cells.append(f"{wall:.1f} / {mb:.0f} / {f'{tree[0]:.0f}' if tree else '-'} / {files}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def growth_table(results: dict[int, list]) -> list[str]:
    """The markdown table of how each stage and floor grows from each size run to the next: its time as
    a ratio, and its largest process's memory as a ratio with the megabytes it added, so that a stage's
    growth reads beside its floors' from the same run. A row without a process of its own (a floor's
    own clock) has no memory to compare: `-`. Rows are matched by their label, so a row one of the two
    sizes lacks reads `not run` rather than another row's figures."""
    sizes = list(results)
    steps = list(itertools.pairwise(sizes))
    by_label = {n: {row[0]: row for row in results[n]} for n in sizes}
    labels = list(dict.fromkeys(row[0] for n in sizes for row in results[n]))
    lines = ["| stage | " + " | ".join(f"{a:,} -> {b:,}: time / memory" for a, b in steps) + " |"]
    lines.append("|---|" + "---|" * len(steps))
    for label in labels:
        cells = []
        for a, b in steps:
            if label not in by_label[a] or label not in by_label[b]:
                cells.append("not run")
                continue
            _, wall_a, mb_a, *_ = by_label[a][label]
            _, wall_b, mb_b, *_ = by_label[b][label]
            time_ratio = f"{wall_b / wall_a:.1f}x" if wall_a else "-"
            memory = f"{mb_b / mb_a:.2f}x ({mb_b - mb_a:+.0f} MB)" if mb_a and mb_b else "-"
            cells.append(f"{time_ratio} / {memory}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, action="append", help="repeat; multiples of 100")
    ap.add_argument("--keep", action="store_true", help="keep the temporary workspaces")
    ap.add_argument(
        "--direct", action="store_true", help="build the candidates with build_direct.py; no generate"
    )
    ap.add_argument("--lean", action="store_true", help="one copy of the released bytes (see above)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each stage and floor")
    args = ap.parse_args()
    global COLD
    COLD = args.cold
    if COLD:
        drop_caches()  # refused here, before any work, where it cannot be done
    load = os.getloadavg()
    results = {n: bench(n, args.keep, args.direct, args.lean) for n in args.images or [10_000]}
    sizes = list(results)
    print(
        f"\nload average (1, 5, 15 min): before {', '.join(f'{x:.2f}' for x in load)}, "
        f"after {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; "
        + (
            "page cache dropped before each stage and floor (--cold)"
            if COLD
            else "page cache as left (no --cold)"
        )
    )
    print("\n" + "\n".join(stage_table(results)))
    if len(sizes) > 1:
        print("\n" + "\n".join(growth_table(results)))
    print("\n| target | " + " | ".join(f"{n:,}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    by_size = {n: ratios(results[n]) for n in sizes}
    for i, (what, _) in enumerate(by_size[sizes[0]]):
        print(f"| {what} | " + " | ".join(by_size[n][i][1] for n in sizes) + " |")


if __name__ == "__main__":
    main()
