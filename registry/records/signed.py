"""The payloads of the signed records beside the releases: a signer's sign-off on a release
(``signoffs.json``), a withdrawal (``withdrawal.dsse.json``) and a waiver (``waivers/*.dsse.json``).

Each is a DSSE envelope's payload with its own payload type, signed by a key of the pinned trust root,
and carries a checkpoint of the audit log (``registry.records.audit.Checkpoint``), so the log cannot be
rewritten under it. Verifying them is ``registry.trust``; writing them, ``registry.releases``."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field

from registry.records.audit import Checkpoint
from registry.records.dataset import Sha256, Strict
from registry.records.policy import RuleId
from registry.records.trust import Role

SIGNOFFS = "signoffs.json"  # beside release.dsse.json: a list of DSSE envelopes, payload a SignOff
WAIVERS = Path("waivers")  # <rule>--<scope>--<keyid>-<time>.dsse.json, payload a SignedWaiver

SIGNOFF_TYPE = "application/vnd.synthreg.signoff+json"


class SignOff(Strict):
    """What one signer signs besides the statement itself: who, in which roles, when, over what."""

    release: str = Field(description="NAME@X.Y.Z")
    statement_sha256: Sha256 = Field(description="sha256 of the release envelope's payload")
    keyid: Sha256
    name: str
    roles: list[Role] = Field(min_length=1)
    time: AwareDatetime
    checkpoint: Checkpoint | None = Field(description="the audit log's head when this was signed")
    # Issue 20: thresholds are not retroactive. A sign-off names the version of the (versioned) trust
    # root it was made under, so a release final under version N stays final when a later version raises
    # a threshold. Left out when None (an unversioned root, or a sign-off made before issue 20), so older
    # sign-offs read, and are judged, as before: against the current root.
    root_version: int | None = Field(
        default=None,
        ge=1,
        exclude_if=lambda v: v is None,
        description="the version of the trust root the signer signed under (None: unversioned)",
    )


WITHDRAWAL = "withdrawal.dsse.json"  # DSSE envelope, payload a Withdrawal

WITHDRAWAL_TYPE = "application/vnd.synthreg.withdrawal+json"


class Withdrawal(Strict):
    """The payload of ``releases/NAME/X.Y.Z/withdrawal.dsse.json``, signed by a releaser or approver of
    the trust root: the release stays signed and verifiable, but withdrawn."""

    release: str = Field(description="NAME@X.Y.Z")
    reason: str = Field(min_length=1)
    time: AwareDatetime
    actor: str = Field(min_length=1, description="who withdrew it (--actor, default git user.name)")
    signer: str = Field(min_length=1, description="the signing key's holder, by the trust root")
    manifest_sha256: Sha256 = Field(description="the withdrawn version's content digest")
    keyid: Sha256
    role: Literal["releaser", "approver"]
    checkpoint: Checkpoint | None = Field(description="the audit log's head when this was signed")


WAIVER_TYPE = "application/vnd.synthreg.waiver+json"


class SignedWaiver(Strict):
    rule_id: RuleId
    scope: str = Field(min_length=1, description="dataset name, or '*' for every dataset")
    reason: str = Field(min_length=1)
    expires: date
    approver: str = Field(description="the key holder's name in the trust root")
    keyid: Sha256
    signed_at: AwareDatetime
    checkpoint: Checkpoint | None = Field(description="the audit log's head when this was signed")


CHECKPOINT_TYPE = "application/vnd.synthreg.checkpoint+json"


class LogCheckpoint(Strict):
    """The payload of ``audit/checkpoints/<sha256>.dsse.json`` (``synthreg log --checkpoint``): a
    releaser or approver signs the log's heads at any time, so the events up to them can no longer be
    deleted or forged without ``log --verify`` naming it."""

    checkpoint: Checkpoint = Field(description="the heads signed")
    events: int = Field(ge=1, description="how many events the heads cover (they and their ancestors)")
    time: AwareDatetime
    keyid: Sha256
    name: str = Field(min_length=1, description="the key holder's name in the trust root")
    role: Literal["releaser", "approver"]
