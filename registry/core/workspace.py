"""The workspace: the folder (a git + DVC repo) that holds recipes, params, data and releases.

Every path synthreg reads or writes on a user's behalf must stay inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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


def no_links(ws: Path, path: Path | str, what: str) -> Path:
    """``path`` (relative to the workspace) resolved, refused when any existing part of it below the
    workspace is a symbolic link, wherever the link points (issue 24: a release folder, keys/ or
    waivers/ linked elsewhere made verify read, and release, withdraw and waive write, through it), or
    when it leaves the workspace."""
    root = ws.resolve()
    p = Path(path)
    rel = p.relative_to(root) if p.is_absolute() and p.is_relative_to(root) else p
    if rel.is_absolute() or ".." in rel.parts:
        raise WorkspaceError(f"{what} {path} escapes the workspace {root}; use a path inside it")
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise WorkspaceError(
                f"{what} {rel.as_posix()}: {current.relative_to(root).as_posix()} is a symbolic link (to "
                f"{os.readlink(current)}); synthreg does not follow links inside the workspace: put the "
                "folder or file itself there"
            )
        if not current.exists():
            break
    return root / rel


def relative(ws: Path, path: Path) -> str:
    return path.resolve().relative_to(ws.resolve()).as_posix()


def dataset_folder(ws: Path, path: Path | str, name: str, what: str, others: Iterable[str]) -> Path:
    """``path`` resolved inside the workspace, refused when it is the folder of another dataset of the
    workspace (``data/OTHER/...``, OTHER in ``others``): one dataset's recipe or settings must not write
    or judge another's data."""
    p = inside(ws, path, what)
    data = ws.resolve() / "data"
    if p.is_relative_to(data) and p != data:
        owner = p.relative_to(data).parts[0]
        if owner != name and owner in set(others):
            raise WorkspaceError(
                f"{what} {path} is the folder of dataset {owner} (data/{owner}/), but the work is for "
                f"dataset {name}; use data/{name}/ (or name the dataset meant)"
            )
    return p
