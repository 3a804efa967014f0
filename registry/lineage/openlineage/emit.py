"""One context manager for every stage's OpenLineage events: ``with stage("filter", ws, "digits") as run:``
sends START when the work begins, then COMPLETE, or FAIL when the work raises or exits non-zero (ABORT
on Ctrl-C), each with the inputs and outputs the command declared on ``run`` (``Manifest``, ``File``,
``ReleaseRef``, ``Model``).

Configured the OpenLineage way, read by ``openlineage-python`` itself: ``OPENLINEAGE_URL`` (HTTP),
``OPENLINEAGE__TRANSPORT__*`` variables, ``$OPENLINEAGE_CONFIG``, ``./openlineage.yml`` or
``~/.openlineage/openlineage.yml`` (console, file, http, kafka...). With none of them, ``configured()``
says so from the environment and two ``stat`` calls, nothing is imported and nothing is sent: the client's
own fallback (print every event) is not taken. ``OPENLINEAGE_DISABLED=true`` turns it all off.

Lineage is a side channel, never a gate: an endpoint that is down, refuses an event or is misconfigured
costs one warning line on stderr naming it, the stage's remaining events are dropped, and the stage's
own result and exit code stand.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.lineage.openlineage.specs import Spec, Stage

if TYPE_CHECKING:
    from openlineage.client import OpenLineageClient

CONFIG_FILE = "openlineage.yml"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


# --- whether anything is configured -------------------------------------------------------------------------


def configured() -> bool:
    """Whether OpenLineage is configured in any of the places the client reads, without importing it."""
    env = os.environ
    if env.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OPENLINEAGE_URL") or env.get("OPENLINEAGE_CONFIG"):
        return True
    if any(k.startswith("OPENLINEAGE__TRANSPORT") for k in env):
        return True
    try:
        places = (os.path.join(os.getcwd(), CONFIG_FILE), os.path.expanduser(f"~/.openlineage/{CONFIG_FILE}"))
    except OSError:  # a working folder that was removed
        return False
    return any(os.path.isfile(p) for p in places)


# --- the context manager ------------------------------------------------------------------------------------


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


@contextmanager
def stage(
    command: str, ws: Path, dataset: str | None = None, warn: Callable[[str], None] = _warn
) -> Iterator[Stage]:
    """Run the body as the OpenLineage job ``command@dataset`` (the DVC stage's name), or ``command``.

    START is sent on entry; on exit COMPLETE, or FAIL with an error message facet when the body raises
    (a typer/click ``Exit`` or ``SystemExit`` with code 0 counts as success), ABORT on KeyboardInterrupt.
    The exception, if any, is re-raised as it was. Lineage problems are ``warn``ed once and never raised.
    """
    run = Stage()
    if not configured():
        yield run
        return
    emitter = _Emitter(f"{command}@{dataset}" if dataset else command, ws, warn)
    emitter.open()
    emitter.send(run, "START")
    try:
        yield run
    except BaseException as e:
        code = _exit_code(e)
        if code == 0:
            emitter.send(run, "COMPLETE")
        elif isinstance(e, KeyboardInterrupt):
            emitter.send(run, "ABORT", "interrupted")
        else:
            emitter.send(run, "FAIL", _failure(e, code))
        emitter.close()
        raise
    emitter.send(run, "COMPLETE")
    emitter.close()


def _exit_code(e: BaseException) -> int:
    """0 for a successful early exit (``typer.Exit()``, ``SystemExit(0)``), else the exit code (1 when
    there is none). A library error carries its CLI exit code, never 0."""
    if isinstance(e, SystemExit):
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    code = getattr(e, "exit_code", 1)
    return code if isinstance(code, int) else 1


def _failure(e: BaseException, code: int) -> str:
    from registry.core.errors import SynthregError

    if isinstance(e, SynthregError):
        return str(e)
    if isinstance(e, SystemExit) or hasattr(e, "exit_code"):
        return f"exited with code {code}"
    return f"{type(e).__name__}: {e}"


def one_line(text: str, limit: int = 300) -> str:
    """``text`` for a warning: one line, control characters shown as '?', cut at ``limit``."""
    flat = _CONTROL.sub("?", " ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _Emitter:
    """The client, the run id and the input datasets already described; ``off`` after the first problem,
    which is warned once."""

    def __init__(self, job: str, ws: Path, warn: Callable[[str], None]) -> None:
        self.job, self.ws, self.warn = job, ws, warn
        self.client: OpenLineageClient | None = None
        self.endpoint = "the configured OpenLineage transport"
        self.described: dict[Spec, Any] = {}
        self.run_id = ""
        self.namespace = ""

    def open(self) -> None:
        try:
            from registry.lineage.openlineage import facets

            self.client, self.endpoint = facets.client()
            if self.client is None:
                self.warn(
                    "an OpenLineage configuration was found but it names no transport; no lineage events "
                    f"are sent for {self.job}"
                )
                return
            self.run_id = facets.new_run_id()
            self.namespace = facets.workspace_namespace(self.ws)
        except Exception as e:
            self._off(f"the OpenLineage configuration is unusable ({one_line(f'{type(e).__name__}: {e}')})")

    def send(self, run: Stage, state: str, error: str | None = None) -> None:
        if self.client is None:
            return
        from registry.lineage.openlineage import facets

        try:
            complete = state == "COMPLETE"
            inputs = [self._described(s) for s in run.inputs]
            outputs = [facets.output_dataset(self.ws, self.namespace, s, complete) for s in run.outputs]
            event = facets.run_event(
                state, self.run_id, self.job, self.namespace, self.ws, inputs, outputs, error
            )
        except Exception as e:  # a bug here must not cost the stage; said, so it gets fixed
            self._off(f"describing the run failed ({one_line(f'{type(e).__name__}: {e}')})")
            return
        try:
            self.client.emit(event)
        except Exception as e:
            self._off(f"not sent to {one_line(self.endpoint)} ({one_line(f'{type(e).__name__}: {e}', 160)})")

    def _described(self, spec: Spec) -> Any:
        if spec not in self.described:
            from registry.lineage.openlineage import facets

            self.described[spec] = facets.input_dataset(self.ws, self.namespace, spec)
        return self.described[spec]

    def _off(self, why: str) -> None:
        self.warn(f"OpenLineage events for {self.job}: {why}; the stage goes on without them")
        self.client = None

    def close(self) -> None:
        if self.client is not None:
            with suppress(Exception):  # closing a transport (a Kafka producer) never fails a stage
                self.client.close(timeout=5.0)
