"""A recipe's domain models: the user's own local classifiers (identity, attributes) and image embedding
model that score generated images in the filter (issue 21). Never downloaded: folders or files in the
workspace, pinned by sha256 when the recipe gives one."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from registry.records.base import Sha256, Strict, repeated


class Preprocess(Strict):
    """What a TorchScript classifier expects as input (a `transformers` folder brings its own image
    processor): each image resized to ``size`` x ``size`` (bilinear), scaled to 0-1, then normalised per
    channel as (x - mean) / std, as a float32 batch of shape (N, channels, size, size)."""

    size: int = Field(default=224, gt=0, le=4096, description="input width and height in pixels")
    channels: Literal[1, 3] = Field(default=3, description="3: RGB; 1: grey")
    mean: list[float] = Field(
        default=[0.485, 0.456, 0.406], description="per-channel mean (default: ImageNet's, RGB)"
    )
    std: list[float] = Field(
        default=[0.229, 0.224, 0.225], description="per-channel standard deviation (default: ImageNet's, RGB)"
    )
    output: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="what the model returns per class: logits (softmaxed here) or probabilities",
    )

    @model_validator(mode="after")
    def _one_value_per_channel(self) -> Preprocess:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"preprocess has {self.channels} channel(s) but mean {self.mean} and std {self.std}; give "
                "one value per channel"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"preprocess std {self.std} must be positive")
        return self


class ClassifierRef(Strict):
    """A local image classifier and how its labels map to the recipe's values: a Hugging Face
    `transformers` image-classification folder (loaded with local_files_only), or a TorchScript file
    (torch.jit.load on the CPU) with its ``classes`` in output order and its ``preprocess``."""

    model: str = Field(
        min_length=1, description="the model folder, or a TorchScript file, relative to the workspace"
    )
    labels: dict[str, str] | None = Field(
        default=None,
        description="recipe value -> model label (default: the recipe's values are the model's labels)",
    )
    # Left out of a dump when unset (as the domain itself is), so recipes without them digest as before.
    classes: list[str] | None = Field(
        default=None,
        min_length=1,
        exclude_if=lambda v: v is None,
        description="a TorchScript file's labels, in the order of its outputs (required for one; a "
        "transformers folder has its own in config.json)",
    )
    preprocess: Preprocess | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="a TorchScript file's input (default: 224 x 224 RGB, ImageNet mean and std, logits)",
    )
    sha256: Sha256 | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="the model's digest as checked when the recipe was written (a file's sha256, or a "
        "folder's sha256 over a sha256sum listing); the filter refuses a model that has changed since",
    )

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, v: list[str] | None) -> list[str] | None:
        dupes = repeated(v or [])
        if dupes:
            raise ValueError(f"classes listed more than once: {dupes}")
        return v


class EmbeddingRef(Strict):
    """A local image embedding model (a `transformers` CLIP folder, or any model with image features) and
    the real reference images a generated image must not copy. A CLIP folder saved with its tokenizer
    also scores each image against its prompt (the CLIP score)."""

    model: str = Field(min_length=1, description="the model folder, relative to the workspace")
    reference: str = Field(
        min_length=1, description="a folder of real images (PNG, JPEG), relative to the workspace"
    )
    sha256: Sha256 | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="the model folder's digest as checked when the recipe was written; the filter "
        "refuses a model that has changed since",
    )


class DomainSpec(Strict):
    """The local models that judge a dataset's images: the identity-consistency filter (Diff-Person's
    re-identification confidence), the observed side of the representation rules, memorisation against a
    real reference set, near-duplicates by embedding and prompt-image agreement. Their quality is the
    quality of these checks."""

    identity: ClassifierRef | None = Field(default=None, description="the identity classifier")
    attributes: dict[str, ClassifierRef] = Field(
        default_factory=dict, description="attribute name -> its classifier (observed attributes)"
    )
    embedding: EmbeddingRef | None = Field(
        default=None,
        description="image embeddings for memorisation (nearest real reference image), near-duplicates "
        "and, for a CLIP model, prompt-image agreement",
    )
