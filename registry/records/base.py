"""What every record module shares: the strict base model, the sha256 type and the repeated-items helper
(their own module so that ``dataset`` and ``domain`` both build on them without importing each other)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def repeated(items: list[str]) -> list[str]:
    """The items listed more than once, sorted: for the 'unique ids' validators."""
    return sorted({i for i in items if items.count(i) > 1})
