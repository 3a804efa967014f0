"""The release record: what a signed, immutable dataset version says about itself.

It lives in git at ``releases/<name>/<version>/release.json``, beside its DSSE envelope
(``release.dsse.json``: an in-toto Statement v1 whose subjects are the manifest and every shard with
their sha256 and whose predicate is this record), the dataset card, Croissant and PROV files.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from registry.records.dataset import IntendedUse, Recipe, Sha256, SourceRef, Strict
from registry.records.policy import Waiver

# Components below 10^9: a version such as 99999999999999999999999.0.0 would block every later one.
SEMVER = r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
SemVer = Annotated[str, StringConstraints(pattern=f"^{SEMVER}$")]
PREDICATE_TYPE = "https://synthreg.dev/attestations/release/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class ShardRef(Strict):
    path: str = Field(
        pattern=r"^shards/[0-9a-f]{64}\.tar$",
        description="content-addressed file, relative to the release's data/ folder",
    )
    source: str = Field(description="the shard's path in the workspace when it was released")
    sha256: Sha256
    size: int
    members: int


class GeneratorUse(Strict):
    name: str
    backend: str
    weights_digest: Sha256
    licence: str
    pipeline_class: str
    scheduler: str
    images: int


class Counts(Strict):
    total: int
    accepted: int
    rejected: int
    per_identity: dict[str, dict[str, int]] = Field(description="identity -> decision -> count")
    reasons: dict[str, int] = Field(description="reason code -> count")


class Derivation(Strict):
    """How a derived version was made from its parent (``synthreg derive``): what was left out and why."""

    parent: str = Field(description="NAME@X.Y.Z the version was derived from")
    parent_manifest_sha256: Sha256
    excluded_sample_ids: list[str] = Field(description="samples excluded by id")
    excluded_sources: list[str] = Field(
        description="sources excluded, with every sample conditioned on them (names)"
    )
    excluded_prompts: list[str] = Field(
        default_factory=list, description="regular expressions: every sample whose prompt matched one"
    )
    excluded_generators: list[str] = Field(
        default_factory=list, description="generators (name or weights digest prefix): all they made"
    )
    excluded_identities: list[str] = Field(
        default_factory=list, description="identities: every sample of them"
    )
    removed: int = Field(description="manifest rows left out, accepted and rejected")
    removed_accepted: int
    reason: str


class FilterSettings(Strict):
    """What filtered the released images: the dataset's filter settings, the models that scored them
    (by folder and sha256), and the checks that did not run, as the filter's ``filter-info.json`` said."""

    params: dict[str, Any] = Field(description="thresholds and executor settings")
    domain: dict[str, Any] | None = Field(
        default=None, description="the scoring domain: built-in (tiny-digits) or the recipe's models"
    )
    not_checked: list[str] = Field(default_factory=list, description="checks that did not run, with why")


class Release(Strict):
    name: str
    version: SemVer
    manifest_sha256: Sha256 = Field(description="content digest of the released manifest")
    manifest_path: str = Field(default="data/manifest.parquet", pattern=r"^data/manifest\.parquet$")
    # Left out of a dump when unset (records made before issue 23 read as they were).
    flat_manifest_sha256: Sha256 | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="content digest of data/manifest-flat.parquet (the same rows, map columns as JSON, "
        "`shard` as the released file's path in the release folder)",
    )
    shards: list[ShardRef]
    counts: Counts
    generators: list[GeneratorUse]
    sources: list[SourceRef] = Field(description="real sources, including the generators' training data")
    prompt_templates: list[str]
    seed: int
    policy_report_sha256: Sha256
    policy_passed: bool
    policy_results: dict[str, str] = Field(description="rule id -> status at release")
    waivers: list[Waiver] = Field(default_factory=list, description="waivers applied at release")
    intended_use: IntendedUse
    dataset_licence: str
    attribution: list[str] = Field(default_factory=list, description="attribution duties, for the card")
    git_commit: str = Field(
        description="the source commit: HEAD when released, holding the dvc.lock, params.yaml, recipe, "
        "waivers and policy packs of the state released (the release commit, which the tag points at, "
        "is its child)"
    )
    created_at: datetime
    actor: str
    recipe: Recipe | None = Field(
        default=None,
        description="the recipe the images were made from, with its declarations (licence, intended use) "
        "as at release; a derived version's lacks the sources it excluded",
    )
    # Left out of a dump when empty, so a release whose recipe did not change reads as before.
    filter: FilterSettings | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="the filter settings, scoring models and checks not run behind the manifest (issue 21)",
    )
    recipe_changes: list[str] = Field(
        default_factory=list,
        exclude_if=lambda v: not v,
        description="recipe fields that changed between generation and release: declarations only (licence, "
        "intended use, sources, descriptions), which need no new images; `recipe` is as released",
    )
    derived_from: Derivation | None = Field(default=None, description="set on a derived version")
    remote: str | None = Field(
        default=None, description="the DVC remote (name and URL) the data was pushed to at release"
    )
    no_push: bool = Field(
        default=False, description="released with --no-push: the data was left in the releaser's DVC cache"
    )


class _Outline(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DerivationOutline(_Outline):
    parent: str


class ReleaseOutline(_Outline):
    """What a dataset page shows of the dataset's other versions (its lineage: each version, when it was
    made, its generators and sources, the version it was derived from), kept of their records once each
    is read and checked whole (``store.releases.load_outline``). Issue 22: a record of 10,000 shards is
    18 MB of objects (1.8 KB a ``ShardRef``), and a derived one holds every excluded sample id; the
    report of a derive at 10,000,000 images held four."""

    name: str
    version: SemVer
    created_at: datetime
    generators: list[GeneratorUse]
    sources: list[SourceRef]
    derived_from: DerivationOutline | None = None
