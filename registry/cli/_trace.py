"""Commands of issue 11 (models and their lineage): ``synthreg models``."""

from __future__ import annotations

from typing import Annotated

import typer

from registry.cli._app import JsonOpt, Workspace, _emit, _errors, _workspace, app


@app.command()
def models(
    name: Annotated[str | None, typer.Argument(help="only this registered model")] = None,
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """Registered models: each version's dataset, synthetic share (used and asked) and held-out metrics."""
    with _errors():
        from registry.model_index import format_models, list_models

        rows = list_models(_workspace(workspace), name)
        _emit({"models": rows}, as_json, lambda r: format_models(r["models"]))
