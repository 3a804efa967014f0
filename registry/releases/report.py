"""What the HTML audit report of a dataset version shows, gathered from the workspace (the rendering is
``registry.exports.report_html``, which reads nothing itself).

    release_html(folder, record, report)   # the report.html that `release` signs, as at release
    signatures_seen(ws, "digits", "1.0.0")  # every sign-off, checked against this machine's trust root

At release the version has no withdrawal and no model yet; ``registry.lineage.report`` gathers the same
with what happened since (withdrawal, models, later versions) for `synthreg report`.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.core.digests import sha256_file
from registry.core.errors import SigningError, TrustError
from registry.exports.report_html import MemberReader, ReportData, dataset_page
from registry.records.lineage import ModelsSeen, SignaturesSeen, SignerSeen
from registry.records.policy import PolicyReport
from registry.records.release import Release
from registry.records.trust import Role, TrustedKey
from registry.store import audit
from registry.store import manifest as mf
from registry.store.releases import load_outline, versions
from registry.store.shards import members_from_bytes


def manifest_of(folder: Path) -> Any | None:
    """A DuckDB connection over the version's manifest, or None when its data is not in the workspace."""
    path = folder / "data" / "manifest.parquet"
    return mf.connect(path) if path.is_file() else None


def member_reader(folder: Path, record: Release) -> MemberReader:
    """Reads the named members of a released shard (None when the shard is not in the workspace)."""
    shard_file = {s.source: folder / "data" / s.path for s in record.shards}

    def read(shard: str, members: set[str]) -> dict[str, bytes] | None:
        path = shard_file.get(shard)
        if path is None or not path.is_file():
            return None
        try:
            inside_tar = members_from_bytes(path.read_bytes())
        except tarfile.TarError:  # not a shard synthreg writes: verify names it; the report shows none
            return None
        return {m: bytes(inside_tar[m]) for m in members if m in inside_tar}

    return read


def licence_facts(ws: Path | None, names: set[str] | None = None) -> dict[str, Any]:
    """Licence id -> knowledge-base entry, from the licence bases of the datasets ``names`` (empty when
    unreadable: the report then shows ids only)."""
    if ws is None:
        return {}
    try:
        import yaml

        from registry.records.config import load_params
        from registry.records.policy import LicenceBase

        params = load_params(ws / "params.yaml")
        if params.datasets is None:
            paths = {params.validate_.licences}
        else:
            paths = {params.datasets[n].validate_.licences for n in names or () if n in params.datasets}
        facts: dict[str, Any] = {}
        for path in sorted(paths):
            kb = LicenceBase.model_validate(yaml.safe_load((ws / path).read_text()))
            facts |= {lic.id: lic for lic in kb.licences}
    except Exception:  # the report must not fail for want of licence details
        return {}
    return facts


def timeline(ws: Path | None, names: set[str]) -> tuple[list[tuple[str, str, str, str]], str | None]:
    """Audit events about the datasets ``names`` (their data folders and versions), and why the log
    could not be read (None when it could): a damaged log is itself a finding, shown, never hidden."""
    events: list[tuple[str, str, str, str]] = []
    if ws is None or not (ws / audit.LOG).is_dir():
        return events, None
    try:
        for ev in audit.read(ws):
            if any(ev.subject.startswith((f"{n}@", f"data/{n}/")) for n in names):
                facts = (f"{k} {v}" for k, v in ev.details.items() if isinstance(v, str | int | float))
                what = ", ".join(facts)
                events.append((ev.time.isoformat()[:19], ev.kind, ev.subject, f"{ev.actor}; {what}"))
    except Exception as e:
        return events, str(e)
    return events, None


def read_report(folder: Path) -> PolicyReport | None:
    path = folder / "policy-report.json"
    return PolicyReport.model_validate_json(path.read_text()) if path.is_file() else None


def report_data(
    ws: Path,
    folder: Path,
    record: Release,
    report: PolicyReport | None,
    extra_events: list[tuple[str, str, str, str]] | None = None,
    **more: Any,
) -> ReportData:
    """A dataset page's data: the manifest, the shards' images, licences and the audit timeline from the
    workspace; ``more`` (withdrawal, other versions, models) from the caller."""
    events, note = timeline(ws, {record.name})
    return ReportData(
        record=record,
        report=report,
        con=manifest_of(folder),
        read_members=member_reader(folder, record),
        licence_facts=licence_facts(ws, {record.name}),
        events=events + list(extra_events or []),
        audit_note=note,
        **more,
    )


def release_html(
    folder: Path,
    record: Release,
    report: PolicyReport,
    signatures: SignaturesSeen | None = None,
    models: ModelsSeen | None = None,
) -> str:
    """The report ``release`` writes into the version's folder (``folder`` may be its staging name,
    ``releases/NAME/.X.Y.Z.tmp-PID``): as at release, so no withdrawal and no model of its own yet;
    ``signatures``: the releaser about to sign (``pending_signatures``); ``models``: what the MLflow store
    held when the release was made (None: not asked)."""
    ws = folder.parents[2]  # releases/NAME/<folder>
    others = [(load_outline(ws, f"{record.name}@{v}"), False) for v in versions(ws, record.name)]
    pending = [
        (record.created_at.isoformat()[:19], "release", f"{record.name}@{record.version}", "this release")
    ]
    return dataset_page(
        report_data(ws, folder, record, report, pending, others=others, signatures=signatures, models=models)
    )


# The function the caller of `release` passes to read the MLflow store (registry.lineage.report
# models_seen): the releases layer never imports MLflow's adapter, which lives above it.
ModelsReader = Callable[[Path, str], ModelsSeen]


def pending_signatures(trust: Any, key: TrustedKey, roles: list[Role]) -> SignaturesSeen:
    """The sign-off about to be made, for the report the release signs (it cannot list its own
    signature): the releaser's key as the trust root in force (``registry.trust.root.Trust``) sees it now."""
    now = datetime.now(UTC)
    why = next((w for r in roles if (w := trust.check_signer(key.keyid, r, now)[1])), None)
    return SignaturesSeen(
        checked_at=now,
        **_root_facts(trust),
        root_problem=None,
        status="signing",
        summary="made at release, before the release signature it is part of; approvals come after: "
        "`synthreg report NAME@X.Y.Z` lists every sign-off as it stands",
        signers=[
            SignerSeen(
                keyid=key.keyid,
                name=key.name,
                roles=list(roles),
                time=now,
                trust="trusted" if why is None else f"NOT TRUSTED: {why}",
            )
        ],
        pending=True,
    )


def _root_facts(trust: Any) -> dict[str, Any]:
    try:
        digest: str | None = sha256_file(trust.path)
    except OSError:
        digest = None
    return {"root": str(trust.path), "root_sha256": digest, "root_version": trust.root.version}


def signatures_seen(
    ws: Path, name: str, version: str, trust_file: Path | str | None = None
) -> SignaturesSeen:
    """Every sign-off of ``name@version`` (release and approvals) with what the trust root of this machine
    (``--trust``, ``$SYNTHREG_TRUST`` or the default; ``registry.trust.root.load_trust``) says of each key,
    decided by the one admission check (``registry.trust.admission``). Without a readable root the
    sign-offs are listed as they claim, each "not checked: no trust root", never "trusted"."""
    from registry.trust.admission import admission
    from registry.trust.root import load_trust

    now = datetime.now(UTC)
    try:
        trust = load_trust(ws, trust_file)
    except TrustError as e:
        signers, problems = _claimed_signoffs(ws, name, version)
        return SignaturesSeen(
            checked_at=now,
            root=None,
            root_sha256=None,
            root_version=None,
            root_problem=str(e),
            status="not checked",
            summary="not checked: no trust root",
            signers=signers,
            problems=problems,
        )
    try:
        a = admission(ws, name, version, trust)
    except (SigningError, OSError, ValueError) as e:
        return SignaturesSeen(
            checked_at=now, **_root_facts(trust), root_problem=None, status="INVALID",
            summary="the signatures cannot be read", problems=[str(e)],
        )  # fmt: skip
    return SignaturesSeen(
        checked_at=now,
        **_root_facts(trust),
        root_problem=None,
        status=str(a.status),
        summary=a.approval.summary(),
        signers=[
            SignerSeen(
                keyid=s.keyid,
                name=s.name,
                roles=list(s.roles),
                time=s.time,
                trust="trusted" if s.trusted else f"NOT TRUSTED: {s.why_untrusted}",
            )
            for s in a.approval.signers
        ],
        problems=a.problems,
    )


def _claimed_signoffs(ws: Path, name: str, version: str) -> tuple[list[SignerSeen], list[str]]:
    """The sign-offs as they claim to be, unverified (there is no root to verify them against)."""
    from registry.records.signed import SIGNOFF_TYPE, SignOff
    from registry.store.releases import release_folder
    from registry.trust.approvals import read_signed
    from registry.trust.signing import payload_of

    try:
        _, envelopes = read_signed(release_folder(ws, name, version))
    except SigningError as e:
        return [], [str(e)]
    found, problems = [], []
    for i, env in enumerate(envelopes):
        try:
            so = SignOff.model_validate_json(payload_of(env, SIGNOFF_TYPE))
        except (SigningError, ValueError) as e:
            problems.append(f"sign-off {i} is not a valid sign-off: {str(e)[:200]}")
            continue
        found.append(
            SignerSeen(
                keyid=so.keyid,
                name=so.name,
                roles=list(so.roles),
                time=so.time,
                trust="not checked: no trust root",
            )
        )
    return found, problems
