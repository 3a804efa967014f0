"""Reading YAML inputs (recipes, params) into strict pydantic models, with errors a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from registry.errors import ConfigError, RecipeError, SynthregError
from registry.models import FilterParams, GenerateParams, Recipe, Strict

M = TypeVar("M", bound=BaseModel)


class TrainGeneratorParams(Strict):
    epochs: int = Field(default=20, gt=0)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=2e-3, gt=0)
    seed: int = Field(default=0, ge=0)
    threads: int = Field(default=2, gt=0)


class ValidateParams(Strict):
    packs: list[str] = Field(
        default_factory=lambda: ["policies/packs/default.yaml"], description="policy packs, workspace paths"
    )
    licences: str = Field(default="policies/licenses.yaml", description="licence knowledge base")
    waivers: str = Field(default="waivers.yaml", description="waivers file (may be absent)")


class Params(Strict):
    """``params.yaml``: every knob of the pipeline, one section per stage."""

    recipe: str = "recipes/digits.yaml"
    train_generator: TrainGeneratorParams = TrainGeneratorParams()
    generate: GenerateParams = GenerateParams()
    filter: FilterParams = FilterParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")


def format_validation_error(e: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see the JSON schema in schemas/)"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def load_yaml_model(path: Path, model: type[M], what: str, error: type[SynthregError] = ConfigError) -> M:
    if not path.is_file():
        raise error(f"{what} {path} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} cannot be read: {e}") from e
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error(format_validation_error(e, f"{what} {path}")) from None


def load_recipe(path: Path) -> Recipe:
    return load_yaml_model(path, Recipe, "recipe", RecipeError)


def load_params(path: Path) -> Params:
    """``params.yaml`` if present, else every default."""
    if not path.exists():
        return Params()
    return load_yaml_model(path, Params, "params file")
