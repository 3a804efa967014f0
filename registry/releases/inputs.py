"""The source commit of a release: the git commit that holds the state a version was released from.

A release names one commit (``Release.git_commit``) and a second person must find there everything
that made and judged the data: ``dvc.lock``, ``params.yaml``, the recipe, the waivers and policy
packs (and licence knowledge base) that validate read. The simplest rule that makes this true is
the one enforced here: refuse to release while any of those files differs from HEAD (modified,
staged, untracked or ignored), and require that HEAD records the very filtered manifest being
released, in ``dvc.lock`` (a ``dvc repro`` pipeline) or in git itself (a workspace that commits
its data). Then HEAD is the source commit, unambiguously; the release commit on top of it adds the
release folder, the audit log and the public key that signed it.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from registry.core import vcs
from registry.core.errors import ReleaseError
from registry.core.workspace import relative


def _git(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return vcs.run_git(ws, *args)


def dependencies(
    ws: Path, name: str, recipe_file: Path | None, params_file: str = "params.yaml"
) -> list[str]:
    """The workspace files a release of dataset ``name`` depends on (the ones that exist or that git
    tracks); a derived version, made from released files, depends on no recipe or dvc.lock
    (``recipe_file`` None)."""
    from registry.records.config import load_params

    v = load_params(ws / params_file).dataset(name).validate_
    named = [params_file, v.waivers, "waivers", *v.packs, v.licences]  # waivers/: the signed waivers
    if recipe_file is not None:
        named = ["dvc.lock", relative(ws, recipe_file), *named]
    inside = [p for p in named if (ws / p).resolve().is_relative_to(ws)]  # validate refuses the others
    return list(dict.fromkeys(p for p in inside if (ws / p).exists() or _tracked(ws, p)))


def _tracked(ws: Path, path: str) -> bool:
    return bool(_git(ws, "ls-files", "--", path).stdout.strip())


def require_committed(ws: Path, paths: list[str]) -> str:
    """HEAD's commit id, once each of ``paths`` is exactly as HEAD has it; else a ReleaseError naming them."""
    head = _git(ws, "rev-parse", "-q", "--verify", "HEAD^{commit}")
    if head.returncode != 0:
        raise ReleaseError(
            f"workspace {ws} has no commit yet; commit {', '.join(paths)} first, so that the release "
            "names the commit it was made from"
        )
    status = _git(ws, "status", "--porcelain=v1", "--ignored", "--untracked-files=all", "--", *paths)
    if status.returncode != 0:
        raise ReleaseError(f"`git status` failed in {ws}: {status.stderr.strip()}")
    dirty = sorted({line[3:].strip() for line in status.stdout.splitlines() if line.strip()})
    if dirty:
        raise ReleaseError(
            f"uncommitted changes to {', '.join(dirty)}, which the release depends on; commit them "
            f"(`git add {' '.join(dirty)} && git commit`) so the release's source commit holds the state "
            "released, then release again"
        )
    return head.stdout.strip()


def require_manifest_recorded(ws: Path, manifest: Path) -> None:
    """HEAD must name this exact manifest: in its ``dvc.lock`` (same md5), or tracked and clean in git."""
    rel = relative(ws, manifest)
    shown = _git(ws, "show", "HEAD:dvc.lock")
    if shown.returncode == 0:
        try:
            stages = (yaml.safe_load(shown.stdout) or {}).get("stages", {})
        except yaml.YAMLError as e:
            raise ReleaseError(f"HEAD's dvc.lock is not valid YAML ({e}); restore it") from None
        recorded = [o for s in stages.values() for o in s.get("outs", []) if o.get("path") == rel]
        if recorded:
            md5 = hashlib.md5(manifest.read_bytes(), usedforsecurity=False).hexdigest()
            if recorded[0].get("md5") != md5:
                raise ReleaseError(
                    f"HEAD's dvc.lock records {rel} with md5 {str(recorded[0].get('md5'))[:12]}, but the "
                    f"manifest here is {md5[:12]}; run `dvc repro` (or `dvc commit`) and commit dvc.lock, "
                    "then release again"
                )
            return
    if _tracked(ws, rel) and not _git(ws, "status", "--porcelain", "--", rel).stdout.strip():
        return
    raise ReleaseError(
        f"the filtered manifest {rel} is recorded neither in HEAD's dvc.lock nor in git, so the release "
        "could not name the commit it was made from; make it with `dvc repro` and commit dvc.lock, then "
        "release again"
    )
