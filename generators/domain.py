"""Domain checks from the user's own local models (a recipe's ``domain``), for any dataset.

    domain:
      identity:   {model: models/pets-id, labels: {cat: tabby, dog: beagle}}   # image classifier
      attributes: {setting: {model: models/pets-setting}}                       # observed attributes
      embedding:  {model: models/pets-clip, reference: real/pets}                # memorisation

Each folder is a Hugging Face ``transformers`` model saved with ``save_pretrained`` (with its image
processor), loaded with ``local_files_only``: nothing is downloaded. The identity classifier is the
identity-consistency filter (Diff-Person keeps an image only when a re-identification model agrees with
its intended identity, at a confidence threshold); attribute classifiers give the observed side of the
representation rules; the embedding model (a CLIP folder, or any model with image features) gives each
image's cosine similarity to its nearest real reference image, for the memorised-copy filter.

These checks are only as good as the user's models: synthreg records which models (by folder digest)
judged each dataset, and what they said, not whether they are right.

Everything is loaded and checked before any image is scored: a missing or unloadable folder, labels that
do not cover the recipe's identities or attribute values, and a reference set with no image are refused.
Partly implemented (issue 21): TorchScript classifiers, near-duplicates by embedding and the CLIP
prompt-image score are not built yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from registry.core.digests import folder_digest
from registry.core.errors import ConfigError, ManifestError
from registry.core.images import decode
from registry.core.workspace import inside
from registry.records.dataset import ClassifierRef, DomainSpec, Recipe

BATCH = 64  # images a forward pass
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def _folder(ws: Path, path: str, what: str) -> Path:
    folder = inside(ws, path, what)
    if not folder.is_dir():
        raise ConfigError(f"{what} {path} is not a folder; save the model there (`save_pretrained`) first")
    return folder


class _Classifier:
    """An image-classification model and the map from its labels back to the recipe's values."""

    def __init__(self, ws: Path, ref: ClassifierRef, values: list[str], what: str) -> None:
        import transformers

        folder = _folder(ws, ref.model, what)
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            self.model = transformers.AutoModelForImageClassification.from_pretrained(
                folder, local_files_only=True
            ).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"{what} {ref.model} cannot be loaded as a transformers image classifier "
                f"({str(e).splitlines()[0][:160]}); save one with save_pretrained, processor included"
            ) from None
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        wanted = ref.labels or {v: v for v in values}
        missing = sorted(v for v in values if wanted.get(v) not in id2label.values())
        if missing:
            raise ConfigError(
                f"{what} {ref.model}: its labels ({', '.join(sorted(id2label.values())[:10])}) do not cover "
                f"{', '.join(missing)}; map them with `labels:` (recipe value: model label)"
            )
        back = {label: value for value, label in wanted.items()}
        self.values = [back.get(id2label[k]) for k in range(len(id2label))]  # class index -> recipe value
        self.labels = [id2label[k] for k in range(len(id2label))]
        self.digest = folder_digest(folder)
        self.path = ref.model

    def predict(self, images: list[Any]) -> tuple[list[str | None], np.ndarray]:
        """(the recipe value of each top class, None for a label outside the recipe; the probabilities)."""
        import torch

        probs = []
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                inputs = self.processor(images=images[i : i + BATCH], return_tensors="pt")
                probs.append(self.model(**inputs).logits.softmax(-1).float().numpy())
        p = np.concatenate(probs)
        return [self.values[k] for k in p.argmax(1)], p


class _Embedder:
    """Image features (CLIP's image tower, or any model's pooled output), unit length."""

    def __init__(self, ws: Path, path: str) -> None:
        import transformers

        folder = _folder(ws, path, "embedding model")
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            cls = transformers.CLIPModel if config.model_type == "clip" else transformers.AutoModel
            self.model = cls.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"embedding model {path} cannot be loaded ({str(e).splitlines()[0][:160]}); save a "
                "transformers CLIP or image model there with save_pretrained, processor included"
            ) from None
        self.digest = folder_digest(folder)
        self.path = path

    def __call__(self, images: list[Any]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                pixels = self.processor(images=images[i : i + BATCH], return_tensors="pt")["pixel_values"]
                if hasattr(self.model, "get_image_features"):
                    f = self.model.get_image_features(pixel_values=pixels)
                    f = f if isinstance(f, torch.Tensor) else f.pooler_output
                else:
                    o = self.model(pixel_values=pixels)
                    f = o.pooler_output if getattr(o, "pooler_output", None) is not None else o[0].mean(1)
                out.append(torch.nn.functional.normalize(f.float(), dim=-1).numpy())
        return np.concatenate(out)


def _reference_images(ws: Path, path: str) -> tuple[list[str], list[Any]]:

    folder = _folder(ws, path, "reference set")
    found = folder.rglob("*")
    files = sorted(
        p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.is_symlink()
    )
    if not files:
        raise ConfigError(f"reference set {path} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for f in files:
        try:
            images.append(decode(f.read_bytes(), f"reference image {f.relative_to(ws)}", "RGB", png=False))
        except ManifestError as e:
            raise ConfigError(str(e)) from None
    return [f.relative_to(folder).as_posix() for f in files], images


class ModelDomain:
    """The recipe's own models as a domain: the same ``score`` as the built-in tiny-digits domain."""

    name = "models"
    needs_rgb = True
    nn_metric = "cosine"  # nn_distance is 1 - cosine similarity to the nearest reference image

    def __init__(self, ws: Path, recipe: Recipe, spec: DomainSpec) -> None:
        self.identity = (
            _Classifier(ws, spec.identity, list(recipe.identities), "identity classifier")
            if spec.identity
            else None
        )
        unknown = sorted(set(spec.attributes) - set(recipe.attributes))
        if unknown:
            raise ConfigError(
                f"domain.attributes names {', '.join(unknown)}, which the recipe does not declare "
                f"(it declares: {', '.join(recipe.attributes) or 'none'})"
            )
        self.attributes = {
            a: _Classifier(ws, ref, recipe.attributes[a], f"classifier for attribute {a}")
            for a, ref in spec.attributes.items()
        }
        self.embedder = None
        if spec.embedding is not None:
            self.embedder = _Embedder(ws, spec.embedding.model)
            self.reference_names, images = _reference_images(ws, spec.embedding.reference)
            self.reference = self.embedder(images)
            self.reference_path = spec.embedding.reference
        self.identities = frozenset(recipe.identities)

    def score(
        self, grey: np.ndarray, images: list[Any] | None, identities: list[str]
    ) -> tuple[list[str | None] | None, list[float | None] | None, list[float | None] | None, list | None]:
        """(identity predictions, confidence in the intended identity, cosine distance to the nearest
        reference image, observed attributes); None for a check without a model."""
        assert images is not None  # needs_rgb: measure decodes them
        pred: list[str | None] | None = None
        conf: list[float | None] | None = None
        nn: list[float | None] | None = None
        observed: list | None = None
        if self.identity is not None:
            values, p = self.identity.predict(images)
            # A top class outside the recipe's identities keeps its model label: a mismatch all the same.
            pred = [
                v if v is not None else self.identity.labels[k]
                for v, k in zip(values, p.argmax(1), strict=True)
            ]
            index = {v: k for k, v in enumerate(self.identity.values) if v is not None}
            conf = [float(p[i, index[identities[i]]]) for i in range(len(images))]
        if self.embedder is not None:
            sims = self.embedder(images) @ self.reference.T
            nn = [float(1.0 - s) for s in sims.max(axis=1)]
        if self.attributes:
            seen = {a: c.predict(images)[0] for a, c in self.attributes.items()}
            observed = [{a: v[i] for a, v in seen.items() if v[i] is not None} for i in range(len(images))]
        return pred, conf, nn, observed

    def describe(self) -> dict:
        d: dict[str, Any] = {"domain": self.name}
        if self.identity is not None:
            d["identity_classifier"] = {"model": self.identity.path, "sha256": self.identity.digest}
        if self.attributes:
            d["attribute_classifiers"] = {
                a: {"model": c.path, "sha256": c.digest} for a, c in self.attributes.items()
            }
        if self.embedder is not None:
            d["embedding"] = {
                "model": self.embedder.path,
                "sha256": self.embedder.digest,
                "reference": self.reference_path,
                "reference_images": len(self.reference_names),
            }
        return d

    def not_checked(self) -> list[str]:
        """The checks this domain cannot run, with why."""
        out = []
        if self.identity is None:
            out.append("identity check: the recipe's domain names no identity classifier")
        if self.embedder is None:
            out.append("memorised-copy check: the recipe's domain names no embedding model and reference set")
        return out
