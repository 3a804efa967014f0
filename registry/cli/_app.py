"""Typer commands. Thin: parse, call the library, render, and turn a SynthregError into exit code 1.

Heavy libraries (torch, diffusers, sklearn) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from registry.errors import SynthregError

if TYPE_CHECKING:
    from pydantic import BaseModel

T = TypeVar("T", bound="BaseModel")

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


ExecutorOpt = Annotated[
    str | None, typer.Option(help="local or ray (default: the command's executor in params.yaml)")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        help="Ray cluster for --executor ray: auto, HOST:PORT or ray://HOST:PORT (default: a local Ray)"
    ),
]


def _executor(params: T, executor: str | None, address: str | None) -> T:
    """``params`` with the command line's --executor/--address over params.yaml's, validated again."""
    from pydantic import ValidationError

    from registry.errors import ConfigError

    update = {k: v for k, v in (("executor", executor), ("ray_address", address)) if v is not None}
    try:
        return type(params).model_validate({**params.model_dump(), **update}) if update else params
    except ValidationError:
        raise ConfigError(f"--executor {executor!r} is not one of: local, ray") from None


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
    executor: ExecutorOpt = None,
    address: AddressOpt = None,
) -> None:
    """Generate a recipe's images into tar shards and a Parquet manifest (resumes an interrupted run)."""
    with _errors():
        from generators.generate import generate as run
        from registry.config import load_params
        from registry.models import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = _workspace(workspace)
        p = load_params(ws / params)
        with _progress("generate") as progress:
            res = run(Path(recipe or p.recipe), ws, out, _executor(p.generate, executor, address), progress)
        done = (
            "already complete"
            if res.generated == 0 and res.seconds == 0
            else (f"{res.generated} generated in {res.seconds:.1f} s")
        )
        typer.echo(f"{res.images} images in {res.shards} shard(s) ({done}); manifest {res.manifest}")
        typer.echo(f"generator weights sha256 {res.weights_digest}")
        if res.backend == LOAD_TEST_BACKEND:
            typer.echo(f"warning: {LOAD_TEST_WARNING}")


@app.command("filter")
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
    with _errors():
        from generators.filter import filter_manifest
        from registry.config import load_params

        ws = _workspace(workspace)
        p = load_params(ws / params)
        with _progress("filter") as progress:
            res = filter_manifest(
                candidates,
                ws,
                out or candidates.parent / "filtered",
                _executor(p.filter, executor, address),
                progress,
            )
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
        from registry.config import load_params, load_recipe
        from registry.errors import POLICY_FAILED_EXIT
        from registry.models import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = _workspace(workspace)
        p = load_params(ws / params)
        v = p.validate_
        report = run(filtered, ws, recipe or p.recipe, pack or v.packs, v.waivers, v.licences, out)
        if load_recipe(ws / (recipe or p.recipe)).generator.backend == LOAD_TEST_BACKEND:
            typer.echo(f"warning: {LOAD_TEST_WARNING}")
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
def train(
    dataset: Annotated[
        str | None,
        typer.Option(help="NAME@X.Y.Z, NAME or NAME@working (default: params.yaml's train.dataset)"),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Train a digit classifier on the real/synthetic mix of params.yaml's `train`; log it to MLflow.

    Evaluates on held-out real digits; registers the model; writes the metrics file for `dvc metrics`."""
    with _errors():
        from registry.config import load_params
        from registry.train import train as run

        ws = _workspace(workspace)
        res = run(ws, load_params(ws / params).train, dataset)
        m = res.metrics
        typer.echo(
            f"trained on {res.dataset}: {res.n_real} real + {res.n_synthetic} synthetic images; "
            f"held-out accuracy {m['accuracy']:.4f}, worst-group gap {m['worst_group_gap']:.4f}"
        )
        typer.echo(f"MLflow run {res.run_id}; model version {res.model_version}; metrics {res.metrics_path}")


KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key", help="private signing key (default $SYNTHREG_SIGNING_KEY or ~/.config/synthreg/release.key)"
    ),
]


@app.command()
def keygen(
    key: KeyOpt = None,
    force: Annotated[bool, typer.Option(help="replace an existing private key")] = False,
    workspace: Workspace = None,
) -> None:
    """Create an ed25519 release-signing key; the public key goes into the workspace (keys/)."""
    with _errors():
        from registry.signing import keygen as run

        priv, pub = run(_workspace(workspace), key, force)
        typer.echo(f"private key {priv} (keep it out of git)\npublic key  {pub} (commit it)")


@app.command()
def release(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option("--version", help="semantic version X.Y.Z")],
    key: KeyOpt = None,
    actor: Annotated[str | None, typer.Option(help="who releases (default: git user.name)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe (default: params.yaml's recipe)")] = None,
    workspace: Workspace = None,
) -> None:
    """Release the filtered manifest of NAME as an immutable, signed version (commit + tag NAME@vX.Y.Z)."""
    with _errors():
        from registry.release import release as run

        r = run(name, version, _workspace(workspace), key, actor, recipe_path=recipe)
        typer.echo(
            f"released {r.name}@{r.version}: {r.counts.accepted}/{r.counts.total} accepted, "
            f"{len(r.shards)} shard(s), manifest sha256 {r.manifest_sha256}; tag {r.name}@v{r.version}"
        )


@app.command()
def derive(
    ref: Annotated[str, typer.Argument(help="the parent version, NAME@X.Y.Z")],
    version: Annotated[str, typer.Option("--version", help="the new version X.Y.Z")],
    reason: Annotated[str, typer.Option(help="why (kept in the record, the audit log and the commit)")],
    exclude_sample: Annotated[
        list[str] | None, typer.Option("--exclude-sample", help="a sample id to leave out (repeat)")
    ] = None,
    exclude_samples: Annotated[
        Path | None, typer.Option("--exclude-samples", help="a file of sample ids to leave out, one a line")
    ] = None,
    exclude_source: Annotated[
        list[str] | None,
        typer.Option("--exclude-source", help="leave out every sample conditioned on this source (repeat)"),
    ] = None,
    key: KeyOpt = None,
    actor: Annotated[str | None, typer.Option(help="who derives (default: git user.name)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Release a new version of a released one without some samples, or without a source's samples.

    Made from the parent's released files; checked again by params.yaml's policy packs; signed and tagged."""
    with _errors():
        from registry.derive import derive as run
        from registry.errors import ConfigError

        ws = _workspace(workspace)
        ids = list(exclude_sample or [])
        if exclude_samples is not None:  # read only, so it may be anywhere (a list of ids is often personal)
            if not exclude_samples.is_file():
                raise ConfigError(f"sample id file {exclude_samples} does not exist; give one id a line")
            ids += [line.strip() for line in exclude_samples.read_text().splitlines() if line.strip()]
        r = run(ws, ref, version, reason, ids, exclude_source, key, actor, params)
        d = r.derived_from
        assert d is not None
        typer.echo(
            f"derived {r.name}@{r.version} from {d.parent}: {d.removed} sample(s) left out "
            f"({d.removed_accepted} accepted), {r.counts.accepted}/{r.counts.total} accepted remain, "
            f"{len(r.shards)} shard(s); tag {r.name}@v{r.version}"
        )


@app.command()
def verify(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    workspace: Workspace = None,
) -> None:
    """Check a release's signature, manifest digest and every image in every shard (exit 1 if any fails)."""
    with _errors():
        import json

        from registry.verify import verify as run

        res = run(_workspace(workspace), ref)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
        else:
            for p in res.problems:
                typer.echo(f"  problem: {p}")
            for sid, what in sorted(res.bad_samples.items()):
                typer.echo(f"  sample {sid}: {what}")
            typer.echo(
                f"{res.ref}: {'OK' if res.ok else 'FAILED'} ({res.samples} samples in {res.shards} shards)"
            )
        if not res.ok:
            raise typer.Exit(1)


@app.command("list")
def list_(workspace: Workspace = None) -> None:
    """Released datasets and their versions."""
    with _errors():
        from registry.catalog import list_releases

        found = list_releases(_workspace(workspace))
        if not found:
            typer.echo("no releases yet (see `synthreg release --help`)")
        for name, vs in found.items():
            typer.echo(f"{name}: {', '.join(vs)}")


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@X.Y.Z (default: the latest)")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole release record")] = False,
    workspace: Workspace = None,
) -> None:
    """Show a release record."""
    with _errors():
        from registry.release import load_release

        r = load_release(_workspace(workspace), ref)
        if as_json:
            typer.echo(r.model_dump_json(indent=2))
            return
        typer.echo(f"{r.name}@{r.version}  released {r.created_at:%Y-%m-%d %H:%M} UTC by {r.actor}")
        typer.echo(
            f"  manifest sha256 {r.manifest_sha256}; {len(r.shards)} shard(s); git {r.git_commit[:12]}"
        )
        typer.echo(f"  images {r.counts.accepted} accepted / {r.counts.total}; licence {r.dataset_licence}")
        for g in r.generators:
            typer.echo(
                f"  generator {g.name} ({g.licence}) weights {g.weights_digest[:16]}...: {g.images} images"
            )
        if r.derived_from:
            d = r.derived_from
            typer.echo(f"  derived from {d.parent} without {d.removed} sample(s): {d.reason}")
        for s in r.sources:
            only = f" (identities {', '.join(s.identities)})" if s.identities else ""
            typer.echo(f"  source {s.name} [{s.role}, {s.status}] {s.licence}{only}")
        use = r.intended_use
        kind = "commercial" if use.commercial else "non-commercial"
        typer.echo(f"  intended use: {kind}; {', '.join(use.purposes)}")
        bad = {k: v for k, v in r.policy_results.items() if v != "pass"}
        typer.echo(f"  policy: {'passed' if r.policy_passed else 'FAILED'}" + (f" ({bad})" if bad else ""))


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    workspace: Workspace = None,
) -> None:
    """Compare two releases: samples added and removed, counts, generators, sources, policy results."""
    with _errors():
        import json

        from registry.catalog import diff as run

        typer.echo(json.dumps(run(_workspace(workspace), a, b), indent=2))


trace_app = typer.Typer(
    help="Trace an MLflow run, a registered model or an image back to its dataset version, generator "
    "weights, prompts, seeds and sources.",
    no_args_is_help=True,
)
app.add_typer(trace_app, name="trace")
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _emit(result: dict, as_json: bool, render: Callable[[dict], list[str]]) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo("\n".join(render(result)))


@trace_app.command("run")
def trace_run(
    run_id: Annotated[str, typer.Argument(help="MLflow run id")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A run's dataset versions -> generators (weights digest), prompts, seeds, sources, policy, withdrawn."""
    with _errors():
        from registry import lineage, lineage_text

        _emit(lineage.trace_run(_workspace(workspace), run_id), as_json, lineage_text.format_trace)


@trace_app.command("model")
def trace_model(
    ref: Annotated[str, typer.Argument(help="registered model NAME/VERSION")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A registered model version -> its run -> everything `trace run` shows."""
    with _errors():
        from registry import lineage, lineage_text

        _emit(lineage.trace_model(_workspace(workspace), ref), as_json, lineage_text.format_trace)


@trace_app.command("image")
def trace_image(
    file: Annotated[Path, typer.Argument(help="image file")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """An image -> its sample record and every released version holding it (exact, else perceptual)."""
    with _errors():
        from registry import lineage, lineage_text

        _emit(lineage.trace_image(_workspace(workspace), file), as_json, lineage_text.format_image)


@app.command()
def impact(
    generator: Annotated[
        str | None, typer.Option(help="generator name or weights digest prefix (8+ hex)")
    ] = None,
    source: Annotated[str | None, typer.Option(help="real data source name")] = None,
    prompt: Annotated[str | None, typer.Option(help="regular expression over prompts")] = None,
    sample: Annotated[str | None, typer.Option(help="sample id")] = None,
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """Every dataset version, MLflow run and registered model that a generator, source, prompt or sample
    reached."""
    with _errors():
        from registry import lineage, lineage_text

        res = lineage.impact(_workspace(workspace), generator, source, prompt, sample)
        _emit(res, as_json, lineage_text.format_impact)


@app.command()
def withdraw(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z")],
    reason: Annotated[str, typer.Option(help="why it is withdrawn (recorded and committed)")],
    actor: Annotated[str | None, typer.Option(help="who withdraws (default: git user.name)")] = None,
    workspace: Workspace = None,
) -> None:
    """Withdraw a release: withdrawal.json beside the signed record (left as is), audit event, git commit."""
    with _errors():
        from registry import lineage

        w = lineage.withdraw(_workspace(workspace), ref, reason, actor)
        typer.echo(f"withdrew {w['release']} ({w['time'][:19]} by {w['actor']}): {w['reason']}")


@app.command()
def log(
    check: Annotated[bool, typer.Option("--verify", help="check the hash chain (exit 1 if broken)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False,
    workspace: Workspace = None,
) -> None:
    """Show the append-only audit log (generate, filter, validate, waiver, release ...)."""
    with _errors():
        from registry import audit

        ws = _workspace(workspace)
        if check:
            problems = audit.verify(ws)
            for p in problems:
                typer.echo(f"  {p}")
            n = len(problems)
            typer.echo(f"audit log: {'intact' if not n else f'{n} problem(s)'} ({ws / audit.LOG})")
            if problems:
                raise typer.Exit(1)
            return
        for e in audit.read(ws):
            if as_json:
                typer.echo(e.model_dump_json())
            else:
                typer.echo(f"{e.seq:5} {e.time:%Y-%m-%d %H:%M:%S} {e.kind:10} {e.subject}  by {e.actor}")


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
