"""The results of lineage and reading verbs, typed: a trace (run, model, image), an impact search, a
withdrawal's state, a diff of two versions, a registered model at a glance.

These are not persisted (no JSON Schema is exported for them); they are what the library returns and what
``--json`` prints (``model_dump(mode="json")``). Every field is always present, ``None`` (or empty) where it
does not apply: a working (unreleased) dataset has no ``created_at``, a released one no ``dvc_md5``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from registry.records.audit import Checkpoint
from registry.records.dataset import IntendedUse
from registry.records.policy import Waiver
from registry.records.release import Derivation


class Result(BaseModel):
    """A typed result: fields only (no extra keys), dumped whole by ``--json``."""

    model_config = ConfigDict(extra="forbid")


class WithdrawalState(Result):
    """A release's withdrawal as read (``registry.trust.withdrawals.is_withdrawn``): the signed record's
    fields where there is one, and whether it can be trusted. An untrusted withdrawal still counts."""

    release: str
    reason: str
    time: datetime
    actor: str
    signer: str | None = None
    manifest_sha256: str | None = None
    keyid: str | None = None
    role: Literal["releaser", "approver"] | None = None
    checkpoint: Checkpoint | None = None
    trusted: bool
    why_untrusted: str | None = Field(description="None when trusted")

    @property
    def day(self) -> str:
        """The date it was withdrawn, ``YYYY-MM-DD``."""
        return self.time.date().isoformat()


class SourceInfo(Result):
    """A source of a traced dataset, with its status then and now."""

    name: str
    version: str | None = None
    digest: str | None = None
    licence: str | None = None
    role: str | None = None
    status: str = "active"
    url: str | None = None
    withdrawn_since: str | None = Field(description="the reason it is on the withdrawn list now, if it is")
    identities: list[str] | None = Field(description="None: every identity")


class GeneratorInfo(Result):
    """A generator of a traced dataset, and how many of its images it made."""

    name: str
    backend: str | None = None
    weights_digest: str | None = None
    licence: str | None = None
    pipeline_class: str | None = None
    scheduler: str | None = None
    images: int | None = None


class SampleStats(Result):
    count: int | None
    accepted: int | None
    seed_min: int | None
    seed_max: int | None


class FilterCounts(Result):
    total: int | None
    accepted: int | None
    rejected: int | None
    reasons: dict[str, int]


class PolicyInfo(Result):
    passed: bool | None = Field(description="None: never validated")
    report_sha256: str | None
    results: dict[str, str]
    waivers: list[Waiver]


class Drawn(Result):
    """What a run recorded of the samples it drew from one input."""

    count: int | None
    sha256: str
    artifact: str


class ReleaseFacts(Result):
    """What a trace says about one dataset version, released or working (without the MLflow side)."""

    release: str | None = Field(description="NAME@X.Y.Z; None for a working manifest")
    released: bool = False
    unreleased: bool = False
    resolved: bool | None = Field(None, description="a working manifest: found by content")
    resolved_from: str | None = None
    resolved_path: str | None = None
    looked: list[str] = Field(default_factory=list, description="where a working manifest was looked for")
    manifest_sha256: str | None = None
    dvc_md5: str | None = None
    git_commit: str | None = None
    created_at: datetime | None = None
    actor: str | None = None
    dataset_licence: str | None = None
    intended_use: IntendedUse | None = None
    recipe_sha256: str | None = None
    recipe_seed: int | None = None
    withdrawn: WithdrawalState | None = None
    derived_from: Derivation | None = None
    generators: list[GeneratorInfo] = Field(default_factory=list)
    generator_training_sources: list[str] = Field(default_factory=list)
    prompt_templates: list[str] = Field(default_factory=list)
    samples: SampleStats | None = None
    sources: list[SourceInfo] = Field(default_factory=list)
    filter: FilterCounts | None = None
    policy: PolicyInfo | None = None
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class ClaimCheck(Result):
    """How far a run's claim to have trained on a dataset input is backed by a signed record
    (``registry.downstream.claims``): signed, recorded (in the audit log, not yet under a signed
    checkpoint) or unsigned (only the MLflow run says so)."""

    status: Literal["signed", "recorded", "unsigned"]
    why: str


class DatasetEntry(ReleaseFacts):
    """One dataset input of a traced run: what the run logged, and what the version it names is."""

    name: str = Field(description="as logged, e.g. digits@1.0.0 or digits@working")
    digest: str | None
    source: str
    source_url: str
    source_git_commit: str | None
    context: str | None
    digest_matches: bool | None = Field(None, description="the logged digest names this manifest")
    digest_compared: str | None = None
    drawn: Drawn | None = None
    claim: ClaimCheck | None = Field(None, description="how far the run's claim is backed by a signed record")


class RunInfo(Result):
    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    lifecycle_stage: str
    start_time: int | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


class Unresolved(Result):
    """A working manifest a run trained on that resolves nowhere now, or a run whose input logged no
    digest."""

    dataset: str
    manifest_sha256: str | None = None
    looked: list[str] = Field(default_factory=list)
    run_id: str | None = None
    why: str | None = None


class ModelVersionInfo(Result):
    name: str
    version: str
    run_id: str | None
    status: str | None
    source: str | None
    asked: str | None = Field(None, description="the reference asked for (trace model)")
    aliases: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)


class RunTrace(Result):
    """``trace run`` / ``trace model``: a run, its dataset inputs traced, and (trace model) the model."""

    tracking_uri: str
    run: RunInfo
    datasets: list[DatasetEntry]
    unresolved: list[Unresolved]
    warnings: list[str]
    model: ModelVersionInfo | None = None


class ImageVersion(Result):
    release: str
    decision: str | None
    reason: str | None
    withdrawn: WithdrawalState | None
    sources: list[SourceInfo]


class ImageMatch(Result):
    """One distinct image (sample id and image sha256) matched, with every version holding it."""

    sample_id: str
    image_sha256: str
    phash: str | None
    dataset: str | None
    identity: str | None
    prompt: str | None
    negative_prompt: str | None
    seed: int | None
    steps: int | None
    guidance: float | None
    width: int | None
    height: int | None
    generator_name: str
    weights_digest: str
    generator_licence: str | None
    scheduler: str | None
    shard: str | None
    member: str | None
    distance: int
    versions: list[ImageVersion] = Field(default_factory=list)


class MarkingCheck(Result):
    found: dict[str, str] | None = Field(description="the marking the file carries; None: none")
    summary: str
    problems: list[str]


class CredentialsCheck(Result):
    asked_by: list[str] = Field(description="the releases holding the image that asked for C2PA")
    summary: str
    problems: list[str]
    found: dict[str, Any] | None = Field(description="the file's C2PA manifest as read; None: none")
    unchecked: str | None = Field(description="why a manifest the file carries was not read")


class ImageTrace(Result):
    """``trace image``: how the file matched, each sample with its versions, its marking and C2PA."""

    file: str
    sha256: str
    phash: str | None
    match: Literal["exact", "perceptual"]
    images: list[ImageMatch]
    versions: list[str]
    matched_rows: int
    images_listed_max: int
    warnings: list[str]
    marking: MarkingCheck | None = None
    c2pa: CredentialsCheck | None = None


class VersionHit(Result):
    """A dataset version an impact search reached, and how many of its samples."""

    release: str
    unreleased: bool
    samples: int
    accepted: int
    manifest_sha256: str
    resolved_from: str | None = None
    withdrawn: WithdrawalState | None
    sample_ids: list[str] | None = Field(
        default=None,
        description="for --prompt: every sample id it matched in this version, sorted (the ids `derive "
        "--exclude-file` takes); None for other selectors",
    )


class RunHit(Result):
    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    lifecycle_stage: str
    datasets: list[str]
    digest_matches: bool
    unreleased: bool
    drew: bool | None = Field(description="drew the sample (impact --sample); None: unknown")
    claim: ClaimCheck | None = Field(
        None, description="how far the run's claim to have used these versions is backed by a signed record"
    )


class ImpactCounts(Result):
    versions: int
    samples: int
    accepted: int
    runs: int
    model_versions: int
    unresolved_runs: int
    runs_without_the_sample: int


class Impact(Result):
    """``impact``: every version, run and registered model version a selector reached."""

    selector: dict[Literal["generator", "source", "prompt", "sample", "version"], str]
    tracking_uri: str
    versions: list[VersionHit]
    runs: list[RunHit]
    model_versions: list[ModelVersionInfo]
    unresolved_runs: list[Unresolved]
    counts: ImpactCounts
    warnings: list[str]

    @property
    def kind(self) -> str:
        return next(iter(self.selector))


class Change(Result):
    a: Any
    b: Any


class SampleChanges(Result):
    added: int
    removed: int
    first_added: list[str]
    first_removed: list[str]


class SetChanges(Result):
    added: list[Any]
    removed: list[Any]


class ReleaseDiff(Result):
    """``diff A B``: samples added and removed, accepted counts per identity, generators, sources and
    policy results that changed."""

    a: str
    b: str
    samples: SampleChanges
    accepted_per_identity: dict[str, Change]
    generators: SetChanges
    sources: SetChanges
    policy: dict[str, Change]


EvaluationSplit = Literal["real held-out", "synthetic", "unknown"]


class ModelRow(Result):
    """A registered model version at a glance (``synthreg models``)."""

    name: str
    version: str
    aliases: list[str]
    status: str | None
    run_id: str | None
    dataset: str | None = Field(description="None: its run logged no synthreg dataset")
    unreleased: bool
    manifest_sha256: str | None
    synthetic_share: float | None
    synthetic_share_asked: float | None
    accuracy: float | None
    worst_group_gap: float | None
    evaluation: str | None
    metrics: dict[str, float] = Field(description="every metric the run logged (a user's own script's too)")
    withdrawn: str | None = Field(
        description="why its dataset version (or one it was derived from) was withdrawn; None: it was not"
    )
    evaluation_split: EvaluationSplit = Field(
        default="unknown",
        description="what its metrics were measured on: real held-out data, a synthetic split, or unknown "
        "(the run does not say)",
    )
    claim: ClaimCheck | None = Field(
        None, description="how far its run's claim to have trained on its dataset is signed"
    )


class ModelsSeen(Result):
    """The registered models an HTML report lists, as the MLflow store answered when the report was made
    (issue 21: a reviewer without the store still sees them), or why it could not be asked."""

    store: str | None = Field(
        description="the tracking URI asked (credentials hidden); None: none configured"
    )
    asked_at: datetime
    models: list[ModelRow] = Field(default_factory=list)
    others: int = Field(default=0, description="registered versions trained on other datasets (not listed)")
    error: str | None = Field(default=None, description="why the store could not be read; None: it was read")


class SignerSeen(Result):
    """One sign-off of a release as a report shows it: who, in which roles, when, and what the trust root
    of the machine making the report says of the key."""

    keyid: str
    name: str
    roles: list[str]
    time: datetime
    trust: str = Field(description="'trusted', 'NOT TRUSTED: why', or 'not checked: why'")


class SignaturesSeen(Result):
    """Every sign-off of a release (release and approvals) checked against a trust root when the report
    was made (``registry.trust.admission``), naming the root; ``root`` None: no root could be read."""

    checked_at: datetime
    root: str | None = Field(description="where the trust root was read from; None: not checked")
    root_sha256: str | None
    root_version: int | None
    root_problem: str | None = Field(description="why no trust root could be used; None: one was")
    status: str = Field(description="solo, final, candidate, UNTRUSTED, INVALID, or 'not checked'")
    summary: str
    signers: list[SignerSeen] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    pending: bool = Field(
        default=False,
        description="made at release, before the release signature it is part of: the signer is the "
        "releaser about to sign",
    )


__all__ = [
    "Change",
    "ClaimCheck",
    "CredentialsCheck",
    "DatasetEntry",
    "Drawn",
    "EvaluationSplit",
    "FilterCounts",
    "GeneratorInfo",
    "ImageMatch",
    "ImageTrace",
    "ImageVersion",
    "Impact",
    "ImpactCounts",
    "MarkingCheck",
    "ModelRow",
    "ModelVersionInfo",
    "ModelsSeen",
    "PolicyInfo",
    "ReleaseDiff",
    "ReleaseFacts",
    "Result",
    "RunHit",
    "RunInfo",
    "RunTrace",
    "SampleChanges",
    "SampleStats",
    "SetChanges",
    "SignaturesSeen",
    "SignerSeen",
    "SourceInfo",
    "Unresolved",
    "VersionHit",
    "WithdrawalState",
]


class LogVerification(Result):
    """``synthreg log --verify``: the audit log checked as a DAG and against every signed checkpoint,
    with the events no signature covers yet (issue 20: every output says how many, and since when)."""

    path: str = Field(description="the audit log's folder, relative to the workspace")
    intact: bool = Field(description="no problem found; says nothing about uncovered events")
    problems: list[str]
    events: int
    heads: list[str] = Field(description="the events nothing follows yet (two or more after a merge)")
    not_migrated: int = Field(description="events still in the old audit/events.jsonl")
    checkpoints: int = Field(description="signed checkpoints checked")
    covered: int = Field(description="events a signed checkpoint covers")
    uncovered: int = Field(description="events no signed checkpoint covers: unsigned")
    uncovered_since: datetime | None = Field(description="the oldest uncovered event's time")
    uncovered_events: list[str] = Field(description="each uncovered event, oldest first")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def risk(self) -> str | None:
        """What an uncovered tail means, or None when every event is covered."""
        if not self.uncovered:
            return None
        return (
            f"{self.uncovered} of {self.events} event(s) are not covered by a signed checkpoint, the oldest "
            f"from {self.uncovered_since:%Y-%m-%d %H:%M:%S} UTC: they are unsigned, so deleting them cannot "
            "be detected from the log and a forged one would look the same; a releaser or approver signs "
            "them with `synthreg log --checkpoint`"
        )

    def coverage(self) -> str:
        """The line every output carries about coverage."""
        return self.risk or f"all {self.events} event(s) are covered by a signed checkpoint"
