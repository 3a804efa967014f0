"""The ``synthreg`` command line: thin typer commands over the library (see ``_app.py``)."""

from registry.cli import (
    _people,  # noqa: F401  (registers `report`)
    _trace,  # noqa: F401  (registers its commands)
    _travel,  # noqa: F401  (registers its commands on `app`)
    _trust,  # noqa: F401  (registers approve, waive)
    _txn,  # noqa: F401  (registers `doctor`)
)
from registry.cli._app import app, main

__all__ = ["app", "main"]
