"""Issue 24, family 1: symbolic links inside the workspace. A release folder, its data/, keys/ or waivers/
linked elsewhere is refused by every reader and writer (one function, ``registry.core.workspace.no_links``,
behind ``release_folder``), before anything is written; a waiver file that is a link is ignored, named."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import WorkspaceError
from registry.releases.release import release
from registry.releases.verify import verify
from registry.releases.waive import waive
from registry.store import audit
from tests.conftest import TrustSetup
from tests.registry.conftest import Built, validate_ws

runner = CliRunner()


def events(ws: Path) -> int:
    return len(audit.read(ws))


def outside_copy(src: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "elsewhere" / name
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.mark.parametrize("part", ["version", "data"])
def test_verify_refuses_a_release_folder_or_its_data_linked_elsewhere(
    released_copy: Path, tmp_path: Path, part: str
):
    folder = released_copy / "releases/digits/1.0.0"
    target = folder if part == "version" else folder / "data"
    moved = outside_copy(target, tmp_path, part)
    shutil.rmtree(target)
    target.symlink_to(moved, target_is_directory=True)
    with pytest.raises(WorkspaceError, match="is a symbolic link"):
        verify(released_copy, "digits@1.0.0")
    res = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(released_copy)])
    assert res.exit_code != 0
    assert "is a symbolic link" in res.output and "does not follow links" in res.output, res.output


def test_withdraw_does_not_write_through_a_linked_release_folder(released_copy: Path, tmp_path: Path):
    folder = released_copy / "releases/digits/1.0.0"
    moved = outside_copy(folder, tmp_path, "v")
    shutil.rmtree(folder)
    folder.symlink_to(moved, target_is_directory=True)
    before = sorted(p.name for p in moved.iterdir())
    n = events(released_copy)
    res = runner.invoke(app, ["withdraw", "digits@1.0.0", "--reason", "test", "-w", str(released_copy)])
    assert res.exit_code != 0 and "is a symbolic link" in res.output, res.output
    assert sorted(p.name for p in moved.iterdir()) == before and events(released_copy) == n


def test_release_refuses_keys_linked_elsewhere_before_writing(fresh: Path, base: Built, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere-keys"
    shutil.move(fresh / "keys", elsewhere) if (fresh / "keys").exists() else elsewhere.mkdir()
    (fresh / "keys").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    n = events(fresh)
    with pytest.raises(WorkspaceError, match="keys: keys is a symbolic link"):
        release("digits", "1.0.0", fresh, key=base.key)
    assert sorted(p.name for p in elsewhere.iterdir()) == before and events(fresh) == n
    journal = fresh / ".dvc/tmp/synthreg-journal"
    assert not (fresh / "releases/digits").exists() and not (journal.is_dir() and any(journal.iterdir()))


def test_keygen_refuses_keys_linked_elsewhere_before_making_a_key(fresh: Path, tmp_path: Path):
    """keygen wrote the public key through a keys/ link to a folder outside (issue 24, family 1)."""
    from registry.trust.signing import keygen

    elsewhere = tmp_path / "elsewhere-keys"
    shutil.move(fresh / "keys", elsewhere) if (fresh / "keys").exists() else elsewhere.mkdir()
    (fresh / "keys").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(WorkspaceError, match="keys folder keys: keys is a symbolic link"):
        keygen(fresh, tmp_path / "new.pem")
    assert sorted(p.name for p in elsewhere.iterdir()) == before and not (tmp_path / "new.pem").exists()


def test_waive_refuses_a_waivers_folder_linked_elsewhere(fresh: Path, solo_trust: TrustSetup, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere-waivers"
    shutil.move(fresh / "waivers", elsewhere)
    (fresh / "waivers").symlink_to(elsewhere, target_is_directory=True)
    before = sorted(p.name for p in elsewhere.iterdir())
    with pytest.raises(WorkspaceError, match="waivers folder waivers: waivers is a symbolic link"):
        waive(fresh, "quality.accepted-share", "digits", "r", date(2099, 1, 1), key=solo_trust.key)
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    with pytest.raises(WorkspaceError, match="is a symbolic link"):  # nor does validate read through it
        validate_ws(fresh)


def test_a_waiver_file_that_is_a_link_is_ignored_and_named(fresh: Path, tmp_path: Path):
    [signed, *_] = sorted((fresh / "waivers").glob("*.dsse.json"))
    kept = tmp_path / signed.name
    shutil.move(signed, kept)
    signed.symlink_to(kept)
    report = validate_ws(fresh)
    [ignored] = [w for w in report.ignored_waivers if w.source.endswith(signed.name)]
    assert ignored.why.startswith("a symbolic link (to ") and not report.passed
