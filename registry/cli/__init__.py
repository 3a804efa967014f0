"""The ``synthreg`` command line: thin typer commands over the library (see ``_app.py``)."""

from registry.cli import _travel  # noqa: F401  (registers its commands on `app`)
from registry.cli._app import app, main

__all__ = ["app", "main"]
