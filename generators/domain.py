"""Domain checks from the user's own local models (a recipe's ``domain``), for any dataset.

    domain:
      identity:   {model: models/pets-id, labels: {cat: tabby, dog: beagle}}   # image classifier
      attributes: {setting: {model: models/setting.pt, classes: [indoor, outdoor],   # TorchScript
                             preprocess: {size: 64}}}
      embedding:  {model: models/pets-clip, reference: real/pets}                # CLIP or image features

A classifier is a Hugging Face ``transformers`` image-classification folder saved with
``save_pretrained`` (with its image processor), loaded with ``local_files_only`` (nothing is
downloaded), or a TorchScript file (``torch.jit.load`` on the CPU) with its ``classes`` in output order
and the input it expects (``preprocess``). The identity classifier is the identity-consistency filter
(Diff-Person keeps an image only when a re-identification model agrees with its intended identity, at a
confidence threshold); attribute classifiers give the observed side of the representation rules. The
embedding model (a CLIP folder, or any model with image features) gives each image's cosine similarity
to its nearest real reference image (memorised copies) and to earlier kept images (near-duplicates, in
``generators.filter``); a CLIP folder saved with its tokenizer also gives the CLIP score, the cosine
similarity of the image's and its prompt's embeddings (prompt-image agreement).

These checks are only as good as the user's models: synthreg records which models (by digest) judged
each dataset, and what they said, not whether they are right.

Everything is loaded and checked before any image is scored: a missing or unloadable model, labels that
do not cover the recipe's identities or attribute values, a digest other than the one the recipe pins,
and a reference set with no image are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.core.digests import folder_digest, sha256_file
from registry.core.errors import ConfigError, ManifestError
from registry.core.images import decode
from registry.core.names import shown
from registry.core.workspace import inside
from registry.records.dataset import Recipe
from registry.records.domain import ClassifierRef, DomainSpec, Preprocess

BATCH = 64  # images a forward pass
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")


@dataclass
class DomainScores:
    """What a domain measured on a batch of images, in row order; None for a check it cannot run."""

    pred: list[str | None] | None = None  # the identity it sees
    conf: list[float | None] | None = None  # its confidence in the intended identity
    nn: list[float | None] | None = None  # distance to the nearest real image
    observed: list | None = None  # observed attributes
    embedding: np.ndarray | None = None  # unit-length image embeddings, for near-duplicates
    clip: list[float] | None = None  # cosine similarity of image and prompt embeddings


def _folder(ws: Path, path: str, what: str) -> Path:
    folder = inside(ws, path, what)
    if not folder.is_dir():
        raise ConfigError(f"{what} {path} is not a folder; save the model there (`save_pretrained`) first")
    return folder


def _pinned(digest: str, pin: str | None, what: str, path: str) -> str:
    """``digest``, refused when the recipe pins another: the model changed since the recipe was checked."""
    if pin is not None and digest != pin:
        raise ConfigError(
            f"{what} {path} has sha256 {digest}, not the {pin} the recipe pins: it changed since the "
            "recipe was checked; restore it, or check the new model and put its digest in the recipe"
        )
    return digest


def _label_map(ref: ClassifierRef, labels: list[str], values: list[str], what: str) -> list[str | None]:
    """The recipe value of each class index (None for a label outside the recipe), refused when the
    model's ``labels`` do not cover every value."""
    wanted = ref.labels or {v: v for v in values}
    missing = sorted(v for v in values if wanted.get(v) not in labels)
    if missing:
        raise ConfigError(
            f"{what} {ref.model}: its labels ({', '.join(shown(lab, 40) for lab in sorted(labels)[:10])}) "
            "do not cover "
            f"{', '.join(missing)}; map them with `labels:` (recipe value: model label)"
        )
    back = {label: value for value, label in wanted.items()}
    return [back.get(label) for label in labels]


def _error(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


class _Classifier:
    """A transformers image-classification folder and the map from its labels back to the recipe's values."""

    def __init__(self, ws: Path, ref: ClassifierRef, values: list[str], what: str) -> None:
        import transformers

        folder = _folder(ws, ref.model, what)
        if ref.classes is not None or ref.preprocess is not None:
            raise ConfigError(
                f"{what} {ref.model} is a transformers folder: it has its own labels (config.json) and image "
                "processor; `classes` and `preprocess` are for a TorchScript file"
            )
        self.digest = _pinned(folder_digest(folder), ref.sha256, what, ref.model)
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            self.model = transformers.AutoModelForImageClassification.from_pretrained(
                folder, local_files_only=True
            ).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"{what} {ref.model} cannot be loaded as a transformers image classifier ({_error(e)}); "
                "save one with save_pretrained, processor included (or give a TorchScript file)"
            ) from None
        id2label = {int(k): str(v) for k, v in self.model.config.id2label.items()}
        self.labels = [id2label[k] for k in range(len(id2label))]
        self.values = _label_map(ref, self.labels, values, what)  # class index -> recipe value
        self.path = ref.model

    def probabilities(self, images: list[Any]) -> np.ndarray:
        import torch

        probs = []
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                inputs = self.processor(images=images[i : i + BATCH], return_tensors="pt")
                probs.append(self.model(**inputs).logits.softmax(-1).float().numpy())
        return np.concatenate(probs)

    def predict(self, images: list[Any]) -> tuple[list[str | None], np.ndarray]:
        """(the recipe value of each top class, None for a label outside the recipe; the probabilities)."""
        p = self.probabilities(images)
        return [self.values[k] for k in p.argmax(1)], p


class _ScriptClassifier(_Classifier):
    """A TorchScript classifier file: ``classes`` name its outputs in order, ``preprocess`` its input."""

    def __init__(self, ws: Path, ref: ClassifierRef, values: list[str], what: str) -> None:
        import torch

        path = inside(ws, ref.model, what)
        if ref.classes is None:
            raise ConfigError(
                f"{what} {ref.model} is a file, read as TorchScript: list its labels in output order with "
                "`classes:` (a transformers model is a folder saved with save_pretrained)"
            )
        self.digest = _pinned(sha256_file(path), ref.sha256, what, ref.model)
        try:
            self.model = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, OSError, EOFError) as e:
            raise ConfigError(
                f"{what} {ref.model} cannot be loaded as TorchScript ({_error(e)}); save the model with "
                "torch.jit.script(model).save(path) or torch.jit.trace"
            ) from None
        self.pre = ref.preprocess or Preprocess()
        self.labels = list(ref.classes)
        self.values = _label_map(ref, self.labels, values, what)
        self.path = ref.model
        pre = self.pre
        try:  # one blank image: a wrong input shape or output size is refused before any image is scored
            with torch.inference_mode():
                out = self.model(torch.zeros(1, pre.channels, pre.size, pre.size))
        except (RuntimeError, ValueError, TypeError, torch.jit.Error) as e:  # jit.Error: a scripted raise
            raise ConfigError(
                f"{what} {ref.model} refuses a (1, {pre.channels}, {pre.size}, {pre.size}) float batch "
                f"({_error(e)}); declare the input it expects with `preprocess:` (size, channels)"
            ) from None
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        if shape != (1, len(self.labels)):
            raise ConfigError(
                f"{what} {ref.model} returns {shape or type(out).__name__} for one image, not one score for "
                f"each of its {len(self.labels)} classes; `classes` must list every output in order"
            )
        self.mean = np.asarray(pre.mean, np.float32)
        self.std = np.asarray(pre.std, np.float32)

    def batch(self, images: list[Any]) -> Any:
        """The declared input: resized (bilinear), scaled to 0-1, normalised, channels first."""
        import torch
        from PIL import Image

        pre, mode = self.pre, "RGB" if self.pre.channels == 3 else "L"
        arrays = []
        for im in images:
            im = im if im.mode == mode else im.convert(mode)
            if im.size != (pre.size, pre.size):
                im = im.resize((pre.size, pre.size), Image.Resampling.BILINEAR)
            arrays.append(np.asarray(im, np.float32).reshape(pre.size, pre.size, pre.channels))
        x = (np.stack(arrays) * np.float32(1 / 255) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def probabilities(self, images: list[Any]) -> np.ndarray:
        import torch

        probs = []
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                out = self.model(self.batch(images[i : i + BATCH])).float()
                probs.append((out.softmax(-1) if self.pre.output == "logits" else out).numpy())
        return np.concatenate(probs)


def _classifier(ws: Path, ref: ClassifierRef, values: list[str], what: str) -> _Classifier:
    """A TorchScript file or a transformers folder, by what the path holds."""
    path = inside(ws, ref.model, what)
    if path.is_file():
        return _ScriptClassifier(ws, ref, values, what)
    if not path.exists():
        raise ConfigError(
            f"{what} {ref.model} does not exist; save the model there (a transformers folder with "
            "save_pretrained, or a TorchScript file)"
        )
    return _Classifier(ws, ref, values, what)


def _features(out: Any) -> Any:
    """A tensor of features from get_image_features/get_text_features, whichever form they return."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _Embedder:
    """Image features (CLIP's image tower, or any model's pooled output), unit length; and for a CLIP
    folder with its tokenizer, prompt features in the same space."""

    def __init__(self, ws: Path, path: str, pin: str | None) -> None:
        import transformers

        folder = _folder(ws, path, "embedding model")
        self.digest = _pinned(folder_digest(folder), pin, "embedding model", path)
        try:
            self.processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
            cls = transformers.CLIPModel if config.model_type == "clip" else transformers.AutoModel
            self.model = cls.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(
                f"embedding model {path} cannot be loaded ({_error(e)}); save a "
                "transformers CLIP or image model there with save_pretrained, processor included"
            ) from None
        self.path = path
        self.tokenizer: Any = None
        self._prompts: dict[str, np.ndarray] = {}
        self.text_problem = self._text_tower(folder)

    def _text_tower(self, folder: Path) -> str | None:
        """Why prompts cannot be embedded (None when they can): no text tower, or no usable tokenizer."""
        import transformers

        what = f"embedding model {self.path}"
        if not hasattr(self.model, "get_text_features"):
            return f"{what} has no text tower ({type(self.model).__name__}, not a CLIP model)"
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            # transformers would make an empty tokenizer from config.json alone: every word unknown
            files = " or ".join(TOKENIZER_FILES)
            return f"{what} has a text tower but no tokenizer ({files}); save its tokenizer with it"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            ids = self.tokenizer("a photo of a dog")["input_ids"]
            if all(t == self.tokenizer.unk_token_id or t in self.tokenizer.all_special_ids for t in ids):
                raise ValueError("it knows none of the words of 'a photo of a dog'")
            self.prompts(["a photo of a dog"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, IndexError) as e:
            self.tokenizer = None
            return (
                f"{what} has a text tower but no usable tokenizer ({_error(e)}); save its tokenizer with it"
            )
        return None

    def __call__(self, images: list[Any]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), BATCH):
                pixels = self.processor(images=images[i : i + BATCH], return_tensors="pt")["pixel_values"]
                if hasattr(self.model, "get_image_features"):
                    f = _features(self.model.get_image_features(pixel_values=pixels))
                else:
                    o = self.model(pixel_values=pixels)
                    f = o.pooler_output if getattr(o, "pooler_output", None) is not None else o[0].mean(1)
                out.append(torch.nn.functional.normalize(f.float(), dim=-1).numpy())
        return np.concatenate(out)

    def prompts(self, prompts: list[str]) -> np.ndarray:
        """Unit-length text features of each prompt. Each distinct prompt is embedded alone (no padding,
        so its features do not depend on which prompts shared its batch, in this process or a Ray
        worker) and kept for the next chunk."""
        import torch

        limit = self.model.config.text_config.max_position_embeddings
        with torch.inference_mode():
            for p in dict.fromkeys(prompts):
                if p not in self._prompts:
                    tokens = self.tokenizer([p], truncation=True, max_length=limit, return_tensors="pt")
                    f = _features(self.model.get_text_features(**tokens))
                    self._prompts[p] = torch.nn.functional.normalize(f.float(), dim=-1).numpy()[0]
        return np.stack([self._prompts[p] for p in prompts])


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
        unknown = sorted(set(spec.attributes) - set(recipe.attributes))
        if unknown:
            raise ConfigError(
                f"domain.attributes names {', '.join(unknown)}, which the recipe does not declare "
                f"(it declares: {', '.join(recipe.attributes) or 'none'})"
            )
        self.identity = (
            _classifier(ws, spec.identity, list(recipe.identities), "identity classifier")
            if spec.identity
            else None
        )
        self.attributes = {
            a: _classifier(ws, ref, recipe.attributes[a], f"classifier for attribute {a}")
            for a, ref in spec.attributes.items()
        }
        self.embedder = None
        if spec.embedding is not None:
            self.embedder = _Embedder(ws, spec.embedding.model, spec.embedding.sha256)
            self.reference_names, images = _reference_images(ws, spec.embedding.reference)
            self.reference = self.embedder(images)
            self.reference_path = spec.embedding.reference
        self.identities = frozenset(recipe.identities)

    @property
    def embeds(self) -> bool:
        """Whether it gives image embeddings (near-duplicates by embedding)."""
        return self.embedder is not None

    @property
    def clip_problem(self) -> str | None:
        """Why it gives no CLIP score (None when it does)."""
        if self.embedder is None:
            return "the recipe's domain names no embedding model"
        return self.embedder.text_problem

    def score(
        self, grey: np.ndarray, images: list[Any] | None, identities: list[str], prompts: list[str]
    ) -> DomainScores:
        """Identity predictions and the confidence in the intended identity, the cosine distance to the
        nearest reference image, the image embeddings, the CLIP score and the observed attributes; None
        for a check without a model."""
        assert images is not None  # needs_rgb: measure decodes them
        out = DomainScores()
        if self.identity is not None:
            values, p = self.identity.predict(images)
            # A top class outside the recipe's identities keeps its model label: a mismatch all the same.
            out.pred = [
                v if v is not None else self.identity.labels[k]
                for v, k in zip(values, p.argmax(1), strict=True)
            ]
            index = {v: k for k, v in enumerate(self.identity.values) if v is not None}
            out.conf = [float(p[i, index[identities[i]]]) for i in range(len(images))]
        if self.embedder is not None:
            out.embedding = self.embedder(images)
            sims = out.embedding @ self.reference.T
            out.nn = [float(1.0 - s) for s in sims.max(axis=1)]
            if self.embedder.text_problem is None:
                texts = self.embedder.prompts(prompts)
                out.clip = [float(s) for s in (out.embedding * texts).sum(axis=1)]
        if self.attributes:
            seen = {a: c.predict(images)[0] for a, c in self.attributes.items()}
            out.observed = [
                {a: v[i] for a, v in seen.items() if v[i] is not None} for i in range(len(images))
            ]
        return out

    def describe(self) -> dict:
        def model(c: _Classifier) -> dict:
            d: dict[str, Any] = {"model": c.path, "sha256": c.digest}
            if isinstance(c, _ScriptClassifier):
                d |= {"format": "torchscript", "classes": c.labels, "preprocess": c.pre.model_dump()}
            return d

        d: dict[str, Any] = {"domain": self.name}
        if self.identity is not None:
            d["identity_classifier"] = model(self.identity)
        if self.attributes:
            d["attribute_classifiers"] = {a: model(c) for a, c in self.attributes.items()}
        if self.embedder is not None:
            d["embedding"] = {
                "model": self.embedder.path,
                "sha256": self.embedder.digest,
                "reference": self.reference_path,
                "reference_images": len(self.reference_names),
                "text_tower": self.embedder.text_problem is None,
            }
        return d

    def not_checked(self) -> list[str]:
        """The checks this domain cannot run, with why."""
        out = []
        if self.identity is None:
            out.append("identity check: the recipe's domain names no identity classifier")
        if self.embedder is None:
            out.append("memorised-copy check: the recipe's domain names no embedding model and reference set")
            out.append(
                "near-duplicate check by embedding: the recipe's domain names no embedding model "
                "(the perceptual-hash check ran)"
            )
        if self.clip_problem is not None:
            out.append(f"prompt-image agreement (CLIP score): {self.clip_problem}")
        return out
