"""What every command shares: options, the error boundary (a library error -> a message and its exit
code; anything else -> one line and a saved traceback), progress on stderr, JSON or tables on stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import click
import typer

from registry.core.errors import SynthregError
from registry.core.names import shown

if TYPE_CHECKING:
    from pydantic import BaseModel

T = TypeVar("T", bound="BaseModel")
R = TypeVar("R")

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


def executor_params(params: T, executor: str | None, address: str | None) -> T:
    """``params`` with the command line's --executor/--address over params.yaml's, validated again."""
    from pydantic import ValidationError

    from registry.core.errors import ConfigError

    update = {k: v for k, v in (("executor", executor), ("ray_address", address)) if v is not None}
    try:
        return type(params).model_validate({**params.model_dump(), **update}) if update else params
    except ValidationError:
        raise ConfigError(f"--executor {executor!r} is not one of: local, ray") from None


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    try:
        yield
    except SynthregError as e:
        fail(str(e), e.exit_code)
    except (typer.Exit, typer.Abort, click.ClickException):
        raise
    except OSError as e:
        if e.filename is None:  # DuckDB's out-of-memory read through Arrow comes here too
            internal(e)
        # The system refused a path the user gave (too long, a folder where a file goes, exists, busy;
        # found by tests/test_fuzz_inputs.py): an input error naming the path, not a bug.
        fail(f"{e.strerror or type(e).__name__}: {shown(str(e.filename))}; give another path")
    except Exception as e:  # a bug: one line and a saved traceback, never a traceback (core/crash.py)
        internal(e)


def internal(e: BaseException) -> None:
    """An error no command expected: one line and a saved traceback (exit 70), except DuckDB out of its
    memory cap, which is the user's setting to raise, not a bug (exit 1)."""
    from registry.core.crash import internal_error_message
    from registry.core.duck import out_of_memory
    from registry.core.errors import INTERNAL_ERROR_EXIT

    if (why := out_of_memory(e)) is not None:
        fail(why)

    fail(internal_error_message(e), INTERNAL_ERROR_EXIT)


@contextmanager
def progress_bar(label: str, unit: str = "img") -> Iterator[Callable[..., None]]:
    """``update(done, total, what="")`` for the library to call: on a terminal a rich progress bar
    (count, rate, elapsed, remaining), shown from the first update only, so an input error raised
    before any work prints just its message; elsewhere (a pipe, DVC, CI) plain lines on stderr
    (``PlainProgress``). Progress goes to stderr, results to stdout."""
    import sys

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


def workspace_root(path: Path | None) -> Path:
    from registry.core.workspace import root

    return root(path)


KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        help="private signing key: a PEM file, file:PATH, envvar:NAME (the PEM in $NAME) or a PKCS#11 token "
        "key pkcs11:token=LABEL;object=KEY (default $SYNTHREG_SIGNING_KEY or ~/.config/synthreg/release.key)",
    ),
]

TrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--trust",
        help="trust root outside the workspace (default $SYNTHREG_TRUST or ~/.config/synthreg/trust.yaml)",
    ),
]

NoPushOpt = Annotated[
    bool,
    typer.Option(
        "--no-push", help="keep the data in this workspace's DVC cache only (recorded in the release)"
    ),
]


def load_trust_root(ws: Path, trust: Path | None):
    """The trust root for reading (unreachable thresholds are not refused: issue 20)."""
    from registry.trust.root import load_trust

    return load_trust(ws, trust, strict=False)


JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def emit(result: R, as_json: bool, render: Callable[[R], list[str] | None]) -> None:
    """JSON (a typed result, or a dict holding some, dumped as pydantic dumps them), or what ``render``
    prints (tables) or returns (lines)."""
    import json

    if as_json:
        from pydantic_core import to_jsonable_python

        typer.echo(json.dumps(to_jsonable_python(result, fallback=str), indent=2))
    else:
        lines = render(result)
        if lines is not None:
            typer.echo("\n".join(lines))


class PlainProgress:
    """Progress as plain lines on stderr, for logs (inside `dvc repro`, in CI): at most one line every
    ``$SYNTHREG_PROGRESS_SECONDS`` (default 10), from the first update that far into the work, and then
    the last, each with the count, the rate and the time left, e.g. ``generate: 480/1000 (48%), 30.2
    img/s, 17 s left``. Work shorter than that prints nothing, so a quick command's stderr holds only its
    message (an `error:` line stays the first line a script or a test reads)."""

    def __init__(self, label: str, unit: str) -> None:
        import os
        import time

        self.label, self.unit, self.clock = label, unit, time.monotonic
        self.every = float(os.environ.get("SYNTHREG_PROGRESS_SECONDS", "10"))
        self.start = self.last = self.clock()
        self.shown = -1
        self.pending: tuple[int, int, str] | None = None

    def update(self, done: int, total: int, what: str = "") -> None:
        now = self.clock()
        if now - self.last >= self.every or (done >= total and self.shown >= 0):
            self._line(done, total, what, now)
        else:
            self.pending = (done, total, what)

    def _line(self, done: int, total: int, what: str, now: float) -> None:
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 and done else 0.0
        left = f", {(total - done) / rate:.0f} s left" if rate and done < total else ""
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        speed = f", {rate:.1f} {self.unit}/s" if rate else ""
        typer.echo(f"{self.label}: {done}/{total}{pct}{speed}{left}" + (f" {what}" if what else ""), err=True)
        self.last, self.shown, self.pending = now, done, None

    def close(self) -> None:
        """Show the last state if it was held back (a run that stops between lines)."""
        if self.pending is not None and self.shown >= 0 and self.pending[0] != self.shown:
            self._line(*self.pending, self.clock())


def make_console() -> Any:
    from rich.console import Console

    # Not a terminal (a pipe, CI, DVC): no colour codes, and wide enough that a digest stays on one line.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


C2paTrustOpt = Annotated[
    Path | None,
    typer.Option(
        "--c2pa-trust",
        help="PEM root certificate(s) C2PA signers must chain to (default: $SYNTHREG_C2PA_TRUST)",
    ),
]
