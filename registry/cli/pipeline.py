"""Commands of the pipeline: generate, filter, reproduce, validate, train (the DVC stages call these)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def generate(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (default: params.yaml's recipe)")] = None,
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
        from registry.records.config import load_params
        from registry.records.dataset import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        with progress_bar("generate") as progress:
            res = run(
                Path(recipe or p.recipe),
                ws,
                out,
                executor_params(p.generate, executor, address),
                progress,
                c2pa_key,
                c2pa_chain,
            )
        done = (
            "already complete"
            if res.generated == 0 and res.seconds == 0
            else (f"{res.generated} generated in {res.seconds:.1f} s")
        )
        typer.echo(f"{res.images} images in {res.shards} shard(s) ({done}); manifest {res.manifest}")
        typer.echo(f"generator weights sha256 {res.weights_digest}")
        if res.backend == LOAD_TEST_BACKEND:
            typer.echo(f"warning: {LOAD_TEST_WARNING}")


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
        from registry.records.config import load_params

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        with progress_bar("filter") as progress:
            res = filter_manifest(
                candidates,
                ws,
                out or candidates.parent / "filtered",
                executor_params(p.filter, executor, address),
                progress,
            )
        typer.echo(f"{res.accepted}/{res.total} accepted; manifest {res.manifest}")
        for reason, count in res.reasons.items():
            typer.echo(f"  {reason}: {count}")
        for why in res.not_checked:  # printed, not only in filter.json: a check that did not run is no pass
            typer.echo(f"  NOT RUN: {why}")


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
    recipe: Annotated[Path | None, typer.Option(help="recipe (default: params.yaml's recipe)")] = None,
    pack: Annotated[
        list[Path] | None, typer.Option(help="policy pack (repeat; default: params.yaml)")
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
        from policies.engine import validate as run
        from registry.core.errors import POLICY_FAILED_EXIT
        from registry.records.config import load_params, load_recipe
        from registry.records.dataset import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws)
        v = p.validate_
        with progress_bar("validate", "rule") as progress:
            recipe_, packs = recipe or p.recipe, pack or v.packs
            report = run(filtered, ws, recipe_, packs, v.waivers, v.licences, out, None, progress)
        if load_recipe(ws / (recipe or p.recipe)).generator.backend == LOAD_TEST_BACKEND:
            typer.echo(f"warning: {LOAD_TEST_WARNING}")
        from registry.exports.policy_md import summary

        for r in report.results:
            if r.status != "pass":
                typer.echo(f"  {r.status:6} {r.rule_id}: {r.message}")
        typer.echo(f"{summary(report)}; report {(out or filtered.parent / 'policy') / 'report.md'}")
        if not report.passed:
            raise typer.Exit(POLICY_FAILED_EXIT)


def train(
    dataset: Annotated[
        str | None,
        typer.Option(help="NAME@X.Y.Z, NAME or NAME@working (default: params.yaml's train.dataset)"),
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
    """Train a small classifier on the real/synthetic mix of params.yaml's `train`; log it to MLflow.

    Evaluates on held-out real data (synthetic-only with a held-out synthetic split when the dataset has
    no real source); registers the model; writes the metrics file for `dvc metrics`."""
    with errors():
        from registry.downstream.train import train as run
        from registry.records.config import load_params

        ws = workspace_root(workspace)
        p = load_params(ws / params, ws).train
        if model_name is not None:
            p = p.model_copy(update={"registered_model": model_name})
        with progress_bar("train", "epoch") as progress:
            res = run(ws, p, dataset, allow_withdrawn, progress)
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
