"""The records synthreg persists: the one source of schema (JSON Schema is exported from here).

Every model reads strictly (``extra="forbid"``): a typo in a recipe is an error, not a silently
ignored key. Field descriptions are what the exported JSON Schema and the dataset card show.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from registry.core.digests import sha256_json
from registry.core.names import check_sample_id, member_problem, shard_problem, shown
from registry.records.base import Sha256, Strict, repeated
from registry.records.domain import DomainSpec

DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
Identity = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def dataset_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a dataset (it becomes a folder and a git tag prefix: a path separator
    would escape data/), or None. One wording for the recipe, params.yaml and ``synthreg init``."""
    if DATASET_NAME.fullmatch(name):
        return None
    return (
        f"dataset name {shown(name)} must be 1-64 lowercase letters, digits, '-' or '_', starting with a "
        "letter or digit (it becomes a folder and a git tag)"
    )


# What a dataset may be used for, and what a licence may forbid. Licences name restrictions in these
# terms; the licence knowledge base says which purposes imply which (re-identification is biometric).
UseCategory = Literal[
    "commercial",
    "research",
    "education",
    "training-a-model",
    "training-a-competing-model",
    "training-a-foundation-model",
    "person-reidentification",
    "biometric",
    "surveillance",
    "law-enforcement",
    "military",
    "medical",
    "automated-legal-decisions",
]


class IntendedUse(Strict):
    """What a dataset is declared to be for; licence rules check every licence against it."""

    commercial: bool
    purposes: list[UseCategory] = Field(min_length=1)
    description: str = ""


class SourceRef(Strict):
    """A real data source used for conditioning, filtering, training, or training the generator."""

    name: str = Field(min_length=1)
    version: str | None = None
    digest: str | None = Field(default=None, description="content digest, e.g. sha256 of the data")
    licence: str = Field(min_length=1, description="licence id (SPDX where one exists)")
    url: str | None = None
    # Left out of a dump when unset (as marking is): recipes without it digest as they did before.
    path: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="a local copy, relative to the workspace: a file (its sha256) or a folder (sha256 over "
        "a sha256sum listing of its files); the leakage rule checks the declared digest against it",
    )
    status: Literal["active", "withdrawn"] = "active"
    role: Literal["conditioning", "filtering", "training", "generator-training", "evaluation"] = (
        "conditioning"
    )
    identities: list[Identity] | None = Field(
        default=None,
        description="conditioning sources only: the identities whose images were conditioned on this "
        "source (None: every identity). `synthreg derive --exclude-source` removes exactly their samples",
    )

    @model_validator(mode="after")
    def _identities_only_for_conditioning(self) -> SourceRef:
        if self.identities is not None and self.role != "conditioning":
            raise ValueError(
                f"source {self.name!r} has role {self.role!r} but lists identities; only a conditioning "
                "source is tied to identities (drop `identities` or set role: conditioning)"
            )
        if self.identities is not None and not self.identities:
            raise ValueError(f"source {self.name!r} lists no identities; omit `identities` to mean all")
        return self


# The load-test backend's images are patterns, not data; the card and `validate` say so in these words.
LOAD_TEST_BACKEND = "synthetic-pattern"
LOAD_TEST_WARNING = (
    "LOAD TEST ONLY: made by the synthetic-pattern backend (LoadTestPattern): test patterns, not data. "
    "Do not train on, publish or evaluate with these images."
)


class GeneratorRef(Strict):
    """The generator as a recipe names it: where its weights are and what we know of them."""

    name: str = Field(min_length=1)
    backend: Literal["tiny-digits", "diffusers", "synthetic-pattern"]
    path: str = Field(min_length=1, description="local model folder, relative to the workspace")
    hub_id: str | None = Field(default=None, description="where the weights came from, if a hub")
    revision: str | None = None
    licence: str = Field(min_length=1, description="licence id of the weights")
    weights_digest: Sha256 | None = Field(
        default=None, description="pin: refuse to run if the weights on disk differ"
    )
    intended_use: str = ""
    training_sources: list[SourceRef] = Field(
        default_factory=list, description="the real data the generator itself was trained on"
    )


class GeneratorSpec(Strict):
    """A generator as loaded: what actually ran, recorded in every manifest."""

    name: str
    backend: str
    source: str = Field(description="local path the weights were loaded from")
    hub_id: str | None = None
    revision: str | None = None
    weights_digest: Sha256 = Field(description="sha256 over the weight files' sha256sum listing")
    pipeline_class: str
    scheduler: str
    scheduler_config: dict = Field(default_factory=dict)
    scheduler_config_digest: Sha256
    licence: str
    intended_use: str = ""
    training_sources: list[SourceRef] = Field(default_factory=list)

    @classmethod
    def loaded(
        cls,
        ref: GeneratorRef,
        weights_digest: str,
        pipeline_class: str,
        scheduler: str,
        scheduler_config: dict,
    ) -> GeneratorSpec:
        """The spec of a generator loaded from ``ref``: what the recipe said plus what was found."""
        return cls(
            name=ref.name,
            backend=ref.backend,
            source=ref.path,
            hub_id=ref.hub_id,
            revision=ref.revision,
            weights_digest=weights_digest,
            pipeline_class=pipeline_class,
            scheduler=scheduler,
            scheduler_config=scheduler_config,
            scheduler_config_digest=sha256_json(scheduler_config),
            licence=ref.licence,
            intended_use=ref.intended_use,
            training_sources=ref.training_sources,
        )


_PLACEHOLDER_FIELDS = string.Formatter()


def template_fields(template: str) -> set[str]:
    return {f for _, f, _, _ in _PLACEHOLDER_FIELDS.parse(template) if f}


class MarkingSpec(Strict):
    # The docstring is the exported schema's description: it keeps the module's name from before issue
    # 18's move (now registry.store.marking) so that schemas/ stayed byte-identical through the move.
    """How generated images are marked beyond the XMP every image gets (registry.marking)."""

    c2pa: bool = Field(
        default=False,
        description="sign each PNG with C2PA content credentials; the key and certificate chain come from "
        "--c2pa-key/--c2pa-chain or $SYNTHREG_C2PA_KEY/$SYNTHREG_C2PA_CHAIN, never from the recipe",
    )


class Recipe(Strict):
    """What to generate: identities x attribute grid x prompt templates, and with which settings."""

    dataset: str = Field(
        description="lowercase letters, digits, - and _; becomes a folder and a tag",
        json_schema_extra={"pattern": f"^{DATASET_NAME.pattern}$"},
    )
    description: str = ""
    generator: GeneratorRef
    identities: list[Identity] = Field(min_length=1)
    attributes: dict[str, list[str]] = Field(
        default_factory=dict, description="attribute grid: name -> values; samples cycle through it"
    )
    prompt_templates: list[str] = Field(
        min_length=1, description="Python format strings over {identity} and the attribute names"
    )
    negative_prompt: str = ""
    images_per_identity: int = Field(gt=0, le=1_000_000)
    seed: int = Field(ge=0, lt=2**63)
    steps: int = Field(gt=0, le=1000)
    guidance: float = Field(ge=0, le=100, description="classifier-free guidance scale; <= 1 is off")
    size: int = Field(gt=0, le=4096, description="image width and height in pixels")
    sources: list[SourceRef] = Field(default_factory=list)
    licence: str | None = Field(
        default=None, description="licence the released dataset is published under (required to release)"
    )
    intended_use: IntendedUse | None = Field(
        default=None, description="what the dataset is for; the licence rules check it (required to validate)"
    )
    # Left out of a dump when unset, so a recipe without it dumps (and digests) as it did before it
    # existed: generation.json, release records and recipe digests of older recipes stay byte-identical.
    marking: MarkingSpec | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="optional marking beyond XMP: {c2pa: true} adds C2PA content credentials",
    )

    # Left out of a dump when unset (as marking is), so recipes without it digest as before.
    domain: DomainSpec | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="local models that score the images for the filter (identity, attributes, "
        "memorisation); without it only a backend's built-in domain (tiny-digits) scores them",
    )

    @property
    def c2pa(self) -> bool:
        return bool(self.marking and self.marking.c2pa)

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, v: str) -> str:
        problem = dataset_name_problem(v)
        if problem:
            raise ValueError(f"{problem}; rename it")
        return v

    @field_validator("identities")
    @classmethod
    def _unique_identities(cls, v: list[str]) -> list[str]:
        dupes = repeated(v)
        if dupes:
            raise ValueError(f"identities listed more than once: {dupes}")
        return v

    @field_validator("attributes")
    @classmethod
    def _attribute_values(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"attribute name {name!r} must be an identifier (letters, digits, _)")
            if not values or len(set(values)) != len(values):
                raise ValueError(f"attribute {name!r} needs one or more distinct values, got {values}")
        return v

    @model_validator(mode="after")
    def _sources_name_known_identities(self) -> Recipe:
        for s in self.sources:
            unknown = sorted(set(s.identities or []) - set(self.identities))
            if unknown:
                raise ValueError(
                    f"source {s.name!r} names identities {unknown} that the recipe does not generate "
                    f"(identities: {self.identities})"
                )
        return self

    @model_validator(mode="after")
    def _templates_use_known_fields(self) -> Recipe:
        known = {"identity", *self.attributes}
        for t in self.prompt_templates:
            try:
                unknown = template_fields(t) - known
            except ValueError as e:
                raise ValueError(f"prompt template {t!r} is not a valid format string: {e}") from e
            if unknown:
                raise ValueError(
                    f"prompt template {t!r} uses {sorted(unknown)}, which is neither 'identity' "
                    f"nor an attribute (known: {sorted(known)})"
                )
        return self


# Recipe fields that declare things about the data without shaping any image (dotted for the
# generator's): they may change between generation and release, and `generate` needs no new images
# for them. Every other field shapes the images.
DECLARATIONS = (
    "domain",  # judges the images, never makes them
    "description",
    "licence",
    "intended_use",
    "sources",
    "generator.licence",
    "generator.intended_use",
    "generator.training_sources",
    "generator.hub_id",
    "generator.revision",
)


def recipe_changes(before: Recipe, after: Recipe) -> tuple[list[str], list[str]]:
    """The fields that differ between two recipes, dotted for the generator's: (those that shape the
    images, declarations)."""
    changed: list[str] = []
    for k in Recipe.model_fields:
        old, new = getattr(before, k), getattr(after, k)
        if k == "generator":
            changed += [
                f"generator.{g}" for g in GeneratorRef.model_fields if getattr(old, g) != getattr(new, g)
            ]
        elif old != new:
            changed.append(k)
    return [c for c in changed if c not in DECLARATIONS], [c for c in changed if c in DECLARATIONS]


class GenerationRequest(Strict):
    """One image to make. Sample id and seed derive from the recipe alone, so the plan is known
    before any image exists and a resumed run makes exactly the same requests."""

    sample_id: str
    index: int = Field(ge=0, description="position in the plan")

    _safe_sample_id = field_validator("sample_id")(check_sample_id)
    identity: str
    attributes: dict[str, str]
    prompt: str
    negative_prompt: str
    seed: int = Field(ge=0, lt=2**63)
    steps: int
    guidance: float
    width: int
    height: int


class SampleRecord(Strict):
    """One manifest row: the request, what made it, where it is, and (after filtering) the verdict."""

    dataset: str
    sample_id: str
    index: int
    identity: str
    attributes: dict[str, str]
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    generator_name: str
    generator_backend: str
    generator_source: str = Field(description="model folder the weights were loaded from")
    weights_digest: Sha256
    generator_licence: str
    pipeline_class: str
    scheduler: str
    scheduler_config_digest: Sha256
    image_sha256: Sha256
    phash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    shard: str = Field(description="shard file, relative to the workspace")
    member: str = Field(description="member name inside the shard")
    batch: int = Field(ge=0, description="plan batch the sample was generated in")
    batch_size: int = Field(gt=0)
    # Run-specific facts (timings, times, host) are not here: the manifest is a DVC output, and its bytes
    # must depend only on what made the images, so another machine's `dvc repro` reproduces them (issue
    # 9). They are in the generate stage's audit event.
    library_versions: dict[str, str]
    device: str
    # Filled by the filter stage; empty on a candidate manifest.
    identity_pred: str | None = None
    identity_confidence: float | None = None
    contrast: float | None = None
    nn_distance: float | None = Field(default=None, description="distance to nearest real train image")
    duplicate_of: str | None = None
    observed_attributes: dict[str, str] | None = None
    decision: Literal["accepted", "rejected"] | None = None
    reason: str | None = None

    # Names become paths when a shard is extracted: checked here and again over whole manifests
    # (registry/core/names.py), since a manifest is a file anyone with write access can edit.
    _safe_sample_id = field_validator("sample_id")(check_sample_id)

    @model_validator(mode="after")
    def _safe_member_and_shard(self) -> SampleRecord:
        problem = member_problem(self.member, self.sample_id) or shard_problem(self.shard)
        if problem:
            raise ValueError(f"sample {shown(self.sample_id)}: {problem}")
        return self


FILTER_FIELDS = (
    "identity_pred",
    "identity_confidence",
    "contrast",
    "nn_distance",
    "duplicate_of",
    "observed_attributes",
    "decision",
    "reason",
)


class GenerateParams(Strict):
    batch_size: int = Field(default=128, gt=0, le=4096)
    shard_size: int = Field(default=1000, gt=0, le=100_000)
    min_shards: int = Field(
        default=1,
        gt=0,
        le=10_000,
        description="make at least this many shards when there are enough images (shards then hold fewer "
        "than shard_size), so a DataLoader with this many workers has a shard for each",
    )
    device: str = Field(
        default="cpu",
        pattern=r"^(cpu|mps|cuda(:[0-9]{1,2})?)$",
        description="torch device: cpu, mps, cuda or cuda:N (checked against the hardware before a run)",
    )
    threads: int | None = Field(
        default=None, gt=0, le=1024, description="torch CPU threads; None = torch default"
    )
    executor: Literal["local", "ray"] = Field(
        default="local", description="who makes the shards: this process, or a Ray actor pool"
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster: None starts a local Ray, 'auto' joins the one on this machine, "
        "'ray://HOST:10001' a remote head (the workspace must be at the same path on every node)",
    )
    workers: int | None = Field(
        default=None, gt=0, le=10_000, description="Ray actors; None = as many as the cluster fits"
    )
    cpus_per_worker: float = Field(
        default=1.0, gt=0, description="CPUs a Ray actor reserves, and its torch threads (threads is local's)"
    )
    gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs a Ray actor reserves (device 'cuda')")
    max_retries: int = Field(
        default=2, ge=0, le=100, description="times Ray restarts a dead worker and retries its shard"
    )

    def shard_size_for(self, n: int) -> int:
        """Images per shard for ``n`` images: ``shard_size``, smaller when that leaves < min_shards."""
        return max(1, min(self.shard_size, -(-n // self.min_shards)))


class FilterParams(Strict):
    identity_threshold: float = Field(
        default=0.7, ge=0, le=1, description="min classifier confidence in the intended identity"
    )
    min_contrast: float = Field(default=0.1, ge=0, le=1, description="min pixel std / 255 (blank images)")
    duplicate_distance: int = Field(
        default=0, ge=-1, le=64, description="max perceptual-hash Hamming distance for a near-duplicate"
    )
    memorised_distance: float = Field(
        default=0.05, ge=0, description="max RMS pixel distance (0-1) to a real image for a memorised copy"
    )
    # Left out of a dump when unset, so filter-info.json of a dataset without it reads as before.
    memorised_similarity: float | None = Field(
        default=None,
        ge=0,
        le=1,
        exclude_if=lambda v: v is None,
        description="min cosine similarity of image embeddings to a reference image for a memorised copy "
        "(a recipe's domain.embedding; default 0.95)",
    )
    duplicate_similarity: float | None = Field(
        default=None,
        ge=0,
        le=1,
        exclude_if=lambda v: v is None,
        description="min cosine similarity of image embeddings to an earlier kept image of the same "
        "identity for a near-duplicate (a recipe's domain.embedding; default 0.97)",
    )
    min_clip_score: float | None = Field(
        default=None,
        ge=-1,
        le=1,
        exclude_if=lambda v: v is None,
        description="min cosine similarity of an image's and its prompt's CLIP embeddings (a recipe's CLIP "
        "domain.embedding, saved with its tokenizer); unset: the score is recorded, nothing is rejected",
    )
    executor: Literal["local", "ray"] = Field(
        default="local", description="who reads and measures the images: this process, or Ray actors"
    )
    ray_address: str | None = Field(default=None, description="as generate.ray_address")
    workers: int | None = Field(
        default=None, gt=0, description="Ray actors; None = as many as the cluster fits"
    )
    cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs a Ray actor reserves")

    def applied(self, embeds: bool, clip: bool) -> dict:
        """The settings as the filter applied them, for filter-info.json and the release record: with an
        embedding model, the cosine thresholds it used (defaults written out, not left implicit); with a
        CLIP score, ``min_clip_score`` even when unset (null: recorded, nothing rejected)."""
        out = self.model_dump()
        if embeds:
            out["memorised_similarity"] = self.memorised_cosine
            out["duplicate_similarity"] = self.duplicate_cosine
        if clip:
            out["min_clip_score"] = self.min_clip_score
        return out

    @property
    def memorised_cosine(self) -> float:
        return self.memorised_similarity if self.memorised_similarity is not None else 0.95

    @property
    def duplicate_cosine(self) -> float:
        return self.duplicate_similarity if self.duplicate_similarity is not None else 0.97
