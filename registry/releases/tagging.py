"""The release tag and the release commit's body: what was released, by whom, and its status (issues 20
and 23).

    with signing_tags(signer):               # the key that makes the release final signs its tag
        ... journal.transaction(...)         # whose "tag" step calls tag_release(...)
    commit_message("Release digits@1.0.0", folder, "candidate")   # subject, blank line, body

A release's tag ``NAME@vX.Y.Z`` is made only when it is final (a candidate waiting for approvals is
untagged by design, issue 24), by ``publish`` in solo mode or by the ``approve`` that meets the
thresholds; so its status line always says ``final``, and the key that signs it is the releaser's in
solo mode and the last approver's in a team (both are in the trust root's ``allowed_signers``). A tag
finished by recovery (``doctor --repair``, or the next command after a kill) has no key at hand: it is
annotated but unsigned, and says so in its message; ``git tag -v`` then fails, as it should.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.core.errors import SigningError
from registry.records.signed import SIGNOFF_TYPE, SignOff

if TYPE_CHECKING:
    from registry.trust.approvals import ApprovalState

_TAG_SIGNER: ContextVar[Any] = ContextVar("synthreg_tag_signer", default=None)


@contextmanager
def signing_tags(signer: Any) -> Iterator[None]:
    """Release tags made inside are signed by ``signer`` (a securesystemslib Signer)."""
    token = _TAG_SIGNER.set(signer)
    try:
        yield
    finally:
        _TAG_SIGNER.reset(token)


def signoffs_of(folder: Path) -> list[SignOff]:
    """The release's sign-offs as stored (read for the messages only: ``verify`` checks them)."""
    from registry.trust.approvals import read_signed
    from registry.trust.signing import payload_of

    out = []
    for env in read_signed(folder)[1]:
        try:
            out.append(SignOff.model_validate_json(payload_of(env, SIGNOFF_TYPE)))
        except (SigningError, ValueError):
            continue  # an unreadable sign-off names nobody; verify reports it
    return out


def _who(so: SignOff) -> str:
    return f"{so.name} as {'+'.join(so.roles)} (key {so.keyid[:16]})"


def _facts(folder: Path) -> tuple[str, str, str, list[str]]:
    """ref, manifest digest, releaser, every signer: from ``release.json`` and ``signoffs.json``."""
    record = json.loads((folder / "release.json").read_text())
    sos = signoffs_of(folder)
    releaser = next((so for so in sos if "releaser" in so.roles), None)
    who = f"{releaser.name} (key {releaser.keyid[:16]})" if releaser else "unknown (no releaser sign-off)"
    return f"{record['name']}@{record['version']}", record["manifest_sha256"], who, [_who(s) for s in sos]


def status_line(state: ApprovalState) -> str:
    """``final, approved by 2 of 2 (releaser 1/1, approver 1/1)`` or ``candidate, ...``."""
    return f"{'final' if state.met else 'candidate'}, {state.summary()}"


def commit_message(subject: str, folder: Path, status: str, actor: str | None = None) -> str:
    """``subject``, then a body: what (the version, its manifest digest, images and shards), who (the
    releaser's key and name, the git actor) and status (with every sign-off so far)."""
    from registry.trust.gitsign import one_line

    record = json.loads((folder / "release.json").read_text())
    ref, digest, releaser, signers = _facts(folder)
    counts = record.get("counts", {})
    lines = [
        one_line(subject),
        "",
        f"What:     {one_line(ref)}, manifest sha256 {digest}",
        f"          {counts.get('accepted', '?')} images in {len(record.get('shards', []))} shard(s)",
        f"Who:      released by {one_line(releaser)}"
        + (f", committed by {one_line(actor)}" if actor else ""),
        f"Status:   {status}",
        *(f"Signed:   {one_line(s)}" for s in signers),
    ]
    return "\n".join(lines) + "\n"


def tag_release(ws: Path, tag: str, commit: str, folder: Path) -> str:
    """The annotated release tag on ``commit``: signed by the key of :func:`signing_tags` if any, else
    unsigned. Returns the tag object's id."""
    from registry.trust.gitsign import TagInfo, make_tag, tag_message

    ref, digest, releaser, signers = _facts(folder)
    signer = _TAG_SIGNER.get()
    tagged_by = None
    if signer is not None:
        keyid = signer.public_key.keyid
        names = {so.keyid: so.name for so in signoffs_of(folder)}
        tagged_by = f"{names.get(keyid, 'key')} (key {keyid[:16]})"
    message = tag_message(TagInfo(ref, digest, releaser, "final", signers), tagged_by)
    return make_tag(ws, tag, commit, message, signer)


def tag_other(ws: Path, tag: str, commit: str, message: str) -> str:
    """An annotated tag that is not a release's (``withdrawn/NAME@vX.Y.Z``): signed by the key of
    :func:`signing_tags` if any, else unsigned. Returns the tag object's id."""
    from registry.trust.gitsign import make_tag

    return make_tag(ws, tag, commit, message, _TAG_SIGNER.get())


__all__ = ["commit_message", "signing_tags", "signoffs_of", "status_line", "tag_other", "tag_release"]
