"""``synthreg doctor``: leftovers of interrupted publishing (see ``registry.journal``)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli._app import Workspace, _errors, _workspace, app


@app.command()
def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="finish or roll back interrupted operations, finish half-made versions that verify, "
            "remove stale temp folders",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    workspace: Workspace = None,
) -> None:
    """Report unfinished operations, stale temporary folders and half-made versions (exit 1 if any left)."""
    with _errors():
        import json

        from registry.doctor import doctor as run

        res = run(_workspace(workspace), repair)
        if as_json:
            typer.echo(json.dumps(res.to_json(), indent=2))
        else:
            for f in res.findings:
                state = (
                    f"repaired: {f.hint}" if f.repaired and f.hint else "repaired" if f.repaired else f.hint
                )
                typer.echo(f"  {f.kind}: {f.what}" + (f" ({state})" if state else ""))
            left = len(res.unrepaired)
            typer.echo(
                "doctor: nothing to repair"
                if not res.findings
                else f"doctor: {len(res.findings)} problem(s), {left} left"
                + ("" if repair or not left else "; run `synthreg doctor --repair`")
            )
        if res.unrepaired:
            raise typer.Exit(1)
