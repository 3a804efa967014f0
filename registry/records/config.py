"""Reading YAML inputs (recipes, params) into strict pydantic models, with errors a person can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from registry.core import yamlio
from registry.core.errors import ConfigError, RecipeError, SynthregError
from registry.core.names import shown
from registry.core.workspace import inside
from registry.records.dataset import FilterParams, GenerateParams, Recipe, Strict, dataset_name_problem

M = TypeVar("M", bound=BaseModel)


class TrainGeneratorParams(Strict):
    epochs: int = Field(default=20, gt=0, le=100_000)
    batch_size: int = Field(default=64, gt=0, le=65_536)
    lr: float = Field(default=2e-3, gt=0, le=10)
    seed: int = Field(default=0, ge=0, lt=2**63)
    threads: int = Field(default=2, gt=0, le=1024)


class ValidateParams(Strict):
    packs: list[str] = Field(
        default_factory=lambda: ["policies/packs/default.yaml"], description="policy packs, workspace paths"
    )
    licences: str = Field(default="policies/licenses.yaml", description="licence knowledge base")
    waivers: str = Field(default="waivers.yaml", description="waivers file (may be absent)")


class TrainParams(Strict):
    """``synthreg train``: a small classifier on a real/synthetic mix, judged on held-out data.

    ``n_synthetic = round(synthetic_share * train_size)`` images come from the dataset and
    ``train_size - n_synthetic`` from a few-shot real pool of ``real_per_class`` train images per digit
    (fewer when the pool is smaller; the run records the sizes it used). An epoch is ``train_size``
    examples whatever the mix, so every mix gets the same number of gradient steps.
    """

    dataset: str = Field(
        default="digits@working",
        description="NAME@X.Y.Z (a release), NAME (its latest release), NAME@working or 'working' "
        "(the current filtered manifest, data/NAME/filtered)",
    )
    synthetic_share: float = Field(default=0.5, ge=0, le=1, description="share of synthetic training images")
    train_size: int = Field(
        default=1000, gt=0, le=100_000_000, description="training images in all (real + synthetic)"
    )
    real_per_class: int = Field(
        default=5,
        ge=-1,
        le=1_000_000,
        description="real train images per digit in the real pool; -1 = all of them",
    )
    use_rejected: bool = Field(
        default=False, description="draw synthetic images from every row, rejected ones included"
    )
    epochs: int = Field(default=10, gt=0, le=100_000, description="passes of train_size examples each")
    batch_size: int = Field(default=64, gt=0, le=65_536)
    lr: float = Field(default=2e-3, gt=0, le=10)
    seed: int = Field(
        default=0, ge=0, lt=2**63, description="picks the real and synthetic images; seeds torch"
    )
    threads: int = Field(default=2, gt=0, le=1024, description="torch CPU threads")
    experiment: str = Field(default="synthreg-train", min_length=1, description="MLflow experiment")
    registered_model: str | None = Field(
        default=None,
        min_length=1,
        description="MLflow registered model name (default NAME-classifier, after the dataset trained on)",
    )
    image_size: int = Field(
        default=16, ge=4, le=512, description="images are turned grey and resized to this"
    )
    real_source: Literal["auto", "sklearn-digits", "none"] = Field(
        default="auto",
        description="real images to mix in and evaluate on: sklearn-digits (digits datasets), none "
        "(synthetic only, evaluated on a held-out synthetic split), or auto (sklearn-digits when every "
        "identity is a digit 0-9, else none)",
    )
    holdout_share: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="share of the synthetic pool held out for evaluation (no real source)",
    )
    metrics: str | None = Field(
        default=None,
        description="metrics JSON for `dvc metrics`, numbers only (default data/NAME/train/metrics.json); "
        "its side files (run info, per-class and mix plots) go beside it",
    )


class DatasetParams(Strict):
    """One dataset's own settings (``params.yaml``'s ``datasets.NAME``): its recipe, the generator
    folder its stages depend on, and its filter, validate and train sections. ``synthreg init`` writes
    one; every command picks it by the dataset's name."""

    recipe: str = Field(min_length=1, description="the dataset's recipe, a workspace path")
    generator: str = Field(
        min_length=1, description="its generator's local folder (a DVC dependency of its generate stage)"
    )
    filter: FilterParams = FilterParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()


# The sections a one-dataset params.yaml may keep at its top level (the form before issue 19).
ONE_DATASET_SECTIONS = ("recipe", "filter", "validate", "train")


class Params(Strict):
    """``params.yaml``: every knob of the pipeline. ``train_generator`` and ``generate`` are the
    workspace's; each dataset's own settings are under ``datasets.NAME`` (DVC's ``foreach`` makes one
    stage set per entry). A one-dataset workspace may instead keep ``recipe``, ``filter``, ``validate``
    and ``train`` at the top level; the two forms do not mix."""

    recipe: str = "recipes/digits.yaml"
    train_generator: TrainGeneratorParams = TrainGeneratorParams()
    generate: GenerateParams = GenerateParams()
    filter: FilterParams = FilterParams()
    validate_: ValidateParams = Field(default=ValidateParams(), alias="validate")
    train: TrainParams = TrainParams()
    datasets: dict[str, DatasetParams] | None = Field(
        default=None, description="each dataset's own settings, by name (synthreg init adds one)"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_form(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("datasets") is not None:
            mixed = [k for k in ONE_DATASET_SECTIONS if k in data]
            if mixed:
                raise ValueError(
                    f"top-level {', '.join(mixed)} beside `datasets:`; move each under datasets.NAME "
                    "(the dataset it is for), or drop `datasets:`"
                )
            datasets = data["datasets"]
            if isinstance(datasets, dict):  # each train section trains its own dataset by default
                data = dict(data, datasets={k: _own_train(k, v) for k, v in datasets.items()})
        return data

    @model_validator(mode="after")
    def _dataset_names(self) -> Params:
        recipes: dict[str, str] = {}
        datasets = self.datasets or {}
        for name, entry in datasets.items():
            other = recipes.setdefault(str(Path(entry.recipe)), name)
            if other != name:
                raise ValueError(
                    f"datasets.{name}.recipe is datasets.{other}.recipe too ({entry.recipe}); each dataset "
                    "has its own recipe"
                )
            folder = Path(entry.train.metrics or f"data/{name}/train/metrics.json").parts[:2]
            if folder[0] == "data" and len(folder) == 2 and folder[1] != name and folder[1] in datasets:
                raise ValueError(
                    f"datasets.{name}.train.metrics {entry.train.metrics} is in the folder of dataset "
                    f"{folder[1]}; write it under data/{name}/"
                )
            if entry.train.registered_model in {f"{o}-classifier" for o in datasets if o != name}:
                raise ValueError(
                    f"datasets.{name}.train.registered_model {entry.train.registered_model} is another "
                    "dataset's model name; choose one of its own"
                )
            problem = dataset_name_problem(name)
            if problem:
                raise ValueError(problem)
            trained = entry.train.dataset.split("@", 1)[0]
            if trained != name:
                raise ValueError(
                    f"datasets.{name}.train.dataset names {trained!r}: a dataset's train section trains "
                    f"that dataset ({name}@working, {name}@X.Y.Z or {name})"
                )
        return self

    @property
    def names(self) -> list[str]:
        """The datasets named in ``datasets:`` (empty in the one-dataset form)."""
        return sorted(self.datasets or {})

    def dataset(self, name: str, where: str = "params.yaml") -> DatasetParams:
        """``name``'s own settings; in the one-dataset form, the top-level sections, whatever ``name``."""
        if self.datasets is None:
            return DatasetParams(
                recipe=self.recipe,
                generator="-",
                filter=self.filter,
                validate=self.validate_,
                train=self.train,
            )
        if name not in self.datasets:
            known = ", ".join(self.names) or "none"
            raise ConfigError(
                f"{where} has no settings for dataset {name!r} under `datasets:` (it has: {known}); "
                f"run `synthreg init {name}` to add it (`--recipe PATH` adopts a recipe you wrote), or "
                "check the name"
            )
        return self.datasets[name]

    def only(self, where: str = "params.yaml") -> str | None:
        """The one dataset a command means when none is named: the only entry of ``datasets:``, or
        None in the one-dataset form (its recipe names it). Several entries: an error asking for one."""
        if self.datasets is None:
            return None
        if len(self.datasets) == 1:
            return self.names[0]
        if not self.datasets:
            raise ConfigError(
                f"{where} lists no dataset under `datasets:`; add one with `synthreg init NAME`"
            )
        raise ConfigError(
            f"{where} has {len(self.datasets)} datasets ({', '.join(self.names)}); name the one you mean"
        )


def _own_train(name: str, entry: object) -> object:
    """``datasets.NAME.train.dataset`` defaults to ``NAME@working`` (not the digits default); 'working'
    means the same there."""
    if not isinstance(entry, dict):
        return entry
    train = entry.get("train") or {}
    if isinstance(train, dict) and train.get("dataset", "working") == "working":
        entry = dict(entry, train=dict(train, dataset=f"{name}@working"))
    return entry


def format_validation_error(e: ValidationError, source: str) -> str:
    """One line per error: keys and values are shown escaped and cut short (a key may hold a newline,
    a value may be a whole file's worth of text)."""
    lines = [f"{source} is invalid:"]
    for err in e.errors():
        where = (
            ".".join(shown(p)[1:-1] if isinstance(p, str) else str(p) for p in err["loc"]) or "(top level)"
        )
        msg = " ".join(err["msg"].split("\n"))
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see the JSON schema in schemas/)"
        elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
            msg = f"{msg} (got {shown(err['input'])})"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def load_yaml_model(path: Path, model: type[M], what: str, error: type[SynthregError] = ConfigError) -> M:
    if not path.is_file():
        raise error(f"{what} {path} does not exist; check the path")
    data = yamlio.load_file(path, what, error)
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error(format_validation_error(e, f"{what} {path}")) from None


def load_recipe(path: Path) -> Recipe:
    return load_yaml_model(path, Recipe, "recipe", RecipeError)


def load_params(path: Path, ws: Path | None = None) -> Params:
    """``params.yaml`` if present, else every default. With ``ws``, a path that leads out of the
    workspace (symlinks included) is refused."""
    if ws is not None:
        path = inside(ws, path, "params file")
    if not path.exists():
        return Params()
    return load_yaml_model(path, Params, "params file")
