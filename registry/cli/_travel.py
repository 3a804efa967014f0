"""Commands that move releases between clones: ``synthreg pull`` (library: ``registry.remote``)."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli._app import Workspace, _errors, _progress, _workspace, app


@app.command()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME@X.Y.Z, as `synthreg list` shows it")],
    workspace: Workspace = None,
) -> None:
    """Fetch exactly one release's data from the default DVC remote into this clone, then check its
    signature and every file against its signed sha256 (exit 1, with the missing or damaged files
    removed, if anything is wrong); `synthreg verify` then checks each image inside the shards.
    Progress on stderr: files fetched, then files checked (counted in images)."""
    with _errors():
        from registry.remote import pull as run

        ws = _workspace(workspace)
        with _progress("pull", "file") as fetched, _progress("verify") as verified:
            res = run(ws, ref, progress=fetched, verify_progress=verified)
        typer.echo(
            f"pulled {res.ref} from {res.remote}: {res.samples} samples in {res.shards} shards, signature "
            f"and every file match what was signed; `synthreg verify {res.ref}` checks each image"
        )
