"""Typer commands. Thin: parse, call the library, render, and turn a SynthregError into exit code 1.

Heavy libraries (torch, diffusers, sklearn) are imported inside the commands, so ``--help`` is fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import click
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
    except (typer.Exit, typer.Abort, click.ClickException):
        raise
    except Exception as e:  # a bug: one line and a saved traceback, never a traceback (registry/crash.py)
        _internal(e)


def _internal(e: BaseException) -> None:
    from registry.crash import internal_error_message
    from registry.errors import INTERNAL_ERROR_EXIT

    _fail(internal_error_message(e), INTERNAL_ERROR_EXIT)


@contextmanager
def _progress(label: str, unit: str = "img") -> Iterator[Callable[..., None]]:
    """``update(done, total, what="")`` for the library to call: on a terminal a rich progress bar
    (count, rate, elapsed, remaining), shown from the first update only, so an input error raised
    before any work prints just its message; elsewhere (a pipe, DVC, CI) plain lines on stderr
    (``registry.cli._people.PlainProgress``). Progress goes to stderr, results to stdout."""
    import sys

    from registry.cli._people import PlainProgress

    if not sys.stderr.isatty():
        plain = PlainProgress(label, unit)
        try:
            yield plain.update
        finally:
            plain.close()
        return
    from rich.console import Console
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
        TextColumn("{task.fields[rate]} {task.fields[what]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=Console(stderr=True),
    )
    task = None

    def update(done: int, total: int, what: str = "") -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total, rate="", what="")
        speed = bar.tasks[0].speed
        rate = f"{speed:.1f} {unit}/s" if speed else ""
        bar.update(task, completed=done, total=total, rate=rate, what=what)
        if done >= total:  # gone when done, so the next step's bar (pull, then verify) can start
            bar.stop()

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
    with _errors():
        from generators.generate import generate as run
        from registry.config import load_params
        from registry.models import LOAD_TEST_BACKEND, LOAD_TEST_WARNING

        ws = _workspace(workspace)
        p = load_params(ws / params, ws)
        with _progress("generate") as progress:
            res = run(
                Path(recipe or p.recipe),
                ws,
                out,
                _executor(p.generate, executor, address),
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
        p = load_params(ws / params, ws)
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
        if res.unsigned_sha256:
            typer.echo(f"  without its C2PA manifest {res.unsigned_sha256}")
        typer.echo(f"reproduced sha256 {res.reproduced_sha256}")
        if not res.match:
            _fail(f"sample {sample_id} did not reproduce bit-identically (see the digests above)")
        if res.reproduced_sha256 == res.recorded_sha256:
            typer.echo(f"{sample_id}: bit-identical")
        else:  # C2PA salts its manifest at random: all else must match (generators/reproduce.py)
            typer.echo(f"{sample_id}: bit-identical outside its C2PA manifest (C2PA salts it at random)")


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
        p = load_params(ws / params, ws)
        v = p.validate_
        with _progress("validate", "rule") as progress:
            recipe_, packs = recipe or p.recipe, pack or v.packs
            report = run(filtered, ws, recipe_, packs, v.waivers, v.licences, out, None, progress)
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
    with _errors():
        from registry.config import load_params
        from registry.train import train as run

        ws = _workspace(workspace)
        p = load_params(ws / params, ws).train
        if model_name is not None:
            p = p.model_copy(update={"registered_model": model_name})
        with _progress("train", "epoch") as progress:
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


KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key", help="private signing key (default $SYNTHREG_SIGNING_KEY or ~/.config/synthreg/release.key)"
    ),
]


TrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--trust",
        help="trust root outside the workspace (default $SYNTHREG_TRUST or ~/.config/synthreg/trust.yaml)",
    ),
]


@app.command()
def keygen(
    key: KeyOpt = None,
    force: Annotated[bool, typer.Option(help="replace an existing private key")] = False,
    name: Annotated[
        str | None, typer.Option(help="your name: also add the key to the trust root (--trust) under it")
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(help="role in the trust root: releaser, approver (repeat; default both)"),
    ] = None,
    trust: TrustOpt = None,
    c2pa: Annotated[
        Path | None,
        typer.Option(
            "--c2pa",
            help="instead: make a TEST C2PA chain (root.pem, chain.pem, signer.key) in this folder",
        ),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Create an ed25519 signing key outside the workspace; its public key goes to keys/<keyid>.pub.json.

    With --name, the key is added to the trust root (made solo when new and holding both roles).
    With --c2pa DIR, make a TEST root and C2PA signer certificate in DIR instead (not for production)."""
    with _errors():
        if c2pa is not None:
            from registry.content_credentials import TEST_CHAIN_WARNING, keygen_c2pa

            c = keygen_c2pa(_workspace(workspace), c2pa, force)
            typer.echo(f"warning: {TEST_CHAIN_WARNING}")
            typer.echo(f"trust anchor {c.root} (give it to verifiers: SYNTHREG_C2PA_TRUST)")
            typer.echo(f"chain        {c.chain} (SYNTHREG_C2PA_CHAIN)")
            typer.echo(f"signing key  {c.key} (mode 0600; never commit it: SYNTHREG_C2PA_KEY)")
            return
        from registry.signing import keygen as run

        r = run(_workspace(workspace), key, force, name, role, trust)
        typer.echo(
            f"private key {r.private} (mode 0600; never commit it)\npublic key  {r.public} (commit it)"
        )
        if r.trust:
            typer.echo(f"trust root  {r.trust}: key {r.keyid[:16]} added for {name}")


NoPushOpt = Annotated[
    bool,
    typer.Option(
        "--no-push", help="keep the data in this workspace's DVC cache only (recorded in the release)"
    ),
]


@app.command()
def release(
    name: Annotated[str, typer.Argument(help="dataset name")],
    version: Annotated[str, typer.Option("--version", help="semantic version X.Y.Z")],
    key: KeyOpt = None,
    actor: Annotated[str | None, typer.Option(help="who releases (default: git user.name)")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe (default: params.yaml's recipe)")] = None,
    trust: TrustOpt = None,
    no_push: NoPushOpt = False,
    workspace: Workspace = None,
) -> None:
    """Release the filtered manifest of NAME as an immutable, signed version and push its data to the
    workspace's default DVC remote: a candidate until approved (`synthreg approve`), final (tag
    NAME@vX.Y.Z) at once in solo mode."""
    with _errors():
        from registry.catalog import release_status
        from registry.release import release as run

        ws = _workspace(workspace)
        with _progress("release", "shard") as progress:
            r = run(
                name,
                version,
                ws,
                key,
                actor,
                recipe_path=recipe,
                trust=trust,
                no_push=no_push,
                progress=progress,
            )
        status = release_status(ws, r.name, r.version, _load_trust(ws, trust))
        what = (
            f"tag {r.name}@v{r.version} ({status})"
            if not status.startswith("candidate")
            else f"a {status}; approve it with `synthreg approve {r.name}@{r.version}`"
        )
        typer.echo(
            f"released {r.name}@{r.version}: {r.counts.accepted}/{r.counts.total} accepted, "
            f"{len(r.shards)} shard(s), manifest sha256 {r.manifest_sha256}; {what}"
        )


def _load_trust(ws: Path, trust: Path | None):
    from registry.trust import load_trust

    return load_trust(ws, trust)


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
    no_push: NoPushOpt = False,
    params: ParamsOpt = Path("params.yaml"),
    workspace: Workspace = None,
) -> None:
    """Release a new version of a released one without some samples, or without a source's samples.

    Made from the parent's released files; checked again by params.yaml's policy packs; signed and tagged."""
    with _errors():
        from registry.derive import derive as run

        ws = _workspace(workspace)
        ids = list(exclude_sample or [])
        # --exclude-samples is read only, so it may be anywhere (a list of ids is often personal)
        with _progress("derive", "shard") as progress:
            r = run(
                ws,
                ref,
                version,
                reason,
                ids,
                exclude_source,
                key,
                actor,
                params,
                exclude_file=exclude_samples,
                no_push=no_push,
                progress=progress,
            )
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
    trust: TrustOpt = None,
    c2pa_trust: C2paTrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Check who signed a release (against the pinned trust root), that it is the version asked for,
    its manifest digest and every image in every shard (and its C2PA credentials, when asked for).

    Exits 1 if anything fails, 5 (UNTRUSTED_EXIT) when a signer is unknown, revoked or out of role."""
    with _errors():
        import json

        from registry.errors import UNTRUSTED_EXIT
        from registry.verify import verify as run

        with _progress("verify") as progress:
            res = run(_workspace(workspace), ref, trust=trust, progress=progress, c2pa_trust=c2pa_trust)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
        else:
            if res.approval:
                typer.echo(f"{res.ref}: {res.approval.summary()}")
                for s in res.approval.signers:
                    typer.echo(f"  signed by {s.line()}")
            if res.withdrawn:
                w = res.withdrawn
                typer.echo(f"  WITHDRAWN on {w['time'][:10]} by {w['actor']}: {w['reason']}")
            for p in res.problems:
                typer.echo(f"  problem: {p}")
            from registry.names import shown

            def sid_(sid: str) -> str:  # a hostile id (a newline, say) is shown escaped, never raw
                return sid if sid.isprintable() else shown(sid)

            for sid, what in sorted(res.bad_samples.items()):
                typer.echo(f"  sample {sid_(sid)}: {what}")
            final = res.approval is not None and res.approval.met
            if res.unmarked:  # bytes as signed, but no or another marking: made before images were marked
                first = min(res.unmarked)
                n = len(res.unmarked)
                typer.echo(f"  note: {n} image(s) not marked as synthetic, first {sid_(first)}: "
                           f"{res.unmarked[first]}")  # fmt: skip
            if res.c2pa_asked:
                typer.echo(
                    "  C2PA content credentials checked on every image"
                    + (", against the trust anchor" if res.c2pa_trust_checked else " (signer unchecked)")
                )
            typer.echo(
                f"{res.ref}: {'OK' if res.ok else 'FAILED'} ({res.samples} samples in {res.shards} shards)"
                + ("" if final or not res.ok else "; a CANDIDATE, not final: approvals missing")
            )
        if res.untrusted:
            raise typer.Exit(UNTRUSTED_EXIT)
        if not res.ok:
            raise typer.Exit(1)


@app.command("list")
def list_(trust: TrustOpt = None, workspace: Workspace = None) -> None:
    """Released datasets and their versions, each with its status (final, solo, candidate, withdrawn)."""
    with _errors():
        from registry.catalog import list_status

        found = list_status(_workspace(workspace), trust)
        if not found:
            typer.echo("no releases yet (see `synthreg release --help`)")
        for name, vs in found.items():
            typer.echo(f"{name}: {', '.join(f'{v} ({status})' for v, status in vs)}")


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@X.Y.Z (default: the latest)")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole release record")] = False,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Show a release record, its status and who signed it (tables; --json for the whole record)."""
    with _errors():
        from registry.approval import signers_of
        from registry.catalog import release_status
        from registry.release import load_release, tag_commit

        ws = _workspace(workspace)
        r = load_release(ws, ref)
        if as_json:
            typer.echo(r.model_dump_json(indent=2))
            return
        from registry.cli._people import render_show
        from registry.lineage import is_withdrawn

        trusted = _load_trust(ws, trust)
        state = signers_of(ws, r.name, r.version, trusted)
        tagged = tag_commit(ws, r.name, r.version)
        render_show(
            r,
            is_withdrawn(ws, r.name, r.version),
            release_status=release_status(ws, r.name, r.version, trusted),
            signatures=[state.summary(), *(f"signed by {s.line()}" for s in state.signers)],
            git_rows=[
                ("released from commit", r.git_commit),
                (
                    f"tag {r.name}@v{r.version}",
                    tagged or "missing (a candidate, or fetch the tags: `git fetch --tags`)",
                ),
                ("data remote", "not pushed (--no-push)" if r.no_push else r.remote or "not recorded"),
            ],
        )


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    workspace: Workspace = None,
) -> None:
    """Compare two releases: samples added and removed, counts, generators, sources, policy results."""
    with _errors():
        import json

        from registry.catalog import diff as run
        from registry.cli._people import render_diff

        d = run(_workspace(workspace), a, b)
        if as_json:
            typer.echo(json.dumps(d, indent=2))
        else:
            render_diff(d)


trace_app = typer.Typer(
    help="Trace an MLflow run, a registered model or an image back to its dataset version, generator "
    "weights, prompts, seeds and sources.",
    no_args_is_help=True,
)
app.add_typer(trace_app, name="trace")
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _emit(result: dict, as_json: bool, render: Callable[[dict], list[str] | None]) -> None:
    """JSON, or what ``render`` prints (tables) or returns (lines)."""
    import json

    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        lines = render(result)
        if lines is not None:
            typer.echo("\n".join(lines))


def _emit_trace(result: dict, as_json: bool) -> None:
    """Print a trace; then fail when part of it resolves nowhere (the output says where it looked)."""
    from registry.cli._trace import render_trace

    _emit(result, as_json, render_trace)
    gone = result.get("unresolved") or []
    if gone:
        u = gone[0]
        _fail(
            f"{u['dataset']} (manifest sha256 {u['manifest_sha256']}) resolves nowhere; looked in "
            f"{'; '.join(u['looked'])}; restore it (git/dvc checkout, dvc pull) to trace its images"
        )


@trace_app.command("run")
def trace_run(
    run_id: Annotated[str, typer.Argument(help="MLflow run id")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A run's dataset versions -> generators (weights digest), prompts, seeds, sources, policy, withdrawn.

    Exits 1 after printing when a working manifest the run trained on resolves nowhere."""
    with _errors():
        from registry import lineage

        _emit_trace(lineage.trace_run(_workspace(workspace), run_id), as_json)


@trace_app.command("model")
def trace_model(
    ref: Annotated[str, typer.Argument(help="registered model NAME/VERSION, NAME/latest or NAME@ALIAS")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A registered model version -> its run -> everything `trace run` shows (exit 1 as `trace run`)."""
    with _errors():
        from registry import lineage

        _emit_trace(lineage.trace_model(_workspace(workspace), ref), as_json)


C2paTrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--c2pa-trust",
        help="PEM root certificate(s) C2PA signers must chain to (default: $SYNTHREG_C2PA_TRUST)",
    ),
]


@trace_app.command("image")
def trace_image(
    file: Annotated[Path, typer.Argument(help="image file")],
    as_json: JsonOpt = False,
    c2pa_trust: C2paTrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """An image -> its sample record and every released version holding it (exact, else perceptual),
    and what its synthetic-media marking and C2PA content credentials say."""
    with _errors():
        from registry import lineage
        from registry.cli._trace import render_image
        from registry.content_credentials import load_anchors, trace_credentials
        from registry.marking import trace_marking

        ws = _workspace(workspace)
        res = lineage.trace_image(ws, file)
        png = file.read_bytes()
        res["marking"] = trace_marking(png, res["images"])  # issue 12: is it marked?
        res["c2pa"] = trace_credentials(ws, png, res, load_anchors(c2pa_trust, ws))
        _emit(res, as_json, render_image)


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
        from registry import lineage
        from registry.cli._trace import render_impact

        res = lineage.impact(_workspace(workspace), generator, source, prompt, sample)
        _emit(res, as_json, render_impact)


@app.command()
def withdraw(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z")],
    reason: Annotated[str, typer.Option(help="why it is withdrawn (recorded and committed)")],
    actor: Annotated[str | None, typer.Option(help="who withdraws (default: git user.name)")] = None,
    key: KeyOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Withdraw a release: a signed withdrawal.dsse.json beside the signed record (left as is), audit
    event, git commit. The key must be a releaser's or an approver's in the trust root."""
    with _errors():
        from registry import lineage

        w = lineage.withdraw(_workspace(workspace), ref, reason, actor, key, trust)
        typer.echo(f"withdrew {w['release']} ({w['time'][:19]} by {w['actor']}): {w['reason']}")


@app.command()
def log(
    check: Annotated[
        bool,
        typer.Option("--verify", help="check the hash chain and every signed checkpoint (exit 1 if broken)"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Show the append-only audit log (generate, filter, validate, waiver, release ...).

    --verify also checks that the log still holds every checkpoint signed into a release sign-off,
    waiver or withdrawal (needs the trust root), so a rewrite, truncation or fork is named."""
    with _errors():
        from registry import audit

        ws = _workspace(workspace)
        if check:
            from registry.approval import check_checkpoints

            checked, anchored = check_checkpoints(ws, _load_trust(ws, trust))
            problems = audit.verify(ws) + anchored
            for p in problems:
                typer.echo(f"  {p}")
            n = len(problems)
            typer.echo(
                f"audit log: {'intact' if not n else f'{n} problem(s)'} ({ws / audit.LOG}); "
                f"{checked} signed checkpoint(s) checked"
            )
            if problems:
                raise typer.Exit(1)
            return
        for e in audit.read(ws):
            if as_json:
                typer.echo(e.model_dump_json())
            else:
                signed = ""
                if e.kind in ("waiver", "approval", "withdrawal") and e.details.get("keyid"):
                    who = e.details.get("approver") or e.details.get("name") or e.details.get("signer")
                    signed = f"  signed by {who} key {str(e.details['keyid'])[:16]}"
                elif e.kind == "waiver" and e.details.get("approver_keyid"):
                    signed = f"  approver {e.details['approver']} key {e.details['approver_keyid'][:16]}"
                typer.echo(
                    f"{e.seq:5} {e.time:%Y-%m-%d %H:%M:%S} {e.kind:10} {e.subject}  by {e.actor}{signed}"
                )


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
    try:
        app()
    except (SystemExit, click.exceptions.Exit):
        raise
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise SystemExit(130) from None
    except Exception as e:  # outside any command's _errors(): still one line, never a traceback
        try:
            _internal(e)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
