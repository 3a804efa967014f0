"""DuckDB connections whose memory does not grow with the manifest: every query synthreg runs goes
through one.

By default DuckDB may hold up to 80% of the machine's memory, and it does: the check that no sample id
appears twice (``registry.core.names.unsafe_rows``), grouped at once, was a hash aggregate over every
id, about 110 MB at 1,000,000 rows and 1.1 GB at 10,000,000 (issue 22; it now groups hashes in passes of
about a million ids, ``names.duplicate_ids``). A connection from ``connect`` has a thread a core, up
to ``THREADS`` (8), and ``PER_THREAD_MB`` (64 MB) a thread: 128 MB on 2 cores, 512 MB on 8 or more. Or
``$SYNTHREG_DUCKDB_MEMORY`` sets the cap, in DuckDB's units (``1GB``); keep it at 64 MB a thread or more.
What does not fit spills to a folder of the connection under the system temp folder (never the
workspace, DuckDB's default ``.tmp``), and DuckDB removes that folder when the connection closes.

A process killed while its connection had spilled (SIGKILL, the machine's out-of-memory killer) leaves
its folder behind, with what it spilled: 42 MB of a 10,000,000-row name check killed midway, gigabytes
at worst. The first ``connect`` of each process removes such folders (``remove_stale_spills``).

verify opens two connections, so two caps: the name and duplicate-id check runs beside the image
checks' stream, and on one shared cap the stream's pinned row group starved it
(``registry.releases.verify._connection``). The side one asks for one thread (``connect(threads=1)``),
so one thread's cap: beside the workers a second thread bought nothing, and its aggregate held the
process 132 MB above its start at 10,000,000 rows on two threads, 85 MB on one.

The cap follows the threads because each thread needs its own buffers. Measured on a synthetic
10,000,000-row Parquet manifest (2026-12-05): the duplicate-id check, an anti join of two manifests (as
``diff``), a sort of every row and the catalog's grouped lists all passed with 2 threads in 128 MB; the
sort failed with 16 threads in 512 MB and passed in 1 GB. The duplicate-id check peaked at about 190 MB
(the whole process) in 2.7 s, against 1.1 GB in 2.1 s uncapped.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from registry.core.errors import ConfigError
from registry.core.processes import running

PER_THREAD_MB = 64
SPILL_PREFIX = "synthreg-duckdb-"  # + the process id, "-" and a random part: a connection's spill folder
THREADS = 8  # more threads add little to synthreg's queries, and each needs its own memory
STALE_AFTER_S = 3600  # a spill folder untouched this long, of a process that is gone, is left over
_swept = False  # remove_stale_spills has run in this process


def remove_stale_spills(folder: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove the spill folders under ``folder`` (the system temp folder) that a synthreg process left
    when it was killed; the folders removed. One is left over when it is a real folder of this user
    (not a link), named for a process that no longer runs here, with nothing in it changed for
    ``STALE_AFTER_S``: DuckDB writes its spill files as it goes, and a process whose id this machine
    cannot see (another PID namespace sharing the folder) may still be using one that is recent. A
    folder that cannot be read or removed is left as it is."""
    folder = Path(tempfile.gettempdir()) if folder is None else folder
    now = time.time() if now is None else now
    removed = []
    for found in folder.glob(f"{SPILL_PREFIX}*-*"):
        pid = found.name[len(SPILL_PREFIX) :].split("-", 1)[0]
        if not (pid.isascii() and pid.isdigit()) or not 0 < int(pid) < 2**22:  # not a process id
            continue  # (Linux's largest is 2**22, and anyone may name a folder)
        if int(pid) == os.getpid() or running(int(pid)):
            continue
        try:
            st = found.lstat()
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            newest = max([st.st_mtime, *(f.lstat().st_mtime for f in found.iterdir())])
        except OSError:
            continue
        if now - newest < STALE_AFTER_S:
            continue
        shutil.rmtree(found, ignore_errors=True)
        if not found.exists():
            removed.append(found)
    return removed


def connect(threads: int | None = None) -> Any:
    """An in-memory DuckDB connection with its memory capped and its spill folder outside the workspace;
    ``threads``: at most so many threads (and so ``PER_THREAD_MB`` each), for a query that runs beside
    other work."""
    import duckdb

    global _swept
    if not _swept:  # once a process: what killed processes left (remove_stale_spills)
        _swept = True
        remove_stale_spills()

    threads = max(1, min(os.cpu_count() or 1, THREADS, threads or THREADS))
    # A folder of its own, made only if it spills: DuckDB removes one it made when the connection closes
    # (two connections sharing one left it behind).
    spill = Path(tempfile.gettempdir()) / f"{SPILL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    config: dict[str, str | bool | int | float | list[str]] = {
        "threads": threads,
        "memory_limit": os.environ.get("SYNTHREG_DUCKDB_MEMORY") or f"{PER_THREAD_MB * threads}MB",
        "temp_directory": str(spill),
    }
    con = None
    try:
        con = duckdb.connect(config=config)
        con.execute("SET enable_progress_bar = false")  # a long query would draw a bar over our output
    except duckdb.Error as e:  # e.g. SYNTHREG_DUCKDB_MEMORY=lots
        if con is not None:
            con.close()
        raise ConfigError(
            f"cannot open DuckDB with memory_limit {config['memory_limit']!r} ({str(e).splitlines()[0]}); "
            "set SYNTHREG_DUCKDB_MEMORY to a size such as 512MB or 2GB, or unset it"
        ) from None
    return con


OUT_OF_MEMORY = "Out of Memory Error:"  # how DuckDB's out-of-memory message starts, however wrapped


def out_of_memory(e: BaseException) -> str | None:
    """What to tell the user when ``e``, or an error it was raised from (``raise ... from``), is DuckDB
    running out of its cap (None for anything else). A library may wrap it: SQLAlchemy in its
    ``OperationalError``, Great Expectations in its own error raised from that one. An error raised
    while an out-of-memory error was being handled, but not from it, is not one: it may be a bug."""
    seen: set[int] = set()
    found: BaseException | None = e
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        kind = type(found)
        own = kind.__name__ == "OutOfMemoryException" and "duckdb" in kind.__module__
        # Read through Arrow (``to_arrow_reader``), DuckDB's error reaches Python as Arrow's OSError.
        streamed = isinstance(found, OSError) and str(found).startswith(OUT_OF_MEMORY)
        if own or streamed:
            return memory_advice(str(found).splitlines()[0])
        found = found.__cause__
    return None


def memory_advice(error: str) -> str:
    """What to tell the user about DuckDB's out-of-memory ``error`` (its first line)."""
    cap = os.environ.get("SYNTHREG_DUCKDB_MEMORY") or "64MB a thread"
    return (
        f"DuckDB needed more memory than its cap ({cap}) and could not spill to disk "
        f"({error}); set SYNTHREG_DUCKDB_MEMORY higher (e.g. 1GB), or free space in the "
        "system temp folder if it is full, and run it again"
    )
