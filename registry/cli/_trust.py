"""Commands of the trust model: approve a candidate release (more to come here: waive)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli._app import KeyOpt, TrustOpt, Workspace, _errors, _workspace, app


@app.command()
def approve(
    ref: Annotated[str, typer.Argument(help="the candidate release, NAME@X.Y.Z")],
    key: KeyOpt = None,
    role: Annotated[str, typer.Option(help="the role you sign in: approver (default) or releaser")] = "approver",
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Add your signature to a candidate release; when the thresholds are met it becomes final (tagged)."""
    with _errors():
        from registry.approval import approve as run

        state = run(_workspace(workspace), ref, key, trust, role)  # type: ignore[arg-type]
        typer.echo(f"{state.ref}: {state.summary()}")
        for s in state.signers:
            typer.echo(f"  signed by {s.line()}")
        name, _, version = state.ref.partition("@")
        typer.echo(f"final: tag {name}@v{version}" if state.met else "still a candidate: more approvals needed")
