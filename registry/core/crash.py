"""What the CLI does with an exception nobody raised on purpose: save its traceback, say where.

A user sees one line, ``error: internal error (TypeName: first line); traceback saved to PATH; please
report it``, and the exit code ``INTERNAL_ERROR_EXIT`` (70, EX_SOFTWARE in BSD sysexits.h), never a
Python traceback. The traceback goes to ``$SYNTHREG_CRASH_DIR``, else ``$XDG_CACHE_HOME/synthreg/crashes``
(``~/.cache/synthreg/crashes``), else the system temporary folder: never into the workspace, which is
committed. Files are created 0600, since a traceback may show paths and values of the user's data.
"""

from __future__ import annotations

import os
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from registry.core.names import shown


def crash_dir() -> Path:
    if os.environ.get("SYNTHREG_CRASH_DIR"):
        return Path(os.environ["SYNTHREG_CRASH_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "synthreg" / "crashes"


def in_workspace(folder: Path) -> Path | None:
    """The synthreg workspace (a folder holding ``.dvc``) that ``folder`` lies in, symlinks resolved; None
    when it lies in none."""
    resolved = folder.resolve()
    return next((p for p in (resolved, *resolved.parents) if (p / ".dvc").is_dir()), None)


def save_traceback(exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback to a new file; its path, or None if no folder would take it. A crash
    folder inside a workspace (``$SYNTHREG_CRASH_DIR`` pointing into one) is passed over, since `git add`
    would commit the traceback and the data it shows (issue 24)."""
    text = "".join(traceback.format_exception(exc))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    for folder in (crash_dir(), Path(tempfile.gettempdir()) / "synthreg-crashes"):
        if in_workspace(folder) is not None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, name = tempfile.mkstemp(prefix=f"crash-{stamp}-{os.getpid()}-", suffix=".txt", dir=folder)
            with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
                f.write(text)
            return Path(name)
        except OSError:
            continue
    return None


def internal_error_message(exc: BaseException) -> str:
    """The one line a user sees (without the ``error:`` prefix); saves the traceback first."""
    path = save_traceback(exc)
    first = str(exc).splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {shown(first, 120)[1:-1]}" if first else type(exc).__name__
    where = f"traceback saved to {path}" if path else "the traceback could not be saved"
    return f"internal error ({what}); {where}; please report it"
