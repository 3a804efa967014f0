"""The read side of ``releases/``: references, versions and records, for every command that reads.

    parse_ref("digits@1.0.0")          # -> ("digits", "1.0.0"), or a ReleaseError for anything unsafe
    versions(ws, "digits")             # released versions, oldest first
    load_release(ws, "digits@1.0.0")   # the Release record (a version still being made is not released)
    load_outline(ws, "digits@1.0.0")   # what a page shows of another version (no shards, no excluded ids)

The writers (``registry.releases``: release, derive, approve, withdraw) sit above this module and every
reader (verify, the loader, the catalog, trace, train) imports it, never a writer: python-tuf keeps its
client apart from its repository tooling in the same way. What may be read, against the trust root, is
``registry.trust.admission``.
"""

from __future__ import annotations

import re
from pathlib import Path

from registry.core import vcs
from registry.core.errors import ReleaseError
from registry.core.names import shown
from registry.records.dataset import DATASET_NAME
from registry.records.release import SEMVER, Release, ReleaseOutline
from registry.store import journal

RELEASES = Path("releases")
# X.Y.Z with no pre-release or build part: what withdraw and trace accept as a version
PLAIN_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


def release_folder(ws: Path, name: str, version: str, *more: str) -> Path:
    """``releases/NAME/VERSION`` (and ``more`` below it) in ``ws``; refused when any part of it is a
    symbolic link or leaves the workspace (``registry.core.workspace.no_links``): every reader and writer
    of a release folder comes through here."""
    from registry.core.workspace import no_links

    return no_links(ws, RELEASES.joinpath(name, version, *more), "release folder")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@X.Y.Z`` (or ``name@vX.Y.Z``, or ``name``) -> (name, version or None).

    Both parts become path components under releases/, so anything else is refused here. The version
    may also be ``working`` (the working filtered manifest, for `synthreg train`), a fixed safe name."""
    name, at, version = ref.partition("@")
    version = version.removeprefix("v")
    if (
        not DATASET_NAME.fullmatch(name)
        or (at and not version)
        or (  # `digits@` names no version
            version and version != "working" and not re.fullmatch(SEMVER, version)
        )
    ):
        raise ReleaseError(
            f"{shown(ref)} is not a release reference: give NAME@X.Y.Z (a dataset name of lowercase "
            "letters, digits, '-', '_'; version components below 10^9)"
        )
    return name, (version or None)


def versions(ws: Path, name: str) -> list[str]:
    """Released versions of ``name``, oldest first; one an unfinished operation is making is not one."""
    import semver

    from registry.core.workspace import no_links

    folder = no_links(ws, RELEASES / name, "releases folder")
    unfinished = journal.unfinished_versions(ws, name)
    found = (
        [
            p.name
            for p in folder.iterdir()
            if re.fullmatch(SEMVER, p.name) and (p / "release.json").is_file() and p.name not in unfinished
        ]
        if folder.is_dir()
        else []
    )
    return sorted(found, key=semver.Version.parse)


def tag_commit(ws: Path, name: str, version: str) -> str | None:
    """The commit the tag ``name@vX.Y.Z`` points at (the release commit), or None without the tag."""
    return vcs.tag_commit(ws, f"{name}@v{version}")


# What _write_exports writes at the top of a release folder; each is a signed subject (verify checks them).
EXPORTS = (
    "policy-report.json",
    "policy-report.md",
    "card.md",
    "README.md",
    "croissant.json",
    "prov.json",
    "report.html",
)


def load_release(ws: Path, ref: str, bound: bool = True) -> Release:
    """The record of ``NAME@X.Y.Z`` (or of the latest version of ``NAME``), after recovering any
    interrupted operation when the release lock is free; a version still being made is not released.
    With ``bound``, a record whose own name and version are not its folder's (a signed release copied
    over another) is refused."""
    journal.recover_if_idle(ws)
    name, version = parse_ref(ref)
    if version is not None and version in journal.unfinished_versions(ws, name):
        raise ReleaseError(
            f"{name}@{version} is not released: an interrupted operation on it has not finished; "
            "run `synthreg doctor --repair`"
        )
    if version is None:
        found = versions(ws, name)
        if not found:
            raise ReleaseError(f"no releases of {name!r}; see `synthreg list`")
        version = found[-1]
    path = release_folder(ws, name, version, "release.json")
    if not path.is_file():
        raise ReleaseError(f"{name}@{version} is not released; see `synthreg list`")
    try:
        record = Release.model_validate_json(path.read_text())
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ReleaseError(f"{path} is not a valid release record ({e}); restore it from git") from None
    if bound and (record.name, record.version) != (name, version):
        raise ReleaseError(
            f"{path} is the record of {record.name}@{record.version}, not {name}@{version} (a release "
            f"copied over another?); run `synthreg verify {name}@{version}` and restore it from git"
        )
    return record


def load_outline(ws: Path, ref: str) -> ReleaseOutline:
    """What a page shows of another version (``ReleaseOutline``): its record, read and checked as
    ``load_release`` does, of which only the outline is kept (issue 22: a record is 18 MB of objects at
    10,000 shards, and a page read every version's), so a page holds one whole record at a time."""
    record = load_release(ws, ref)
    return ReleaseOutline.model_validate(record.model_dump(include=set(ReleaseOutline.model_fields)))
