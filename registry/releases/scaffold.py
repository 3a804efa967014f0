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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from registry.core import yamlio
from registry.core.errors import ConfigError
from registry.core.fsio import atomic_write_text
from registry.core.names import check_line, shown
from registry.core.workspace import inside
from registry.records.config import ONE_DATASET_SECTIONS, Params, format_validation_error
from registry.records.dataset import (
    FilterParams,
    IntendedUse,
    Recipe,
    Strict,
    UseCategory,
    dataset_name_problem,
)
from registry.records.policy import PolicyPack

GENERIC_PACK = "policies/packs/default.yaml"
LICENCES = "policies/licenses.yaml"
DEFAULT_GENERATORS = {"tiny-digits": "generators/tiny_digits/model"}
# Scaffold's fields as `synthreg init` spells them, for its error messages.
OPTIONS = {
    "identities": "--identity",
    "purposes": "--use",
    "images_per_identity": "--images-per-identity",
    "generator_licence": "--generator-licence",
    "use": "--use-description",
}
# The filter settings written out in a new entry (the rest keep their defaults): a dataset's own
# thresholds, visible where they are edited.
THRESHOLDS = ("identity_threshold", "min_contrast", "duplicate_distance", "memorised_distance")


class Scaffold(Strict):
    """What ``synthreg init`` is told about a new dataset: a recipe to write from these fields, or
    (``recipe``) an existing recipe file to adopt, with a pack and a params entry made for it."""

    name: str
    recipe: str | None = Field(default=None, description="an existing recipe to adopt, a workspace path")
    backend: Literal["diffusers", "tiny-digits", "synthetic-pattern"] = "diffusers"
    generator: str | None = Field(default=None, description="the generator's local folder")
    generator_licence: str | None = Field(default=None, min_length=1)
    licence: str | None = Field(default=None, min_length=1, description="the released dataset's licence")
    identities: list[str] = Field(default_factory=list)
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


def parse_attributes(texts: list[str]) -> dict[str, list[str]]:
    """``["setting=indoor,outdoor"]`` -> {"setting": ["indoor", "outdoor"]}; an empty value, a repeated
    attribute or a control character is refused, never dropped."""
    out: dict[str, list[str]] = {}
    for text in texts:
        check_line(text, "--attribute")
        name, sep, values = text.partition("=")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not name.strip() or not values.strip() or not all(parts):
            raise ConfigError(
                f"--attribute {shown(text)} is not NAME=VALUE,VALUE with no empty value (e.g. "
                "setting=indoor,outdoor)"
            )
        if name.strip() in out:
            raise ConfigError(f"--attribute {name.strip()} is given twice; give each attribute once")
        out[name.strip()] = parts
    return out


def _prompt(s: Scaffold) -> str:
    if s.prompt is not None:
        return s.prompt
    return "a photo of a {identity}" + "".join(f", {{{a}}}" for a in s.attributes)


def recipe_for(s: Scaffold) -> dict[str, Any]:
    """The recipe, as the mapping written to ``recipes/NAME.yaml`` (validated as a Recipe first)."""
    generator = s.generator or DEFAULT_GENERATORS.get(s.backend)
    if generator is None:
        raise ConfigError(f"a {s.backend} dataset needs its generator's local folder: pass --generator PATH")
    missing = [
        o
        for o, v in (
            ("--identity", s.identities),
            ("--generator-licence", s.generator_licence),
            ("--licence", s.licence),
        )
        if not v
    ]
    if missing:
        raise ConfigError(f"init needs {', '.join(missing)} (or --recipe with an existing recipe)")
    data: dict[str, Any] = {
        "dataset": s.name,
        "description": f"{s.name}: {', '.join(s.identities)}, made by {s.backend} from {generator}.",
        "generator": {
            "name": Path(generator).name or s.name,
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


def pack_for(name: str, attributes: dict[str, list[str]]) -> dict[str, Any] | None:
    """The dataset's own pack: three representation rules per declared attribute (as the digits pack
    has for stroke), or None when the recipe declares no attribute."""
    rules: list[dict[str, Any]] = []
    for a in attributes:
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
        "id": f"{name}-representation",
        "description": f"Representation of {name}'s attributes ({', '.join(attributes)}), requested "
        "and observed.",
        "rules": rules,
    }
    PolicyPack.model_validate(pack)
    return pack


def entry_for(name: str, recipe_rel: str, recipe: dict[str, Any], pack: str | None) -> dict[str, Any]:
    """``datasets.NAME`` of params.yaml: every section the dataset's own, with the defaults written out."""
    return {
        "recipe": recipe_rel,
        "generator": recipe["generator"]["path"],
        "filter": FilterParams().model_dump(include=set(THRESHOLDS)),
        "validate": {
            "packs": [GENERIC_PACK, *([pack] if pack else [])],
            "licences": LICENCES,
            "waivers": "waivers.yaml",
        },
        "train": {"dataset": f"{name}@working", "experiment": "synthreg-train"},
    }


def _check_name(name: str) -> None:
    problem = dataset_name_problem(name)
    if problem:
        raise ConfigError(f"{problem}; choose another")
    if name == "working" or yaml.safe_load(name) != name:  # `yes`, `null`, `012`, `1e3`, a date
        raise ConfigError(
            f"dataset name {name!r} reads as a keyword, a YAML boolean, null, number or date, not as a name "
            "(params.yaml and `--dataset` would misread it); choose another"
        )


def _check_values(ws: Path, s: Scaffold) -> None:
    """Every value that lands in a one-line field is one line; the generator folder is in the
    workspace; the licence ids are the knowledge base's."""
    for what, values in (
        ("--identity", s.identities),
        ("--generator-licence", [s.generator_licence or ""]),
        ("--licence", [s.licence or ""]),
        ("--prompt", [s.prompt or ""]),
        ("--use-description", [s.use]),
        ("--generator", [s.generator or ""]),
    ):
        for v in values:
            check_line(v, what)
    if s.generator is not None:
        inside(ws, s.generator, "--generator")
    kb_path = ws / LICENCES
    if not kb_path.is_file():
        return
    from registry.records.config import load_yaml_model
    from registry.records.policy import LicenceBase

    known = {lic.id for lic in load_yaml_model(kb_path, LicenceBase, "licence knowledge base").licences}
    for what, lic in (("--generator-licence", s.generator_licence), ("--licence", s.licence)):
        if lic is not None and lic not in known:
            near = sorted(k for k in known if k.lower() == lic.lower())
            raise ConfigError(
                f"{what} {shown(lic)} is not in {LICENCES}"
                + (f"; did you mean {near[0]}?" if near else "; add it there first (with what it allows)")
            )


def _read_params(path: Path) -> tuple[dict[str, Any], Params | None]:
    """params.yaml as plain YAML and as Params (None when absent or empty)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a file; restore params.yaml")
    raw = yamlio.load_file(path, "params file", ConfigError) if path.is_file() else None
    if raw is None:
        return {}, None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a YAML mapping, got {type(raw).__name__}")
    from registry.records.config import load_params

    return raw, load_params(path)


def _taken(ws: Path, name: str, raw: dict[str, Any], params: Params | None, paths: list[str]) -> None:
    if raw.get("datasets") is None and any(k in raw for k in ONE_DATASET_SECTIONS):
        raise ConfigError(
            "params.yaml keeps one dataset's settings at its top level (recipe, filter, validate, train); "
            "move them under `datasets: {NAME: ...}` first (see docs/guide/datasets.md), then run init"
        )
    if params is not None and name in params.names:
        raise ConfigError(f"dataset {name!r} already exists in params.yaml's datasets; choose another name")
    for rel in [*paths, f"data/{name}", f"releases/{name}"]:
        if (ws / rel).exists() or (ws / rel).is_symlink():
            raise ConfigError(
                f"{rel} already exists, so dataset {name!r} is taken (init never overwrites); choose "
                "another name, or remove it if it is left over"
            )
        for parent in (ws / rel).parents:
            if parent == ws:
                break
            if parent.exists() and not parent.is_dir():
                raise ConfigError(f"{parent.relative_to(ws)} is not a folder; init writes {rel} there")


def _adopt(ws: Path, s: Scaffold) -> tuple[str, dict[str, Any]]:
    """``--recipe``: an existing recipe of this dataset (no option that would write one may be given)."""
    from registry.records.config import load_recipe

    assert s.recipe is not None
    given = [
        o
        for o, v in (
            ("--identity", s.identities),
            ("--attribute", s.attributes),
            ("--generator", s.generator),
            ("--prompt", s.prompt),
        )
        if v
    ]
    if given:
        raise ConfigError(f"--recipe adopts an existing recipe; drop {', '.join(given)} (edit the recipe)")
    path = inside(ws, s.recipe, "recipe")
    recipe = load_recipe(path)
    if recipe.dataset != s.name:
        raise ConfigError(f"recipe {s.recipe} is for dataset {recipe.dataset!r}, not {s.name!r}")
    return path.relative_to(ws.resolve()).as_posix(), recipe.model_dump(mode="json")


def init_dataset(ws: Path, s: Scaffold) -> list[str]:
    """Write the new dataset's recipe (unless adopted), pack and params entry; the workspace paths
    written, in order."""
    ws = ws.resolve()
    _check_name(s.name)
    _check_values(ws, s)
    params_path = inside(ws, "params.yaml", "params file")
    raw, params = _read_params(params_path)
    recipe_rel, pack_rel = s.recipe or f"recipes/{s.name}.yaml", f"policies/packs/{s.name}.yaml"
    _taken(ws, s.name, raw, params, [pack_rel] + ([] if s.recipe else [recipe_rel]))
    if params is not None and s.recipe is not None:
        owner = [n for n in params.names if inside(ws, params.dataset(n).recipe, "recipe") == ws / recipe_rel]
        if owner:
            raise ConfigError(
                f"{recipe_rel} is already datasets.{owner[0]}'s recipe; each dataset has its own"
            )
    recipe_rel, recipe = _adopt(ws, s) if s.recipe else (recipe_rel, recipe_for(s))
    inside(ws, recipe["generator"]["path"], "the recipe's generator.path")
    pack = pack_for(s.name, recipe["attributes"])
    entry = entry_for(s.name, recipe_rel, recipe, pack_rel if pack else None)
    generic = inside(ws, GENERIC_PACK, "generic pack")
    if not generic.is_file():
        raise ConfigError(f"{GENERIC_PACK} does not exist; restore it (the generic rules every dataset uses)")
    text = _params_text(params_path, s.name, entry)

    written: list[Path] = []
    try:
        for rel, data, head in (
            (
                None if s.recipe else recipe_rel,
                recipe,
                f"# Made by `synthreg init {s.name}`; edit freely. Schema: schemas/recipe.schema.json.\n",
            ),
            (
                pack_rel,
                pack,
                f"# {s.name}'s own rules, after the generic pack. Schema: schemas/policy-pack.schema.json.\n",
            ),
        ):
            if rel is None or data is None:
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
    return [*(p.relative_to(ws).as_posix() for p in written), "params.yaml"]


def _params_text(path: Path, name: str, entry: dict[str, Any]) -> str:
    """params.yaml with ``datasets.NAME`` added, comments and order kept (a new file if there is none)."""
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 110
    try:
        doc = rt.load(path.read_text()) if path.is_file() else None
    except Exception as e:  # ruamel is stricter than PyYAML (a duplicate key): say what it found
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path} cannot be edited in place ({first}); fix it, then run init") from None
    if doc is None:
        doc = {}
    if doc.get("datasets") is None:
        doc["datasets"] = {}
    doc["datasets"][name] = entry
    out = io.StringIO()
    rt.dump(doc, out)
    text = out.getvalue()
    try:  # the edited file reads back with the new entry, or nothing is written
        parsed = Params.model_validate(yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(
            f"params.yaml with datasets.{name} added would not read back ({e}); add it by hand"
        ) from None
    if name not in parsed.names:
        raise ConfigError(f"params.yaml with datasets.{name} added would not read back; add it by hand")
    return text
