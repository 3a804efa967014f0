"""Signed waivers: an approver of the trust root waives one rule for one dataset until a date.

    waive(ws, "bias.requested-balance", "digits", "too few images", date(2027, 1, 1), key)
    applied, ignored = load_signed(ws, known_rules={...}, today=date.today())

A waiver is a DSSE envelope in ``waivers/<rule>--<scope>--<keyid>-<time>.dsse.json``, committed with its
audit event. Its payload (``SignedWaiver``) carries the approver's name and key id, the signing time and
a checkpoint of the audit log. ``validate`` and ``release`` count only waivers whose signature verifies
against an ``approver`` key of the pinned trust root, that have not expired and that name a rule of the
loaded packs; every other one (an unsigned ``waivers.yaml`` entry, a forged or untrusted signature, an
expired waiver, an unknown rule) is listed in the report as ignored, with why.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from registry.core.errors import SigningError, TrustError
from registry.core.names import shown
from registry.records.dataset import DATASET_NAME
from registry.records.policy import IgnoredWaiver, Waiver
from registry.records.signed import WAIVER_TYPE, WAIVERS, SignedWaiver
from registry.trust.checkpoints import Retirement, record_sha256


def load_signed(
    ws: Path, known_rules: set[str], today: date, trust=None
) -> tuple[list[Waiver], list[IgnoredWaiver]]:
    """The signed waivers that count, and every other one with why it is ignored."""
    from registry.core.workspace import no_links
    from registry.trust.root import load_trust
    from registry.trust.signing import payload_of

    folder = no_links(ws, WAIVERS, "waivers folder")  # a folder linked elsewhere is refused (issue 24)
    files = sorted(folder.glob("*.dsse.json")) if folder.is_dir() else []
    if not files:
        return [], []
    why_no_trust = None
    if trust is None:
        try:
            trust = load_trust(ws)
        except TrustError as e:
            why_no_trust = f"cannot be checked: {e}"
    retirement = Retirement(ws, trust) if trust is not None else None
    applied: list[Waiver] = []
    ignored: list[IgnoredWaiver] = []
    for path in files:
        rel = path.relative_to(ws.resolve()).as_posix()
        if path.is_symlink():  # a signed waiver from elsewhere, linked in: only the file itself counts
            ignored.append(
                IgnoredWaiver(source=rel, why=f"a symbolic link (to {os.readlink(path)}), not a file")
            )
            continue
        try:
            envelope = json.loads(path.read_text())
            w = SignedWaiver.model_validate_json(payload_of(envelope, WAIVER_TYPE))
        except (OSError, ValueError, ValidationError, SigningError) as e:
            ignored.append(IgnoredWaiver(source=rel, why=f"not a signed waiver: {str(e)[:200]}"))
            continue

        def skip(why: str, w: SignedWaiver = w, rel: str = rel) -> None:
            ignored.append(
                IgnoredWaiver(
                    rule_id=w.rule_id,
                    scope=w.scope,
                    approver=w.approver,
                    approver_keyid=w.keyid,
                    source=rel,
                    why=why,
                )
            )

        if why_no_trust:
            skip(why_no_trust)
            continue
        key, why = _signer_problem(trust, retirement, envelope, w)
        if why or key is None:
            skip(why or "unknown key")
            continue
        if w.expires < today:
            skip(f"expired on {w.expires}")
            continue
        if w.rule_id not in known_rules:
            skip(f"rule {w.rule_id!r} is in none of the loaded policy packs")
            continue
        if w.scope != "*" and not DATASET_NAME.fullmatch(w.scope):  # signed before waive refused it
            skip(
                f"its scope {shown(w.scope)} is not a dataset name or '*', so it matches no dataset "
                "(patterns are not supported); sign a new one with `synthreg waive --scope NAME`"
            )
            continue
        applied.append(
            Waiver(
                rule_id=w.rule_id,
                scope=w.scope,
                reason=w.reason,
                approver=key.name,
                approver_keyid=w.keyid,
                expires=w.expires,
                source=rel,
            )
        )
    return applied, ignored


def _signer_problem(trust, retirement: Retirement | None, envelope: dict, w: SignedWaiver):
    """(the approver's key, None) when the waiver's signer counts; else (key or None, why not)."""
    from registry.trust.signing import signature_verifies

    key, why = trust.check_signer(w.keyid, "approver", w.signed_at)
    if why or key is None:
        return key, f"not signed by a trusted approver: {why}"
    if not signature_verifies(envelope, w.keyid, key.sslib_key()):
        return key, f"its signature by key {w.keyid[:16]} ({key.name}) does not verify (forged or edited)"
    if retirement and (why := retirement.why_not(key, record_sha256(envelope, WAIVER_TYPE))):
        return key, f"not counted: {why}"  # a retired approver could backdate it (issue 24)
    return key, None
