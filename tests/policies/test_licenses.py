"""The licence knowledge base (policies/licenses.yaml): it loads, it holds the licences recipes name,
its facts are cited, and the model refuses a malformed base."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from registry.records.policy import LicenceBase

KB_FILE = Path(__file__).resolve().parents[2] / "policies" / "licenses.yaml"

REQUIRED = {
    "CC-BY-4.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-4.0",
    "Apache-2.0",
    "MIT",
    "CreativeML-OpenRAIL-M",
    "CreativeML-OpenRAIL++-M",
    "FLUX.1-dev-Non-Commercial-1.1.1",
    "FLUX.1-schnell",
    "Stability-AI-Community",
}
NON_COMMERCIAL = ["CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "FLUX.1-dev-Non-Commercial-1.1.1"]
URL = re.compile(r"https?://\S+")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(KB_FILE.read_text())


@pytest.fixture(scope="module")
def kb(raw: dict) -> LicenceBase:
    return LicenceBase.model_validate(raw)


def test_required_licences_present(kb: LicenceBase) -> None:
    missing = REQUIRED - {lic.id for lic in kb.licences}
    assert not missing, f"knowledge base lacks {sorted(missing)}"


def test_every_licence_cites_a_url(kb: LicenceBase) -> None:
    for lic in kb.licences:
        assert lic.url.startswith(("http://", "https://")), lic.id
        assert any(URL.search(where) for where in lic.citations.values()), f"{lic.id}: no cited url"


def test_every_restricted_use_has_its_own_citation(kb: LicenceBase) -> None:
    # the licence-use rule quotes citations[<use>] when it refuses that use
    for lic in kb.licences:
        for use in lic.restricted_uses:
            assert URL.search(lic.citations.get(use, "")), f"{lic.id}: {use} has no cited section"


def test_commercial_restriction_matches_non_commercial_flag(kb: LicenceBase) -> None:
    for lic in kb.licences:
        restricted = "commercial" in lic.restricted_uses
        assert restricted == lic.non_commercial, lic.id
        assert lic.commercial_use != lic.non_commercial, lic.id


def test_flux_dev_forbids_biometric_and_surveillance_in_outputs(kb: LicenceBase) -> None:
    flux = kb.get("FLUX.1-dev-Non-Commercial-1.1.1")
    assert flux is not None
    assert {"biometric", "surveillance", "commercial"} <= set(flux.restricted_uses)
    assert flux.restrictions_flow_to_outputs
    assert "§4(a)" in flux.citations["restrictions_flow_to_outputs"]


def test_person_reidentification_counts_as_biometric(kb: LicenceBase) -> None:
    assert "biometric" in kb.purpose_implies["person-reidentification"]


@pytest.mark.parametrize("licence_id", ["CreativeML-OpenRAIL-M", "CreativeML-OpenRAIL++-M"])
def test_openrail_forbids_law_enforcement_and_binds_outputs(kb: LicenceBase, licence_id: str) -> None:
    lic = kb.get(licence_id)
    assert lic is not None
    assert {"law-enforcement", "medical", "automated-legal-decisions"} <= set(lic.restricted_uses)
    assert lic.commercial_use and not lic.non_commercial
    assert lic.restrictions_flow_to_outputs


@pytest.mark.parametrize("licence_id", NON_COMMERCIAL)
def test_nc_licences_are_non_commercial(kb: LicenceBase, licence_id: str) -> None:
    lic = kb.get(licence_id)
    assert lic is not None
    assert lic.non_commercial and not lic.commercial_use
    assert "commercial" in lic.restricted_uses


def test_permissive_licences_do_not_bind_outputs(kb: LicenceBase) -> None:
    for licence_id in ["CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "Apache-2.0", "MIT"]:
        lic = kb.get(licence_id)
        assert lic is not None and not lic.restrictions_flow_to_outputs, licence_id


def test_flux_schnell_is_apache(kb: LicenceBase) -> None:
    schnell, apache = kb.get("FLUX.1-schnell"), kb.get("Apache-2.0")
    assert schnell is not None and apache is not None
    assert "Apache" in schnell.name
    assert schnell.url.endswith("model_licenses/LICENSE-FLUX1-schnell")
    for field in ("commercial_use", "non_commercial", "attribution", "share_alike", "restricted_uses"):
        assert getattr(schnell, field) == getattr(apache, field), field


def test_stability_community_revenue_cap(kb: LicenceBase) -> None:
    lic = kb.get("Stability-AI-Community")
    assert lic is not None
    assert lic.revenue_cap_usd == 1_000_000
    assert lic.commercial_use
    assert "training-a-foundation-model" in lic.restricted_uses
    assert lic.restrictions_flow_to_outputs


def test_duplicate_id_refused(raw: dict) -> None:
    bad = copy.deepcopy(raw)
    bad["licences"].append(copy.deepcopy(bad["licences"][0]))
    with pytest.raises(ValidationError, match="listed more than once"):
        LicenceBase.model_validate(bad)


def test_unknown_key_refused(raw: dict) -> None:
    bad = copy.deepcopy(raw)
    bad["licences"][0]["comercial_use"] = True
    with pytest.raises(ValidationError, match="comercial_use"):
        LicenceBase.model_validate(bad)


def test_unknown_use_category_refused(raw: dict) -> None:
    bad = copy.deepcopy(raw)
    bad["licences"][0]["restricted_uses"] = ["surveilance"]
    with pytest.raises(ValidationError):
        LicenceBase.model_validate(bad)


def test_licence_without_citation_refused(raw: dict) -> None:
    bad = copy.deepcopy(raw)
    bad["licences"][0]["citations"] = {}
    with pytest.raises(ValidationError):
        LicenceBase.model_validate(bad)
