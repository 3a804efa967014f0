"""DuckDB connections whose memory does not grow with the manifest: every query synthreg runs goes
through one.

By default DuckDB may hold up to 80% of the machine's memory, and it does: the check that no sample id
appears twice (``registry.core.names.unsafe_rows``) is a hash aggregate over every id, about 110 MB at
1,000,000 rows and 1.1 GB at 10,000,000 (issue 22). A connection from ``connect`` has a thread a core, up
to ``THREADS`` (8), and ``PER_THREAD_MB`` (64 MB) a thread: 128 MB on 2 cores, 512 MB on 8 or more. Or
``$SYNTHREG_DUCKDB_MEMORY`` sets the cap, in DuckDB's units (``1GB``); keep it at 64 MB a thread or more.
What does not fit spills to a folder of the connection under the system temp folder (never the
workspace, DuckDB's default ``.tmp``), and DuckDB removes that folder when the connection closes.

verify opens two connections, so two caps: the name and duplicate-id check runs beside the image
checks' stream, and on one shared cap the stream's pinned row group starved it
(``registry.releases.verify._connection``).

The cap follows the threads because each thread needs its own buffers. Measured on a synthetic
10,000,000-row Parquet manifest (2026-12-05): the duplicate-id check, an anti join of two manifests (as
``diff``), a sort of every row and the catalog's grouped lists all passed with 2 threads in 128 MB; the
sort failed with 16 threads in 512 MB and passed in 1 GB. The duplicate-id check peaked at about 190 MB
(the whole process) in 2.7 s, against 1.1 GB in 2.1 s uncapped.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

from registry.core.errors import ConfigError

PER_THREAD_MB = 64
SPILL_PREFIX = "synthreg-duckdb-"  # + the process id, "-" and a random part: a connection's spill folder
THREADS = 8  # more threads add little to synthreg's queries, and each needs its own memory


def connect() -> Any:
    """An in-memory DuckDB connection with its memory capped and its spill folder outside the workspace."""
    import duckdb

    threads = max(1, min(os.cpu_count() or 1, THREADS))
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


def out_of_memory(e: BaseException) -> str | None:
    """What to tell the user when ``e`` is DuckDB running out of its cap (None for anything else)."""
    kind = type(e)
    own = kind.__name__ == "OutOfMemoryException" and "duckdb" in kind.__module__
    # Read through Arrow (``to_arrow_reader``), DuckDB's error reaches Python as Arrow's OSError.
    streamed = isinstance(e, OSError) and str(e).startswith("Out of Memory Error:")
    if not (own or streamed):
        return None
    cap = os.environ.get("SYNTHREG_DUCKDB_MEMORY") or "64MB a thread"
    return (
        f"DuckDB needed more memory than its cap ({cap}) and could not spill to disk "
        f"({str(e).splitlines()[0]}); set SYNTHREG_DUCKDB_MEMORY higher (e.g. 1GB), or free space in the "
        "system temp folder if it is full, and run it again"
    )
