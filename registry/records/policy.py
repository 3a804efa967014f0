"""Policy records: licences, intended use, packs and rules, results, reports and waivers.

Packs are YAML reviewed like code; every rule has a stable id that a report, a CI log and an
MLflow tag can all cite. Rules are a discriminated union on ``kind``: an unknown kind or a parameter
of the wrong type is an error naming the rule.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Annotated, Literal

from pydantic import Field, field_validator

from registry.records.dataset import IntendedUse, Sha256, Strict, UseCategory, repeated


class Licence(Strict):
    id: str = Field(min_length=1, description="SPDX id where one exists, else a canonical name")
    name: str
    url: str = Field(description="the licence text")
    commercial_use: bool
    non_commercial: bool
    attribution: bool
    share_alike: bool
    restricted_uses: list[UseCategory] = Field(default_factory=list)
    revenue_cap_usd: int | None = Field(default=None, description="licence ends above this annual revenue")
    restrictions_flow_to_outputs: bool = Field(
        description="the use restrictions bind what is done with generated outputs, not only the model"
    )
    attribution_text: str | None = None
    notes: str = ""
    citations: dict[str, str] = Field(
        min_length=1, description="fact -> where the licence text says it (url and section)"
    )


class LicenceBase(Strict):
    purpose_implies: dict[UseCategory, list[UseCategory]] = Field(default_factory=dict)
    licences: list[Licence]

    @field_validator("licences")
    @classmethod
    def _unique(cls, v: list[Licence]) -> list[Licence]:
        dupes = repeated([lic.id for lic in v])
        if dupes:
            raise ValueError(f"licence ids listed more than once: {dupes}")
        return v

    def get(self, licence_id: str) -> Licence | None:
        return next((lic for lic in self.licences if lic.id == licence_id), None)


RuleId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{1,63}$", description="stable id, cited everywhere")]


class _Rule(Strict):
    id: RuleId
    severity: Literal["error", "warn"]
    description: str = Field(min_length=1)
    require: Literal["ran"] | None = Field(
        default=None,
        description="ran: the check must have run; when its inputs are missing it fails (an error rule) or "
        "warns (a warn rule) instead of reporting 'not run'",
    )


class LicenceUseRule(_Rule):
    """Every generator and source licence allows the declared intended use."""

    kind: Literal["licence-use"]
    subjects: list[Literal["generators", "sources", "generator-training-sources"]] = Field(
        default=["generators", "sources", "generator-training-sources"]
    )


class LicenceKnownRule(_Rule):
    """Every licence id is in the knowledge base: an unknown licence fails, it never passes."""

    kind: Literal["licence-known"]


class AttributionRule(_Rule):
    """Collect attribution duties for the dataset card (passes, with the duties as evidence)."""

    kind: Literal["attribution"]


class SourceWithdrawnRule(_Rule):
    """No source (nor the generator's training data) is withdrawn or on the workspace deny-list."""

    kind: Literal["source-withdrawn"]
    deny_list: str = Field(
        default="policies/withdrawn.yaml", description="workspace file listing withdrawn sources"
    )


class PromptDenyRule(_Rule):
    """No prompt matches a deny pattern (real people's names, living artists' styles ...)."""

    kind: Literal["prompt-deny"]
    patterns: list[str] = Field(min_length=1)
    ignore_case: bool = True

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"pattern {p!r} does not compile: {e}") from e
        return v


class PromptPersonalDataRule(_Rule):
    """No prompt holds personal data: e-mail addresses, phone numbers."""

    kind: Literal["prompt-personal-data"]
    emails: bool = True
    phones: bool = True


class PromptLengthRule(_Rule):
    kind: Literal["prompt-length"]
    max_chars: int = Field(gt=0)


class RepresentationRule(_Rule):
    """Share of each value of an attribute among accepted images, overall or per identity.

    Fails when a value's share is below ``min_share`` or the smallest share is below ``min_ratio``
    times the largest (0.8: the four-fifths rule).
    """

    kind: Literal["representation"]
    attribute: str = Field(min_length=1)
    measured_on: Literal["requested", "observed"]
    per_identity: bool = False
    min_share: float = Field(default=0.0, ge=0, le=1)
    min_ratio: float = Field(default=0.8, ge=0, le=1)


class ProvenanceRule(_Rule):
    """A Great Expectations suite over the manifest: no missing digests, seeds, prompts, licences;
    unique sample ids; well-formed digests; values within their ranges."""

    kind: Literal["provenance"]


class QualityRule(_Rule):
    """A rate over the filtered manifest within bounds."""

    kind: Literal["quality"]
    metric: Literal["accepted_share", "identity_consistency", "memorised_rate"]
    min: float | None = Field(default=None, ge=0, le=1)
    max: float | None = Field(default=None, ge=0, le=1)


class LeakageRule(_Rule):
    """The generator's training data shares no digest with a source used for evaluation."""

    kind: Literal["leakage"]


Rule = Annotated[
    LicenceUseRule
    | LicenceKnownRule
    | AttributionRule
    | SourceWithdrawnRule
    | PromptDenyRule
    | PromptPersonalDataRule
    | PromptLengthRule
    | RepresentationRule
    | ProvenanceRule
    | QualityRule
    | LeakageRule,
    Field(discriminator="kind"),
]


class PolicyPack(Strict):
    id: RuleId
    description: str
    rules: list[Rule] = Field(min_length=1)

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, v: list[Rule]) -> list[Rule]:
        dupes = repeated([r.id for r in v])
        if dupes:
            raise ValueError(f"rule ids used more than once: {dupes}")
        return v


class WithdrawnSource(Strict):
    name: str
    reason: str
    withdrawn_on: date | None = None
    url: str | None = None


class WithdrawnList(Strict):
    withdrawn: list[WithdrawnSource] = Field(default_factory=list)


class Waiver(Strict):
    rule_id: RuleId
    scope: str = Field(description="dataset name the waiver covers, or '*' for every dataset")
    reason: str = Field(min_length=1)
    approver: str = Field(min_length=1)
    expires: date
    approver_keyid: str | None = Field(
        default=None,
        description="the approver's key in the trust root (set on a signed waiver, the only kind applied)",
    )
    source: str | None = Field(default=None, description="the signed waiver file, in the workspace")


class IgnoredWaiver(Strict):
    """A waiver found but not applied, and why (unsigned, untrusted, forged, expired, unknown rule)."""

    rule_id: str | None = None
    scope: str | None = None
    approver: str | None = None
    approver_keyid: str | None = None
    source: str = Field(description="where it was found")
    why: str


class WaiverFile(Strict):
    waivers: list[Waiver] = Field(default_factory=list)


class Evidence(Strict):
    count: int = Field(default=0, ge=0, description="offending items in all")
    sample_ids: list[str] = Field(default_factory=list, description="offending samples, capped")
    details: dict = Field(default_factory=dict)


NOT_RUN = "not run"  # a rule status: the check's inputs are missing, so nothing was measured
# A rule status: the rule does not apply to this dataset (leakage with no evaluation source declared);
# nothing was measured and nothing needed to be. Neither a pass nor a check that failed to run.
NOT_APPLICABLE = "not applicable"


class RuleResult(Strict):
    rule_id: str
    pack: str
    kind: str
    severity: Literal["error", "warn"]
    status: Literal["pass", "fail", "warn", "waived", "not run", "not applicable"] = Field(
        description="not run: the check's inputs are missing (the message says which); never a pass"
    )
    message: str
    measured: int | float | str | None = None
    threshold: int | float | str | None = None
    evidence: Evidence = Evidence()
    waiver: Waiver | None = None


class PolicyReport(Strict):
    dataset: str
    manifest: str
    manifest_sha256: Sha256
    packs: dict[str, Sha256] = Field(description="pack file -> sha256")
    licence_kb_sha256: Sha256
    waivers_sha256: Sha256 | None = None
    intended_use: IntendedUse
    # No creation time: report.json is a pipeline output whose bytes must depend only on what was
    # checked (issue 9); when it ran is in the validate audit event.
    results: list[RuleResult]
    ignored_waivers: list[IgnoredWaiver] = Field(default_factory=list, description="found but not applied")
    passed: bool = Field(description="no error rule failed without a valid waiver")

    @property
    def not_run(self) -> list[RuleResult]:
        """The rules whose checks did not run, each with why (its message)."""
        return [r for r in self.results if r.status == NOT_RUN]

    def to_json(self) -> str:
        """The report file's text: what validate writes, a release copies and both digest."""
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


class ValidationStamp(Strict):
    """What ``synthreg validate`` leaves in the clone's git folder (never committed, never pushed) beside
    each report.json it writes, so that release's policy re-check can reuse the rule outcomes instead of
    computing them again (issue 22; ``policies.reuse``). Each digest is of a file's bytes; release
    recomputes every one from the files it is about to sign and reuses nothing unless all are equal."""

    report_sha256: Sha256 = Field(description="report.json exactly as validate wrote it")
    manifest_sha256: Sha256
    packs: dict[str, Sha256] = Field(description="pack file -> sha256, as the report names them")
    licence_kb_sha256: Sha256
    waivers_sha256: Sha256 | None = None
    recipe_sha256: Sha256 = Field(description="the recipe as checked (its canonical JSON)")
    engine_sha256: Sha256 = Field(
        description="synthreg's policy code and the versions of the libraries its checks run on"
    )
