"""Whether a process runs here: what decides that a folder named for a process (a derive's scratch
folder, a DuckDB spill folder) was left by one that is gone."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's counts; a number no process can have,
    as a hostile folder name may give, does not)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True
