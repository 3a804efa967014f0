"""Release's policy re-check reuses validate's rule outcomes only when validate wrote exactly this
report.json from the same manifest, packs, licence base, waivers file, recipe and policy code
(``policies.reuse``, issue 22); any other change checks again in full, or is refused as before. The
checks are counted by wrapping ``policies.engine.CHECKS``."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from registry.core.errors import ReleaseError
from registry.releases.release import recheck_summary, release
from registry.store import audit
from tests.conftest import REPO
from tests.registry.conftest import (
    FILTERED,
    POLICY,
    RECIPE,
    WAIVED,
    Built,
    clone,
    commit_all,
    folder,
    sha256,
    tags,
)

ALWAYS_RUN = {"source-withdrawn", "leakage"}  # they read files the stamp does not bind
NOT_VALIDATED_HERE = "report.json is not a report validate wrote in this clone, byte for byte"


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """How many times each kind of check ran."""
    from policies import engine

    calls: Counter = Counter()
    for kind, fn in list(engine.CHECKS.items()):

        def count(*args, _fn=fn, _kind=kind, **kw):
            calls[_kind] += 1
            return _fn(*args, **kw)

        monkeypatch.setitem(engine.CHECKS, kind, count)
    return calls


def _recheck_event(ws: Path) -> dict:
    [event] = [e for e in audit.read(ws) if e.kind == "release" and e.subject == "digits@1.0.0"]
    return event.details["policy_recheck"]


def _golden_compare():
    spec = importlib.util.spec_from_file_location("golden_release", REPO / "scripts" / "golden_release.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare


def test_nothing_changed_reuses_validate_and_releases_the_same_files(
    fresh: Path, base: Built, tmp_path: Path, counted: Counter
):
    rerun = clone(fresh, tmp_path / "rerun")
    shutil.rmtree(rerun / ".git" / "synthreg")  # no stamp: what a release checked in full does

    reused = release("digits", "1.0.0", fresh, key=base.key)
    assert set(counted) == ALWAYS_RUN  # the provenance (GX), quality, prompt... checks did not run
    event = _recheck_event(fresh)
    assert event["why"] is None and event["ran"] == ["sources.not-withdrawn", "leakage.eval-split"]
    assert set(event["reused"]) >= {"provenance.complete", *WAIVED}
    assert recheck_summary(fresh, "digits", "1.0.0") == (
        f"policy re-check: reused validate's result for {len(event['reused'])} of "
        f"{len(event['reused']) + 2} rules (report.json as validate wrote it in this clone; same manifest, "
        "packs, licence base, waivers file, recipe and policy code); ran again: sources.not-withdrawn, "
        "leakage.eval-split (they read other files)"
    )

    counted.clear()
    checked = release("digits", "1.0.0", rerun, key=base.key)
    assert {"provenance", "quality", "representation"} <= set(counted)
    rerun_event = _recheck_event(rerun)
    assert (rerun_event["reused"], rerun_event["why"]) == ([], NOT_VALIDATED_HERE)
    assert sorted(rerun_event["ran"]) == sorted(event["reused"] + event["ran"])
    assert recheck_summary(rerun, "digits", "1.0.0") == (
        f"policy re-check: ran all {len(rerun_event['ran'])} rules again ({NOT_VALIDATED_HERE})"
    )
    # The same release either way: every file, signatures, key ids, times and commits masked.
    assert _golden_compare()(folder(fresh, "1.0.0"), folder(rerun, "1.0.0")) == []
    assert reused.model_dump(exclude={"created_at"}) == checked.model_dump(exclude={"created_at"})


def _edit_report_message(ws: Path) -> None:
    path = ws / POLICY / "report.json"
    doc = json.loads(path.read_text())
    doc["results"][0]["message"] += " (edited)"  # the status is unchanged: accepted today, but re-checked
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _edit_recipe_description(ws: Path) -> None:
    recipe = yaml.safe_load((ws / RECIPE).read_text())
    recipe["description"] = "tiny digits, described again after validation"
    (ws / RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False))
    commit_all(ws, "describe it again")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_edit_report_message, NOT_VALIDATED_HERE),
        (_edit_recipe_description, "the recipe changed since validation"),
    ],
    ids=["report-edited", "recipe-declaration"],
)
def test_a_changed_input_is_checked_again_in_full(fresh: Path, base: Built, counted: Counter, change, why):
    change(fresh)
    release("digits", "1.0.0", fresh, key=base.key)
    assert {"provenance", "quality", "representation", *ALWAYS_RUN} <= set(counted)
    event = _recheck_event(fresh)
    assert event["reused"] == [] and event["why"] == why


def _append(ws: Path, rel: str) -> None:
    with (ws / rel).open("a") as f:
        f.write("# edited after validation\n")
    commit_all(ws, f"edit {rel}")


def _add_waivers_file(ws: Path) -> None:
    (ws / "waivers.yaml").write_text("waivers: []\n")
    commit_all(ws, "a waivers file")


def _remove_signed_waivers(ws: Path) -> None:
    shutil.rmtree(ws / "waivers")
    commit_all(ws, "no signed waivers")


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (
            lambda ws: _append(ws, "policies/packs/digits.yaml"),
            "the policy report was made with packs ['policies/packs/default.yaml', "
            "'policies/packs/digits.yaml'] before they were edited (their content differs now)",
        ),
        (
            lambda ws: _append(ws, "policies/licenses.yaml"),
            "the policy report was made with another licence base",
        ),
        (
            _add_waivers_file,
            "the policy report was made with another waivers file (sha256 None)",
        ),
        (
            # the signed waivers are decided again even when outcomes are reused: gone, the rules fail
            _remove_signed_waivers,
            f"report.json says rule {sorted(WAIVED)[0]} is waived (waived by Solo Tester), but checking the "
            "manifest again gives fail",
        ),
    ],
    ids=["pack", "licence-base", "waivers-file", "signed-waivers"],
)
def test_a_changed_input_is_refused_as_before(fresh: Path, base: Built, change, refusal):
    change(fresh)
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value).startswith(refusal), str(e.value)
    assert tags(fresh) == [] and not folder(fresh, "1.0.0").exists()


def test_a_flipped_status_in_the_report_is_refused(fresh: Path, base: Built, counted: Counter):
    path = fresh / POLICY / "report.json"
    doc = json.loads(path.read_text())
    flipped = next(r for r in doc["results"] if r["status"] == "waived")
    flipped.update(status="pass", waiver=None)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value).startswith(
        f"report.json says rule {flipped['rule_id']} is pass, but checking the manifest again gives waived"
    )
    assert "provenance" in counted  # checked in full: the edited report has no stamp


def test_a_refused_release_never_asks_mlflow_and_a_failing_reader_leaves_nothing(fresh: Path, base: Built):
    """The MLflow store is asked on a thread only once the re-check has passed (issue 22); a refusal
    never asks it. A reader that fails is the release's error, raised under the journal: no folder, no
    tag, and the next release succeeds."""
    asked: list[str] = []

    def reader(ws: Path, name: str):
        asked.append(name)
        raise RuntimeError("the store fell over")

    path = fresh / POLICY / "report.json"
    good = path.read_text()
    doc = json.loads(good)
    next(r for r in doc["results"] if r["status"] == "waived").update(status="pass", waiver=None)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    with pytest.raises(ReleaseError):
        release("digits", "1.0.0", fresh, key=base.key, models=reader)
    assert asked == []
    path.write_text(good)
    with pytest.raises(RuntimeError, match="the store fell over"):
        release("digits", "1.0.0", fresh, key=base.key, models=reader)
    assert asked == ["digits"]
    assert tags(fresh) == [] and not folder(fresh, "1.0.0").exists()
    release("digits", "1.0.0", fresh, key=base.key)
    assert tags(fresh) == ["digits@v1.0.0"]


def test_a_changed_manifest_is_refused_before_any_check(fresh: Path, base: Built, counted: Counter):
    path = fresh / FILTERED / "manifest.parquet"
    before = sha256(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ReleaseError) as e:
        release("digits", "1.0.0", fresh, key=base.key)
    assert str(e.value).startswith(f"the policy report is stale: made for manifest {before[:12]}")
    assert not counted
