"""The memory of each pass over a manifest, alone: what a stage's peak is made of, and how it grows.

Run from the repository root, on a manifest synthreg wrote (a kept bench workspace's, say)::

    python benchmarks/bench_manifest_memory.py MANIFEST [--times 10] [--group-rows N] [--pieces ...]

``bench_e2e.py`` and ``memory_timeline.py`` give a stage's peak and when it comes; this measures the
passes that make those peaks one at a time, each in a fresh process, as the process's peak resident
set and that peak above its start (sampled every 20 ms), with the seconds it took:

- ``flat-write:POOL``: ``manifest.write_flat``, the flat copy release and derive write, with Arrow on
  the allocator ``POOL`` (``system``, ``jemalloc``; ``jemalloc:DECAY_MS`` also sets jemalloc's decay);
- ``flat-compare``: ``flat_check.flat_differences`` of the manifest and that flat copy (verify);
- ``stream:ROWS``: ``manifest.tables_by_shard`` of verify's columns, DuckDB batches of ``ROWS`` rows
  (verify's image checks, the shard copy of release and derive);
- ``names``: ``names.unsafe_rows``, the name and duplicate-id check (DuckDB's capped aggregate), on a
  connection of a thread a core; ``names:THREADS`` on one of at most ``THREADS`` (``names:1`` is verify's,
  which runs it beside its workers);
- ``footers:list`` and ``footers:each`` (not in the default list): what DuckDB holds of the manifest's
  Parquet footers once it has read them, with a query that reads nothing else (no row has seed -1, and
  the footers' statistics say so): over all the files in one query, or file by file, each its own query,
  on one connection.

``--times K`` first writes a manifest K times as long (the rows again with their ids, member names,
shards and indexes made distinct; image digests and perceptual hashes repeat, which no piece here
looks for), in ``manifest.group_rows`` row groups as synthreg writes them, to see how each pass grows
from N to K x N rows without building K x N images.
``--group-rows R`` writes it in row groups of R rows instead: the same rows in other groups, to
tell what grows with the rows from what grows with the groups (issue 22).
``--parts`` writes each of the K copies as a file of its own in a folder (``part-00000.parquet``, ...,
each in the row groups of one copy): a manifest in several files, as a design to flatten what grows.
synthreg does not write one; the ``stream``, ``names`` and ``footers:list`` pieces read it through one
DuckDB view of the list of its files, and ``footers:each`` file by file. The flat pieces read one file,
so they are refused with ``--parts`` (name ``--pieces``). The derived files go to a
temporary folder, removed at the end. The load average is printed before and after. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIECES = [
    "flat-write:system",
    "flat-write:jemalloc",
    "flat-compare",
    "stream:65536",
    "stream:8192",
    "names",
    "names:1",
]


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _shards(manifest: Path) -> dict[str, str]:
    """Every shard the manifest names -> a released path (release names them by digest; the length
    differs, not the memory)."""
    import duckdb

    literal = str(manifest).replace("'", "''")
    found = duckdb.sql(f"SELECT DISTINCT shard FROM read_parquet('{literal}') ORDER BY 1").fetchall()
    return {s: f"data/shards/{i:06d}.tar" for i, (s,) in enumerate(found) if s is not None}


def piece(name: str, manifest: Path, flat: Path) -> None:
    """Run one piece in this process and print its line. Arrow's allocator is chosen by the caller, and
    the shards' released paths are read from ``shards.json`` beside ``flat`` (the caller's DuckDB query
    made them, so this process starts without DuckDB's cache of the manifest's footer)."""
    import pyarrow as pa

    if name.startswith("flat-write:jemalloc:"):
        pa.jemalloc_set_decay_ms(int(name.rsplit(":", 1)[1]))
    from registry.core import names
    from registry.releases.shard_check import COLUMNS
    from registry.store import flat_check
    from registry.store import manifest as mf

    if name.startswith("flat") and manifest.is_dir():
        raise SystemExit(f"{name} reads one manifest file, not a folder of parts")
    shards = json.loads((flat.parent / "shards.json").read_text()) if name.startswith("flat") else {}
    peak, stop = [_rss_mb()], threading.Event()
    base = peak[0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    if name.startswith("flat-write"):
        mf.write_flat(manifest, flat, shards)
        what = f"{pa.default_memory_pool().backend_name}, {pq_groups(flat)}"
    elif name == "flat-compare":
        if not flat.is_file():
            raise SystemExit("flat-compare compares the flat copy a flat-write piece before it wrote")
        what = f"{flat_check.flat_differences(manifest, flat, shards)} rows differ"
    elif name.startswith("stream:"):
        con = _connect(manifest)
        try:
            rows = sum(t.num_rows for _, t in mf.tables_by_shard(con, COLUMNS, int(name.split(":")[1])))
        finally:
            con.close()
        what = f"{rows:,} rows"
    elif name in ("footers:list", "footers:each"):
        con = _connect(manifest)
        try:
            files = _files(manifest)
            if name == "footers:list":
                con.execute("SELECT count(*) FROM manifest WHERE seed = -1").fetchall()
            else:
                for f in files:
                    con.execute("SELECT count(*) FROM read_parquet(?) WHERE seed = -1", [str(f)]).fetchall()
            what = f"{len(files)} file(s)"
        finally:
            con.close()
    elif name == "names" or name.startswith("names:"):
        con = _connect(manifest, int(name.split(":")[1]) if ":" in name else None)
        try:
            cap = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
            what = f"{names.unsafe_rows(con)[0]} unsafe rows, DuckDB's cap {cap}"
        finally:
            con.close()
    else:
        raise SystemExit(
            f"no piece {name!r}; pieces: {', '.join(PIECES)}, flat-write:jemalloc:DECAY_MS, footers:list, "
            "footers:each"
        )
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    above = f"+{peak[0] - base:4.0f} above its start"
    print(f"{name:20} peak {peak[0]:5.0f} MB, {above} {seconds:6.1f} s ({what})", flush=True)


def _files(manifest: Path) -> list[Path]:
    """The manifest's files: itself, or a folder's ``part-*.parquet`` in order (nothing else in it)."""
    if not manifest.is_dir():
        return [manifest]
    found = sorted(manifest.glob("part-*.parquet"))
    if not found:
        raise SystemExit(f"{manifest} is a folder with no part-*.parquet files; give a manifest or --parts")
    return found


def _connect(manifest: Path, threads: int | None = None) -> Any:
    """``manifest.connect`` for a file; for a folder, the same connection with the view over its files
    in one ``read_parquet`` list. ``threads``: as ``duck.connect`` takes it."""
    from registry.core import duck
    from registry.store import manifest as mf

    if manifest.is_file():
        return mf.connect(manifest, threads=threads)
    con = duck.connect(threads)
    listed = ", ".join("'" + str(f).replace("'", "''") + "'" for f in _files(manifest))
    con.execute(f"CREATE VIEW manifest AS SELECT * FROM read_parquet([{listed}])")
    return con


def pq_groups(path: Path) -> str:
    import pyarrow.parquet as pq

    metas = [pq.ParquetFile(f).metadata for f in _files(path)]
    groups = sum(m.num_row_groups for m in metas)
    first = metas[0].row_group(0).num_rows if groups else 0
    return f"{len(metas)} file(s), {groups} groups of {first} rows"


def tiled(source: Path, out: Path, times: int, group_rows: int | None, parts: bool = False) -> Path:
    """``source``'s rows ``times`` times over, each copy's sample ids (and member names), shards and
    indexes made distinct, in ``group_rows`` (else ``manifest.group_rows``) row groups. ``parts``: each
    copy a file of its own in the folder ``out``, in the row groups of one copy."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from registry.store import manifest as mf

    file = pq.ParquetFile(source)
    n = file.metadata.num_rows
    schema = mf.SCHEMA

    def replaced(table: pa.Table, column: str, values: pa.Array) -> pa.Table:
        return table.set_column(schema.get_field_index(column), schema.field(column), values)

    def copy_of(copy: int) -> Iterator[pa.Table]:
        for batch in mf.batches(file, 4096):
            table = pa.Table.from_batches([batch]).cast(schema)
            if copy:
                ids = pc.binary_join_element_wise(table["sample_id"], f"-{copy}", "")
                table = replaced(table, "sample_id", ids)
                member = pc.replace_substring_regex(table["member"], r"(\.[^.]+)$", f"-{copy}\\1")
                table = replaced(table, "member", member)  # <sample id>.<extension> still
                shard = pc.replace_substring_regex(table["shard"], r"(\.[^./]+)$", f"-{copy}\\1")
                table = replaced(table, "shard", shard)  # each copy its own shards, in order
                table = replaced(table, "index", pc.add(table["index"], copy * n))
            yield table

    if parts:
        out.mkdir()
        for copy in range(times):
            with mf.grouped_writer(
                out / f"part-{copy:05d}.parquet", schema, group_rows or mf.group_rows(n), manifest_rows=n
            ) as w:
                for table in copy_of(copy):
                    w.write(table)
        return out
    with mf.grouped_writer(
        out, schema, group_rows or mf.group_rows(n * times), manifest_rows=n * times
    ) as writer:
        for copy in range(times):
            for table in copy_of(copy):
                writer.write(table)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--times", type=int, default=1, help="measure a manifest this many times as long")
    ap.add_argument("--group-rows", type=int, help="rows a row group of the measured manifest")
    ap.add_argument("--parts", action="store_true", help="each of the --times copies a file of its own")
    ap.add_argument("--pieces", nargs="+", default=PIECES, help=f"default: {' '.join(PIECES)}")
    ap.add_argument("--piece", help=argparse.SUPPRESS)  # one piece, in this process (the child)
    ap.add_argument("--flat", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.piece:
        piece(args.piece, args.manifest, args.flat)
        return 0
    flat_pieces = [n for n in args.pieces if n.startswith("flat")]
    if flat_pieces and (args.parts or args.manifest.is_dir()):  # refused before minutes of tiling
        raise SystemExit(
            f"{', '.join(flat_pieces)} read one manifest file, not a folder of parts: name other --pieces"
        )
    work = Path(tempfile.mkdtemp(prefix="bench-manifest-memory-"))
    try:
        manifest = args.manifest.resolve()
        if args.times > 1 or args.group_rows or args.parts:
            started = time.perf_counter()
            out = work / ("parts" if args.parts else "manifest.parquet")
            manifest = tiled(manifest, out, args.times, args.group_rows, args.parts)
            print(f"wrote {args.times} x {args.manifest} in {time.perf_counter() - started:.0f} s")
        print(f"{manifest}: {pq_groups(manifest)}; load average before {os.getloadavg()}")
        flat = work / "flat.parquet"
        (work / "shards.json").write_text(json.dumps({} if manifest.is_dir() else _shards(manifest)))
        for name in args.pieces:
            pool = name.split(":")[1] if name.startswith("flat-write:") else "jemalloc"
            env = dict(os.environ, ARROW_DEFAULT_MEMORY_POOL=pool, PYTHONPATH=str(ROOT))
            command = [sys.executable, __file__, str(manifest), "--piece", name, "--flat", str(flat)]
            if subprocess.run(command, env=env).returncode:
                print(f"{name:20} failed (its error is above)", flush=True)
        print(f"load average after {os.getloadavg()}; {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
