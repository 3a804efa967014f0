"""`log --verify` over a merged DAG of N audit events, against the single hash chain it replaced (issue 20).

    python benchmarks/bench_audit.py [--events 100000] [--repeats 3]

Both sides hold the same N events (same kinds, subjects, details and times) and one signed checkpoint
over the head(s), in a temporary folder removed at the end:

- **dag** is today's format: N files ``audit/events/<hash>.json``, made as two clones make them: a
  common root, two branches of about N/2 events each, and the event that joins them after the merge.
  The time is ``registry.trust.checkpoints.verify_log``: what ``synthreg log --verify`` runs (read and
  hash every file, check every parent, the signed checkpoints, the events no signature covers).
- **chain** is the format before issue 20, one ``audit/events.jsonl`` of N lines, verified by a minimal
  copy of that code, kept here as the baseline: parse and hash each line, check seq and prev_hash, then
  a second pass that maps seq to hash for the signed checkpoints (what the old ``log --verify`` did).

Prints the best of ``--repeats`` runs of each, the ratio (target: within 2x), and the load average,
since the machine is shared: a busy machine slows both, the file-per-event side more. Not a test: it
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def _dump(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def _body(i: int, t0: datetime) -> dict:
    kinds = ["generate", "filter", "validate", "release", "train"]
    return {
        "kind": kinds[i % len(kinds)],
        "time": (t0 + timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "actor": "bench",
        "subject": f"digits@1.0.{i % 97}",
        "details": {"i": i, "manifest_sha256": f"{i:064x}"},
    }


def make_dag(ws: Path, n: int) -> list[str]:
    """N event files: a root, two branches, and the event joining them; the heads at the end."""
    from registry.store.audit import EVENTS, content_hash

    folder = ws / EVENTS
    folder.mkdir(parents=True)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    tips: list[list[str]] = [[], []]
    root = _body(0, t0) | {"parents": []}
    root["hash"] = content_hash(root)
    (folder / f"{root['hash']}.json").write_text(_dump(root) + "\n")
    tips = [[root["hash"]], [root["hash"]]]
    for i in range(1, n - 1):
        side = i % 2  # interleaved in time, as two people working at once
        body = _body(i, t0) | {"parents": tips[side]}
        body["hash"] = content_hash(body)
        (folder / f"{body['hash']}.json").write_text(_dump(body) + "\n")
        tips[side] = [body["hash"]]
    join = _body(n - 1, t0) | {"parents": sorted(tips[0] + tips[1])}
    join["hash"] = content_hash(join)
    (folder / f"{join['hash']}.json").write_text(_dump(join) + "\n")
    return [join["hash"]]


def make_chain(path: Path, n: int) -> tuple[int, str]:
    """N lines of the old chain; the last seq and hash (what a checkpoint named)."""
    from registry.store.audit import GENESIS, content_hash

    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS
    with open(path, "w") as f:
        for i in range(n):
            body = {"seq": i, **_body(i, t0), "prev_hash": prev}
            body["hash"] = prev = content_hash(body)
            f.write(_dump(body) + "\n")
    return n - 1, prev


def chain_verify(path: Path, checkpoint: tuple[int, str]) -> list[str]:
    """The old `log --verify`, minimal: the chain, then the checkpoint's seq and hash."""
    from registry.records.audit import GENESIS, AuditEvent
    from registry.store.audit import content_hash

    problems = []
    raw_lines = path.read_bytes().splitlines(keepends=True)
    expected, prev = 0, GENESIS
    for n, raw in enumerate(raw_lines, 1):
        event = AuditEvent.model_validate_json(raw)
        if content_hash(json.loads(raw)) != event.hash:
            problems.append(f"line {n}: edited")
        if event.seq != expected or event.prev_hash != prev:
            problems.append(f"line {n}: removed or reordered")
        expected, prev = (event.seq or 0) + 1, event.hash
    hashes = {}
    for raw in raw_lines:
        event = AuditEvent.model_validate_json(raw)
        hashes.setdefault(event.seq, event.hash)
    seq, h = checkpoint
    if hashes.get(seq) != h:
        problems.append("checkpoint not on the chain")
    return problems


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n = args.events

    from registry.releases.checkpoint import sign_checkpoint
    from registry.trust.checkpoints import verify_log
    from registry.trust.root import load_trust
    from registry.trust.signing import keygen

    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        (top / "dag").mkdir()
        keys = keygen(top / "pub", top / "solo.pem", name="Bench", trust=top / "trust.yaml")
        t = time.perf_counter()
        heads = make_dag(top / "dag", n)
        made = time.perf_counter() - t
        sign_checkpoint(top / "dag", keys.private, keys.trust)
        trust = load_trust(top / "dag", keys.trust)
        chain = top / "chain" / "audit" / "events.jsonl"
        cp = make_chain(chain, n)

        dag_s, report = best(lambda: verify_log(top / "dag", trust), args.repeats)
        chain_s, problems = best(lambda: chain_verify(chain, cp), args.repeats)
        assert report.intact and report.uncovered == 0 and report.heads == heads, report.problems[:3]  # type: ignore[attr-defined]
        assert problems == [], problems

    load = os.getloadavg()
    print(
        f"events: {n} (DAG: two branches and a merge event, written in {made:.1f} s); best of {args.repeats}"
    )
    print(f"log --verify, DAG of event files: {dag_s:8.2f} s  ({dag_s / n * 1e6:.1f} us/event)")
    print(f"old chain verify, one jsonl file: {chain_s:8.2f} s  ({chain_s / n * 1e6:.1f} us/event)")
    print(f"ratio DAG/chain: {dag_s / chain_s:.2f}x (target: within 2x)")
    print(f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
