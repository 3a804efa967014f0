"""Finding an unreleased (working) manifest again by its content, for ``trace`` and ``impact``.

A run trained on ``NAME@working`` logged the manifest's sha256 and its DVC md5
(``registry.downstream.track``).
The manifest is looked for, in order:

1. the workspace: every ``manifest.parquet`` under ``data/`` (work folders skipped), by sha256;
2. the DVC cache: ``.dvc/cache/files/md5/<md5[:2]>/<md5[2:]>`` (DVC 3's layout; ``cache.dir`` from
   ``.dvc/config`` is honoured), checked by sha256;
3. the DVC remote (the default one, any kind DVC supports), fetched by md5 through DVC's own API into
   the DVC cache (as ``dvc fetch`` would), checked by sha256 before it is kept.

The digests come from an MLflow record (untrusted): they are checked by pattern before any path is
built, and the cache path goes through ``registry.core.workspace.no_links``, so a ``cache.dir`` outside
the workspace (or a ``.dvc/cache`` linked out of it) is neither read nor fetched into (issue 24); such
a setup is named in ``looked``.

What was looked at is said in words (``Found.looked``), so a digest that resolves nowhere says where it
looked. File digests are cached per process by (path, size, mtime), so a second trace does not hash
the workspace again.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from registry.core.digests import sha256_file
from registry.core.errors import WorkspaceError
from registry.core.names import shown
from registry.core.workspace import no_links

_SHA: dict[tuple[str, int, int], str] = {}
MIN_PREFIX = 32  # a logged digest this long or longer (MLflow keeps 36 hex) names the manifest


@dataclass(frozen=True)
class Found:
    path: Path | None  # None: not found
    where: str  # where it was found, in words ("" when not found)
    looked: list[str] = field(default_factory=list)  # everywhere it looked, in words


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = sha256_file(path)
    return _SHA[key]


def matches(sha: str, logged: str) -> bool:
    logged = logged.lower()
    return sha == logged or (len(logged) >= MIN_PREFIX and sha.startswith(logged))


def workspace_manifests(ws: Path) -> list[Path]:
    """Every ``manifest.parquet`` under ``data/``; none through a symbolic link (``rglob`` does not
    descend into linked folders; a linked file, or ``data/`` itself linked, is skipped)."""
    try:
        data = no_links(ws, "data", "data folder")
    except WorkspaceError:
        return []
    if not data.is_dir():
        return []
    return sorted(
        p
        for p in data.rglob("manifest.parquet")
        if ".work" not in p.relative_to(data).parts and p.is_file() and not p.is_symlink()
    )


def cache_dir(ws: Path) -> Path:
    """The DVC cache folder: ``cache.dir`` of ``.dvc/config`` (or ``config.local``), else ``.dvc/cache``."""
    out = ws / ".dvc" / "cache"
    for name in ("config", "config.local"):
        cfg = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error, OSError):
            cfg.read(ws / ".dvc" / name)
            if cfg.has_option("cache", "dir"):
                out = (ws / ".dvc" / cfg.get("cache", "dir")).resolve()
    return out


def _rel(ws: Path, path: Path) -> str:
    return path.relative_to(ws).as_posix() if path.is_relative_to(ws) else str(path)


def _remote(ws: Path, md5: str, sha: str, dest: Path) -> tuple[bool, str]:
    """Fetch ``md5`` from the default DVC remote into ``dest`` if it is there and its sha256 is ``sha``.
    -> (found, what was looked at or found, in words)."""
    if not (ws / ".dvc").is_dir():
        return False, "no DVC remote (the workspace is not a DVC repository)"
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(ws)) as repo:
            name = repo.config["core"].get("remote")
            try:
                odb = repo.cloud.get_remote_odb(None, "trace")
            except NoRemoteError:
                return False, "no DVC remote (none is configured as default)"
            where = f"the DVC remote {name} ({odb.path})"
            if not odb.exists(md5):
                return False, where
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.fetch-{os.getpid()}")
            try:
                odb.fs.get_file(odb.oid_to_path(md5), str(tmp))
                if sha256_file(tmp) != sha:
                    return False, f"{where}: its md5 {md5} is there, but with another sha256"
                os.replace(tmp, dest)  # into the cache, as `dvc fetch` would
            finally:
                tmp.unlink(missing_ok=True)
            return True, f"DVC remote {name} ({odb.path}), fetched into the DVC cache"
    except (DvcException, OSError) as e:
        return False, f"the DVC remote, which failed: {e}"


def find(ws: Path, sha: str, md5: str | None, remote: bool = True) -> Found:
    """The manifest with sha256 ``sha`` (or a 32+ hex prefix of it), looked for as the module says.

    ``sha`` and ``md5`` come from an MLflow record, which anyone with access to the store can write: they
    are checked by pattern before any path is built from them (issue 24: an md5 of ``../../..`` read, and
    a remote fetch wrote, outside the workspace)."""
    looked: list[str] = []
    sha, md5 = (sha or "").lower(), (md5.lower() if isinstance(md5, str) else None)
    if not re.fullmatch(r"[0-9a-f]{32,64}", sha):
        return Found(None, "", [f"nowhere: the logged sha256 {shown(sha)} is not 32 to 64 hex digits"])
    candidates = workspace_manifests(ws)
    for p in candidates:
        if matches(file_sha256(p), sha):
            return Found(p, f"workspace {_rel(ws, p)}", looked)
    looked.append(f"the workspace ({len(candidates)} manifest(s) under data/)")
    if md5 and not re.fullmatch(r"[0-9a-f]{32}", md5):
        looked.append(f"not the DVC cache or remote: the logged DVC md5 {shown(md5)} is not 32 hex digits")
        return Found(None, "", looked)
    if not md5:
        looked.append("not the DVC cache or remote: the run logged no DVC md5 (synthreg.dvc_md5)")
        return Found(None, "", looked)
    try:  # the cache folder comes from .dvc/config, which an insider can edit: it must stay inside
        cached = no_links(ws, cache_dir(ws) / "files" / "md5" / md5[:2] / md5[2:], "DVC cache file")
    except WorkspaceError as e:
        looked.append(f"not the DVC cache or remote: {e}")
        return Found(None, "", looked)
    if cached.is_file() and matches(file_sha256(cached), sha):
        return Found(cached, f"DVC cache {_rel(ws, cached)}", looked)
    looked.append(f"the DVC cache ({_rel(ws, cached)})")
    if len(sha) != 64:
        looked.append(
            "not the DVC remote: only a prefix of the sha256 was logged, so a fetch cannot be checked"
        )
        return Found(None, "", looked)
    if remote:
        ok, where = _remote(ws, md5, sha, cached)
        if ok:
            return Found(cached, where, looked)
        looked.append(where)
    return Found(None, "", looked)
