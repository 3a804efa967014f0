"""`synthreg waive`: an approver signs a waiver of one rule for one scope until an expiry date
(``waivers/*.dsse.json``), appends a ``waiver`` audit event and commits both.

Which waivers count when a pack is checked (signed by a trusted approver, not expired) is
``registry.trust.waivers``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from registry.core import vcs
from registry.core.errors import PolicyError
from registry.core.names import check_line, shown
from registry.records.dataset import DATASET_NAME
from registry.records.signed import WAIVER_TYPE, WAIVERS, SignedWaiver
from registry.store import audit
from registry.trust.checkpoints import record_sha256


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
    from registry.core.fsio import atomic_write_text
    from registry.trust.root import load_trust
    from registry.trust.signing import load_signer, sign

    if not reason.strip():
        raise PolicyError("give a reason for the waiver (--reason)")
    check_line(reason, "--reason")
    if scope != "*" and not DATASET_NAME.fullmatch(scope):  # `dig*` matched nothing, silently (issue 24)
        raise PolicyError(_bad_scope(ws, scope))
    if expires < (today or date.today()):
        raise PolicyError(f"waiver expiry {expires} is in the past; give a future date (--expires)")
    rules = known_rules if known_rules is not None else _pack_rules(ws)
    if rule_id not in rules:
        raise PolicyError(
            f"rule {rule_id!r} is in none of the policy packs ({', '.join(sorted(rules)[:8])}...); "
            "check the rule id in the report"
        )
    from registry.core.workspace import no_links

    no_links(ws, WAIVERS, "waivers folder")  # linked elsewhere: refused before signing (issue 24)
    signer = load_signer(key, ws)
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
    name = f"{rule_id}--{scope.replace('*', 'all')}--{entry.keyid[:12]}-{stamp}.dsse.json"
    path = no_links(ws, WAIVERS / name, "waiver file")  # waivers/ linked elsewhere is refused (issue 24)
    envelope = sign(payload, signer, WAIVER_TYPE)
    atomic_write_text(path, json.dumps(envelope, indent=2) + "\n")
    rel = (WAIVERS / name).as_posix()
    try:
        audit.append(
            ws,
            "waiver",
            f"{scope}:{rule_id}",
            w.model_dump(mode="json", exclude={"checkpoint"})
            | {"file": rel, "record_sha256": record_sha256(envelope, WAIVER_TYPE)},
        )
    except BaseException:
        path.unlink(missing_ok=True)  # no waiver without its audit event
        raise
    if (ws / ".git").exists():
        vcs.git(ws, "add", rel, audit.LOG.as_posix())
        vcs.git(
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


def _bad_scope(ws: Path, scope: str) -> str:
    known = ", ".join(_known_datasets(ws)) or "none yet"
    return (
        f"waiver scope {shown(scope)} is not a dataset name or '*', so it would match no dataset "
        f"(patterns are not supported; datasets here: {known}): name the dataset, or '*' for every dataset"
    )


def _known_datasets(ws: Path) -> list[str]:
    """The datasets a scope could name here: params.yaml's, its recipe's and the released ones (best
    effort: only for the message refusing a scope that matches nothing)."""
    import contextlib

    from registry.core.errors import SynthregError
    from registry.core.workspace import inside
    from registry.records.config import load_params, load_recipe

    names: set[str] = set()
    with contextlib.suppress(SynthregError, OSError, ValueError):
        params = load_params(ws / "params.yaml")
        names |= set(params.names)
        if not params.names and params.recipe:
            names.add(load_recipe(inside(ws, params.recipe, "recipe")).dataset)
    releases = ws / "releases"
    if releases.is_dir() and not releases.is_symlink():
        names |= {p.name for p in releases.iterdir() if p.is_dir() and DATASET_NAME.fullmatch(p.name)}
    return sorted(names)


def _pack_rules(ws: Path) -> set[str]:
    from policies.engine import DEFAULT_PACKS, load_packs
    from registry.core.workspace import inside
    from registry.records.config import load_params

    params = load_params(ws / "params.yaml")
    entries = [params.dataset(n) for n in params.names] or [params.dataset("-")]
    named = [pack for e in entries for pack in e.validate_.packs]  # a rule of any dataset's packs
    paths = [inside(ws, p, "policy pack") for p in dict.fromkeys(named)] or DEFAULT_PACKS
    return {r.id for _, pack in load_packs(paths) for r in pack.rules}
