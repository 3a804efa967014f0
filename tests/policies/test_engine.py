"""The policy engine on hand-built filtered manifests (no generator run): a clean dataset passes every
rule of the default pack; one planted violation fails exactly the rule meant to catch it, with
evidence naming the offender; waivers, report files, malformed packs and the CLI's exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from policies import engine
from policies.checks import provenance
from policies.engine import DEFAULT_KB, DEFAULT_PACKS, load_pack, load_packs, validate
from registry.cli import app
from registry.core.errors import POLICY_FAILED_EXIT, PolicyError, WorkspaceError
from registry.records.dataset import SampleRecord
from registry.records.policy import PolicyReport, RuleResult
from registry.store import manifest as mf
from tests.conftest import REPO, TrustSetup, write_yaml

DATASET = "digits"
IDENTITIES = ["0", "1", "2"]
PER_IDENTITY = 20
TEMPLATE = "a handwritten digit {identity} with a {stroke} stroke"
FILTERED = "data/digits/filtered"
MANIFEST = f"{FILTERED}/manifest.parquet"
REPORT_DIR = "data/digits/policy"
FLUX_DEV = "FLUX.1-dev-Non-Commercial-1.1.1"
OPENRAIL_M = "CreativeML-OpenRAIL-M"
TODAY = date(2026, 1, 15)

runner = CliRunner()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sid(i: int) -> str:
    return f"digits-{i:06d}"


def row(i: int, identity: str, stroke: str) -> dict[str, Any]:
    """One accepted, fully provenanced manifest row (a SampleRecord as a dict)."""
    return SampleRecord(
        dataset=DATASET,
        sample_id=sid(i),
        index=i,
        identity=identity,
        attributes={"stroke": stroke},
        prompt=TEMPLATE.format(identity=identity, stroke=stroke),
        negative_prompt="",
        seed=20240607 + i,
        steps=20,
        guidance=2.0,
        width=16,
        height=16,
        generator_name="tiny-digits",
        generator_backend="tiny-digits",
        generator_source="generators/tiny_digits/model",
        weights_digest=hashlib.sha256(b"weights").hexdigest(),
        generator_licence="CC-BY-4.0",
        pipeline_class="TinyDigitsPipeline",
        scheduler="DDIMScheduler",
        scheduler_config_digest=hashlib.sha256(b"scheduler").hexdigest(),
        image_sha256=hashlib.sha256(sid(i).encode()).hexdigest(),
        phash=hashlib.sha256(sid(i).encode()).hexdigest()[:16],
        shard="data/digits/candidates/shards/000000.tar",
        member=f"{sid(i)}.png",
        batch=i // 10,
        batch_size=10,
        library_versions={"torch": "2.5.0"},
        device="cpu",
        identity_pred=identity,
        identity_confidence=0.99,
        contrast=0.4,
        nn_distance=0.2,
        duplicate_of=None,
        observed_attributes={"stroke": stroke},
        decision="accepted",
        reason="ok: passed every check",
    ).model_dump()


def clean_rows() -> list[dict[str, Any]]:
    """3 identities x 20 images, stroke alternating thin / bold, observed as requested."""
    return [
        row(k * PER_IDENTITY + j, identity, ("thin", "bold")[j % 2])
        for k, identity in enumerate(IDENTITIES)
        for j in range(PER_IDENTITY)
    ]


def clean_recipe() -> dict[str, Any]:
    recipe = yaml.safe_load((REPO / "recipes" / "digits.yaml").read_text())
    recipe.update(identities=list(IDENTITIES), images_per_identity=PER_IDENTITY)
    return recipe


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Valid rows through ``write_manifest``; rows a SampleRecord refuses (a null seed) through pyarrow
    with that column made nullable, as a broken writer would leave them."""
    if all(r["seed"] is not None for r in rows):
        mf.write_manifest([SampleRecord.model_validate(r) for r in rows], path)
        return
    schema = mf.SCHEMA.set(mf.SCHEMA.get_field_index("seed"), mf.SCHEMA.field("seed").with_nullable(True))
    converted = [{k: list(v.items()) if isinstance(v, dict) else v for k, v in r.items()} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(converted, schema=schema), path, compression="zstd")


@dataclass
class Workspace:
    root: Path
    recipe: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def write(self) -> Workspace:
        write_yaml(self.root / "recipe.yaml", self.recipe)
        write_rows(self.rows, self.manifest)
        return self

    def validate(self, **kwargs: Any) -> PolicyReport:
        kwargs.setdefault("today", TODAY)
        kwargs.setdefault("packs", DIGITS_PACKS)  # as params.yaml's datasets.digits names them
        return validate(FILTERED, self.root, "recipe.yaml", **kwargs)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A clean workspace: recipe, filtered manifest, and the repo's policy files (so the deny list of
    ``sources.not-withdrawn`` is real and the CLI's default params find the pack and the KB)."""
    root = tmp_path.resolve()
    for rel in ("policies/withdrawn.yaml", "policies/licenses.yaml", *DIGITS_PACKS):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    return Workspace(root, clean_recipe(), clean_rows()).write()


def by_id(report: PolicyReport) -> dict[str, RuleResult]:
    return {r.rule_id: r for r in report.results}


# The generic pack, then the digits dataset's own (its stroke rules), as params.yaml names them.
DIGITS_PACKS = ["policies/packs/default.yaml", "policies/packs/digits.yaml"]


def default_rule_ids() -> list[str]:
    return [r.id for p in DIGITS_PACKS for r in load_pack(REPO / p).rules]


def test_clean_dataset_passes_every_rule(ws: Workspace):
    report = ws.validate()
    assert [r.rule_id for r in report.results] == default_rule_ids()
    assert {r.rule_id: r.status for r in report.results if r.status != "pass"} == {}
    assert report.passed is True
    results = by_id(report)
    leakage = results["leakage.eval-split"].message  # not "nothing to leak into"; and says how it knows
    assert "share no digest (declared, not verified: sklearn-digits, sklearn-digits-held-out)" in leakage
    assert results["licence.attribution"].evidence.count == 4  # generator, 2 sources, training source


def test_provenance_rules_are_checked_last_and_reported_in_pack_order(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
):
    # GX's suite waits for GX's import: the other rules' queries run meanwhile (issue 22). The report
    # still goes rule by rule in pack order; the progress shown names each rule as it is checked.
    checked: list[str] = []
    for kind, check in list(engine.CHECKS.items()):

        def recorded(rule, ctx, _check=check, **kw):
            checked.append(rule.id)
            return _check(rule, ctx, **kw)

        monkeypatch.setitem(engine.CHECKS, kind, recorded)
    shown: list[tuple] = []
    report = ws.validate(progress=lambda *a: shown.append(a))
    ids = default_rule_ids()
    last = [r.id for p in DIGITS_PACKS for r in load_pack(REPO / p).rules if r.kind == "provenance"]
    assert last and last[0] != ids[-1]  # a pack order in which it would not come last
    assert checked == [i for i in ids if i not in last] + last
    assert [r.rule_id for r in report.results] == ids
    assert shown == [(n, len(ids), rule_id) for n, rule_id in enumerate(checked)] + [(len(ids), len(ids))]


# --- one planted violation at a time ------------------------------------------------------------------


def plant_nc_source_in_commercial_dataset(w: Workspace) -> None:
    w.recipe["intended_use"]["commercial"] = True
    w.recipe["sources"].append({"name": "nc-digits", "licence": "CC-BY-NC-4.0", "role": "conditioning"})


def plant_flux_dev_for_reidentification(w: Workspace) -> None:
    w.recipe["generator"]["licence"] = FLUX_DEV
    w.recipe["intended_use"]["purposes"] = ["person-reidentification"]
    for r in w.rows:
        r["generator_licence"] = FLUX_DEV


def plant_openrail_for_law_enforcement(w: Workspace) -> None:
    w.recipe["generator"]["licence"] = OPENRAIL_M
    w.recipe["intended_use"]["purposes"] = ["law-enforcement"]
    for r in w.rows:
        r["generator_licence"] = OPENRAIL_M


def plant_denied_source(w: Workspace) -> None:
    w.recipe["sources"].append(
        {"name": "DukeMTMC-reID", "licence": "CC-BY-NC-SA-4.0", "role": "conditioning"}
    )


def plant_source_marked_withdrawn(w: Workspace) -> None:
    w.recipe["sources"].append(
        {"name": "old-digits", "licence": "CC-BY-4.0", "role": "conditioning", "status": "withdrawn"}
    )


def plant_denied_generator_training_source(w: Workspace) -> None:
    w.recipe["generator"]["training_sources"].append(
        {"name": "DukeMTMC", "licence": "CC-BY-NC-SA-4.0", "role": "generator-training", "digest": "e" * 64}
    )


def plant_email_in_prompt(w: Workspace) -> None:
    w.rows[7]["prompt"] += ", signed jane.doe@example.com"


def plant_observed_collapse(w: Workspace) -> None:
    # identity "0": requested 10 thin / 10 bold (balanced), observed 19 bold / 1 thin
    for r in w.rows[:PER_IDENTITY][1:]:
        r["observed_attributes"] = {"stroke": "bold"}


def plant_observed_collapse_overall_balanced(w: Workspace) -> None:
    # identity "0" observed 19 bold / 1 thin, identity "1" the mirror image: 30 / 30 overall
    plant_observed_collapse(w)
    for r in w.rows[PER_IDENTITY : 2 * PER_IDENTITY][:-1]:
        r["observed_attributes"] = {"stroke": "thin"}


def plant_null_seed(w: Workspace) -> None:
    w.rows[42]["seed"] = None


def plant_unknown_licence(w: Workspace) -> None:
    w.recipe["sources"][0]["licence"] = "Some-Custom-Licence"


def plant_eval_split_leak(w: Workspace) -> None:
    training_digest = w.recipe["generator"]["training_sources"][0]["digest"]
    evaluation = next(s for s in w.recipe["sources"] if s["role"] == "evaluation")
    evaluation["digest"] = training_digest


def conflicts(r: RuleResult) -> list[dict]:
    return r.evidence.details["conflicts"]


def ev_nc_source(r: RuleResult) -> None:
    assert conflicts(r) == [
        {
            "subject": "source nc-digits",
            "licence": "CC-BY-NC-4.0",
            "use": "commercial",
            "citation": "https://creativecommons.org/licenses/by-nc/4.0/legalcode §1(i), §2(a)(1)",
        }
    ]
    assert "source nc-digits is licensed CC-BY-NC-4.0, which does not allow commercial" in r.message


def ev_flux(r: RuleResult) -> None:
    assert [(c["subject"], c["licence"], c["use"]) for c in conflicts(r)] == [
        ("generator tiny-digits", FLUX_DEV, "biometric")
    ]
    assert "does not allow biometric" in r.message
    assert "https://github.com/black-forest-labs/flux/blob/main/model_licenses/LICENSE-FLUX1-dev" in r.message
    assert "§4(a)(iv)" in r.message


def ev_openrail(r: RuleResult) -> None:
    assert [(c["subject"], c["licence"], c["use"]) for c in conflicts(r)] == [
        ("generator tiny-digits", OPENRAIL_M, "law-enforcement")
    ]
    assert "https://github.com/CompVis/stable-diffusion/blob/main/LICENSE" in r.message
    assert "Attachment A, 11th item" in r.message


def ev_withdrawn(name: str, why: str) -> Callable[[RuleResult], None]:
    def check(r: RuleResult) -> None:
        [hit] = r.evidence.details["withdrawn"]
        assert hit["source"] == name and hit["why"].startswith(why)
        assert f"withdrawn source used: {name}" in r.message

    return check


def ev_email(r: RuleResult) -> None:
    assert r.evidence.count == 1 and r.evidence.sample_ids == [sid(7)]
    assert list(r.evidence.details["prompts"].values()) == ["an e-mail address"]


def ev_collapse(r: RuleResult) -> None:
    assert r.evidence.details["groups"][0]["group"] == "0"
    assert r.evidence.details["groups"][0]["shares"] == {"bold": 0.95, "thin": 0.05}
    # evidence: identity 0's samples of the dominant observed value
    assert r.evidence.count == 19 and r.evidence.sample_ids == [sid(i) for i in range(1, 20)]
    assert r.message == (
        "observed stroke is unbalanced per identity: smallest share 0.0500 < 0.1, in 1 of 3 identities (0); "
        "worst is identity 0 with shares {'bold': 0.95, 'thin': 0.05}"
    )
    assert (r.measured, r.threshold) == (0.05, 0.1)  # the bounded quantity, below its bound


def ev_collapse_both(r: RuleResult) -> None:
    assert [g["group"] for g in r.evidence.details["groups"]] == ["0", "1"]
    # issue 12: the evidence covers every offending group (each one's dominant value), not the first only
    assert r.evidence.count == 38
    assert r.evidence.sample_ids == [sid(i) for i in range(1, 21)]  # capped at 20, by index
    assert "in 2 of 3 identities (0, 1);" in r.message


def ev_null_seed(r: RuleResult) -> None:
    assert r.evidence.sample_ids == [sid(42)]
    assert r.evidence.count == 1
    assert r.evidence.details["failed_expectations"] == [
        {"expectation": "expect_column_values_to_not_be_null", "column": "seed", "unexpected": 1}
    ]


def ev_unknown(r: RuleResult) -> None:
    assert r.evidence.details == {"unknown": ["Some-Custom-Licence"]}
    assert "source sklearn-digits: 'Some-Custom-Licence'" in r.message


def ev_leak(r: RuleResult) -> None:
    assert r.evidence.details["overlap"] == [
        {
            "generator_training": "sklearn-digits",
            "evaluation": "sklearn-digits-held-out",
            "digest": "9ef97b5cbe79bfd869bb71b082afc043696e8c2ccc12a473343f1b3889ced9aa",
        }
    ]


VIOLATIONS = [
    pytest.param(
        plant_nc_source_in_commercial_dataset, "licence.intended-use", {}, ev_nc_source, id="nc-source"
    ),
    pytest.param(
        plant_flux_dev_for_reidentification, "licence.intended-use", {}, ev_flux, id="flux-dev-reid"
    ),
    pytest.param(
        plant_openrail_for_law_enforcement, "licence.intended-use", {}, ev_openrail, id="openrail-police"
    ),
    pytest.param(
        plant_denied_source,
        "sources.not-withdrawn",
        {},
        ev_withdrawn("DukeMTMC-reID", "on policies/withdrawn.yaml: DukeMTMC was taken down"),
        id="deny-listed-source",
    ),
    pytest.param(
        plant_source_marked_withdrawn,
        "sources.not-withdrawn",
        {},
        ev_withdrawn("old-digits", "marked withdrawn in the recipe"),
        id="source-marked-withdrawn",
    ),
    pytest.param(
        plant_denied_generator_training_source,
        "sources.not-withdrawn",
        {},
        ev_withdrawn("DukeMTMC", "on policies/withdrawn.yaml"),
        id="deny-listed-generator-training-source",
    ),
    pytest.param(plant_email_in_prompt, "prompt.personal-data", {}, ev_email, id="email-in-prompt"),
    # The overall observed balance drops to 21 thin / 39 bold = 0.54 < 0.8: the warn rule
    # bias.observed-balance legitimately warns as well.
    pytest.param(
        plant_observed_collapse,
        "bias.observed-collapse",
        {"bias.observed-balance": "warn"},
        ev_collapse,
        id="observed-collapse",
    ),
    # Mirror-image collapses keep the overall balance at 30 / 30: only the per-identity rule sees them.
    pytest.param(
        plant_observed_collapse_overall_balanced,
        "bias.observed-collapse",
        {},
        ev_collapse_both,
        id="observed-collapse-overall-balanced",
    ),
    pytest.param(plant_null_seed, "provenance.complete", {}, ev_null_seed, id="null-seed"),
    # licence.intended-use skips an id it cannot look up; licence.known is the rule that fails it.
    pytest.param(plant_unknown_licence, "licence.known", {}, ev_unknown, id="unknown-licence"),
    pytest.param(plant_eval_split_leak, "leakage.eval-split", {}, ev_leak, id="eval-split-leak"),
]


@pytest.mark.parametrize(("plant", "failing", "warnings", "evidence"), VIOLATIONS)
def test_one_violation_fails_exactly_its_rule(
    ws: Workspace,
    plant: Callable[[Workspace], None],
    failing: str,
    warnings: dict[str, str],
    evidence: Callable[[RuleResult], None],
):
    plant(ws)
    report = ws.write().validate()
    assert [r.rule_id for r in report.results] == default_rule_ids()
    assert {r.rule_id: r.status for r in report.results if r.status != "pass"} == {
        failing: "fail",
        **warnings,
    }
    assert report.passed is False
    evidence(by_id(report)[failing])


def test_recipe_generator_licence_alone_is_not_what_licence_use_checks(ws: Workspace):
    """The generator licence checked is the one the manifest records (what actually ran)."""
    ws.recipe["generator"]["licence"] = FLUX_DEV
    ws.recipe["intended_use"]["purposes"] = ["person-reidentification"]
    report = ws.write().validate()
    assert by_id(report)["licence.intended-use"].status == "pass"


# --- waivers ---------------------------------------------------------------------------------------


PLAIN_WAIVER = {
    "rule_id": "prompt.personal-data",
    "reason": "the address is the synthetic signer's, not a person's",
    "approver": "dpo@example.org",
}


def waive(w: Workspace, scope: str = DATASET, expires: date = TODAY + timedelta(days=30)) -> None:
    """A waiver signed by the session's solo key (an approver in the pinned trust root)."""
    from registry.releases.waive import waive as sign_waiver

    sign_waiver(
        w.root,
        "prompt.personal-data",
        scope,
        PLAIN_WAIVER["reason"],
        expires,
        known_rules={"prompt.personal-data"},
        today=min(expires, TODAY),
    )


@pytest.fixture
def emailed(ws: Workspace) -> Workspace:
    plant_email_in_prompt(ws)
    return ws.write()


@pytest.mark.parametrize("scope", [DATASET, "*"])
def test_valid_waiver_waives_a_failing_error_rule(emailed: Workspace, scope: str, solo_trust: TrustSetup):
    waive(emailed, scope=scope)
    report = emailed.validate()
    result = by_id(report)["prompt.personal-data"]
    assert result.status == "waived"
    assert result.waiver is not None
    assert (result.waiver.approver, result.waiver.approver_keyid) == ("Solo Tester", solo_trust.keyid)
    assert result.evidence.sample_ids == [sid(7)]  # the evidence stays on record
    assert report.passed is True and report.ignored_waivers == []
    assert {r.status for r in report.results} == {"pass", "waived"}
    md = (emailed.root / REPORT_DIR / "report.md").read_text()
    assert f"Waived by Solo Tester (key {solo_trust.keyid[:16]}) until" in md


def test_waiver_is_valid_through_its_expiry_day(emailed: Workspace):
    waive(emailed, expires=TODAY)
    report = emailed.validate()
    assert by_id(report)["prompt.personal-data"].status == "waived" and report.passed


def test_expired_waiver_does_not_apply_and_is_listed(emailed: Workspace):
    waive(emailed, expires=TODAY - timedelta(days=1))
    report = emailed.validate()
    result = by_id(report)["prompt.personal-data"]
    assert result.status == "fail" and result.waiver is None
    assert report.passed is False
    [ignored] = report.ignored_waivers
    assert ignored.why == f"expired on {TODAY - timedelta(days=1)}"


def test_waiver_for_another_dataset_does_not_apply(emailed: Workspace):
    waive(emailed, scope="faces")
    report = emailed.validate()
    assert by_id(report)["prompt.personal-data"].status == "fail"
    assert report.passed is False


def test_an_unsigned_waiver_is_ignored_and_listed(emailed: Workspace):
    write_yaml(
        emailed.root / "waivers.yaml",
        {"waivers": [PLAIN_WAIVER | {"scope": DATASET, "expires": (TODAY + timedelta(days=9)).isoformat()}]},
    )
    report = emailed.validate(waivers="waivers.yaml")
    assert by_id(report)["prompt.personal-data"].status == "fail" and not report.passed
    [ignored] = report.ignored_waivers
    assert (ignored.rule_id, ignored.approver, ignored.source) == (
        "prompt.personal-data",
        "dpo@example.org",
        "waivers.yaml",
    )
    assert ignored.why.startswith(
        "unsigned (a waivers file entry): only waivers signed by a trusted approver"
    )
    md = (emailed.root / REPORT_DIR / "report.md").read_text()
    assert "## Waivers ignored" in md


# --- report files ----------------------------------------------------------------------------------


def test_report_files(emailed: Workspace):
    report = emailed.validate(packs=None)  # none named: the packaged generic pack
    out = emailed.root / REPORT_DIR
    on_disk = PolicyReport.model_validate_json((out / "report.json").read_text())
    assert on_disk == report
    assert on_disk.dataset == DATASET and on_disk.manifest == MANIFEST
    assert on_disk.manifest_sha256 == sha256(emailed.manifest)
    assert on_disk.packs == {"synthreg:packs/default.yaml": sha256(DEFAULT_PACKS[0])}
    assert on_disk.licence_kb_sha256 == sha256(DEFAULT_KB)
    assert on_disk.waivers_sha256 is None
    assert on_disk.intended_use.purposes == ["research", "education", "training-a-model"]
    md = (out / "report.md").read_text()
    assert "**FAILED**" in md
    assert "| `prompt.personal-data` | error | **FAIL** |" in md
    assert f"`{sid(7)}`" in md
    gx = json.loads((out / "provenance.gx.json").read_text())
    assert gx["success"] is True and len(gx["results"]) == len(provenance.suite().expectations)


def test_workspace_pack_and_kb_are_recorded_by_workspace_path(ws: Workspace):
    report = ws.validate(packs=["policies/packs/default.yaml"], licences="policies/licenses.yaml")
    assert report.packs == {"policies/packs/default.yaml": sha256(DEFAULT_PACKS[0])}
    assert report.licence_kb_sha256 == sha256(DEFAULT_KB)
    assert report.passed


def test_absolute_pack_outside_workspace_is_refused_or_recorded(
    ws: Workspace, tmp_path_factory: pytest.TempPathFactory
):
    outside = tmp_path_factory.mktemp("elsewhere") / "pack.yaml"
    shutil.copy(DEFAULT_PACKS[0], outside)
    with pytest.raises(WorkspaceError, match=r"policy pack .* escapes the workspace"):
        ws.validate(packs=[str(outside)])


# --- malformed packs and recipes -------------------------------------------------------------------

GOOD_RULE = {"id": "ok.rule", "kind": "licence-known", "severity": "error", "description": "fine"}


def write_pack(path: Path, *rules: dict, pack_id: str = "my-pack") -> Path:
    return write_yaml(path, {"id": pack_id, "description": "a test pack", "rules": [GOOD_RULE, *rules]})


BAD_RULES = [
    pytest.param(
        {"id": "my.rule", "kind": "licence-known", "severty": "error", "description": "x"},
        ["unknown key", "severty"],
        id="unknown-key",
    ),
    pytest.param(
        {"id": "my.rule", "kind": "telepathy", "severity": "error", "description": "x"},
        ["'telepathy'", "does not match any of the expected tags", "'licence-use'"],
        id="unknown-kind",
    ),
    pytest.param(
        {
            "id": "my.rule",
            "kind": "representation",
            "severity": "error",
            "description": "x",
            "attribute": "stroke",
            "measured_on": "observed",
            "min_ratio": "high",
        },
        ["valid number", "'high'", "min_ratio"],
        id="wrong-type",
    ),
    pytest.param(
        {"id": "my.rule", "kind": "prompt-deny", "severity": "error", "description": "x", "patterns": ["("]},
        ["pattern '(' does not compile"],
        id="bad-regex",
    ),
]


@pytest.mark.parametrize(("rule", "problem"), BAD_RULES)
def test_malformed_pack_is_refused_naming_file_rule_and_problem(
    tmp_path: Path, rule: dict, problem: list[str]
):
    path = write_pack(tmp_path / "bad.yaml", rule)
    with pytest.raises(PolicyError) as err:
        load_pack(path)
    message = str(err.value)
    assert message.startswith(f"policy pack {path} is invalid:")
    assert "rule 'my.rule' (rules[1])" in message
    assert "ok.rule" not in message  # only the offending rule is named
    for words in problem:
        assert words in message


def test_malformed_pack_stops_validate_before_any_report(ws: Workspace):
    write_pack(ws.root / "bad.yaml", {**GOOD_RULE, "id": "my.rule", "kind": "telepathy"})
    with pytest.raises(PolicyError, match=r"bad\.yaml is invalid:\n  rule 'my.rule' \(rules\[1\]\)"):
        ws.validate(packs=["bad.yaml"])
    assert not (ws.root / REPORT_DIR).exists()


def test_duplicate_rule_id_across_packs_is_refused(tmp_path: Path):
    first = write_pack(tmp_path / "first.yaml", pack_id="first")
    second = write_pack(tmp_path / "second.yaml", pack_id="second")
    with pytest.raises(PolicyError) as err:
        load_packs([first, second])
    assert str(err.value) == f"rule id 'ok.rule' is in both {first} and {second}; ids must be unique"
    # a workspace pack may not reuse an id of the default pack
    default = yaml.safe_load(DEFAULT_PACKS[0].read_text())
    copy = write_yaml(tmp_path / "copy.yaml", {**default, "id": "copy", "rules": default["rules"][:1]})
    with pytest.raises(PolicyError, match=r"rule id 'licence\.known' is in both"):
        load_packs([DEFAULT_PACKS[0], copy])


def test_recipe_without_intended_use_is_refused(ws: Workspace):
    del ws.recipe["intended_use"]
    ws.write()
    with pytest.raises(PolicyError, match="declares no intended_use"):
        ws.validate()
    assert not (ws.root / REPORT_DIR).exists()


# --- CLI -------------------------------------------------------------------------------------------


def cli(w: Workspace, *extra: str):
    return runner.invoke(app, ["validate", FILTERED, "-w", str(w.root), "--recipe", "recipe.yaml", *extra])


def test_cli_exit_codes(ws: Workspace):
    n = len(load_pack(DEFAULT_PACKS[0]).rules)  # no params.yaml: the generic pack alone
    result = cli(ws)
    assert result.exit_code == 0, result.output
    # stdout holds the result; progress lines go to stderr
    assert result.stdout.startswith(f"PASSED: {n} pass, 0 fail, 0 warn, 0 waived; report {REPORT_DIR}")
    # ... and it says that nothing measured the recipe's stroke (issue 19: a one-dataset workspace)
    assert "warning: no representation rule in the packs measures stroke of digits" in result.output

    plant_eval_split_leak(ws)
    ws.write()
    result = cli(ws)
    assert result.exit_code == POLICY_FAILED_EXIT == 3, result.output
    assert "  fail   leakage.eval-split: the generator was trained on data" in result.output
    assert f"FAILED: {n - 1} pass, 1 fail, 0 warn, 0 waived" in result.output

    write_pack(ws.root / "bad.yaml", {**GOOD_RULE, "id": "my.rule", "severity": "fatal"})
    result = cli(ws, "--pack", "bad.yaml")
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: policy pack {ws.root / 'bad.yaml'} is invalid:")
    assert "rule 'my.rule' (rules[1])" in result.output and "'fatal'" in result.output
    assert "Traceback" not in result.output


# --- issue 11: a manifest the diffusers backend made; a manifest of another dataset --------------------


def test_a_manifest_without_observed_attributes_validates(ws: Workspace):
    """Regression (issue 11): a backend with no domain leaves observed_attributes empty; the
    representation check then returned after a `fetchone()` that left its DuckDB result open, and the
    provenance check's DESCRIBE crashed with ResourceInUseException."""
    ws.rows = [r | {"observed_attributes": None} for r in ws.rows]
    report = ws.write().validate()
    results = by_id(report)
    assert results["provenance.complete"].status == "pass"
    r = results["bias.observed-balance"]  # issue 21: not measured is "not run", never a pass or a fail
    assert r.status == "not run" and r.message.startswith("not run: attribute 'stroke' was observed on no")


@pytest.mark.slow
def test_a_manifest_made_by_the_diffusers_backend_validates(tmp_path: Path):
    """The same, end to end: 4 images from the tiny Stable Diffusion pipeline of tests/generators."""
    from generators.generate import generate
    from registry.records.dataset import GenerateParams
    from tests.generators.tiny_sd import save_tiny_sd_pipeline

    root = tmp_path.resolve()
    save_tiny_sd_pipeline(root / "models" / "tiny-sd")
    recipe = {
        "dataset": "pets",
        "generator": {
            "name": "tiny-sd",
            "backend": "diffusers",
            "path": "models/tiny-sd",
            "licence": OPENRAIL_M,
        },
        "identities": ["cat", "dog"],
        "attributes": {"colour": ["black", "white"]},
        "prompt_templates": ["a photo of a {colour} {identity}"],
        "images_per_identity": 2,
        "seed": 1,
        "steps": 2,
        "guidance": 1.0,
        "size": 32,
        "licence": "CC-BY-4.0",
        "intended_use": {"commercial": False, "purposes": ["research"]},
    }
    write_yaml(root / "recipe.yaml", recipe)
    generate(Path("recipe.yaml"), root, "data/pets/candidates", GenerateParams(batch_size=4, threads=1))
    report = validate("data/pets/candidates", root, "recipe.yaml", today=TODAY)
    assert by_id(report)["provenance.complete"].status == "pass"
    assert (root / "data/pets/policy/report.json").is_file()


def test_a_manifest_of_another_dataset_is_refused(ws: Workspace):
    other = ws.recipe | {"dataset": "faces"}
    write_yaml(ws.root / "faces.yaml", other)
    message = (
        f"manifest {ws.manifest} holds dataset 'digits', but recipe faces.yaml is for 'faces'; "
        "pass --recipe with the recipe that made it"
    )
    with pytest.raises(PolicyError) as e:
        validate(FILTERED, ws.root, "faces.yaml", today=TODAY)
    assert str(e.value) == message
    assert not (ws.root / REPORT_DIR).exists()  # nothing written
    # Without --recipe, params.yaml's recipe (here: faces) is not silently applied either.
    write_yaml(ws.root / "params.yaml", {"recipe": "faces.yaml"})
    result = runner.invoke(app, ["validate", FILTERED, "-w", str(ws.root)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == f"error: {message}"


# --- issue 22: Great Expectations runs in DuckDB (it ran on pandas partitions of the manifest, issue 13) ---


def test_provenance_runs_in_duckdb_with_the_evidence_of_one_pass(ws: Workspace):
    """GX's SQL data source reads the manifest's own DuckDB view: no pandas frame, no partitions (so
    nothing to merge), and the counts and first offending ids are those of one pass in manifest order.
    A duplicate id is caught, and the names check (a precomputed column lined up by position) names the
    right rows. Replaces issue 13's partition test: the partitions, and their merge, are gone."""
    ws.rows[5] |= {"sample_id": sid(40), "member": f"{sid(40)}.png"}  # a duplicate id
    ws.rows[42]["seed"] = None
    ws.rows[17]["phash"] = "not-a-phash"
    ws.rows[23]["member"] = "../escape.png"  # a name extraction would put outside its folder
    prov = by_id(ws.write().validate())["provenance.complete"]
    gx = json.loads((ws.root / REPORT_DIR / "provenance.gx.json").read_text())
    assert prov.status == "fail"
    failed = {
        (e["expectation"], e["column"]): e["unexpected"] for e in prov.evidence.details["failed_expectations"]
    }
    assert failed == {
        ("expect_column_values_to_be_unique", "sample_id"): 2,
        ("expect_column_values_to_be_null", "name_problem"): 2,  # names *and digests*: rows 17 and 23
        ("expect_column_values_to_match_regex", "phash"): 1,
        ("expect_column_values_to_not_be_null", "seed"): 1,
    }
    assert prov.evidence.count == 6
    assert prov.evidence.sample_ids == [sid(40), sid(42), sid(17), sid(23)]
    assert gx["meta"]["batch_spec"]["type"] == "table" and "synthreg_partitions" not in gx["meta"]
    assert gx["meta"]["batch_markers"] == {}  # no pandas fingerprint, and GX's load time is dropped
    assert gx["statistics"]["unsuccessful_expectations"] == 4
    result = {
        (r["expectation_config"]["type"], r["expectation_config"]["kwargs"]["column"]): r["result"]
        for r in gx["results"]
    }
    assert result[("expect_column_values_to_match_regex", "phash")]["partial_unexpected_list"] == [
        "not-a-phash"
    ]
    assert result[("expect_column_values_to_not_be_null", "seed")]["element_count"] == len(ws.rows)
    names = result[("expect_column_values_to_be_null", "name_problem")]["partial_unexpected_index_list"]
    assert [r["sample_id"] for r in names] == [sid(17), sid(23)]  # lined up by position: the right rows


# --- checks that could not run (issue 21: "not run" is a status, never a pass) -------------------------


def unscored(w: Workspace) -> Workspace:
    """What the filter leaves for a domain without models: no identity prediction, no distance to a real
    image, nothing observed; and a recipe with no evaluation split."""
    for r in w.rows:
        r.update(identity_pred=None, identity_confidence=None, nn_distance=None, observed_attributes=None)
    w.recipe["sources"] = [s for s in w.recipe["sources"] if s["role"] != "evaluation"]
    return w.write()


NOT_RUN_RULES = {
    "quality.identity-consistency": "no row has an identity prediction (identity_pred)",
    "privacy.memorised-copies": "no row has a distance to a real reference image (nn_distance)",
    "bias.observed-balance": "observed on no accepted image",
    "bias.observed-collapse": "observed on no accepted image",
}


def test_a_check_without_its_inputs_is_not_run_with_why_never_a_pass(ws: Workspace):
    report = unscored(ws).validate()
    results = by_id(report)
    for rule_id, why in NOT_RUN_RULES.items():
        r = results[rule_id]
        assert (r.status, r.measured) == ("not run", None), r
        assert r.message.startswith("not run: ") and why in r.message, r.message
    leakage = results["leakage.eval-split"]  # issue 19: no evaluation split, nothing to keep apart
    assert leakage.status == "not applicable" and "declares no evaluation source" in leakage.message
    assert report.passed  # not run is not a failure either...
    assert {r.rule_id for r in report.not_run} >= {"quality.identity-consistency", "privacy.memorised-copies"}
    md = (ws.root / REPORT_DIR / "report.md").read_text()  # ...and it is said, never counted as a pass
    assert f"{len(report.not_run)} not run" in md.splitlines()[2] and "## Checks not run" in md
    assert "`privacy.memorised-copies` (error): not run: " in md


def test_a_memorisation_rate_counts_only_the_rows_that_were_measured(ws: Workspace):
    """Half the rows measured, one of them a memorised copy: 1/30, not 1/60 (and never 0/60 when none
    was measured, as it read before issue 21)."""
    for i, r in enumerate(ws.rows):
        if i % 2:
            r["nn_distance"] = None
    ws.rows[0].update(decision="rejected", reason="memorised_copy: RMS 0.0 to a real train image < 0.05")
    r = by_id(ws.write().validate())["privacy.memorised-copies"]
    assert r.status == "fail" and "(1/30)" in r.message, r.message


def test_a_pack_can_require_a_check_to_have_run(ws: Workspace):
    pack = yaml.safe_load((ws.root / "policies/packs/default.yaml").read_text())
    for rule in pack["rules"]:
        if rule["id"] == "quality.identity-consistency":
            rule["require"] = "ran"
    write_yaml(ws.root / "policies/packs/strict.yaml", pack)
    report = unscored(ws).validate(packs=["policies/packs/strict.yaml"])
    r = by_id(report)["quality.identity-consistency"]
    assert r.status == "fail" and not report.passed
    assert r.message.startswith(
        "required to run (quality.identity-consistency has require: ran), but not run"
    )
    assert by_id(report)["privacy.memorised-copies"].status == "not run"  # no require: still not run


def test_a_pack_with_a_rule_on_an_attribute_the_recipe_does_not_declare_is_refused(ws: Workspace):
    """Issue 19: the default pack's stroke rules failed on every dataset that has no stroke, and the
    README taught waivers for them. Now the stroke rules are the digits pack's; on another dataset that
    pack is refused, and the generic pack alone has no rule about an attribute."""
    for r in ws.rows:
        r.update(attributes={}, observed_attributes={})
    ws.recipe["attributes"] = {}
    ws.recipe["prompt_templates"] = ["a handwritten digit {identity}"]
    for r in ws.rows:
        r["prompt"] = f"a handwritten digit {r['identity']}"
    ws.write()
    with pytest.raises(PolicyError, match=r"rule bias\.requested-balance measures attribute 'stroke', which"):
        ws.validate()
    assert not (ws.root / REPORT_DIR / "report.json").exists()
    report = ws.validate(packs=["policies/packs/default.yaml"])
    assert report.passed and not [r for r in report.results if r.kind == "representation"]


def test_validate_prints_the_checks_that_did_not_run(ws: Workspace):
    unscored(ws)
    result = CliRunner().invoke(app, ["validate", FILTERED, "--recipe", "recipe.yaml", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert "  not run privacy.memorised-copies: not run: " in result.output
    assert " 2 not run, 1 not applicable; report " in result.output.splitlines()[-1]


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("text", "is not a readable Parquet file"),
        ("one-column", "lacks the column(s) dataset, index, identity"),
        ("empty", "holds dataset (none)"),
    ],
)
def test_a_manifest_synthreg_did_not_write_is_named_not_a_traceback(ws: Workspace, content: str, said: str):
    """Issue 24, family 4: validate crashed on a file that is not Parquet and on a manifest missing a
    column; each is now one line naming the file, exit 1."""
    if content == "text":
        ws.manifest.write_text("not parquet")
    elif content == "one-column":
        pq.write_table(pa.table({"sample_id": ["a"]}), ws.manifest)
    else:
        pq.write_table(mf.SCHEMA.empty_table(), ws.manifest)
    result = CliRunner().invoke(app, ["validate", FILTERED, "--recipe", "recipe.yaml", "-w", str(ws.root)])
    assert result.exit_code == 1 and "internal error" not in result.output, result.output
    assert result.output.startswith(f"error: manifest {ws.manifest} ") and said in result.output


def test_a_deny_pattern_that_backtracks_without_end_is_stopped_naming_the_rule(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
):
    """Issue 24, family 10: `(a+)+$` over a long `aaa...b` prompt backtracks for ever in `re`; validate hung
    until killed. The rule's work is bounded (the `regex` module's timeout) and the error names the rule."""
    import time

    from policies.checks import prompt

    monkeypatch.setattr(prompt, "DENY_BUDGET_S", 0.2)
    evil = {"id": "deny.evil", "kind": "prompt-deny", "severity": "error", "description": "x"}
    write_pack(ws.root / "hostile.yaml", evil | {"patterns": ["(a+)+$"]})
    ws.rows[3]["prompt"] = "a" * 5000 + "b"
    ws.write()
    started = time.monotonic()
    with pytest.raises(PolicyError) as err:
        ws.validate(packs=["hostile.yaml"])
    assert time.monotonic() - started < 30  # `re` would take longer than the universe's age
    assert str(err.value).startswith("rule deny.evil: pattern '(a+)+$' took over 0.2 s on ")
    assert str(err.value).endswith("(nested repetition such as (a+)+): rewrite it in the pack")
    assert not any((ws.root / REPORT_DIR).rglob("*"))  # no report, so nothing to release on
