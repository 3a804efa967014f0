"""What the HTML audit report of a dataset version shows, gathered from the workspace (the rendering is
``registry.exports.report_html``, which reads nothing itself).

    release_html(folder, record, report)   # the report.html that `release` signs, as at release

At release the version has no withdrawal and no model yet; ``registry.lineage.report`` gathers the same
with what happened since (withdrawal, models, later versions) for `synthreg report`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from registry.exports.report_html import MemberReader, ReportData, dataset_page
from registry.records.policy import PolicyReport
from registry.records.release import Release
from registry.store import audit
from registry.store import manifest as mf
from registry.store.releases import load_release, versions
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


def release_html(folder: Path, record: Release, report: PolicyReport) -> str:
    """The report ``release`` writes into the version's folder (``folder`` may be its staging name,
    ``releases/NAME/.X.Y.Z.tmp-PID``): as at release, so no withdrawal and no model yet."""
    ws = folder.parents[2]  # releases/NAME/<folder>
    others = [(load_release(ws, f"{record.name}@{v}"), False) for v in versions(ws, record.name)]
    pending = [
        (record.created_at.isoformat()[:19], "release", f"{record.name}@{record.version}", "this release")
    ]
    return dataset_page(report_data(ws, folder, record, report, pending, others=others))
