"""`synthreg log --checkpoint`: a releaser or approver signs the audit log's heads at any time.

    signed = sign_checkpoint(ws, key=...)   # -> SignedCheckpoint: the file, its record, what it newly covers

The signed record (``registry.records.signed.LogCheckpoint``) is written to
``audit/checkpoints/<sha256>.dsse.json``, named by its own bytes, so two people checkpointing on two
branches write two files and git merges them; then it is committed with the log. From then on, deleting
or editing any event it covers fails ``log --verify`` (``registry.trust.checkpoints``). A log that
``log --verify`` finds damaged is refused: a signature would bless the damage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from registry.core import vcs
from registry.core.digests import sha256_bytes
from registry.core.errors import AuditError
from registry.core.fsio import atomic_write_text
from registry.core.workspace import no_links
from registry.records.audit import Checkpoint
from registry.records.signed import CHECKPOINT_TYPE, LogCheckpoint
from registry.store import audit
from registry.trust.checkpoints import CHECKPOINTS, verify_log


@dataclass(frozen=True)
class SignedCheckpoint:
    path: Path  # relative to the workspace
    record: LogCheckpoint
    newly_covered: int  # events no signed checkpoint covered before this one
    committed: bool


def sign_checkpoint(
    ws: Path, key: Path | str | None = None, trust: Path | str | None = None
) -> SignedCheckpoint:
    """Sign the log's current heads with a releaser's or approver's key of the trust root, write the
    record and commit it with the log (when ``ws`` is a git repository). Refused, writing nothing, for
    an empty or damaged log, or a key the trust root does not let sign."""
    from registry.trust.root import load_trust
    from registry.trust.signing import load_signer, sign

    signer = load_signer(key, ws)
    trusted = load_trust(ws, trust)
    keyid = signer.public_key.keyid
    known = trusted.root.key(keyid)
    role: Literal["releaser", "approver"] = "releaser" if known and "releaser" in known.roles else "approver"
    entry = trusted.signing_key(keyid, role)
    audit.migrate(ws)  # sign what will be committed: the events as files
    before = verify_log(ws, trusted)
    if before.problems:
        raise AuditError(
            f"the audit log has {len(before.problems)} problem(s), the first: {before.problems[0]}; a "
            "checkpoint would sign them: run `synthreg log --verify` and restore the log from git first"
        )
    if not before.heads:
        raise AuditError("the audit log is empty: there is nothing to checkpoint yet")
    record = LogCheckpoint(
        checkpoint=Checkpoint(heads=before.heads),
        events=before.events,
        time=datetime.now(UTC),
        keyid=keyid,
        name=entry.name,
        role=role,
    )
    payload = json.dumps(record.model_dump(mode="json"), sort_keys=True).encode()
    text = json.dumps(sign(payload, signer, CHECKPOINT_TYPE), indent=2) + "\n"
    rel = CHECKPOINTS / f"{sha256_bytes(text.encode())}.dsse.json"
    atomic_write_text(no_links(ws, rel, "audit checkpoint"), text)
    committed = False
    if (ws / ".git").exists():
        log = audit.LOG.as_posix()
        vcs.git(ws, "add", "--", log)
        if not vcs.git_ok(ws, "diff", "--cached", "--quiet", "--", log):
            message = f"Sign an audit checkpoint over {before.events} event(s) ({entry.name}, {role})"
            vcs.git(ws, "commit", "-q", "-m", message, "--", log)
            committed = True
    return SignedCheckpoint(rel, record, before.uncovered, committed)
