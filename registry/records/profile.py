"""The profile of a dataset that a downstream run logs to MLflow (``registry.downstream.track``): what
the run trained on, in a form ``trace`` reads back without synthreg's workspace."""

from __future__ import annotations

from pydantic import Field

from registry.records.dataset import Sha256, SourceRef, Strict


class GeneratorDigest(Strict):
    name: str
    backend: str
    weights_digest: Sha256
    licence: str
    pipeline_class: str
    scheduler: str
    images: int


class PolicyStatus(Strict):
    report_sha256: Sha256 | None = Field(description="the policy report made for this manifest; None: none")
    passed: bool | None = Field(description="None: never validated")


class DatasetProfile(Strict):
    """The profile of a synthreg dataset input in MLflow (JSON): what the data was, by content."""

    dataset: str
    version: str = Field(description="X.Y.Z, or 'working' for an unreleased manifest")
    released: bool
    manifest_sha256: Sha256
    dvc_md5: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="md5 of the manifest, as DVC's cache names it"
    )
    manifest_path: str = Field(description="where it was read, relative to the workspace when inside it")
    rows: int
    accepted: int
    reasons: dict[str, int] = Field(description="reason code -> rows")
    seed_min: int | None
    seed_max: int | None
    generators: list[GeneratorDigest]
    recipe_sha256: Sha256 | None = Field(description="sha256 of the recipe the images were generated with")
    recipe_seed: int | None
    prompt_templates: list[str]
    sources: list[SourceRef]
    policy: PolicyStatus
    git_commit: str = Field(description="the release's commit; the workspace HEAD for a working manifest")
