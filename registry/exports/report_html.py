"""The HTML audit report: one self-contained file a reviewer opens offline in any browser.

    dataset_page(ReportData(...))     # a dataset version, from what the caller gathered
    model_page(trace, released, ...)  # a registered model, its metrics per group and its data

This module renders what it is given and reads nothing: ``registry.releases.report`` gathers a version's
data at release (``release_html``), ``registry.lineage.report`` gathers it later, with models
(``dataset_html``, ``model_html``, ``write_report``).

A dataset report has, in order: a status banner (the worst status), signatures and approvals, the policy
results, checks not run, filter settings, marking, representation charts (requested against observed),
contact sheets of accepted and rejected samples with their reasons, the generator and licence chain,
waivers, the models trained on it, the audit timeline and a lineage graph (``dataset_page``; the issue 21
sections are in ``report_sections``). Images and charts are
PNG data: URIs (charts drawn by matplotlib, ``charts``); there is no script, so nothing runs and
nothing is fetched. Every value from a record is HTML-escaped: prompts, reasons and names are data.

``release`` writes ``report.html`` into the version's folder (no MLflow query, the version has no model
yet); ``synthreg report`` renders it again with what happened since (withdrawal, models trained on it,
later versions).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from registry.exports import report_sections as more
from registry.exports.html_parts import e as _e
from registry.exports.html_parts import section as _section
from registry.exports.html_parts import table as _table
from registry.exports.report_sections import filter_settings, marking
from registry.records.lineage import (
    ModelRow,
    ModelsSeen,
    ModelVersionInfo,
    RunInfo,
    RunTrace,
    SignaturesSeen,
    WithdrawalState,
)  # fmt: skip
from registry.records.policy import PolicyReport
from registry.records.release import Release, ReleaseOutline

THUMBS_PER_GROUP = 6  # samples shown per identity and decision: enough to see, bounded in size
THUMB_MAX = 128  # larger images are scaled down for the contact sheet (the shards keep the originals)

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} section{margin:2rem 0} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4} code{word-break:break-all;overflow-wrap:anywhere;font-size:.85em}
.banner{padding:1rem;border-radius:.4rem;font-size:1.2rem;font-weight:600;margin:1rem 0}
.passed{background:#e3f4e8;border:2px solid #2e7d32}.waived{background:#fff4e0;border:2px solid #ef6c00}
.withdrawn,.failed{background:#fde7e7;border:2px solid #c62828}
.warned{background:#fff4e0;border:2px solid #ef6c00}.notrun{background:#f3e5f5;border:2px solid #6a1b9a}
.st-pass{color:#2e7d32}.st-fail{color:#c62828;font-weight:700}.st-warn,.st-waived{color:#ef6c00}
.st-not-run{color:#6a1b9a;font-weight:700}
.sheet{display:flex;flex-wrap:wrap;gap:.5rem;margin:.3rem 0 1rem}
figure{margin:0;width:8rem;font-size:.7rem;text-align:center}
figure img{width:6rem;height:6rem;image-rendering:pixelated;object-fit:contain;border:1px solid #ccc}
.chart{max-width:100%;height:auto} .note{color:#555;font-style:italic}
"""


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str, cls: str = "chart") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="{_png_uri(data)}">'


def _page(title: str, sections: list[str]) -> str:
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class='note'>synthreg audit report, made {made}</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


# --- the sections ------------------------------------------------------------------------------------


def worst_status(record: Release) -> tuple[str, str]:
    """The banner's class and words: the worst policy status of the release (failed, waived, warned, not
    run, passed), so it is never green over a warning or over a check that did not run."""
    statuses = list(record.policy_results.values())
    warned = [r for r, st in record.policy_results.items() if st == "warn"]
    not_run = [r for r, st in record.policy_results.items() if st == "not run"]
    if not record.policy_passed:
        return "failed", "policy FAILED"
    if record.waivers or "waived" in statuses:
        return "waived", f"passed with {len(record.waivers)} waiver(s)" + (
            f" and {len(warned)} warning(s)" if warned else ""
        ) + (f"; {len(not_run)} check(s) NOT RUN" if not_run else "")
    if warned:
        return "warned", f"passed with {len(warned)} warning(s): {', '.join(warned)}" + (
            f"; {len(not_run)} check(s) NOT RUN" if not_run else ""
        )
    if not_run:
        return "notrun", f"passed the rules that ran; {len(not_run)} check(s) NOT RUN: {', '.join(not_run)}"
    not_applicable = [r for r, st in record.policy_results.items() if st == "not applicable"]
    if not_applicable:  # issue 19: e.g. leakage with no evaluation split; said, never folded into "every"
        return "passed", f"passed every rule that applies; not applicable: {', '.join(not_applicable)}"
    return "passed", "passed every policy rule"


def _banner(record: Release, withdrawal: WithdrawalState | None) -> str:
    if withdrawal:
        cls, text = (
            "withdrawn",
            f"WITHDRAWN on {withdrawal.day} by {withdrawal.actor}: {withdrawal.reason}",
        )
    else:
        cls, text = worst_status(record)
    derived = (
        f"<p>Derived from {_e(record.derived_from.parent)} without {record.derived_from.removed} "
        f"sample(s): {_e(record.derived_from.reason)}</p>"
        if record.derived_from
        else ""
    )
    facts = _table(
        ["released", "by", "images", "licence", "intended use", "manifest sha256"],
        [
            [
                _e(f"{record.created_at:%Y-%m-%d %H:%M} UTC"),
                _e(record.actor),
                _e(f"{record.counts.accepted} accepted / {record.counts.total}"),
                _e(record.dataset_licence),
                _e(
                    ("commercial" if record.intended_use.commercial else "non-commercial")
                    + "; "
                    + ", ".join(record.intended_use.purposes)
                ),
                f"<code>{_e(record.manifest_sha256)}</code>",
            ]
        ],
    )
    return _section(
        "status", "Status", f'<div class="banner {cls}" data-status="{cls}">{_e(text)}</div>{derived}{facts}'
    )


def _status_cell(status: str) -> str:
    return f'<span class="st-{_e(status).replace(" ", "-")}">{_e(status)}</span>'


def _policy(report: PolicyReport | None, record: Release) -> str:
    if report is None:
        rows = [[f"<code>{_e(k)}</code>", "", _status_cell(v), "", "", "", ""]
                for k, v in record.policy_results.items()]  # fmt: skip
        note = "<p class='note'>policy-report.json is missing; statuses from the release record.</p>"
    else:
        rows = [
            [
                f"<code>{_e(r.rule_id)}</code>",
                _e(r.severity),
                _status_cell(r.status),
                _e("" if r.measured is None else r.measured),
                _e("" if r.threshold is None else r.threshold),
                _e(r.message),
                _e(r.evidence.count or ""),
            ]
            for r in report.results
        ]
        note = (
            "<p>Report on manifest "
            f"<code>{_e(report.manifest_sha256)}</code>; policy report sha256 "
            f"<code>{_e(record.policy_report_sha256)}</code></p>"
        )
    head = ["rule", "severity", "status", "measured", "threshold", "message", "offending"]
    return _section("policy", "Policy results", note + _table(head, rows))


_NO_DATA = (
    "<p class='note'>The released manifest and shards are not in this workspace (DVC data): "
    "run <code>dvc pull</code> and make the report again to see this section.</p>"
)


def _representation(con: Any, record: Release) -> str:
    from registry.exports import charts

    if con is None:
        return _section("representation", "Representation", _NO_DATA)
    order = list(record.recipe.identities) if record.recipe else []
    found = [r[0] for r in con.execute("SELECT DISTINCT identity FROM manifest ORDER BY 1").fetchall()]
    identities = [i for i in order if i in found] + [i for i in found if i not in order]
    counts = {
        (kind, key): n
        for kind, key, n in con.execute(
            "SELECT 'requested', identity, count(*) FROM manifest GROUP BY ALL UNION ALL "
            "SELECT 'observed', identity_pred, count(*) FROM manifest WHERE identity_pred IS NOT NULL "
            "GROUP BY ALL UNION ALL "
            "SELECT 'accepted', identity, count(*) FROM manifest WHERE decision = 'accepted' GROUP BY ALL"
        ).fetchall()
    }
    series = {
        label: [float(counts.get((kind, i), 0)) for i in identities]
        for kind, label in (
            ("requested", "requested (prompt)"),
            ("observed", "observed (classifier)"),
            ("accepted", "accepted"),
        )
    }
    body = [
        "<p>Requested: what the prompts asked for, over all generated images. Observed: what a "
        "classifier trained on real data or the attribute measure saw in the images.</p>",
        _img(charts.grouped_bars("Images per identity", identities, series, "images"), "identity chart"),
    ]
    attributes = list(record.recipe.attributes) if record.recipe else []
    for name in attributes:
        rows = con.execute(
            "SELECT 'requested' AS kind, map_extract(attributes, $a)[1] AS v, count(*) FROM manifest "
            "GROUP BY ALL "
            "UNION ALL SELECT 'observed', map_extract(observed_attributes, $a)[1], count(*) FROM manifest "
            "WHERE observed_attributes IS NOT NULL AND len(map_extract(observed_attributes, $a)) > 0 "
            "GROUP BY ALL",
            {"a": name},
        ).fetchall()
        totals = {k: sum(n for kk, _, n in rows if kk == k) for k in ("requested", "observed")}
        values = list(record.recipe.attributes[name]) if record.recipe else []
        values += sorted({str(v) for _, v, _ in rows if v is not None and v not in values})
        shares = {
            kind: [
                sum(n for k, v, n in rows if k == kind and v == value) / totals[kind] if totals[kind] else 0.0
                for value in values
            ]
            for kind in ("requested", "observed")
        }
        body.append(_img(charts.grouped_bars(f"Attribute {name}", values, shares, "share"), f"{name} chart"))
        if not totals["observed"]:
            body.append(f"<p class='note'>attribute {_e(name)} was not measured on the images.</p>")
    return _section("representation", "Representation: requested against observed", "".join(body))


def _thumbnail(data: bytes) -> bytes:
    from registry.core.images import decode

    im = decode(data, "a sample image")  # bounded and strict (issue 24)
    if max(im.size) <= THUMB_MAX:
        return data
    im.thumbnail((THUMB_MAX, THUMB_MAX))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _contact_sheets(con: Any, record: Release, read_members: MemberReader) -> str:
    if con is None:
        return _section("samples", "Samples", _NO_DATA)
    rows = con.execute(
        "SELECT identity, coalesce(decision, 'unfiltered'), sample_id, shard, member, coalesce(reason, '') "
        "FROM (SELECT *, row_number() OVER (PARTITION BY identity, decision ORDER BY sample_id) AS n "
        "FROM manifest) WHERE n <= $k ORDER BY identity, 2, sample_id",
        {"k": THUMBS_PER_GROUP},
    ).fetchall()
    wanted: dict[str, set[str]] = {}
    for _, _, _, shard, member, _ in rows:
        wanted.setdefault(shard, set()).add(member)
    images: dict[tuple[str, str], bytes] = {}
    missing = []
    for shard, members in wanted.items():
        found = read_members(shard, members)
        if found is None:
            missing.append(shard)
            continue
        images.update({(shard, m): _thumbnail(data) for m, data in found.items()})
    order = list(record.recipe.identities) if record.recipe else []
    by_identity: dict[str, dict[str, list[str]]] = {}
    for identity, decision, sid, shard, member, reason in rows:
        data = images.get((shard, member))
        picture = _img(data, sid, "thumb") if data else "<span class='note'>(shard missing)</span>"
        by_identity.setdefault(identity, {}).setdefault(decision, []).append(
            f"<figure>{picture}<figcaption><code>{_e(sid)}</code><br>{_e(reason)}</figcaption></figure>"
        )
    body = [
        f"<p>Up to {THUMBS_PER_GROUP} samples per identity and decision (first by sample id), "
        "with the filter's reason.</p>"
    ]
    if missing:
        body.append(f"<p class='note'>shards not in this workspace: {_e(', '.join(sorted(missing)))}</p>")
    for identity in sorted(by_identity, key=lambda i: (order.index(i) if i in order else len(order), i)):
        per = record.counts.per_identity.get(identity, {})
        body.append(f"<h3>identity {_e(identity)}</h3>")
        for decision, figures in sorted(by_identity[identity].items()):
            n = per.get(decision, len(figures))
            body.append(f"<h4>{_e(decision)} ({n})</h4><div class='sheet'>{''.join(figures)}</div>")
    return _section("samples", "Contact sheets: accepted and rejected samples", "".join(body))


def _licence_cell(lic_id: str, facts: dict[str, Any]) -> str:
    lic = facts.get(lic_id)
    if lic is None:
        return _e(lic_id)
    terms = ["commercial use allowed" if lic.commercial_use else "no commercial use"]
    if lic.restricted_uses:
        terms.append("forbids " + ", ".join(lic.restricted_uses))
    if lic.attribution:
        terms.append("attribution required")
    return f'<a href="{_e(lic.url)}">{_e(lic_id)}</a><br><small>{_e("; ".join(terms))}</small>'


def _licences(records: list[Release], facts: dict[str, Any]) -> str:
    gens = {(g.name, g.weights_digest): g for r in records for g in r.generators}
    sources = {(s.name, s.role): s for r in records for s in r.sources}
    gen_rows = [
        [
            _e(g.name),
            _e(f"{g.backend}, {g.pipeline_class}, {g.scheduler}"),
            f"<code>{_e(g.weights_digest)}</code>",
            _licence_cell(g.licence, facts),
            _e(g.images),
        ]
        for g in gens.values()
    ]
    training = [s for s in sources.values() if s.role == "generator-training"]
    other = [s for s in sources.values() if s.role != "generator-training"]

    def src_rows(items: list[Any]) -> list[list[str]]:
        return [
            [
                _e(s.name),
                _e(s.role),
                _e(s.version or ""),
                f"<code>{_e(s.digest or '')}</code>",
                _licence_cell(s.licence, facts),
                ("<b>WITHDRAWN</b>" if s.status == "withdrawn" else "active"),
                _e(", ".join(s.identities) if s.identities else "all"),
            ]
            for s in items
        ]

    src_head = ["source", "role", "version", "digest", "licence", "status", "identities"]
    last = records[-1]
    duties = "".join(f"<li>{_e(a)}</li>" for a in last.attribution)
    body = [
        "<h3>Generators</h3>",
        _table(["generator", "what ran", "weights sha256", "licence", "images"], gen_rows),
        "<h3>The generators' own training data</h3>",
        _table(src_head, src_rows(training)) if training else "<p class='note'>none declared</p>",
        "<h3>Other real sources</h3>",
        _table(src_head, src_rows(other)) if other else "<p class='note'>none</p>",
        f"<h3>Dataset licence</h3><p>{_licence_cell(last.dataset_licence, facts)}</p>",
        f"<h3>Attribution duties</h3><ul>{duties}</ul>" if duties else "",
    ]
    return _section("licences", "Generator and licence chain", "".join(body))


def _waivers(waivers: list[Any], today: date) -> str:
    if not waivers:
        return _section("waivers", "Waivers", "<p>No waiver was applied.</p>")
    rows = [
        [
            f"<code>{_e(w.rule_id)}</code>",
            _e(w.scope),
            _e(w.approver) + (f" (key <code>{_e(w.approver_keyid[:16])}</code>)" if w.approver_keyid else ""),
            _e(w.expires) + (" <b>(expired)</b>" if w.expires < today else ""),
            _e(w.reason),
        ]
        for w in waivers
    ]
    return _section("waivers", "Waivers", _table(["rule", "scope", "approver", "expires", "reason"], rows))


def _timeline(events: list[tuple[str, str, str, str]], note: str | None = None) -> str:
    """Audit events (time, kind, subject, details), oldest first; ``note``: why the log cannot be read."""
    events = sorted(events, key=lambda e: e[0])  # stable: the log's own order within a second
    rows = [[_e(t), _e(k), f"<code>{_e(s)}</code>", _e(d)] for t, k, s, d in events]
    banner = "" if note is None else f"<p class='banner failed'>The audit log cannot be read: {_e(note)}</p>"
    return _section(
        "timeline", "Audit timeline", banner + _table(["time (UTC)", "event", "subject", "details"], rows)
    )


def _label(text: str, n: int = 26) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _lineage(
    versions: Sequence[tuple[Release | ReleaseOutline, bool]], models: list[dict], note: str = ""
) -> str:
    from registry.exports import charts

    sources: dict[str, tuple[str, str, str]] = {}
    generators: dict[str, tuple[str, str, str]] = {}
    edges: list[tuple[str, str]] = []
    version_nodes = []
    for r, withdrawn in versions:
        vid = f"v:{r.name}@{r.version}"
        version_nodes.append(
            (vid, f"{r.name}@{r.version}" + (" (withdrawn)" if withdrawn else ""), "version")
        )
        for g in r.generators:
            gid = f"g:{g.name}:{g.weights_digest}"
            generators[gid] = (gid, f"{_label(g.name, 18)} {g.weights_digest[:8]}", "generator")
            edges.append((gid, vid))
        for s in r.sources:
            if s.role == "evaluation":  # compared against, not made from
                continue
            sid = f"s:{s.name}:{s.role}"
            sources[sid] = (sid, _label(f"{s.name} ({s.role})"), "source")
            if s.role == "generator-training":
                edges += [(sid, gid) for gid in generators if gid.startswith("g:")]
            else:
                edges.append((sid, vid))
        if r.derived_from:
            edges.append((f"v:{r.derived_from.parent}", vid))
    model_nodes = []
    for m in models:
        mid = f"m:{m['name']}/{m['version']}"
        model_nodes.append((mid, _label(f"{m['name']}/{m['version']}"), "model"))
        edges += [(f"v:{d}", mid) for d in m["datasets"]]
    layers = [list(sources.values()), list(generators.values()), version_nodes, model_nodes]
    layers = [layer for layer in layers if layer] or [[("none", "nothing to show", "source")]]
    chart = _img(charts.lineage_graph(layers, sorted(set(edges))), "lineage graph")
    rows = [
        [_e(f"{m['name']}/{m['version']}"), f"<code>{_e(m['run_id'])}</code>", _e(", ".join(m["datasets"]))]
        for m in models
    ]
    table = (
        _table(["model", "MLflow run", "trained on"], rows) if rows else "<p>No model is known to use it.</p>"
    )
    listed = [[_e(f"{r.name}@{r.version}"), _e(f"{r.created_at:%Y-%m-%d}"), "<b>WITHDRAWN</b>" if w
               else "released"] for r, w in versions]  # fmt: skip
    table = _table(["version", "released", "state"], listed) + table
    return _section("lineage", "Lineage: sources, generators, versions, models", chart + note + table)


# --- whole reports -------------------------------------------------------------------------------------

# (shard, member names) -> {member: bytes}, or None when the shard is not in the workspace
MemberReader = Callable[[str, set[str]], dict[str, bytes] | None]


@dataclass
class ReportData:
    """Everything a dataset page shows, gathered by the caller (``registry.releases.report`` at release,
    ``registry.lineage.report`` later): this module reads nothing itself."""

    record: Release
    report: PolicyReport | None
    con: Any | None  # a DuckDB connection with the released manifest as view ``manifest``; None: not here
    read_members: MemberReader
    licence_facts: dict[str, Any]
    events: list[tuple[str, str, str, str]]  # the audit timeline: time, kind, subject, details
    audit_note: str | None = None  # why the audit log could not be read; None when it could
    withdrawal: WithdrawalState | None = None
    # other versions, withdrawn or not (what the lineage shows of them: ``store.releases.load_outline``)
    others: list[tuple[Release | ReleaseOutline, bool]] = field(default_factory=list)
    signatures: SignaturesSeen | None = None  # None: the sign-offs were not read (said so)
    models: ModelsSeen | None = None  # what the MLflow store held; None: not asked (said so)


def dataset_page(d: ReportData) -> str:
    """A dataset version's report: banner, signatures, policy, checks not run, filter settings, marking,
    representation, samples, licences, waivers, models, timeline, lineage."""
    record = d.record
    versions = sorted(
        [*d.others, (record, d.withdrawal is not None)],
        key=lambda rv: tuple(int(x) for x in rv[0].version.split(".")),
    )
    sections = [
        _banner(record, d.withdrawal),
        more.signatures(d.signatures),
        _policy(d.report, record),
        more.not_run(d.report, record),
        filter_settings(record),
        marking(record),
        _representation(d.con, record),
        _contact_sheets(d.con, record, d.read_members),
        _licences([record], d.licence_facts),
        _waivers(record.waivers, date.today()),
        more.models(d.models, record.name),
        _timeline(d.events, d.audit_note),
        _lineage(versions, more.lineage_models(d.models)),
    ]
    return _page(f"{record.name}@{record.version}", sections)


def _model_status(
    m: ModelVersionInfo, run: RunInfo, t: RunTrace, released: list[tuple[Release, bool]]
) -> str:
    """The model page's banner: withdrawn data, data not traced to a release, waivers, or passed."""
    withdrawn = [f"{r.name}@{r.version}" for r, w in released if w]
    mismatched = [d.name for d in t.datasets if d.released and not d.digest_matches]
    if withdrawn:
        cls, text = "withdrawn", f"trained on WITHDRAWN data: {', '.join(withdrawn)}"
    elif mismatched or not released:
        cls, text = (
            "failed",
            "training data not traced to a release"
            + (f" (digest mismatch: {', '.join(mismatched)})" if mismatched else ""),
        )
    elif any(r.waivers for r, _ in released):
        cls, text = "waived", "trained on released data that passed policy with waivers"
    else:
        cls, text = "passed", "trained on released data that passed every policy rule"
    status = _section(
        "status",
        "Status",
        f'<div class="banner {cls}" data-status="{cls}">{_e(text)}</div>'
        + _table(
            ["model", "status", "MLflow run", "experiment", "synthetic share"],
            [
                [
                    _e(f"{m.name}/{m.version}"),
                    _e(m.status),
                    f"<code>{_e(run.run_id)}</code>",
                    _e(run.experiment_id),
                    _e(run.tags.get("synthreg.synthetic_share", "")),
                ]
            ],
        ),
    )
    return status


def model_page(
    t: RunTrace,
    released: list[tuple[Release, bool]],
    licence_facts: dict[str, Any],
    events: list[tuple[str, str, str, str]],
    audit_note: str | None = None,
    row: ModelRow | None = None,
    store: str = "the MLflow store",
) -> str:
    """A registered model version's report, from its trace (``registry.lineage.trace.trace_model``) and
    the released versions it was trained on (withdrawn or not): metrics overall and per group, the
    dataset versions (status, policy, waivers, withdrawal), their licence chain and lineage; ``row``: the
    model as ``synthreg models`` lists it (evaluation split, withdrawn data; None: unreadable)."""
    from registry.exports import charts

    m, run = t.model, t.run
    if m is None:
        raise ValueError("model_page needs a trace of a model (registry.lineage.trace.trace_model)")
    status = _model_status(m, run, t, released)
    metrics = run.metrics
    groups = {k.split(".identity_", 1)[1]: v for k, v in sorted(metrics.items()) if ".identity_" in k}
    body = _table(["metric", "value"], [[_e(k), _e(f"{v:.4f}")] for k, v in sorted(metrics.items())])
    if groups:
        chart = charts.grouped_bars(
            "Accuracy per group (identity)", list(groups), {"accuracy": list(groups.values())}, "accuracy"
        )
        body = _img(chart, "metrics per group") + body
    else:
        body = "<p class='note'>The run logged no per-group metric (accuracy.identity_*).</p>" + body
    data_rows = [
        [
            _e(d.name),
            _e("yes" if d.released else "no"),
            _e("matches" if d.digest_matches else "DOES NOT MATCH") if d.released else "",
            _e(("passed" if d.policy.passed else "FAILED") if d.policy else ""),
            _e("WITHDRAWN" if d.withdrawn else ""),
            _e("; ".join(d.warnings + d.notes)),
        ]
        for d in t.datasets
    ]
    records = [r for r, _ in released]
    used = [f"{r.name}@{r.version}" for r in records]
    sections = [
        status,
        _section("metrics", "Metrics, overall and per group", body),
        more.model_evaluation(row, records, store),
        _section(
            "training-data",
            "Training data",
            _table(["dataset", "released", "digest", "policy", "withdrawn", "notes"], data_rows),
        ),
        _licences(records, licence_facts)
        if records
        else _section("licences", "Generator and licence chain", "<p>No released data.</p>"),
        _waivers([w for r in records for w in r.waivers], date.today()),
        _timeline(events, audit_note),
        _lineage(released, [{"name": m.name, "version": m.version, "run_id": m.run_id, "datasets": used}]),
    ]
    return _page(f"model {m.name}/{m.version}", sections)


# the escape every value from a record gets, for callers that add notes of their own
escape = _e

__all__ = ["MemberReader", "ReportData", "dataset_page", "escape", "model_page", "worst_status"]
