"""Names that cannot escape (issue 14, item 2): hostile sample ids, tar member names and shard paths in a
manifest are refused by filter, fail validate's provenance rule, are refused by release, fail verify, and
are refused by the release loader; each message names the sample. The manifests are edited the way an
insider with write access would, in the real git + DVC workspaces of tests/registry/conftest.py.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from policies.engine import Recheck
from registry.cli import app
from registry.core.digests import sha256_file
from registry.core.errors import ManifestError
from registry.core.names import read_id_file, shown
from registry.records.dataset import SampleRecord
from registry.releases.loader import open_release
from registry.releases.release import release
from registry.store import manifest as mf
from registry.store.shards import ShardFormatError, tar_bytes
from tests.registry.conftest import CANDIDATES, FILTERED, POLICY, Built, commit_all, folder, unchecked_members


def skipped_recheck(*a, **k) -> Recheck:
    """Release's policy re-check, skipped: an insider's way past it, for what comes after."""
    return Recheck([], [], "skipped by the test")


runner = CliRunner()

# (what is planted, the value, what the refusal says). Row 0 of the manifest gets the value.
CASES = {
    "member-dotdot": ("member", "../../evil.png", "member name is not <sample id>.<extension>"),
    "member-absolute": ("member", "/tmp/evil.png", "member name is not <sample id>.<extension>"),
    "id-dotdot": ("id", "../x", "sample id is not a safe name"),
    "id-newline": ("id", "digits-1\nFORGED LINE", "sample id is not a safe name"),
    "id-nul": ("id", "digits-1\x00.png", "sample id is not a safe name"),
    "shard-outside": ("shard", "../outside/shard.tar", "shard path is not a relative path of safe names"),
    "shard-absolute": ("shard", "/etc/shard.tar", "shard path is not a relative path of safe names"),
}
FAST = ("member-dotdot", "id-newline")  # the rest run under -m slow where a release is made per case


def _params(names: tuple[str, ...] = tuple(CASES)) -> list:
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


def plant(ws: Path, manifest_folder: str, case: str) -> str:
    """Rewrite row 0 of ``manifest_folder/manifest.parquet`` as ``case`` says, and its shard so that the
    tar holds the image under the planted member name (as a hostile shard would). The row's sample id."""
    kind, value, _ = CASES[case]
    path = ws / manifest_folder / "manifest.parquet"
    rows = mf.read_table(path).to_pylist()
    row = rows[0]
    shard = ws / row["shard"]
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    old = row["member"]
    if kind == "member":
        row["member"] = value
    elif kind == "id":
        row["sample_id"], row["member"] = value, f"{value}.png"
    else:  # the shard column points outside the workspace, where a copy of the shard lies
        target = (ws / value).resolve() if not value.startswith("/") else None
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(shard, target)
        row["shard"] = value
    if row["member"] != old:
        shard.write_bytes(tar_bytes([(row["member"] if n == old else n, b) for n, b in members]))
    mf.write_table(pa.Table.from_pylist(rows, schema=mf.SCHEMA), path)
    return row["sample_id"]


def fake_report(ws: Path) -> None:
    """What an insider does to get past release's gate: point the (unsigned) report at the new manifest."""
    report = ws / POLICY / "report.json"
    data = json.loads(report.read_text())
    data["manifest_sha256"] = sha256_file(ws / FILTERED / "manifest.parquet")
    report.write_text(json.dumps(data))


@pytest.mark.parametrize("case", _params())
def test_filter_refuses_a_hostile_name(fresh: Path, case: str):
    sid = plant(fresh, CANDIDATES, case)
    before = sha256_file(fresh / FILTERED / "manifest.parquet")
    result = runner.invoke(app, ["filter", CANDIDATES, "-w", str(fresh)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        f"error: manifest {fresh / CANDIDATES / 'manifest.parquet'}: sample {shown(sid)}: {CASES[case][2]}"
        + result.output.splitlines()[0].split(CASES[case][2], 1)[1]
    )
    assert "(1 row(s) with unsafe names or digests); it was not written by synthreg" in result.output
    assert sha256_file(fresh / FILTERED / "manifest.parquet") == before  # nothing written


@pytest.mark.parametrize("case", _params())
def test_validate_fails_the_provenance_rule_naming_the_sample(fresh: Path, case: str):
    sid = plant(fresh, FILTERED, case)
    result = runner.invoke(app, ["validate", FILTERED, "--out", POLICY, "-w", str(fresh)])
    assert result.exit_code == 3, result.output
    assert "  fail   provenance.complete: " in result.output
    report = json.loads((fresh / POLICY / "report.json").read_text())
    [prov] = [r for r in report["results"] if r["rule_id"] == "provenance.complete"]
    assert prov["status"] == "fail" and sid in prov["evidence"]["sample_ids"]
    failed = prov["evidence"]["details"]["failed_expectations"]
    assert {
        "expectation": "expect_column_values_to_be_null",
        "column": "name_problem",
        "unexpected": 1,
    } in failed


@pytest.mark.parametrize("case", _params())
def test_release_refuses_a_hostile_name_even_past_the_gate(
    fresh: Path, base: Built, case: str, monkeypatch: pytest.MonkeyPatch
):
    sid = plant(fresh, FILTERED, case)
    fake_report(fresh)
    commit_all(fresh, "a hostile manifest, committed: release names the commit it was made from")
    # The gate's own re-check of the policies catches this first (provenance.complete fails); switched
    # off here so the names check on the copies, the last line of defence, is what refuses it.
    monkeypatch.setattr("registry.releases.release._recheck", skipped_recheck)
    result = runner.invoke(
        app, ["release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh)]
    )
    assert result.exit_code == 1, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"error: manifest {fresh / FILTERED / 'manifest.parquet'}: sample {shown(sid)}: ")
    assert CASES[case][2] in first
    assert not folder(fresh, "1.0.0").exists()


def test_release_refuses_a_shard_with_an_extra_hostile_member(fresh: Path, base: Built):
    """The manifest is clean, but the shard also holds ``../../evil.png``: `tar -x` of the released shard
    would write outside its folder, so it is never signed."""
    shard = fresh / "data/digits/candidates/shards/shard-00000.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    shard.write_bytes(tar_bytes([*members, ("../../evil.png", b"x")]))
    result = runner.invoke(
        app, ["release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        "error: shard data/digits/candidates/shards/shard-00000.tar holds 1 member(s) that are not plain "
        "<sample id>.<extension> files, first '../../evil.png'; extracting it could write outside its "
        "folder; "
        "restore the shard (`dvc checkout`) or regenerate"
    )
    assert not folder(fresh, "1.0.0").exists()


def test_a_symlinked_shard_leading_out_is_refused(fresh: Path, base: Built, tmp_path: Path):
    shard = fresh / "data/digits/candidates/shards/shard-00000.tar"
    outside = tmp_path / "elsewhere.tar"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    result = runner.invoke(
        app, ["release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        "error: shard data/digits/candidates/shards/shard-00000.tar escapes the workspace "
        f"{fresh}; use a path inside it"
    )


@pytest.mark.parametrize("case", _params(("member-dotdot", "id-newline", "id-nul", "shard-outside")))
def test_verify_and_the_loader_refuse_a_hostile_release(
    fresh: Path, base: Built, case: str, monkeypatch: pytest.MonkeyPatch
):
    """A release signed by a synthreg that did not check names (here: the check switched off)."""
    sid = plant(fresh, FILTERED, case)
    fake_report(fresh)
    commit_all(fresh, "a hostile manifest, committed: release names the commit it was made from")
    monkeypatch.setattr("registry.releases.publish.check_manifest", lambda *a, **k: None)
    monkeypatch.setattr("registry.releases.release._recheck", skipped_recheck)
    if CASES[case][0] != "shard":
        monkeypatch.setattr("registry.releases.publish.checked_members", unchecked_members)
    # The shard reader's path check (publish's own checks are about the release folder, not the manifest).
    monkeypatch.setattr("registry.releases.release.inside", lambda ws, p, what: (ws / p).resolve())
    if case == "id-nul":  # issue 24's strict tar reader: a member name holding a NUL is no shard at all
        with pytest.raises(ShardFormatError, match="the name holds bytes after its end"):
            release("digits", "1.0.0", fresh, key=base.key)
        return
    release("digits", "1.0.0", fresh, key=base.key)
    monkeypatch.undo()
    result = runner.invoke(app, ["verify", "digits@1.0.0", "-w", str(fresh)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "  problem: 1 sample(s) have unsafe names or digests in the manifest" in lines
    assert f"  sample {shown(sid)}: {CASES[case][2]}" in "\n".join(lines)
    assert lines[-1].startswith("digits@1.0.0: FAILED")
    assert not any(line.startswith("FORGED") for line in lines)
    with pytest.raises(ManifestError, match="unsafe names"):
        open_release(fresh, "digits@1.0.0")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sample_id", "../x", "'../x' is not a safe sample id"),
        ("sample_id", "a\nb", "'a\\nb' is not a safe sample id"),
        ("member", "/etc/passwd", "member name '/etc/passwd' is not <sample id>.<extension>"),
        ("shard", "/abs/shard.tar", "shard path '/abs/shard.tar' is not a relative path of safe names"),
    ],
)
def test_a_record_with_a_hostile_name_does_not_validate(
    released: Built, field: str, value: str, message: str
):
    table = mf.read_table(folder(released.ws, "1.0.0") / "data" / "manifest.parquet").slice(0, 1)
    [record] = mf.records(table)
    with pytest.raises(ValidationError, match=message.replace("\\", "\\\\").replace("(", "\\(")):
        SampleRecord.model_validate(record.model_dump() | {field: value})


def test_the_sample_id_file_never_echoes_its_content(tmp_path: Path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(Exception) as e:
        read_id_file(secret)
    assert str(e.value) == (
        f"line 1 of sample id file {secret} is not a sample id (letters, digits, '.', '_', '-'); "
        "give one sample id a line"
    )
    binary = tmp_path / "ids.bin"
    binary.write_bytes(b"digits-1\n\xff\xfe\n")
    with pytest.raises(Exception) as e:
        read_id_file(binary)
    assert str(e.value) == f"sample id file {binary} is not UTF-8 text (byte 9); give one sample id a line"
    good = tmp_path / "ids.txt"
    good.write_text("digits-1-000000-abcdef12\n\n  digits-7-000003-00000000  \n")
    assert read_id_file(good) == ["digits-1-000000-abcdef12", "digits-7-000003-00000000"]


def test_member_parse_keeps_every_name_in_a_plain_tar():
    """Unsafe names are listed; a link is refused as not a shard synthreg writes."""
    from registry.store.shards import ShardFormatError, scan

    data = tar_bytes([("a.png", b"1"), ("../../evil.png", b"2"), ("/abs.png", b"3")])
    found, unsafe = scan(data)
    assert sorted(found) == sorted(["a.png", "../../evil.png", "/abs.png"])
    assert sorted(unsafe) == ["../../evil.png", "/abs.png"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("b.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ShardFormatError, match="link name"):  # a link is no shard member at all
        scan(buf.getvalue())
