"""One line of the append-only audit log (``audit/events.jsonl``) and a checkpoint of it: each event
carries the hash of the one before, and every signed record names the log's head as it saw it. Reading
and appending is ``registry.store.audit``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator

from registry.records.dataset import Sha256, Strict

EventKind = Literal[
    "generate",
    "filter",
    "validate",
    "release",
    "derive",
    "waiver",
    "withdrawal",
    "keygen",
    "approval",
    "allow-withdrawn",
    "train",
    "log-dataset",
]


class AuditEvent(Strict):
    """One line of ``audit/events.jsonl``."""

    seq: int = Field(ge=0, description="position in the log, 0-based and consecutive")
    kind: EventKind
    time: AwareDatetime = Field(description="when the event was recorded, UTC")
    actor: str = Field(min_length=1)
    subject: str = Field(min_length=1, description='what it concerns, e.g. "digits@1.0.0" or a folder')
    details: dict[str, Any] = Field(default_factory=dict)
    prev_hash: Sha256 = Field(description="the previous event's hash; 64 zeros for the first")
    hash: Sha256 = Field(description="sha256 of this event's canonical JSON without `hash`")

    @field_validator("time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.utcoffset():
            raise ValueError(f"time must be UTC, got offset {v.utcoffset()}")
        return v


class Checkpoint(Strict):
    """The log's head as a signed record saw it: a later log must still hold this event (RFC 6962's
    signed tree head, for a hash chain)."""

    seq: int = Field(ge=0)
    hash: Sha256
