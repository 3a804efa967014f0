"""Issue 24's attacks that benchmarks/attacks24.py found still succeeding, one test per cause: an image
whose marking names another sample, a sample id listed twice, a signed shard holding a member no row
names. The manifests and shards are edited as an insider with write access would, in the real git + DVC
workspaces of tests/registry/conftest.py; "signed anyway" is a release made with synthreg's own checks
switched off, what a hostile signer's build would sign.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from policies.engine import Recheck
from registry.cli import app
from registry.core.digests import sha256_file
from registry.core.errors import ManifestError
from registry.core.names import shown
from registry.releases.loader import open_release
from registry.releases.release import release
from registry.store import manifest as mf
from registry.store.shards import members_from_bytes, tar_bytes
from registry.store.webdataset import add_sidecars
from tests.registry.conftest import CANDIDATES, FILTERED, POLICY, Built, folder, sh, unchecked_members


def skipped_recheck(*a, **k) -> Recheck:
    """Release's policy re-check, skipped: an insider's way past it, for what comes after."""
    return Recheck([], [], "skipped by the test")


runner = CliRunner()


def rows_of(ws: Path, where: str) -> list[dict]:
    return mf.read_table(ws / where / "manifest.parquet").to_pylist()


def write_rows(ws: Path, where: str, rows: list[dict]) -> None:
    nullable = pa.schema([f.with_nullable(True) for f in mf.SCHEMA])  # as any Parquet writer may
    pq.write_table(pa.Table.from_pylist(rows, schema=nullable), ws / where / "manifest.parquet")


def members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]


def swap_in_other_image(ws: Path, where: str) -> tuple[str, str]:
    """Row 0's image replaced by row 1's (marking and all), row 0's sha256 updated: every digest agrees,
    only the marking says whose image it is. (row 0's id, row 1's id)"""
    rows = rows_of(ws, where)
    first, second = rows[0], rows[1]
    other = dict(members(ws / second["shard"]))[second["member"]]
    shard = ws / first["shard"]
    shard.write_bytes(tar_bytes([(n, other if n == first["member"] else b) for n, b in members(shard)]))
    first["image_sha256"] = hashlib.sha256(other).hexdigest()
    write_rows(ws, where, rows)
    return first["sample_id"], second["sample_id"]


def past_the_gate(ws: Path) -> None:
    """The (unsigned) policy report pointed at the edited manifest, and both committed: an insider's way
    past release's gate."""
    report = ws / POLICY / "report.json"
    data = json.loads(report.read_text())
    data["manifest_sha256"] = sha256_file(ws / FILTERED / "manifest.parquet")
    report.write_text(json.dumps(data))
    sh(ws, "git", "add", "-A")
    sh(ws, "git", "commit", "-q", "--allow-empty", "-m", "an edited manifest, committed")


def sidecars_keeping_all(data: bytes, sidecars: dict, found=None) -> bytes:
    """``add_sidecars``, keeping the members it drops (a member no row names)."""
    out = add_sidecars(data, sidecars, found)
    made = members_from_bytes(out)
    extra = [(n, bytes(b)) for n, b in members_from_bytes(data).items() if n not in made]
    return tar_bytes([*((n, bytes(b)) for n, b in made.items()), *extra])


def sign_anyway(ws: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    past_the_gate(ws)
    with monkeypatch.context() as m:
        m.setattr("registry.releases.publish.check_manifest", lambda *a, **k: None)
        m.setattr("registry.releases.publish.checked_members", unchecked_members)
        m.setattr("registry.releases.release._recheck", skipped_recheck)
        m.setattr("registry.releases.publish.add_sidecars", sidecars_keeping_all)
        release("digits", "1.0.0", ws, key=key)


def cli(ws: Path, *args: str):
    return runner.invoke(app, [*args, "-w", str(ws)])


# --- family 3: a marking that names another sample ------------------------------------------------------


def test_release_refuses_an_image_whose_marking_names_another_sample(fresh: Path, base: Built):
    """The filter rejects such an image, but release re-checked only the digest: an insider who updated
    the row's sha256 got another sample's image signed under this sample's id."""
    mine, other = swap_in_other_image(fresh, FILTERED)
    past_the_gate(fresh)
    result = cli(fresh, "release", "digits", "--version", "1.0.0", "--key", str(base.key))
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("error: shard data/digits/filtered/shards/") or first.startswith(
        "error: shard "
    ), first
    assert f"first {mine} (its marking names sample {shown(other)}, not {shown(mine)}" in first, first
    assert not folder(fresh, "1.0.0").exists()


def test_verify_fails_a_signed_image_whose_marking_names_another_sample(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    """verify reported such a marking as a note and passed the release."""
    mine, other = swap_in_other_image(fresh, FILTERED)
    sign_anyway(fresh, base.key, monkeypatch)
    result = cli(fresh, "verify", "digits@1.0.0")
    assert result.exit_code == 1, result.output
    assert f"its marking names sample {shown(other)}, not {shown(mine)}" in result.output
    assert result.output.splitlines()[-1].startswith("digits@1.0.0: FAILED")


# --- family 4: a sample id listed twice -----------------------------------------------------------------


def test_filter_and_release_refuse_a_sample_id_listed_twice(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    for where in (CANDIDATES, FILTERED):
        rows = rows_of(fresh, where)
        write_rows(fresh, where, [*rows, dict(rows[0])])
    sid = rows_of(fresh, CANDIDATES)[0]["sample_id"]
    result = cli(fresh, "filter", CANDIDATES)
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        f"error: manifest {fresh / CANDIDATES / 'manifest.parquet'}: sample {shown(sid)}: sample id is not "
        "unique: 2 rows name it (2 row(s) with unsafe names or digests); it was not written by synthreg or "
        "was edited since: regenerate it"
    )
    past_the_gate(fresh)
    # The gate's re-check of the policies refuses this one already (the counts changed); switched off, so
    # the names check on the copies, the last line of defence, is what refuses it.
    monkeypatch.setattr("registry.releases.release._recheck", skipped_recheck)
    result = cli(fresh, "release", "digits", "--version", "1.0.0", "--key", str(base.key))
    assert result.exit_code == 1 and "sample id is not unique" in result.output, result.output
    assert not folder(fresh, "1.0.0").exists()


def test_verify_and_the_loader_refuse_a_signed_sample_id_listed_twice(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    rows = rows_of(fresh, FILTERED)
    write_rows(fresh, FILTERED, [*rows, dict(rows[0])])
    sign_anyway(fresh, base.key, monkeypatch)
    result = cli(fresh, "verify", "digits@1.0.0")
    assert result.exit_code == 1, result.output
    assert f"  sample {shown(rows[0]['sample_id'])}: sample id is not unique: 2 rows name it" in result.output
    with pytest.raises(ManifestError, match="sample id is not unique"):
        open_release(fresh, "digits@1.0.0")


# --- family 4: a signed shard holding a member no row names ---------------------------------------------


def test_the_loader_refuses_a_signed_shard_holding_a_member_no_row_names(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    """verify named the member, but the loader read the shard's listed members and said nothing: a
    WebDataset reader of the same shard would yield a sample the loader never shows."""
    rows = rows_of(fresh, FILTERED)
    shard = fresh / rows[0]["shard"]
    found = members(shard)
    shard.write_bytes(tar_bytes([*found, ("digits-planted-0.png", found[0][1])]))
    sign_anyway(fresh, base.key, monkeypatch)
    assert (
        "no manifest row names, first 'digits-planted-0.png'" in cli(fresh, "verify", "digits@1.0.0").output
    )
    reader = open_release(fresh, "digits@1.0.0")
    with pytest.raises(
        ManifestError, match=r"holds 1 member\(s\) no manifest row names, first 'digits-planted-0.png'"
    ):
        list(reader)


# --- family 4: hostile images past the gate ------------------------------------------------------------


def truncate_first_image(ws: Path, where: str) -> str:
    """Row 0's image cut to two thirds, its sha256 updated: row 0's sample id."""
    rows = rows_of(ws, where)
    shard = ws / rows[0]["shard"]
    found = members(shard)
    cut = dict(found)[rows[0]["member"]][:200]
    shard.write_bytes(tar_bytes([(n, cut if n == rows[0]["member"] else b) for n, b in found]))
    rows[0]["image_sha256"] = hashlib.sha256(cut).hexdigest()
    write_rows(ws, where, rows)
    return rows[0]["sample_id"]


def test_release_and_verify_name_a_truncated_image_the_report_does_not_show(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    """Only the HTML report's thumbnails opened images at release, so a truncated PNG (or a bomb, or a
    non-PNG) with its digest updated was refused only when it happened to be a thumbnail. Every image a
    release copies, and every image verify checks, is now checked as a PNG, named by its sample."""
    sid = truncate_first_image(fresh, FILTERED)
    past_the_gate(fresh)
    monkeypatch.setattr("registry.exports.report_html._thumbnail", lambda data: b"")  # not shown
    result = cli(fresh, "release", "digits", "--version", "1.0.0", "--key", str(base.key))
    assert result.exit_code == 1, result.output
    assert f"first {sid} (the image is truncated (its PNG chunks end before IEND) in " in result.output
    assert not folder(fresh, "1.0.0").exists()
    sign_anyway(fresh, base.key, monkeypatch)
    result = cli(fresh, "verify", "digits@1.0.0")
    assert result.exit_code == 1, result.output
    assert "the image is truncated (its PNG chunks end before IEND)" in result.output
    with pytest.raises(ManifestError, match=r"the image is not readable"):
        list(open_release(fresh, "digits@1.0.0"))


def test_verify_names_a_signed_manifest_row_with_a_null_digest(
    fresh: Path, base: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """verify compared the signed manifest with its flat copy by casting it to the strict schema first,
    which raised on the null: an internal error instead of the sample named."""
    original = tmp_path / "original.parquet"
    original.write_bytes((fresh / FILTERED / "manifest.parquet").read_bytes())
    rows = rows_of(fresh, FILTERED)
    rows[0]["image_sha256"] = None
    write_rows(fresh, FILTERED, rows)
    flat = mf.write_flat  # synthreg's writer refuses the null: the flat copy is made from the original
    monkeypatch.setattr("registry.releases.publish.mf.write_flat", lambda m, out, s: flat(original, out, s))
    sign_anyway(fresh, base.key, monkeypatch)
    monkeypatch.undo()
    result = cli(fresh, "verify", "digits@1.0.0")
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.output
    assert (
        f"  sample {shown(rows[0]['sample_id'])}: image_sha256 is missing or not a sha256 (64 hex digits)"
        in result.output
    ), result.output


def test_verify_fails_a_signed_flat_copy_that_says_another_prompt_under_signed_files(
    fresh: Path, base: Built, monkeypatch: pytest.MonkeyPatch
):
    """The flat copy (what Hugging Face `datasets` reads) is signed as the releaser made it, so its
    sha256 matches; an insider's copy that says another prompt than the signed manifest must still fail,
    in the signed-files check, although verify now reads it beside the image checks."""
    flat = mf.write_flat

    def edited(manifest: Path, out: Path, shards: dict) -> None:
        flat(manifest, out, shards)
        table = pq.read_table(out)
        i = table.schema.get_field_index("prompt")
        prompts = table.column(i).to_pylist()
        prompts[1] = "an insider's prompt"
        pq.write_table(table.set_column(i, table.schema.field(i), pa.array(prompts, pa.string())), out)

    monkeypatch.setattr("registry.releases.publish.mf.write_flat", edited)
    sign_anyway(fresh, base.key, monkeypatch)
    monkeypatch.undo()
    result = cli(fresh, "verify", "digits@1.0.0", "--json")
    assert result.exit_code == 1, result.output
    checks = {c["check"]: c for c in json.loads(result.output)["checks"]}
    assert checks["signed-files"]["status"] == "fail", checks
    assert checks["signed-files"]["detail"].startswith(
        f"data/{mf.FLAT} differs from the signed manifest in 1 row(s)"
    ), checks
    assert checks["images"]["status"] == "pass", checks  # the images are as signed


# --- family 1: the journal folder linked out of the workspace ------------------------------------------


@pytest.mark.parametrize(
    ("linked", "what"),
    [
        (".dvc/tmp/synthreg-journal", "journal folder .dvc/tmp/synthreg-journal"),
        (".dvc/tmp", "journal folder .dvc/tmp/synthreg-journal"),
    ],
)
def test_release_refuses_a_journal_folder_linked_out_and_writes_nothing_there(
    fresh: Path, base: Built, tmp_path: Path, linked: str, what: str
):
    """The journal (and the release lock beside it) were written through a link: a release succeeded
    with its journal entries outside the workspace, where recovery would also read planted ones."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (fresh / linked).parent.mkdir(parents=True, exist_ok=True)
    if (fresh / linked).is_dir():
        (fresh / linked).rename(tmp_path / "moved")
    (fresh / linked).symlink_to(outside, target_is_directory=True)
    result = cli(fresh, "release", "digits", "--version", "1.0.0", "--key", str(base.key))
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {what}: {linked} is a symbolic link (to {outside})"), (
        result.output
    )
    assert list(outside.iterdir()) == []
    assert not folder(fresh, "1.0.0").exists()
