"""Commands of the trust model: approve a candidate release (more to come here: waive)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli._app import KeyOpt, TrustOpt, Workspace, _errors, _workspace, app


@app.command()
def approve(
    ref: Annotated[str, typer.Argument(help="the candidate release, NAME@X.Y.Z")],
    key: KeyOpt = None,
    role: Annotated[
        str, typer.Option(help="the role you sign in: approver (default) or releaser")
    ] = "approver",
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
        typer.echo(
            f"final: tag {name}@v{version}" if state.met else "still a candidate: more approvals needed"
        )


@app.command()
def waive(
    rule_id: Annotated[str, typer.Argument(help="the rule to waive, as the policy report names it")],
    scope: Annotated[str, typer.Option(help="dataset name the waiver covers, or '*' for every dataset")],
    reason: Annotated[str, typer.Option(help="why (kept in the signed waiver, the report and the card)")],
    expires: Annotated[str, typer.Option(help="last day the waiver applies, YYYY-MM-DD")],
    key: KeyOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Sign a waiver with an approver's key: waivers/*.dsse.json, audit event, git commit.

    validate and release count only signed waivers by a trusted approver that have not expired."""
    with _errors():
        from datetime import date

        from registry.errors import PolicyError
        from registry.waivers import waive as run

        try:
            until = date.fromisoformat(expires)
        except ValueError:
            raise PolicyError(f"--expires {expires!r} is not a date (YYYY-MM-DD)") from None
        path, w = run(_workspace(workspace), rule_id, scope, reason, until, key, trust)
        typer.echo(
            f"waived {w.rule_id} for {w.scope} until {w.expires}, signed by {w.approver} "
            f"(approver key {w.keyid[:16]}): {path}"
        )
