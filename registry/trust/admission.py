"""May this release be read? The one check every reader makes (issue 18), returning a typed result.

    a = admission(ws, "digits", "1.0.0", trust)   # -> Admission; SigningError/OSError/ValueError when
    a.status                                      #    the envelope cannot even be read
    a.problems, a.approval.untrusted, a.withdrawal

The sequence: the envelope and sign-offs as stored, every signature against the pinned trust root and
the thresholds (``approvals``), the signed statement naming this very version in this folder and the
tag on a commit holding this record (``approvals.binding_problems``), the signed predicate equal to
``release.json`` as it is now, and any withdrawal (``withdrawals``). ``registry.releases.catalog`` (the
status of `list` and `show`), ``registry.releases.loader`` (before a single image is served) and
``registry.releases.verify`` all ask here, and each words the answer for its reader.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from registry.records.lineage import WithdrawalState
from registry.store.releases import release_folder
from registry.trust.approvals import ApprovalState, approval_state, binding_problems, read_signed
from registry.trust.checkpoints import Retirement
from registry.trust.root import Trust
from registry.trust.signing import payload_of
from registry.trust.withdrawals import is_withdrawn

EDITED = "release.json differs from the signed record (edited after signing)"


class ReleaseStatus(StrEnum):
    """What a release is, as `synthreg list` shows it (with ``withdrawn`` added when withdrawn)."""

    SOLO = "solo"  # final, signed by one key holding both roles
    FINAL = "final"  # final: the thresholds are met by distinct keys
    CANDIDATE = "candidate"  # signed, short of the approvals the trust root asks for
    UNTRUSTED = "UNTRUSTED"  # a signer the trust root does not accept
    INVALID = "INVALID"  # a signature, the binding or the record is wrong
    UNCHECKED = "UNCHECKED"  # no trust root could be loaded: a reader says why instead of failing


@dataclass
class Admission:
    """The answer of ``admission``: everything a reader needs to decide and to say why."""

    ref: str
    statement: dict
    approval: ApprovalState
    record_matches: bool  # the signed predicate equals release.json as it is now
    binding: list[str]  # the statement names another version, or the tag is wrong
    ws: Path

    @functools.cached_property
    def withdrawal(self) -> WithdrawalState | None:
        """``is_withdrawn``'s record (with ``trusted`` and ``why_untrusted``), or None; read when first
        asked, so a reader that refuses on a signature never reads it (it may raise a ReleaseError)."""
        name, _, version = self.ref.partition("@")
        return is_withdrawn(self.ws, name, version)

    @property
    def problems(self) -> list[str]:
        """Everything wrong but an untrusted signer, first what a reader is most misled by."""
        return ([] if self.record_matches else [EDITED]) + self.binding + self.approval.problems

    @property
    def subjects(self) -> dict[str, str]:
        """Signed file (relative to the release folder) -> its sha256."""
        return {s["name"]: s["digest"]["sha256"] for s in self.statement.get("subject", [])}

    @property
    def status(self) -> ReleaseStatus:
        if self.approval.untrusted:
            return ReleaseStatus.UNTRUSTED
        if self.problems:
            return ReleaseStatus.INVALID
        if not self.approval.met:
            return ReleaseStatus.CANDIDATE
        return ReleaseStatus.SOLO if self.approval.solo else ReleaseStatus.FINAL


def admission(ws: Path, name: str, version: str, trust: Trust | Callable[[], Trust]) -> Admission:
    """Check ``name@version`` as stored in ``ws`` against ``trust`` (or the trust root ``trust()`` loads
    once the envelope has been read: the loader reports an unreadable envelope before a missing root).
    Raises what reading the envelope, the sign-offs or release.json raises (a SigningError, OSError or
    ValueError): a reader decides whether that is a failure to report or to refuse."""
    folder = release_folder(ws, name, version)
    ref = f"{name}@{version}"
    envelope, signoffs = read_signed(folder)
    statement = json.loads(payload_of(envelope))
    trusted = trust if isinstance(trust, Trust) else trust()
    state = approval_state(trusted, ref, envelope, signoffs, Retirement(ws, trusted))
    binding = binding_problems(ws, name, version, statement, state)
    record = json.loads((folder / "release.json").read_text())
    return Admission(
        ref=ref,
        statement=statement,
        approval=state,
        record_matches=statement.get("predicate") == record,
        binding=binding,
        ws=ws,
    )


__all__ = ["EDITED", "Admission", "ReleaseStatus", "admission"]
