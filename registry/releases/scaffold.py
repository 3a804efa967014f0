"""`synthreg init NAME`: everything a new dataset needs beside the ones a workspace has.

    init_dataset(ws, Scaffold(name="pets", backend="diffusers", generator="models/pets-sd", ...))

Writes, and refuses before writing anything when any of them exists or the name is taken:

- ``recipes/NAME.yaml``, a recipe that validates (identities, attributes, prompt, generator, licences,
  intended use);
- ``policies/packs/NAME.yaml``, the dataset's own pack: representation rules over the recipe's own
  attributes, requested and observed (observed ones report ``not run`` until the filter measures them),
  used after the generic pack (``policies/packs/default.yaml``);
- ``datasets.NAME`` in ``params.yaml``: its recipe, generator folder, filter, validate and train
  settings. dvc.yaml's stages run ``foreach`` entry of ``datasets``, so this entry is the dataset's DVC
  stages (``generate@NAME``, ``filter@NAME``, ``validate@NAME``, ``train@NAME``).

params.yaml is edited in place with ruamel.yaml, so its comments and order stay; every file is written
atomically, params.yaml last, and a failure removes the files this call wrote.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from registry.core.errors import ConfigError
from registry.core.fsio import atomic_write_text
from registry.core.names import check_line, shown
from registry.core.workspace import inside
from registry.records.config import Params, format_validation_error
from registry.records.dataset import DATASET_NAME, FilterParams, IntendedUse, Recipe, Strict, UseCategory
from registry.records.policy import PolicyPack

GENERIC_PACK = "policies/packs/default.yaml"
LICENCES = "policies/licenses.yaml"
DEFAULT_GENERATORS = {"tiny-digits": "generators/tiny_digits/model"}
# The filter settings written out in a new entry (the rest keep their defaults): a dataset's own
# thresholds, visible where they are edited.
THRESHOLDS = ("identity_threshold", "min_contrast", "duplicate_distance", "memorised_distance")


class Scaffold(Strict):
    """What ``synthreg init`` is told about a new dataset."""

    name: str
    backend: Literal["diffusers", "tiny-digits", "synthetic-pattern"] = "diffusers"
    generator: str | None = Field(default=None, description="the generator's local folder")
    generator_licence: str = Field(min_length=1)
    licence: str = Field(min_length=1, description="the released dataset's licence")
    identities: list[str] = Field(min_length=1)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    prompt: str | None = None
    images_per_identity: int = Field(default=100, gt=0, le=1_000_000)
    size: int = Field(default=512, gt=0, le=4096)
    steps: int = Field(default=30, gt=0, le=1000)
    guidance: float = Field(default=7.5, ge=0, le=100)
    seed: int = Field(default=0, ge=0, lt=2**63)
    commercial: bool = False
    purposes: list[UseCategory] = Field(min_length=1)
    use: str = ""


def parse_attribute(text: str) -> tuple[str, list[str]]:
    """``setting=indoor,outdoor`` -> ("setting", ["indoor", "outdoor"])."""
    name, sep, values = text.partition("=")
    parts = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not name.strip() or not parts:
        raise ConfigError(f"--attribute {shown(text)} is not NAME=VALUE,VALUE (e.g. setting=indoor,outdoor)")
    return name.strip(), parts


def _prompt(s: Scaffold) -> str:
    if s.prompt is not None:
        return s.prompt
    return "a photo of a {identity}" + "".join(f", {{{a}}}" for a in s.attributes)


def recipe_for(s: Scaffold) -> dict[str, Any]:
    """The recipe, as the mapping written to ``recipes/NAME.yaml`` (validated as a Recipe first)."""
    generator = s.generator or DEFAULT_GENERATORS.get(s.backend)
    if generator is None:
        raise ConfigError(f"a {s.backend} dataset needs its generator's local folder: pass --generator PATH")
    data: dict[str, Any] = {
        "dataset": s.name,
        "description": f"{s.name}: {', '.join(s.identities)}, made by {s.backend} from {generator}.",
        "generator": {
            "name": Path(generator).name,
            "backend": s.backend,
            "path": generator,
            "licence": s.generator_licence,
        },
        "identities": s.identities,
        "attributes": s.attributes,
        "prompt_templates": [_prompt(s)],
        "negative_prompt": "",
        "images_per_identity": s.images_per_identity,
        "seed": s.seed,
        "steps": s.steps,
        "guidance": s.guidance,
        "size": s.size,
        "sources": [],
        "licence": s.licence,
        "intended_use": {"commercial": s.commercial, "purposes": s.purposes, "description": s.use},
    }
    from pydantic import ValidationError

    try:
        Recipe.model_validate(data)
        IntendedUse.model_validate(data["intended_use"])
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, f"the recipe for {s.name}")) from None
    return data


def pack_for(s: Scaffold) -> dict[str, Any] | None:
    """The dataset's own pack: three representation rules per declared attribute (as the digits pack
    has for stroke), or None when the recipe declares no attribute."""
    rules: list[dict[str, Any]] = []
    for a in s.attributes:
        rules += [
            {
                "id": f"bias.{a}.requested-balance",
                "kind": "representation",
                "severity": "error",
                "description": f"The {a} values asked for are balanced per identity (four-fifths rule).",
                "attribute": a,
                "measured_on": "requested",
                "per_identity": True,
                "min_ratio": 0.8,
            },
            {
                "id": f"bias.{a}.observed-balance",
                "kind": "representation",
                "severity": "warn",
                "description": f"The {a} values measured on accepted images are balanced overall "
                "(four-fifths rule); not run until the filter has a classifier for the attribute.",
                "attribute": a,
                "measured_on": "observed",
                "min_ratio": 0.8,
            },
            {
                "id": f"bias.{a}.observed-collapse",
                "kind": "representation",
                "severity": "error",
                "description": f"No identity's accepted images are (nearly) all one measured {a} value; not "
                "run until the filter has a classifier for the attribute.",
                "attribute": a,
                "measured_on": "observed",
                "per_identity": True,
                "min_share": 0.1,
                "min_ratio": 0.0,
            },
        ]
    if not rules:
        return None
    pack = {
        "id": f"{s.name}-representation",
        "description": f"Representation of {s.name}'s attributes ({', '.join(s.attributes)}), requested "
        "and observed.",
        "rules": rules,
    }
    PolicyPack.model_validate(pack)
    return pack


def entry_for(s: Scaffold, recipe: dict[str, Any], pack: str | None) -> dict[str, Any]:
    """``datasets.NAME`` of params.yaml: every section the dataset's own, with the defaults written out."""
    return {
        "recipe": f"recipes/{s.name}.yaml",
        "generator": recipe["generator"]["path"],
        "filter": FilterParams().model_dump(include=set(THRESHOLDS)),
        "validate": {
            "packs": [GENERIC_PACK, *([pack] if pack else [])],
            "licences": LICENCES,
            "waivers": "waivers.yaml",
        },
        "train": {"dataset": f"{s.name}@working", "experiment": "synthreg-train"},
    }


def _taken(ws: Path, s: Scaffold, params: Params | None, paths: list[str]) -> None:
    if not DATASET_NAME.fullmatch(s.name):
        raise ConfigError(
            f"dataset name {shown(s.name)} must be 1-64 lowercase letters, digits, '-' or '_', starting with "
            "a letter or digit (it becomes a folder and a git tag); choose another"
        )
    if params is not None and params.datasets is None and (ws / "params.yaml").is_file():
        raise ConfigError(
            "params.yaml keeps one dataset's settings at its top level (recipe, filter, validate, train); "
            "move them under `datasets: {NAME: ...}` first (see docs/guide/datasets.md), then run init"
        )
    if params is not None and s.name in params.names:
        raise ConfigError(f"dataset {s.name!r} already exists in params.yaml's datasets; choose another name")
    for rel in [*paths, f"data/{s.name}", f"releases/{s.name}"]:
        if (ws / rel).exists() or (ws / rel).is_symlink():
            raise ConfigError(
                f"{rel} already exists, so dataset {s.name!r} is taken (init never overwrites); choose "
                "another name, or remove it if it is left over"
            )


def init_dataset(ws: Path, s: Scaffold) -> list[str]:
    """Write the new dataset's recipe, pack and params entry; the workspace paths written, in order."""
    from registry.records.config import load_params

    check_line(s.use, "--use-description")
    params_path = inside(ws, "params.yaml", "params file")
    params = load_params(params_path, ws) if params_path.is_file() else None
    recipe_rel, pack_rel = f"recipes/{s.name}.yaml", f"policies/packs/{s.name}.yaml"
    _taken(ws, s, params, [recipe_rel, pack_rel])
    recipe = recipe_for(s)
    pack = pack_for(s)
    entry = entry_for(s, recipe, pack_rel if pack else None)
    generic = inside(ws, GENERIC_PACK, "generic pack")
    if not generic.is_file():
        raise ConfigError(f"{GENERIC_PACK} does not exist; restore it (the generic rules every dataset uses)")
    text = _params_text(params_path, s.name, entry)
    Params.model_validate(yaml.safe_load(text))  # the edited file reads back, or nothing is written

    written: list[Path] = []
    try:
        for rel, data, head in (
            (
                recipe_rel,
                recipe,
                f"# Made by `synthreg init {s.name}`; edit freely. Schema: schemas/recipe.schema.json.\n",
            ),
            (
                pack_rel,
                pack,
                f"# {s.name}'s own rules, after the generic pack. Schema: schemas/policy-pack.schema.json.\n",
            ),
        ):
            if data is None:
                continue
            path = inside(ws, rel, "new file")
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
            written.append(path)
        atomic_write_text(params_path, text)
    except BaseException:
        for path in written:  # a half-made dataset would block the next init under the same name
            path.unlink(missing_ok=True)
        raise
    return [*(p.relative_to(ws.resolve()).as_posix() for p in written), "params.yaml"]


def _params_text(path: Path, name: str, entry: dict[str, Any]) -> str:
    """params.yaml with ``datasets.NAME`` added, comments and order kept (a new file if there is none)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 110
    doc = rt.load(path.read_text()) if path.is_file() else None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} is not a YAML mapping; fix it before adding a dataset")
    if doc.get("datasets") is None:
        doc["datasets"] = {}
    doc["datasets"][name] = entry
    out = io.StringIO()
    rt.dump(doc, out)
    text = out.getvalue()
    if not re.search(rf"^  {re.escape(name)}:", text, re.M):  # ruamel laid it out some other way
        raise ConfigError(f"could not add datasets.{name} to {path} in place; add it by hand")
    return text
