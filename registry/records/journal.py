"""One unfinished publishing operation as the journal records it
(``.dvc/tmp/synthreg-journal/<op>--<NAME@X.Y.Z>.json``): its steps, the one started last, those done and
the state they need. The journal itself (lock, transaction, recovery) is ``registry.store.journal``."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, Field

from registry.records.dataset import Strict


class Entry(Strict):
    """One unfinished operation: ``.dvc/tmp/synthreg-journal/<op>--<subject>.json``."""

    op: str = Field(description="the operation: release, derive, withdraw ...")
    subject: str = Field(description="NAME@X.Y.Z")
    pid: int = Field(description="the process that started it")
    started: AwareDatetime
    steps: list[str] = Field(description="every step, in order")
    doing: str | None = Field(default=None, description="the step started last (intent)")
    done: list[str] = Field(default_factory=list, description="the steps completed")
    state: dict[str, Any] = Field(default_factory=dict, description="what the steps need, as JSON")
