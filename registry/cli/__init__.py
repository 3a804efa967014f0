"""The ``synthreg`` command line: thin typer commands over the library (see ``_app.py``)."""

from registry.cli import _people  # noqa: F401  (registers `report`)
from registry.cli._app import app, main

__all__ = ["app", "main"]
