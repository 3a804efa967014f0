"""``synthreg keys``: what other tools need from the trust root's keys (issue 20).

synthreg keys allowed-signers --out ~/.config/synthreg/allowed_signers
git -c gpg.ssh.allowedSignersFile=~/.config/synthreg/allowed_signers tag -v digits@v1.0.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from registry.cli.common import TrustOpt, Workspace, errors, load_trust_root, workspace_root

keys_app = typer.Typer(
    help="Keys for other tools: an allowed_signers file so plain `git tag -v` verifies release tags.",
    no_args_is_help=True,
)


@keys_app.command("allowed-signers")
def allowed_signers(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="write it here (outside the workspace); default: print it"),
    ] = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Write git's allowed_signers file from the trust root: every unrevoked key, its holder's name as
    principal, within its validity window. Then `git -c gpg.ssh.allowedSignersFile=FILE tag -v
    NAME@vX.Y.Z` verifies a release tag with plain git."""
    with errors():
        from registry.trust.gitsign import allowed_signers as text
        from registry.trust.gitsign import write_allowed_signers

        ws = workspace_root(workspace)
        root = load_trust_root(ws, trust).root
        if out is None:
            typer.echo(text(root), nl=False)
            return
        written = write_allowed_signers(root, out.expanduser(), ws)
        typer.echo(f"allowed_signers {written}: {sum(k.revoked is None for k in root.keys)} key(s)")
        typer.echo(
            f"verify a release tag with: git -c gpg.ssh.allowedSignersFile={written} tag -v NAME@vX.Y.Z"
        )
