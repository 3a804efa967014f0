"""Reusing validate's rule outcomes in release's policy re-check (issue 22), without trusting report.json.

    stamp = stamp_of(report, recipe, report_sha256)      # validate: what made this report
    write_stamp(ws, stamp)                               # <git dir>/synthreg/validated/<report sha256>.json
    why = why_not(read_stamp(ws, report_sha256), now)    # release: None when every input is the same

Release re-checks the manifest because report.json is a workspace file anyone with write access can
edit. A copy of the report's outcomes is only as good as its provenance, so the reuse key binds the
report's own bytes: validate records, in the clone's git folder (which git never commits, pushes or
fetches; a file in ``.dvc/tmp`` could be force-added to a commit), the sha256 of the report.json it
wrote and of every input the outcomes depend on. The re-check reuses an outcome only when that record
exists for the very bytes of report.json and every digest, recomputed from the files about to be
signed, is equal; a report edited after validate wrote it has another sha256, finds no record, and is
checked again in full, as before. Waivers are decided again every time (``policies.engine``): who may
waive and which waivers have expired can change without any file here changing.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from registry.core import vcs
from registry.core.fsio import atomic_write_text
from registry.records.dataset import Recipe
from registry.records.policy import PolicyReport, ValidationStamp

STAMPS = Path("synthreg") / "validated"  # under the clone's git folder
KEEP = 100  # stamps kept, newest first: one per report validate wrote

# Rule kinds whose outcome depends only on the manifest, the recipe, the licence base and the rule itself
# (all bound by the stamp). Not here: source-withdrawn reads its deny list and leakage reads the
# sources' files, which the stamp does not cover, so the re-check always runs those two (both are cheap).
REUSABLE_KINDS = frozenset(
    {
        "licence-use",
        "licence-known",
        "attribution",
        "prompt-deny",
        "prompt-personal-data",
        "prompt-length",
        "representation",
        "provenance",
        "quality",
    }
)
# The libraries the checks compute with: another version may measure differently.
LIBRARIES = ("great_expectations", "duckdb", "pyarrow", "pandas", "pydantic")


@cache
def engine_sha256() -> str:
    """sha256 over synthreg's own code (the checks use the registry's models and manifest views too) and
    the versions of ``LIBRARIES``: an upgrade between validate and release means checking again."""
    from importlib.metadata import PackageNotFoundError, version

    h = hashlib.sha256()
    for package in (Path(__file__).parent, Path(vcs.__file__).parents[1]):  # policies/, registry/
        for path in sorted(package.rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                h.update(f"{path.relative_to(package.parent).as_posix()}\0".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
    for lib in LIBRARIES:
        try:
            h.update(f"{lib}=={version(lib)}\0".encode())
        except PackageNotFoundError:
            h.update(f"{lib} absent\0".encode())
    return h.hexdigest()


def recipe_sha256(recipe: Recipe) -> str:
    return hashlib.sha256(recipe.model_dump_json().encode()).hexdigest()


def stamp_of(report: PolicyReport, recipe: Recipe, report_sha256: str) -> ValidationStamp:
    """What made ``report`` (whose file's sha256 is ``report_sha256``), checked against ``recipe``."""
    return ValidationStamp(
        report_sha256=report_sha256,
        manifest_sha256=report.manifest_sha256,
        packs=report.packs,
        licence_kb_sha256=report.licence_kb_sha256,
        waivers_sha256=report.waivers_sha256,
        recipe_sha256=recipe_sha256(recipe),
        engine_sha256=engine_sha256(),
    )


def _folder(ws: Path) -> Path | None:
    """The stamp folder in ``ws``'s own git folder; None when ``ws`` is not the top of a git repository
    (then nothing is stamped and nothing reused)."""
    if not (ws / ".git").exists():
        return None
    proc = vcs.run_git(ws, "rev-parse", "--absolute-git-dir")
    return Path(proc.stdout.strip()) / STAMPS if proc.returncode == 0 and proc.stdout.strip() else None


def write_stamp(ws: Path, stamp: ValidationStamp) -> None:
    """Record ``stamp``; the oldest beyond ``KEEP`` go. A stamp is only a saving: one that cannot be
    written (no git, a read-only git folder) leaves release to check everything again, as before."""
    folder = _folder(ws)
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{stamp.report_sha256}.json", stamp.model_dump_json(indent=2) + "\n")
        old = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
        for path in old:
            path.unlink(missing_ok=True)
    except OSError:
        return


def read_stamp(ws: Path, report_sha256: str) -> ValidationStamp | None:
    """The stamp validate left for the report whose file has ``report_sha256``, or None (none, or not one
    that can be read: never trusted, the re-check then runs in full)."""
    folder = _folder(ws)
    path = folder / f"{report_sha256}.json" if folder is not None else None
    if path is None or not path.is_file() or os.path.islink(path):
        return None
    try:
        stamp = ValidationStamp.model_validate_json(path.read_text())
    except (OSError, ValueError, ValidationError):
        return None
    return stamp if stamp.report_sha256 == report_sha256 else None


def why_not(stamp: ValidationStamp | None, now: ValidationStamp) -> str | None:
    """Why validate's outcomes cannot be reused for the inputs ``now``, or None when they can."""
    if stamp is None:
        return "report.json is not a report validate wrote in this clone, byte for byte"
    for field, what in (
        ("manifest_sha256", "the manifest"),
        ("packs", "the policy packs"),
        ("licence_kb_sha256", "the licence base"),
        ("waivers_sha256", "the waivers file"),
        ("recipe_sha256", "the recipe"),
        ("engine_sha256", "synthreg's policy code or the libraries it runs on"),
    ):
        if getattr(stamp, field) != getattr(now, field):
            return f"{what} changed since validation"
    return None
