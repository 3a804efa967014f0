"""Typer commands. Thin: parse, call the library, render, and turn a SynthregError into exit code 1.

Heavy libraries (torch, diffusers, sklearn) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from registry.errors import SynthregError

app = typer.Typer(
    help="synthreg: a governed registry for synthetic image datasets made with diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Workspace = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", help="workspace root (default: $SYNTHREG_WORKSPACE or the current folder)"
    ),
]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params file, relative to the workspace")]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except SynthregError as e:
        _fail(str(e), e.exit_code)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar (count, rate, elapsed, remaining), shown from the first update only, so
    an input error raised before any work prints just its message."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total, rate="")
        speed = bar.tasks[0].speed
        bar.update(task, completed=done, total=total, rate=f"{speed:.1f} img/s" if speed else "")

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _workspace(path: Path | None) -> Path:
    from registry.workspace import root

    return root(path)


@app.command()
def generate(
    recipe: Annotated[Path | None, typer.Argument(help="recipe YAML (default: params.yaml's recipe)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default data/<dataset>/candidates)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Generate a recipe's images into tar shards and a Parquet manifest (resumes an interrupted run)."""
    with _errors():
        from generators.generate import generate as run
        from registry.config import load_params

        ws = _workspace(workspace)
        p = load_params(ws / params)
        with _progress("generate") as progress:
            res = run(Path(recipe or p.recipe), ws, out, p.generate, progress)
        done = (
            "already complete"
            if res.generated == 0 and res.seconds == 0
            else (f"{res.generated} generated in {res.seconds:.1f} s")
        )
        typer.echo(f"{res.images} images in {res.shards} shard(s) ({done}); manifest {res.manifest}")
        typer.echo(f"generator weights sha256 {res.weights_digest}")


@app.command("filter")
def filter_(
    candidates: Annotated[Path, typer.Argument(help="folder with the candidates' manifest.parquet")],
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: ../filtered beside candidates)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Score every candidate; record a decision and a reason per image (rejected rows are kept)."""
    with _errors():
        from generators.filter import filter_manifest
        from registry.config import load_params

        ws = _workspace(workspace)
        p = load_params(ws / params)
        with _progress("filter") as progress:
            res = filter_manifest(candidates, ws, out or candidates.parent / "filtered", p.filter, progress)
        typer.echo(f"{res.accepted}/{res.total} accepted; manifest {res.manifest}")
        for reason, count in res.reasons.items():
            typer.echo(f"  {reason}: {count}")


@app.command()
def reproduce(
    sample_id: Annotated[str, typer.Argument(help="sample id from a manifest")],
    manifest: Annotated[Path | None, typer.Option(help="manifest to look in (default: search data/)")] = None,
    device: Annotated[str, typer.Option(help="torch device")] = "cpu",
    workspace: Workspace = None,
) -> None:
    """Regenerate one image from its record and check it is bit-identical (exit 1 if not)."""
    with _errors():
        from generators.reproduce import reproduce as run

        res = run(sample_id, _workspace(workspace), manifest, device)
        typer.echo(f"recorded   sha256 {res.recorded_sha256}")
        typer.echo(f"reproduced sha256 {res.reproduced_sha256}")
        if not res.match:
            _fail(f"sample {sample_id} did not reproduce bit-identically (see the digests above)")
        typer.echo(f"{sample_id}: bit-identical")


@app.command()
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
    with _errors():
        from policies.engine import validate as run
        from registry.config import load_params
        from registry.errors import POLICY_FAILED_EXIT

        ws = _workspace(workspace)
        p = load_params(ws / params)
        v = p.validate_
        report = run(filtered, ws, recipe or p.recipe, pack or v.packs, v.waivers, v.licences, out)
        for r in report.results:
            if r.status != "pass":
                typer.echo(f"  {r.status:6} {r.rule_id}: {r.message}")
        counts = {s: sum(r.status == s for r in report.results) for s in ("pass", "fail", "warn", "waived")}
        typer.echo(
            f"{'PASSED' if report.passed else 'FAILED'}: "
            + ", ".join(f"{n} {s}" for s, n in counts.items())
            + f"; report {(out or filtered.parent / 'policy') / 'report.md'}"
        )
        if not report.passed:
            raise typer.Exit(POLICY_FAILED_EXIT)


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="folder for the JSON Schema files")] = Path("schemas"),
) -> None:
    """Export the JSON Schema of every record from the pydantic models."""
    with _errors():
        from registry.schemas import write_schemas

        for path in write_schemas(out):
            typer.echo(str(path))


def main() -> None:
    app()
