"""Commands of the pipeline: generate, filter, reproduce, validate, train (the DVC stages call these)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from registry.cli.common import (
    AddressOpt,
    ExecutorOpt,
    ParamsOpt,
    Workspace,
    errors,
    executor_params,
    fail,
    progress_bar,
    workspace_root,
)

if TYPE_CHECKING:
    from registry.lineage.openlineage import Manifest, ReleaseRef
    from registry.records.config import DatasetParams, Params, TrainParams
    from registry.records.dataset import Recipe


def init(
    name: Annotated[str, typer.Argument(help="the new dataset's name (a folder and a git tag prefix)")],
    identity: Annotated[
        list[str] | None,
        typer.Option("--identity", help="an identity to generate (repeat: one per identity)"),
    ] = None,
    generator_licence: Annotated[
        str | None, typer.Option(help="licence id of the generator's weights (policies/licenses.yaml)")
    ] = None,
    licence: Annotated[
        str | None, typer.Option(help="licence id the released dataset is published under")
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(help="adopt this existing recipe (a workspace path) instead of writing one"),
    ] = None,
    backend: Annotated[str, typer.Option(help="diffusers, tiny-digits or synthetic-pattern")] = "diffusers",
    generator: Annotated[
        str | None, typer.Option(help="the generator's local folder, in the workspace (a diffusers pipeline)")
    ] = None,
    attribute: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE,VALUE: an attribute grid to cycle through (repeat)")
    ] = None,
    prompt: Annotated[
        str | None, typer.Option(help="prompt template over {identity} and the attributes")
    ] = None,
    images_per_identity: Annotated[int, typer.Option(help="images per identity")] = 100,
    size: Annotated[int, typer.Option(help="image width and height in pixels")] = 512,
    steps: Annotated[int, typer.Option(help="denoising steps")] = 30,
    guidance: Annotated[float, typer.Option(help="classifier-free guidance scale")] = 7.5,
    seed: Annotated[int, typer.Option(help="the recipe's seed")] = 0,
    commercial: Annotated[bool, typer.Option(help="declared for commercial use")] = False,
    use: Annotated[
        list[str] | None, typer.Option(help="an intended purpose, e.g. research, training-a-model (repeat)")
    ] = None,
    use_description: Annotated[str, typer.Option(help="the intended use, in words")] = "",
    workspace: Workspace = None,
) -> None:
    """Add a dataset: its recipe, its own policy pack, and its settings and DVC stages in params.yaml.

    Writes recipes/NAME.yaml from the options (or adopts --recipe), policies/packs/NAME.yaml and
    datasets.NAME in params.yaml. Never overwrites: refused, with nothing written, when the name is
    taken. Then `dvc repro validate@NAME` makes and checks it."""
    with errors():
        from pydantic import ValidationError

        from registry.core.errors import ConfigError
        from registry.records.config import format_validation_error
        from registry.releases.scaffold import OPTIONS, Scaffold, init_dataset, parse_attributes

        ws = workspace_root(workspace)
        try:
            s = Scaffold(
                name=name,
                recipe=recipe,
                backend=backend,
                generator=generator,
                generator_licence=generator_licence,
                licence=licence,
                identities=identity or [],
                attributes=parse_attributes(attribute or []),
                prompt=prompt,
                images_per_identity=images_per_identity,
                size=size,
                steps=steps,
                guidance=guidance,
                seed=seed,
                commercial=commercial,
                purposes=use or ["research"],
                use=use_description,
            )
        except ValidationError as e:
            text = format_validation_error(e, "the options of `synthreg init`").replace(
                " is invalid:", " are invalid:"
            )
            for field, option in OPTIONS.items():  # name the option, not the field behind it
                text = text.replace(f"\n  {field}", f"\n  {option}")
            raise ConfigError(text) from None
        for path in init_dataset(ws, s):
            typer.echo(f"wrote {path}")
        typer.echo(
            f"next: dvc repro validate@{name} (generate, filter, validate), commit it all (`git add -A && "
            f"git commit`), then `synthreg release {name} --version 1.0.0`"
        )


def generate(
    recipe: Annotated[
        Path | None,
        typer.Argument(
            help="recipe YAML (default: the recipe of --dataset, or of params.yaml's only dataset)"
        ),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="the dataset to generate, by its name in params.yaml's datasets")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default data/<dataset>/candidates)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
    c2pa_key: Annotated[
        Path | None,
        typer.Option(
            help="C2PA signing key, PEM, for a recipe with marking.c2pa (default $SYNTHREG_C2PA_KEY)"
        ),
    ] = None,
    c2pa_chain: Annotated[
        Path | None,
        typer.Option(help="its certificate chain, PEM, signer first (default $SYNTHREG_C2PA_CHAIN)"),
    ] = None,
) -> None:
    """Generate a recipe's images into tar shards and a Parquet manifest (resumes an interrupted run)."""
    with errors():
        from generators.generate import generate as run
        from registry.core.workspace import inside
        from registry.lineage.openlineage import File, Manifest, stage
        from registry.records.config import load_params, load_recipe
        from registry.records.dataset import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        recipe_path = _generate_recipe(ws, p, recipe, dataset, out, str(params))
        loaded = load_recipe(inside(ws, recipe_path, "recipe"))
        with stage("generate", ws, loaded.dataset) as lineage:
            lineage.input(File(recipe_path, kind="RECIPE"))
            with progress_bar("generate") as progress:
                res = run(
                    recipe_path,
                    ws,
                    out,
                    executor_params(p.generate, executor, address),
                    progress,
                    c2pa_key,
                    c2pa_chain,
                )
            lineage.input(File(Path(loaded.generator.path), res.weights_digest, "MODEL"))
            lineage.output(Manifest(res.manifest))
        done = (
            "already complete"
            if res.generated == 0 and res.seconds == 0
            else (f"{res.generated} generated in {res.seconds:.1f} s")
        )
        typer.echo(f"{res.images} images in {res.shards} shard(s) ({done}); manifest {res.manifest}")
        if res.declarations_changed:  # accepted as they are at release, and listed in its record
            typer.echo(
                f"the recipe's declarations changed since ({', '.join(res.declarations_changed)}); they need "
                "no new images: validate again to check them"
            )
        typer.echo(f"generator weights sha256 {res.weights_digest}")
        if res.nodes:
            typer.echo(f"shards per Ray node: {_per_node(res.nodes)}")
        if res.backend == LOAD_TEST_BACKEND:
            typer.echo(f"warning: {LOAD_TEST_WARNING}")


def _generate_recipe(
    ws: Path, p: Params, recipe: Path | None, dataset: str | None, out: Path | None, where: str
) -> Path:
    """The recipe to generate: the one named, else the dataset's (``--dataset``, or the only one). With
    ``datasets:`` in params.yaml, the recipe must be its dataset's, with its generator folder."""
    from registry.core.errors import ConfigError
    from registry.core.workspace import dataset_folder, inside
    from registry.records.config import load_recipe

    if recipe is None:
        name = dataset or p.only(where)
        recipe = Path(p.dataset(name, where).recipe if name else p.recipe)
    loaded = load_recipe(inside(ws, recipe, "recipe"))
    if out is not None:  # the default is data/<the recipe's dataset>/candidates
        dataset_folder(ws, out, loaded.dataset, "output folder", p.names)
    if dataset is not None and loaded.dataset != dataset:
        raise ConfigError(f"recipe {recipe} is for dataset {loaded.dataset!r}, not --dataset {dataset!r}")
    if p.datasets is None:
        return recipe
    own = p.dataset(loaded.dataset, where)
    if inside(ws, own.recipe, "recipe") != inside(ws, recipe, "recipe"):
        raise ConfigError(
            f"recipe {recipe} is for dataset {loaded.dataset!r}, whose recipe is {own.recipe} "
            f"({where}: datasets.{loaded.dataset}.recipe); edit that one, or point the entry at this file"
        )
    if inside(ws, own.generator, "generator") != inside(ws, loaded.generator.path, "generator"):
        raise ConfigError(
            f"datasets.{loaded.dataset}.generator in {where} is {own.generator}, but the recipe's "
            f"generator.path is {loaded.generator.path}; make them the same (DVC tracks that folder)"
        )
    return recipe


def _settings(ws: Path, p: Params, folder: Path, what: str, where: str) -> tuple[str | None, DatasetParams]:
    """The dataset whose manifest is in ``folder`` and its own settings (the top-level ones in a
    one-dataset params.yaml). An unreadable manifest: no name, every default (the command says why)."""
    from registry.core.workspace import dataset_folder, inside
    from registry.records.config import DatasetParams
    from registry.store.manifest import dataset_of

    name = dataset_of(inside(ws, folder, what) / "manifest.parquet")
    if name is None:
        return None, p.dataset("-") if p.datasets is None else DatasetParams(recipe=p.recipe, generator="-")
    dataset_folder(ws, folder, name, what, p.names)
    return name, p.dataset(name, where)


def _own_recipe(ws: Path, name: str | None, path: str) -> Recipe | None:
    """The dataset's recipe as it is now (its ``domain`` names the models that score the images), or
    None when the manifest names no dataset or the settings' recipe is another dataset's."""
    from registry.core.workspace import inside
    from registry.records.config import load_recipe

    if name is None or not inside(ws, path, "recipe").is_file():
        return None
    recipe = load_recipe(inside(ws, path, "recipe"))
    return recipe if recipe.dataset == name else None


def filter_(
    candidates: Annotated[Path, typer.Argument(help="folder with the candidates' manifest.parquet")],
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: ../filtered beside candidates)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
) -> None:
    """Score every candidate; record a decision and a reason per image (rejected rows are kept)."""
    with errors():
        from generators.filter import filter_manifest
        from registry.core.workspace import dataset_folder
        from registry.lineage.openlineage import Manifest, stage
        from registry.records.config import load_params
        from registry.records.dataset import FILTER_FIELDS

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        name, own = _settings(ws, p, candidates, "candidates folder", str(params))
        if name is not None and out is not None:  # the default is beside the candidates, so theirs
            dataset_folder(ws, out, name, "output folder", p.names)
        given = Manifest(candidates / "manifest.parquet")
        with stage("filter", ws, name) as lineage:
            lineage.input(given)
            with progress_bar("filter") as progress:
                res = filter_manifest(
                    candidates,
                    ws,
                    out or candidates.parent / "filtered",
                    executor_params(own.filter, executor, address),
                    progress,
                    _own_recipe(ws, name, own.recipe),
                )
            lineage.output(Manifest(res.manifest, given, FILTER_FIELDS))
        typer.echo(f"{res.accepted}/{res.total} accepted; manifest {res.manifest}")
        for reason, count in res.reasons.items():
            typer.echo(f"  {reason}: {count}")
        for (
            why
        ) in res.not_checked:  # printed, not only in filter-info.json: a check that did not run is no pass
            typer.echo(f"  NOT RUN: {why}")
        if res.nodes:
            typer.echo(f"chunks per Ray node: {_per_node(res.nodes)}")


def _per_node(nodes: dict[str, int]) -> str:
    """``<node id, first 12 hex> <count>, ...``: where a Ray run's work went."""
    return ", ".join(f"{node[:12]} {count}" for node, count in nodes.items())


def reproduce(
    sample_id: Annotated[str, typer.Argument(help="sample id from a manifest")],
    manifest: Annotated[Path | None, typer.Option(help="manifest to look in (default: search data/)")] = None,
    device: Annotated[str, typer.Option(help="torch device")] = "cpu",
    workspace: Workspace = None,
) -> None:
    """Regenerate one image from its record and check it is bit-identical (exit 1 if not)."""
    with errors():
        from generators.reproduce import reproduce as run

        res = run(sample_id, workspace_root(workspace), manifest, device)
        typer.echo(f"recorded   sha256 {res.recorded_sha256}")
        if res.unsigned_sha256:
            typer.echo(f"  without its C2PA manifest {res.unsigned_sha256}")
        typer.echo(f"reproduced sha256 {res.reproduced_sha256}")
        if not res.match:
            fail(f"sample {sample_id} did not reproduce bit-identically (see the digests above)")
        if res.reproduced_sha256 == res.recorded_sha256:
            typer.echo(f"{sample_id}: bit-identical")
        else:  # C2PA salts its manifest at random: all else must match (generators/reproduce.py)
            typer.echo(f"{sample_id}: bit-identical outside its C2PA manifest (C2PA salts it at random)")


def validate(
    filtered: Annotated[Path, typer.Argument(help="folder with the filtered manifest.parquet")],
    recipe: Annotated[
        Path | None, typer.Option(help="recipe (default: the dataset's, from params.yaml)")
    ] = None,
    pack: Annotated[
        list[Path] | None, typer.Option(help="policy pack (repeat; default: the dataset's, from params.yaml)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="report folder (default: ../policy beside filtered)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Check the policy packs on a filtered manifest; write report.json and report.md.

    Exits 3 when an error rule fails without a valid waiver (1 for bad input)."""
    with errors():
        from policies.engine import uncovered_attributes
        from policies.engine import validate as run
        from registry.core.errors import POLICY_FAILED_EXIT
        from registry.core.workspace import dataset_folder
        from registry.lineage.openlineage import File, Manifest, stage
        from registry.records.config import load_params, load_recipe
        from registry.records.dataset import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        name, own = _settings(ws, p, filtered, "filtered folder", str(params))
        if name is not None and out is not None:  # the default is beside the manifest, so its dataset's
            dataset_folder(ws, out, name, "report folder", p.names)
        v = own.validate_
        recipe_, packs = recipe or Path(own.recipe), pack or v.packs
        report_dir = out or filtered.parent / "policy"
        with stage("validate", ws, name) as lineage:
            lineage.input(Manifest(filtered / "manifest.parquet"), File(Path(recipe_), kind="RECIPE"))
            lineage.input(*(File(Path(pack_), kind="POLICY_PACK") for pack_ in packs))
            with progress_bar("validate", "rule") as progress:
                report = run(filtered, ws, recipe_, packs, v.waivers, v.licences, out, None, progress)
            loaded = load_recipe(ws / recipe_)
            if loaded.generator.backend == LOAD_TEST_BACKEND:
                typer.echo(f"warning: {LOAD_TEST_WARNING}")
            unmeasured = uncovered_attributes(ws, loaded, packs)
            if unmeasured:  # e.g. a one-dataset params.yaml naming only the generic pack for digits
                typer.echo(
                    f"warning: no representation rule in the packs measures {', '.join(unmeasured)} of "
                    f"{loaded.dataset}, so its balance is not checked; add the dataset's own pack (`synthreg "
                    "init` writes one; digits has policies/packs/digits.yaml)",
                    err=True,
                )
            from registry.exports.policy_md import summary

            for r in report.results:
                if r.status != "pass":
                    typer.echo(f"  {r.status:6} {r.rule_id}: {r.message}")
            lineage.output(File(report_dir / "report.json", kind="POLICY_REPORT"))
            typer.echo(f"{summary(report)}; report {report_dir / 'report.md'}")
            if not report.passed:
                raise typer.Exit(POLICY_FAILED_EXIT)


def train(
    settings: Annotated[
        str | None,
        typer.Argument(
            help="the dataset whose train settings to use (params.yaml's datasets.NAME.train; default: "
            "the one --dataset names, else the only one)"
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="NAME@X.Y.Z, NAME or NAME@working (default: the settings' train.dataset)"),
    ] = None,
    allow_withdrawn: Annotated[
        bool, typer.Option(help="train on a withdrawn release anyway (recorded in MLflow and the audit log)")
    ] = False,
    model_name: Annotated[
        str | None, typer.Option(help="registered model name (default: NAME-classifier after the dataset)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Train a small classifier on the real/synthetic mix of the dataset's `train` settings; log it to MLflow.

    Evaluates on held-out real data (synthetic-only with a held-out synthetic split when the dataset has
    no real source); registers the model; writes the metrics file for `dvc metrics`."""
    with errors():
        from registry.downstream.tracking import tracking_uri
        from registry.downstream.train import train as run
        from registry.lineage.openlineage import Model, stage
        from registry.records.config import load_params
        from registry.records.dataset import DATASET_NAME

        ws = workspace_root(workspace)
        p, dataset = _train_settings(load_params(ws / params, ws), settings, dataset, str(params))
        if model_name is not None:
            p = p.model_copy(update={"registered_model": model_name})
        named = (dataset or p.dataset or "").split("@", 1)[0]
        with stage(
            "train", ws, named if DATASET_NAME.fullmatch(named) and named != "working" else None
        ) as lineage:
            with progress_bar("train", "epoch") as progress:
                res = run(ws, p, dataset, allow_withdrawn, progress)
            lineage.input(_trained_on(res.dataset))
            lineage.output(Model(res.model_name, res.model_version, res.run_id, tracking_uri(ws)))
        m = res.metrics
        for note in res.notes:
            typer.echo(f"warning: {note}", err=True)
        typer.echo(
            f"trained on {res.dataset}: {res.n_real} real + {res.n_synthetic} synthetic images; "
            f"held-out accuracy {m['accuracy']:.4f}, worst-group gap {m['worst_group_gap']:.4f}"
        )
        typer.echo(f"evaluated on {res.evaluation}")
        typer.echo(
            f"MLflow run {res.run_id}; model {res.model_name}/{res.model_version}; metrics {res.metrics_path}"
        )


def _trained_on(dataset: str) -> Manifest | ReleaseRef:
    """The lineage input a training run read: a release, or the working filtered manifest of NAME@working."""
    from registry.lineage.openlineage import Manifest, ReleaseRef

    name, _, version = dataset.partition("@")
    if version == "working":
        return Manifest(Path("data") / name / "filtered" / "manifest.parquet")
    return ReleaseRef(name, version)


def _train_settings(
    p: Params, settings: str | None, dataset: str | None, where: str
) -> tuple[TrainParams, str | None]:
    """The train settings (of ``settings``, else of the dataset ``--dataset`` names, else of the only
    dataset) and the dataset to train on (``working`` made the settings' own). Training one dataset
    with another's settings is refused."""
    from registry.core.errors import ConfigError

    named = dataset.split("@", 1)[0] if dataset and dataset != "working" else None
    if settings is not None and named is not None and named != settings:
        raise ConfigError(
            f"--dataset {dataset} is dataset {named}, but the train settings asked for are those of "
            f"{settings}; drop one of them, or use the settings of {named} (`synthreg train {named}`)"
        )
    name = settings or named or p.only(where)
    if dataset == "working" and name is not None:  # not whichever filtered manifest happens to exist
        dataset = f"{name}@working"
    return (p.dataset(name, where).train if name else p.train), dataset
