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
import re
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import AwareDatetime, Field, ValidationError

from registry import audit
from registry.errors import PolicyError, SigningError, TrustError
from registry.models import Sha256, Strict
from registry.policy import IgnoredWaiver, RuleId, Waiver

WAIVER_TYPE = "application/vnd.synthreg.waiver+json"
WAIVERS = Path("waivers")


class SignedWaiver(Strict):
    rule_id: RuleId
    scope: str = Field(min_length=1, description="dataset name, or '*' for every dataset")
    reason: str = Field(min_length=1)
    expires: date
    approver: str = Field(description="the key holder's name in the trust root")
    keyid: Sha256
    signed_at: AwareDatetime
    checkpoint: audit.Checkpoint | None = Field(description="the audit log's head when this was signed")


def waive(
    ws: Path,
    rule_id: str,
    scope: str,
    reason: str,
    expires: date,
    key: Path | str | None = None,
    trust: Path | str | None = None,
    known_rules: set[str] | None = None,
    today: date | None = None,
) -> tuple[Path, SignedWaiver]:
    """Sign and write one waiver, append its audit event and commit both (when ``ws`` is a git
    repository). Refused, nothing written: a key that is not a trusted approver, an expiry in the past,
    a rule id not in ``known_rules`` (default: the rules of params.yaml's packs)."""
    from registry.fsio import atomic_write_text
    from registry.signing import load_signer, sign
    from registry.trust import load_trust

    if not reason.strip():
        raise PolicyError("give a reason for the waiver (--reason)")
    if not re.fullmatch(r"[a-z0-9_*-]{1,64}", scope):
        raise PolicyError(f"waiver scope {scope!r} is not a dataset name or '*'")
    if expires < (today or date.today()):
        raise PolicyError(f"waiver expiry {expires} is in the past; give a future date (--expires)")
    rules = known_rules if known_rules is not None else _pack_rules(ws)
    if rule_id not in rules:
        raise PolicyError(
            f"rule {rule_id!r} is in none of the policy packs ({', '.join(sorted(rules)[:8])}...); "
            "check the rule id in the report"
        )
    signer = load_signer(key)
    trusted = load_trust(ws, trust)
    entry = trusted.signing_key(signer.public_key.keyid, "approver")
    w = SignedWaiver(
        rule_id=rule_id,
        scope=scope,
        reason=reason.strip(),
        expires=expires,
        approver=entry.name,
        keyid=entry.keyid,
        signed_at=datetime.now(UTC),
        checkpoint=audit.head(ws),
    )
    payload = json.dumps(w.model_dump(mode="json"), sort_keys=True).encode()
    stamp = w.signed_at.strftime("%Y%m%dT%H%M%S%f")
    path = ws / WAIVERS / f"{rule_id}--{scope.replace('*', 'all')}--{entry.keyid[:12]}-{stamp}.dsse.json"
    atomic_write_text(path, json.dumps(sign(payload, signer, WAIVER_TYPE), indent=2) + "\n")
    rel = path.relative_to(ws).as_posix()
    try:
        audit.append(
            ws,
            "waiver",
            f"{scope}:{rule_id}",
            w.model_dump(mode="json", exclude={"checkpoint"}) | {"file": rel},
        )
    except BaseException:
        path.unlink(missing_ok=True)  # no waiver without its audit event
        raise
    if (ws / ".git").exists():
        from registry.release import _git

        _git(ws, "add", rel, audit.LOG.as_posix())
        _git(
            ws,
            "commit",
            "-q",
            "-m",
            f"Waive {rule_id} for {scope} until {expires}",
            "--",
            rel,
            audit.LOG.as_posix(),
        )
    return path, w


def _pack_rules(ws: Path) -> set[str]:
    from policies.engine import DEFAULT_PACKS, load_packs
    from registry.config import load_params
    from registry.workspace import inside

    named = load_params(ws / "params.yaml").validate_.packs
    paths = [inside(ws, p, "policy pack") for p in named or []] or DEFAULT_PACKS
    return {r.id for _, pack in load_packs(paths) for r in pack.rules}


def load_signed(
    ws: Path, known_rules: set[str], today: date, trust=None
) -> tuple[list[Waiver], list[IgnoredWaiver]]:
    """The signed waivers that count, and every other one with why it is ignored."""
    from registry.signing import payload_of, signature_verifies
    from registry.trust import load_trust

    folder = ws / WAIVERS
    files = sorted(folder.glob("*.dsse.json")) if folder.is_dir() else []
    if not files:
        return [], []
    why_no_trust = None
    if trust is None:
        try:
            trust = load_trust(ws)
        except TrustError as e:
            why_no_trust = f"cannot be checked: {e}"
    applied: list[Waiver] = []
    ignored: list[IgnoredWaiver] = []
    for path in files:
        rel = path.relative_to(ws).as_posix()
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
        key, why = trust.check_signer(w.keyid, "approver", w.signed_at)
        if why or key is None:
            skip(f"not signed by a trusted approver: {why}")
            continue
        if not signature_verifies(envelope, w.keyid, key.sslib_key()):
            skip(f"its signature by key {w.keyid[:16]} ({key.name}) does not verify (forged or edited)")
            continue
        if w.expires < today:
            skip(f"expired on {w.expires}")
            continue
        if w.rule_id not in known_rules:
            skip(f"rule {w.rule_id!r} is in none of the loaded policy packs")
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
