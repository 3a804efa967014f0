"""No traceback reaches a user (issue 14, item 5): an unexpected exception becomes one line, exit 70 and a
saved traceback; and every input that gave a traceback (or was silently accepted) on main now gets its own
one-line message and exit code, through the real CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from registry.cli import app
from registry.core.errors import INTERNAL_ERROR_EXIT
from tests.conftest import write_yaml
from tests.registry.conftest import FILTERED, POLICY, Built

runner = CliRunner()
INTERNAL = re.compile(
    r"^error: internal error \(RuntimeError: boom at 0x2a\); "
    r"traceback saved to (?P<path>\S+); please report it$"
)


def test_an_unexpected_exception_is_one_line_exit_70_and_a_saved_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def explode(ws: Path) -> dict:
        raise RuntimeError("boom at 0x2a\nsecond line never shown")

    monkeypatch.setattr("registry.releases.catalog.list_releases", explode)
    monkeypatch.setenv("SYNTHREG_CRASH_DIR", str(tmp_path / "crashes"))
    result = runner.invoke(app, ["list", "-w", str(tmp_path)])
    assert result.exit_code == INTERNAL_ERROR_EXIT == 70
    [line] = result.output.splitlines()
    match = INTERNAL.match(line)
    assert match, line
    saved = Path(match["path"])
    assert saved.parent == tmp_path / "crashes" and oct(saved.stat().st_mode & 0o777) == "0o600"
    text = saved.read_text()
    assert text.startswith("Traceback (most recent call last):") and "in explode" in text
    assert "RuntimeError: boom at 0x2a\nsecond line never shown" in text


def test_a_crash_folder_inside_a_workspace_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 24: $SYNTHREG_CRASH_DIR inside the workspace put tracebacks (paths, values of the data) where
    `git add` commits them; the traceback goes to the system temporary folder instead, still 0600."""

    def explode(ws: Path) -> dict:
        raise RuntimeError("boom at 0x2a")

    ws = tmp_path / "ws"
    (ws / ".dvc").mkdir(parents=True)
    monkeypatch.setattr("registry.releases.catalog.list_releases", explode)
    monkeypatch.setenv("SYNTHREG_CRASH_DIR", str(ws / "crashes"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
    result = runner.invoke(app, ["list", "-w", str(ws)])
    match = INTERNAL.match(result.output.splitlines()[0])
    assert result.exit_code == 70 and match, result.output
    saved = Path(match["path"])
    assert saved.parent == tmp_path / "tmp" / "synthreg-crashes" and not (ws / "crashes").exists()
    assert oct(saved.stat().st_mode & 0o777) == "0o600"


def test_main_catches_what_escapes_a_command(tmp_path: Path):
    """`synthreg` as installed (``registry.cli:main``) in a subprocess: a failure outside any command's
    error handling (here: the app itself raising) is still one line and exit 70."""
    code = (
        "import registry.cli as a\n"
        "def boom(*args, **kw):\n    raise RuntimeError('boom at 0x2a')\n"
        "a.app = boom\na.main()\n"
    )
    env = os.environ | {"SYNTHREG_CRASH_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 70, proc.stderr
    assert INTERNAL.match(proc.stderr.strip()), proc.stderr
    assert "Traceback" not in proc.stderr


def _pack(path: Path, rule: dict) -> Path:
    base = {"id": "x.rule", "kind": "prompt-length", "severity": "warn", "description": "d", "max_chars": 5}
    path.write_text(yaml.safe_dump({"id": "pack", "description": "p", "rules": [base | rule]}))
    return path


def test_a_non_utf8_policy_pack(workspace: Path):
    (workspace / "pack.yaml").write_bytes(b"id: p\ndescription: \xe9t\xe9\n")
    result = runner.invoke(
        app, ["validate", "data/f", "--recipe", "recipe.yaml", "--pack", "pack.yaml", "-w", str(workspace)]
    )
    assert result.exit_code == 1
    assert result.output == (
        f"error: policy pack {workspace / 'pack.yaml'} is not UTF-8 text (byte 19); save it as UTF-8\n"
    )


def test_a_pack_key_with_a_newline(workspace: Path):
    _pack(workspace / "pack.yaml", {"bad\nkey": 1})
    result = runner.invoke(
        app, ["validate", "data/f", "--recipe", "recipe.yaml", "--pack", "pack.yaml", "-w", str(workspace)]
    )
    assert result.exit_code == 1, result.output
    assert result.output.splitlines() == [
        f"error: policy pack {workspace / 'pack.yaml'} is invalid:",
        "  rule 'x.rule' (rules[0]) bad\\nkey: unknown key (check its spelling; see the JSON schema in "
        "schemas/)",
    ]


def test_a_non_utf8_exclude_samples_file(workspace: Path, tmp_path: Path):
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"digits-1-000000-abcdef12\n\xff\n")
    result = runner.invoke(
        app,
        [
            "derive",
            "digits@1.0.0",
            "--version",
            "1.0.1",
            "--reason",
            "r",
            "--exclude-samples",
            str(ids),
            "-w",
            str(workspace),
        ],
    )
    assert result.exit_code == 1
    assert result.output == (
        f"error: sample id file {ids} is not UTF-8 text (byte 25); give one sample id a line\n"
    )


def test_the_exclude_samples_file_is_never_echoed(released_copy: Path, released: Built, tmp_path: Path):
    ids = tmp_path / "ids.txt"
    ids.write_text("private-person-name\n")  # a valid-looking id that is not in the release
    result = runner.invoke(
        app,
        [
            "derive",
            "digits@1.0.0",
            "--version",
            "1.0.1",
            "--reason",
            "r",
            "--exclude-samples",
            str(ids),
            "--key",
            str(released.key),
            "-w",
            str(released_copy),
        ],
    )
    assert result.exit_code == 1
    assert "private-person-name" not in result.output
    assert result.output == (
        f"error: 1 sample(s) to exclude are not in digits@1.0.0, first one from {ids}; check the ids "
        "(`synthreg impact --sample ID` finds the versions that hold one)\n"
    )


def test_a_manifest_with_a_null_image_digest(fresh: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from registry.store import manifest as mf

    path = fresh / "data/digits/candidates/manifest.parquet"
    rows = mf.read_table(path).to_pylist()
    rows[0]["image_sha256"] = None
    nullable = pa.schema([f.with_nullable(True) for f in mf.SCHEMA])  # as any Parquet writer may
    pq.write_table(pa.Table.from_pylist(rows, schema=nullable), path)
    result = runner.invoke(app, ["filter", "data/digits/candidates", "-w", str(fresh)])
    assert result.exit_code == 1
    assert result.output == (
        f"error: manifest {path}: sample {rows[0]['sample_id']!r}: image_sha256 is missing or not a sha256 "
        "(64 hex digits) (1 row(s) with unsafe names or digests); it was not written by synthreg or was "
        "edited since: regenerate it\n"
    )


def test_a_cuda_device_the_machine_lacks(workspace: Path):
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    write_yaml(workspace / "params.yaml", {"generate": {"device": "cuda:7"}})
    result = runner.invoke(app, ["generate", "recipe.yaml", "-w", str(workspace)])
    assert result.exit_code == 1
    assert result.output == (
        f"error: device 'cuda:7' is not available: this machine has {n} CUDA device(s); set generate.device "
        "in params.yaml (or --device) to cpu or an existing cuda:N\n"
    )
    assert not (workspace / "data").exists()


@pytest.mark.parametrize(
    ("params", "line"),
    [
        (
            {"generate": {"threads": 1000000}},
            "  generate.threads: Input should be less than or equal to 1024 (got 1000000)",
        ),
        (
            {"generate": {"device": "gpu"}},
            "  generate.device: String should match pattern '^(cpu|mps|cuda(:[0-9]{1,2})?)$' (got 'gpu')",
        ),
        (
            {"train": {"epochs": 10**12}},
            "  train.epochs: Input should be less than or equal to 100000 (got 1000000000000)",
        ),
    ],
)
def test_numeric_knobs_have_upper_bounds(workspace: Path, params: dict, line: str):
    write_yaml(workspace / "params.yaml", params)
    result = runner.invoke(app, ["generate", "recipe.yaml", "-w", str(workspace)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [f"error: params file {workspace / 'params.yaml'} is invalid:", line]


def test_a_version_component_over_a_billion(workspace: Path):
    result = runner.invoke(
        app, ["release", "digits", "--version", "99999999999999999999999.0.0", "-w", str(workspace)]
    )
    assert result.exit_code == 1
    assert result.output == (
        "error: version '99999999999999999999999.0.0' is not semantic (X.Y.Z, e.g. 1.0.0, each number below "
        "10^9)\n"
    )


@pytest.mark.parametrize("ref", ["../../etc@1.0.0", "digits@1.0.0/../../x", "digits@1.0.0\nforged"])
def test_a_release_reference_cannot_name_a_path(workspace: Path, ref: str):
    result = runner.invoke(app, ["show", ref, "-w", str(workspace)])
    assert result.exit_code == 1
    if "\n" in ref:  # refused with every argument holding a control character, before `show` runs
        assert result.output == (
            f"error: argument {ref!r} holds a newline or control character; give it as one line of text\n"
        )
        return
    assert result.output == (
        f"error: {ref!r} is not a release reference: give NAME@X.Y.Z (a dataset name of lowercase letters, "
        "digits, '-', '_'; version components below 10^9)\n"
    )


def test_params_outside_the_workspace(workspace: Path, tmp_path: Path):
    outside = tmp_path.parent / f"{tmp_path.name}-params.yaml"
    outside.write_text("generate: {threads: 1}\n")
    result = runner.invoke(app, ["generate", "recipe.yaml", "--params", str(outside), "-w", str(workspace)])
    assert result.exit_code == 1
    assert (
        result.output
        == f"error: params file {outside} escapes the workspace {workspace}; use a path inside it\n"
    )
    (workspace / "linked.yaml").symlink_to(outside)
    result = runner.invoke(app, ["generate", "recipe.yaml", "--params", "linked.yaml", "-w", str(workspace)])
    assert result.output == (
        f"error: params file {workspace / 'linked.yaml'} escapes the workspace {workspace}; "
        "use a path inside it\n"
    )


def test_a_symlinked_audit_log_leading_out_is_refused_before_anything_is_written(fresh: Path, tmp_path: Path):
    outside = tmp_path / "elsewhere"
    log = fresh / "audit" / "events"
    shutil.copytree(log, outside)
    shutil.rmtree(log)
    log.symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    report = fresh / POLICY / "report.json"
    report_before = report.read_bytes()
    result = runner.invoke(app, ["validate", FILTERED, "--out", POLICY, "-w", str(fresh)])
    assert result.exit_code == 1
    assert result.output == (
        f"error: audit log audit/events: audit/events is a symbolic link (to {outside}); synthreg does not "
        "follow links inside the workspace: put the folder or file itself there\n"
    )
    assert sorted(p.name for p in outside.iterdir()) == before and report.read_bytes() == report_before


def test_a_symlinked_report_folder_leading_out_is_refused(fresh: Path, tmp_path: Path):
    outside = tmp_path / "policy-elsewhere"
    shutil.move(fresh / POLICY, outside)
    (fresh / POLICY).symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    result = runner.invoke(app, ["validate", FILTERED, "-w", str(fresh)])
    assert result.exit_code == 1
    assert result.output == (
        f"error: report folder {fresh / POLICY} escapes the workspace {fresh}; use a path inside it\n"
    )
    assert sorted(p.name for p in outside.iterdir()) == before


def test_a_symlinked_releases_folder_leading_out_is_refused(fresh: Path, base: Built, tmp_path: Path):
    outside = tmp_path / "releases-elsewhere"
    outside.mkdir()
    (fresh / "releases").mkdir()
    (fresh / "releases" / "digits").symlink_to(outside)
    result = runner.invoke(
        app, ["release", "digits", "--version", "1.0.0", "--key", str(base.key), "-w", str(fresh)]
    )
    assert result.exit_code == 1
    assert result.output == (  # any link is refused, wherever it points (issue 24: no_links)
        f"error: release folder releases/digits/1.0.0: releases/digits is a symbolic link (to {outside}); "
        "synthreg does not follow links inside the workspace: put the folder or file itself there\n"
    )
    assert list(outside.iterdir()) == []
