""".ci/check-lock's comparisons on the committed dvc.lock (issue 9): on the CPU kind dvc.lock was locked
on, a fresh clone must give every entry whole; on another kind the images differ in their last bits, and
the check still catches a lock left stale by a code, recipe, policy or parameter change, and a per-run
value in an output, while a change only in the pipeline's data passes as the CPU's doing.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("check_lock", REPO / ".ci" / "check_lock.py")
assert spec and spec.loader
check_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lock)


@pytest.fixture
def lock() -> dict:
    return check_lock.read(str(REPO / "dvc.lock"))


def with_md5(entries: dict, stage: str, where: str, path: str, md5: str) -> dict:
    out = copy.deepcopy(entries)
    hits = [item for item in out[stage][where] if item["path"] == path]
    assert hits, f"{stage} has no {where} {path}"
    hits[0]["md5"] = md5
    return out


def test_data_that_another_cpu_made_differently_is_not_staleness_but_is_a_difference(lock: dict):
    other = with_md5(lock, "generate@digits", "outs", "data/digits/candidates", "0" * 32 + ".dir")
    other = with_md5(other, "filter@digits", "deps", "data/digits/candidates", "0" * 32 + ".dir")
    assert check_lock.differ(lock, other, "stale") == []
    assert check_lock.differ(lock, other, "whole") == ["generate@digits", "filter@digits"]
    assert check_lock.differ(lock, other, "same") == ["generate@digits", "filter@digits"]


@pytest.mark.parametrize(
    ("stage", "path"),
    [
        ("generate@digits", "generators/generate.py"),
        ("filter@digits", "generators/filter.py"),
        ("validate@digits", "policies"),
        ("validate@digits", "recipes/digits.yaml"),
    ],
)
def test_a_code_recipe_or_policy_change_without_a_relock_is_stale(lock: dict, stage: str, path: str):
    paths = [d["path"] for d in lock[stage]["deps"]]
    if path not in paths:
        pytest.fail(f"{stage} no longer depends on {path}: {paths}")
    assert check_lock.differ(lock, with_md5(lock, stage, "deps", path, "f" * 32), "stale") == [stage]


def test_a_parameter_change_without_a_relock_is_stale(lock: dict):
    other = copy.deepcopy(lock)
    params = other["filter@digits"]["params"]
    (name,) = params  # params.yaml
    params[name] = {k: "changed" for k in params[name]}
    assert check_lock.differ(lock, other, "stale") == ["filter@digits"]


def test_the_lock_kind_names_a_vendor_a_capability_and_torch():
    vendor, capability, torch, version = (REPO / ".ci" / "lock-kind").read_text().split()
    assert vendor and capability and (torch, version) == ("torch", "2.13.0+cpu")  # the CPU wheel's name
    vendor, capability, torch, version = check_lock.kind().split()
    assert vendor and capability and torch == "torch" and version.startswith("2.13.0")


def test_the_script_fails_naming_the_stale_stage_and_passes_the_committed_lock(tmp_path: Path, capsys):
    committed = str(REPO / "dvc.lock")
    text = yaml.safe_load((REPO / "dvc.lock").read_text())
    for dep in text["stages"]["filter@digits"]["deps"]:
        if dep["path"] == "generators/filter.py":
            dep["md5"] = "f" * 32
    stale = tmp_path / "dvc.lock"
    stale.write_text(yaml.safe_dump(text))
    assert check_lock.main(["stale", committed, committed]) == 0
    assert check_lock.main(["stale", committed, str(stale)]) == 1
    assert "the committed filter@digits name other code" in capsys.readouterr().err


def test_the_committed_lock_is_not_stale_for_this_trees_code_recipe_policies_or_parameters():
    """What check-lock finds at the end of CI (a code, policy or parameter change without a relock),
    found in the fast suite in a second: `dvc status` of the three stages names no changed dependency
    outside the pipeline's data (which a fresh clone does not have, and another CPU makes otherwise)."""
    dvc = str(Path(sys.executable).with_name("dvc"))
    out = subprocess.run(
        [dvc, "status", *check_lock.STAGES, "--json"], cwd=REPO, capture_output=True, text=True, check=True
    )
    stale: dict[str, object] = {}
    for stage, entries in (json.loads(out.stdout or "{}") or {}).items():
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "changed checksum": the stage itself
                stale[stage] = entry
                continue
            changed = {
                p: w for p, w in entry.get("changed deps", {}).items() if not p.startswith(check_lock.DATA)
            }
            if changed:
                stale[stage] = changed
    assert not stale, f"dvc.lock is stale for {stale}: relock (CONTRIBUTING.md, 'Data and weights')"


def test_a_dependency_md5_is_what_the_committed_lock_holds_for_this_tree():
    """``md5 STAGE PATH``, DVC's own hashing of a code dependency (for relocking a change of code alone
    on another CPU kind than the lock's), gives the committed entry for this tree: a folder and a file."""
    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    for stage, path in (("validate@digits", "policies"), ("generate@digits", "generators/generate.py")):
        want = next(d for d in committed[stage]["deps"] if d["path"] == path)
        assert check_lock.dependency_md5(stage, path, REPO) == want
    with pytest.raises(SystemExit, match="pipeline data"):
        check_lock.dependency_md5("validate@digits", "data/digits/filtered/manifest.parquet", REPO)
