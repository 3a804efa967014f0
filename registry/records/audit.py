"""An event of the append-only audit log and a checkpoint of it. Reading and appending is
``registry.store.audit``.

Since issue 20 the log is a DAG: every event is its own content-addressed file
(``audit/events/<hash>.json``) naming its parents, the heads of the log when it was written, so two
clones that both appended merge in git without a conflict. Events migrated from the old single chain
(``audit/events.jsonl``) keep their bytes, their ``seq`` and their ``prev_hash`` (their one parent), so
the checkpoints signed over the chain still name them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_serializer, model_validator

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

GENESIS = "0" * 64  # prev_hash of the first event of an old chain


class AuditEvent(Strict):
    """One event: a file ``audit/events/<hash>.json`` (or, before migration, one line of
    ``audit/events.jsonl``). New events carry ``parents``; events of the old chain ``seq`` and
    ``prev_hash`` instead."""

    seq: int | None = Field(
        default=None, ge=0, description="old chain events only: position in audit/events.jsonl, 0-based"
    )
    kind: EventKind
    time: AwareDatetime = Field(description="when the event was recorded, UTC; never before a parent's")
    actor: str = Field(min_length=1)
    subject: str = Field(min_length=1, description='what it concerns, e.g. "digits@1.0.0" or a folder')
    details: dict[str, Any] = Field(default_factory=dict)
    prev_hash: Sha256 | None = Field(
        default=None, description="old chain events only: the previous event's hash; 64 zeros for the first"
    )
    parents: list[Sha256] | None = Field(
        default=None, description="the log's heads when this event was written, sorted; [] for a first event"
    )
    hash: Sha256 = Field(description="sha256 of this event's canonical JSON without `hash`")

    @field_validator("time")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.utcoffset():
            raise ValueError(f"time must be UTC, got offset {v.utcoffset()}")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> AuditEvent:
        legacy = self.seq is not None or self.prev_hash is not None
        if legacy == (self.parents is not None) or (legacy and (self.seq is None or self.prev_hash is None)):
            raise ValueError("an event carries either parents, or seq and prev_hash (an old chain event)")
        if self.parents is not None and self.parents != sorted(set(self.parents)):
            raise ValueError("parents must be sorted and distinct")
        return self

    @property
    def parent_hashes(self) -> list[str]:
        """The events this one follows: its parents, or an old chain event's predecessor."""
        if self.parents is not None:
            return self.parents
        return [] if self.prev_hash == GENESIS else [str(self.prev_hash)]

    @model_serializer(mode="wrap")
    def _drop_unset_form(self, handler: Any) -> dict[str, Any]:
        # The other form's fields are absent, not null: the hash is over exactly what the file holds.
        out = handler(self)
        return {k: v for k, v in out.items() if not (k in ("seq", "prev_hash", "parents") and v is None)}


class Checkpoint(Strict):
    """The log's heads as a signed record saw them: a later log must still hold these events and every
    event before them (RFC 6962's signed tree head, for a DAG). A checkpoint signed over the old chain
    names one event by ``seq`` and ``hash``; one signed since, the set of ``heads``."""

    seq: int | None = Field(default=None, ge=0, description="old chain checkpoints: the head's position")
    hash: Sha256 | None = Field(default=None, description="old chain checkpoints: the head's hash")
    heads: list[Sha256] | None = Field(default=None, description="the heads of the log, sorted")

    @model_validator(mode="after")
    def _one_form(self) -> Checkpoint:
        if (self.heads is None) == (self.seq is None or self.hash is None) or (
            self.heads is not None and (self.seq is not None or self.hash is not None)
        ):
            raise ValueError("a checkpoint names either heads, or seq and hash (an old chain head)")
        if self.heads is not None and (not self.heads or self.heads != sorted(set(self.heads))):
            raise ValueError("a checkpoint's heads must be a non-empty sorted list of distinct hashes")
        return self

    @property
    def head_hashes(self) -> list[str]:
        return self.heads if self.heads is not None else [str(self.hash)]

    @model_serializer(mode="wrap")
    def _drop_unset_form(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}
