"""The workspace: the folder (a git + DVC repo) that holds recipes, params, data and releases.

Every path synthreg reads or writes on a user's behalf must stay inside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from registry.core.errors import WorkspaceError


def root(path: Path | None = None) -> Path:
    """The workspace root: ``path``, else ``$SYNTHREG_WORKSPACE``, else the current directory."""
    chosen = path or Path(os.environ.get("SYNTHREG_WORKSPACE", "."))
    resolved = chosen.resolve()
    if not resolved.is_dir():
        raise WorkspaceError(f"workspace {chosen} is not a directory; pass an existing folder")
    return resolved


def inside(ws: Path, path: Path | str, what: str) -> Path:
    """Resolve ``path`` (relative to the workspace) and refuse one that escapes it."""
    p = Path(path)
    ws = ws.resolve()  # a relative workspace (`Path(".")`) is compared as the folder it names (issue 23)
    resolved = (p if p.is_absolute() else ws / p).resolve()
    if not resolved.is_relative_to(ws):
        raise WorkspaceError(f"{what} {path} escapes the workspace {ws}; use a path inside it")
    return resolved


def relative(ws: Path, path: Path) -> str:
    return path.resolve().relative_to(ws.resolve()).as_posix()
