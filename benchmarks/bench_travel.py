"""A release that travels, timed: push, then pull into a fresh clone, then verify, of 100 shards x 1,000
small PNGs through a loopback S3 endpoint (moto's server), against `dvc push` + `dvc pull` of the same
shard files alone.

    python benchmarks/bench_travel.py [--shards 100] [--images 1000] [--repeats 3]

Target (issue 9): the registry's overhead on top of DVC's transfer under 10%, that is
(synthreg push + synthreg pull) / (dvc push + dvc pull) < 1.10. synthreg's pull includes checking the
signatures and every file whole against its signed sha256 (`verify(images=False)`); the full
`synthreg verify` after it (each image, its marking, the names, the flat manifest) is shown apart.

Both sides run the same `dvc` CLI against the same `moto_server` process (separate, so it takes no GIL
from the timed side), each into its own empty bucket prefix, each from a git repository with the data
`dvc add`-ed and into a fresh `git clone` of it. The release is built as bench_verify.py builds it
(random 16x16 grayscale PNGs made unique, tar shards, a manifest, a signed record). Each repeat pushes
to fresh prefixes and pulls into fresh clones, the two sides alternating who goes first; medians are
reported. Every temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_verify import build, sign_variant  # noqa: E402

from registry.releases import remote  # noqa: E402
from registry.releases.verify import verify  # noqa: E402
from registry.store.releases import load_release  # noqa: E402

BIN = Path(sys.executable).parent
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def sh(cwd: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def repo(ws: Path, endpoint: str, prefix: str) -> None:
    sh(ws, "git", "init", "-q")
    for k, v in {"user.name": "bench", "user.email": "b@example.org", "commit.gpgsign": "false"}.items():
        sh(ws, "git", "config", k, v)
    dvc = str(BIN / "dvc")
    sh(ws, dvc, "init", "-q")
    sh(ws, dvc, "config", "core.analytics", "false")
    sh(ws, dvc, "remote", "add", "-d", "storage", f"s3://bench/{prefix}")
    sh(ws, dvc, "remote", "modify", "storage", "endpointurl", endpoint)


def commit(ws: Path) -> None:
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "-m", "bench")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=100)
    ap.add_argument("--images", type=int, default=1000, help="images per shard")
    ap.add_argument("--repeats", type=int, default=3, help="median of this many rounds")
    args = ap.parse_args()
    n = args.shards * args.images
    os.environ.update(ENV)
    top = Path(tempfile.mkdtemp(prefix="synthreg-bench-travel-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.1)
        dvc = str(BIN / "dvc")

        # The registry's side: a signed release, `dvc add`-ed as `synthreg release` leaves it.
        a = top / "a"
        a.mkdir()
        t = time.perf_counter()
        files, size, st = build(a, args.shards, args.images)
        # Signed solo by a key kept outside the workspace, trusted through $SYNTHREG_TRUST (as a user's
        # pinned trust root would be): pull verifies every signature against it.
        os.environ["SYNTHREG_TRUST"] = str(sign_variant(a, st, 1, top / "keys"))
        repo(a, endpoint, "registry")
        sh(a, dvc, "add", "-q", "releases/bench/1.0.0/data")
        commit(a)
        print(
            f"built {args.shards} shards x {args.images:,} PNGs = {n:,} images, {size / 1e6:.1f} MB of "
            f"shards, in {time.perf_counter() - t:.1f} s; {os.cpu_count()} CPUs"
        )
        # The peer: the same shard files alone in a plain DVC repository.
        p = top / "p"
        (p / "shards").mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, p / "shards" / f.name)
        repo(p, endpoint, "peer")
        sh(p, dvc, "add", "-q", "shards")
        commit(p)

        load_release(a, "bench@1.0.0")  # released, and readable
        runs: list[tuple[float, float, float, float, float]] = []
        for i in range(args.repeats):  # fresh prefixes each time; the two sides alternate who goes first
            for ws, side in ((a, "registry"), (p, "peer")):
                sh(ws, dvc, "remote", "modify", "storage", "url", f"s3://bench/{side}-{i}")
                sh(ws, "git", "commit", "-q", "-m", f"repeat {i}", "--", ".dvc/config")
            b, q = top / f"b{i}", top / f"q{i}"
            sh(top, "git", "clone", "-q", str(a), str(b))
            sh(top, "git", "clone", "-q", str(p), str(q))
            where = remote.require(a, no_push=False)
            assert where is not None

            def ours(b: Path = b, where: str = where) -> tuple[float, float]:
                push = timed(lambda: remote.push_release(a, "bench", "1.0.0", where, derived=False))
                return push, timed(lambda: remote.pull(b, "bench@1.0.0"))

            def theirs(q: Path = q) -> tuple[float, float]:
                return timed(lambda: sh(p, dvc, "push", "shards.dvc")), timed(
                    lambda: sh(q, dvc, "pull", "shards.dvc")
                )

            if i % 2:
                (dp, dl), (sp, sl) = theirs(), ours()
            else:
                (sp, sl), (dp, dl) = ours(), theirs()
            again = timed(lambda b=b: verify(b, "bench@1.0.0"))
            assert len(list((q / "shards").iterdir())) == args.shards
            runs.append((sp, sl, dp, dl, again))
            print(
                f"  repeat {i + 1}: synthreg push {sp:.2f} s + pull {sl:.2f} s; "
                f"dvc push {dp:.2f} s + pull {dl:.2f} s",
                flush=True,
            )
            shutil.rmtree(b)
            shutil.rmtree(q)

        def med(k: int) -> float:
            return statistics.median(r[k] for r in runs)

        push, pull, dvc_push, dvc_pull, again = (med(k) for k in range(5))
        rows = [
            ("synthreg push (release's push step)", push, dvc_push),
            ("synthreg pull (dvc pull + verify)", pull, dvc_pull),
        ]
        print(f"\n{'median of ' + str(args.repeats):40} {'synthreg s':>11} {'dvc alone s':>12} {'ratio':>7}")
        for label, ours_s, peer_s in rows:
            print(f"{label:40} {ours_s:11.2f} {peer_s:12.2f} {ours_s / peer_s:7.2f}")
        total, peer_total = push + pull, dvc_push + dvc_pull
        print(f"{'push + pull':40} {total:11.2f} {peer_total:12.2f} {total / peer_total:7.2f}")
        print(f"{'synthreg verify again (optional)':40} {again:11.2f}")
        per_run = ", ".join(f"{(r[0] + r[1]) / (r[2] + r[3]):.3f}" for r in runs)
        print(f"per repeat, (push + pull) ratio: {per_run}")
        overhead = total / peer_total - 1
        verdict = "met" if overhead < 0.10 else "MISSED"
        print(f"\nregistry overhead on DVC's transfer: {overhead:+.1%} (target < 10%): {verdict}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
