"""The ``synthreg`` command line: thin typer commands over the library, in one ordered table.

Each command parses its arguments, calls one library function, renders the result and turns a library
error into a message and an exit code (``common.errors``). The commands live by topic:

    pipeline.py   init, generate, filter, reproduce, validate, train
    releases.py   keygen, release, derive, verify, withdraw, pull, approve, waive, doctor
    keys.py       keys allowed-signers (git's SSH verification of release tags)
    reading.py    list, show, diff, log, schema, report, catalog (and the show/diff tables)
    tracing.py    trace run|model|image, impact, models (and their tables)
    trust.py      trust init|add|remove|revoke|set-threshold|show|export|update (the trust root)
    common.py     shared options, errors, progress, JSON output

``COMMANDS`` below is the order ``synthreg --help`` lists them in (pip's ``commands/__init__.py`` does the
same), so the CLI's order does not depend on import order. Heavy libraries are imported inside the
commands, so ``--help`` imports none of them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
import typer
from typer.core import TyperGroup

from registry.cli import keys, pipeline, reading, releases, tracing
from registry.cli import trust as trust_cli
from registry.cli.common import internal
from registry.core import allocator, stack
from registry.core.duck import SPILL_PREFIX
from registry.core.errors import INTERNAL_ERROR_EXIT
from registry.core.names import CONTROL, shown


class _OneLineArguments(TyperGroup):
    """The top command group, which refuses, before any command runs, an argument holding a newline or
    another control character (issue 24): every CLI text value (actor, reason, names, versions, refs,
    scopes, paths) is then one line wherever it is echoed, logged or written, so no line of `log`,
    `list`, `show`, `verify` or an error message can be forged from the command line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for i, arg in enumerate(args):
            if CONTROL.search(arg):
                option, eq, value = arg.partition("=")
                if eq and option.startswith("--"):
                    what, arg = option, value
                else:
                    before = args[i - 1] if i else ""
                    what = before if before.startswith("-") and not CONTROL.search(before) else "argument"
                typer.echo(
                    f"error: {what} {shown(arg)} holds a newline or control character; give it as one line "
                    "of text",
                    err=True,
                )
                raise typer.Exit(1)
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_OneLineArguments,
    help="synthreg: a governed registry for synthetic image datasets made with diffusion models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
trace_app = typer.Typer(
    help="Trace an MLflow run, a registered model or an image back to its dataset version, generator "
    "weights, prompts, seeds and sources.",
    no_args_is_help=True,
)
trust_app = typer.Typer(
    help="Make and change the versioned trust root: who may release and approve, and how many must sign. "
    "Each change is a new version signed by the keys of the one before.",
    no_args_is_help=True,
)

# (name, function): the order of `synthreg --help`
COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("init", pipeline.init),
    ("generate", pipeline.generate),
    ("filter", pipeline.filter_),
    ("reproduce", pipeline.reproduce),
    ("validate", pipeline.validate),
    ("train", pipeline.train),
    ("keygen", releases.keygen),
    ("release", releases.release),
    ("derive", releases.derive),
    ("verify", releases.verify),
    ("list", reading.list_),
    ("show", reading.show),
    ("diff", reading.diff),
    ("impact", tracing.impact),
    ("withdraw", releases.withdraw),
    ("log", reading.log),
    ("schema", reading.schema),
    ("report", reading.report),
    ("catalog", reading.catalog),
    ("models", tracing.models),
    ("pull", releases.pull),
    ("approve", releases.approve),
    ("waive", releases.waive),
    ("doctor", releases.doctor),
)
TRACE_COMMANDS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("run", tracing.trace_run),
    ("model", tracing.trace_model),
    ("image", tracing.trace_image),
)

for _name, _command in COMMANDS:
    app.command(_name)(_command)
for _name, _command in TRACE_COMMANDS:
    trace_app.command(_name)(_command)
app.add_typer(trace_app, name="trace")
for _name, _command in trust_cli.COMMANDS:
    trust_app.command(_name)(_command)
app.add_typer(trust_app, name="trust")
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    # Not Arrow's default allocator (mimalloc), which keeps what a pass freed for Arrow alone: jemalloc, or
    # the C library's (``allocator``, issue 22). Read when pyarrow makes its first buffer, and inherited by
    # the processes this one starts (verify's workers, a local Ray); a Ray cluster's actors are given it
    # (``generators.ray_executor.worker_env``). A user's own ARROW_DEFAULT_MEMORY_POOL wins (an empty
    # one, which Arrow reads as its default, does not).
    os.environ[allocator.POOL_VARIABLE] = allocator.arrow_pool()
    code: object = INTERNAL_ERROR_EXIT
    try:
        stack.deep(app)  # a command's frames in one chunk of the stack (``stack`` says why)
        code = 0
    except SystemExit as done:  # how click ends every command, 0 included
        code = done.code
    except click.exceptions.Exit as done:
        code = done.exit_code
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        code = 130
    except Exception as e:  # outside any command's errors(): still one line, never a traceback
        try:
            internal(e)
        except typer.Exit as done:
            code = done.exit_code
    leave(code)


def leave(code: object) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, less the interpreter's teardown of its modules.

    Everything a normal exit does that a command's results depend on runs first: the threads that are
    not daemons are waited for, with what ``concurrent.futures`` registers (``threading._shutdown``),
    then the ``atexit`` functions (temporary folders' finalizers, logging, Ray, MLflow), then stdout and
    stderr are flushed; output that cannot be written ends the process with status 120, as the
    interpreter does. What is left is freeing every object of every module: 0.8 s after `synthreg
    validate` (GX's import brings about 1,970 modules), a seventh of its time at 1,000,000 rows (issue
    22). synthreg writes its files whole and closes them (``fsio.atomic_write``), so none waits for
    that. One exception: a DuckDB connection that spilled to its folder and is still open removes the
    folder only when it is freed, so then the process ends the normal way."""
    threading._shutdown()  # type: ignore[attr-defined]  # what the interpreter's exit does first
    atexit._run_exitfuncs()
    if any(Path(tempfile.gettempdir()).glob(f"{SPILL_PREFIX}{os.getpid()}-*")):  # after both: they may spill
        sys.exit(code)  # type: ignore[arg-type]
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue
        try:
            stream.flush()
        except OSError as e:  # a full disk, a closed pipe: the interpreter's exit says 120
            status = 120
            with contextlib.suppress(OSError, ValueError):
                os.write(
                    2,
                    f"error: the output could not be written ({e}); free space where it goes, or "
                    "send it elsewhere, and run the command again\n".encode(),
                )
    os._exit(status)


__all__ = ["COMMANDS", "TRACE_COMMANDS", "app", "main"]
