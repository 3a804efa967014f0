"""Sections of the audit report added by issue 21: how the images were filtered and how they are marked
as AI-generated (from the signed record alone), who signed and approved and whether this machine's trust
root trusts them, and the models trained on the data with their evaluation split and withdrawn data.
Each renders what its caller gathered (``registry.releases.report``, ``registry.lineage.report``)."""

from __future__ import annotations

from registry.exports.html_parts import e, section, table
from registry.records.lineage import ModelRow, ModelsSeen, SignaturesSeen
from registry.records.policy import PolicyReport
from registry.records.release import Release


def filter_settings(record: Release) -> str:
    """The filter's thresholds, the models that scored the images (by sha256), the filter checks that
    did not run, and the recipe fields changed between generation and release."""
    f = record.filter
    if f is None:
        return section(
            "filter",
            "Filter settings",
            "<p class='note'>Not recorded: this version was released before synthreg signed the filter "
            "settings with the record. Its manifest still holds each image's scores, decision and "
            "reason.</p>",
        )
    rows = [[f"<code>{e(k)}</code>", e(v)] for k, v in sorted(f.params.items()) if v is not None]
    domain = f.domain or {}
    models = [
        [e(what), f"<code>{e(m.get('model'))}</code>", f"<code>{e(m.get('sha256'))}</code>"]
        for what, m in (
            ("identity classifier", domain.get("identity_classifier")),
            ("embedding (memorisation)", domain.get("embedding")),
            *((f"attribute {a}", m) for a, m in (domain.get("attribute_classifiers") or {}).items()),
        )
        if isinstance(m, dict)
    ]
    body = table(["setting", "value"], rows)
    body += f"<p>Scoring domain: <b>{e(domain.get('domain', 'none'))}</b>.</p>"
    if models:
        body += table(["model", "folder", "sha256"], models)
    if f.not_checked:
        body += "<p><b>Filter checks not run:</b></p><ul>" + "".join(
            f"<li>{e(w)}</li>" for w in f.not_checked
        )
        body += "</ul>"
    if record.recipe_changes:
        body += (
            "<p>Recipe fields changed between generation and release (declarations only; no image changed): "
            f"{e(', '.join(record.recipe_changes))}.</p>"
        )
    return section("filter", "Filter settings", body)


def marking(record: Release) -> str:
    """How every image says it is AI-generated, and the exact commands to check one image."""
    shard = record.shards[0] if record.shards else None
    c2pa = bool(record.recipe and record.recipe.c2pa)
    body = (
        "<p>Every image carries an XMP packet (PNG <code>iTXt</code>, keyword "
        "<code>XML:com.adobe.xmp</code>) with IPTC <code>DigitalSourceType</code> = "
        "<code>trainedAlgorithmicMedia</code> (EU AI Act Art. 50(2): a machine-readable marking), its "
        "sample id and its generator's weights digest; <code>synthreg verify</code> checks every image's "
        "marking against its manifest row. "
        + (
            "Each image also carries C2PA content credentials (the recipe asked for them).</p>"
            if c2pa
            else "No C2PA content credentials: the recipe did not ask for them.</p>"
        )
    )
    if shard is not None:
        folder = f"releases/{record.name}/{record.version}/data/{shard.path}"
        body += (
            "<p>Check one image yourself (any member of any shard):</p><pre>"
            + e(
                f"tar -tf {folder} | head -1                       # a member name\n"
                f"tar -xOf {folder} MEMBER.png > one.png\n"
                "exiftool -XMP-iptcExt:DigitalSourceType -XMP:all one.png"
                + ("\nc2patool one.png" if c2pa else "")
            )
            + "</pre>"
        )
    return section("marking", "Marking: AI-generated, machine-readable", body)


def signatures(seen: SignaturesSeen | None) -> str:
    """Every sign-off (release and approvals): key id, signer, roles, time, and whether the trust root of
    the machine that made the report trusts the key, with the root named (issue 21). Decided by
    ``registry.trust.admission`` when the report was made; rendered here."""
    title = "Signatures and approvals"
    if seen is None:
        return section(
            "signatures",
            title,
            "<p class='note'>Not checked: this report was made without reading the sign-offs. "
            "<code>synthreg report NAME@X.Y.Z</code> checks them against your trust root.</p>",
        )
    if seen.root is None:
        root = (
            "<p class='banner notrun'>Not checked: no trust root. The sign-offs are listed as they claim "
            f"to be; none is shown as trusted. ({e(seen.root_problem)})</p>"
        )
    else:
        root = (
            f"<p>Trust root: <code>{e(seen.root)}</code>, sha256 <code>{e(seen.root_sha256 or 'unreadable')}"
            f"</code>, format version {e(seen.root_version)}; checked "
            f"{seen.checked_at:%Y-%m-%d %H:%M} UTC, when this report was made.</p>"
        )
    status = f"<p>Release status: <b>{e(seen.status)}</b>: {e(seen.summary)}</p>"
    rows = [
        [
            f"<code>{e(s.keyid)}</code>",
            e(s.name),
            e("+".join(s.roles)),
            e(f"{s.time:%Y-%m-%d %H:%M:%S} UTC"),
            f'<span class="{_trust_class(s.trust)}">{e(s.trust)}</span>',
        ]
        for s in seen.signers
    ]
    body = root + status
    body += (
        table(["key id", "signer", "roles", "signed (UTC)", "trusted by this root"], rows)
        if rows
        else "<p><b>No sign-off.</b></p>"
    )
    if seen.problems:
        body += "<p><b>Problems:</b></p><ul>" + "".join(f"<li>{e(p)}</li>" for p in seen.problems) + "</ul>"
    return section("signatures", title, body)


def _trust_class(trust: str) -> str:
    return "st-pass" if trust == "trusted" else "st-not-run" if trust.startswith("not checked") else "st-fail"


def _metrics(m: ModelRow) -> str:
    shown_ = list(m.metrics.items())[:6]
    more = f" (+{len(m.metrics) - len(shown_)} more)" if len(m.metrics) > len(shown_) else ""
    return e(", ".join(f"{k} {v:.4g}" for k, v in shown_) + more) or "none logged"


def _share(m: ModelRow) -> str:
    if m.synthetic_share is None:
        return "not logged"
    asked = m.synthetic_share_asked
    return e(
        f"{m.synthetic_share:g}" + (f" (asked {asked:g})" if asked not in (None, m.synthetic_share) else "")
    )


def _split(m: ModelRow) -> str:
    words = {
        "real held-out": "real held-out",
        "synthetic": "SYNTHETIC split (judges the fit to the generator, not the real world)",
        "unknown": "unknown: the run does not say what its metrics were measured on",
    }[m.evaluation_split]
    return e(words) + (f"<br><small>{e(m.evaluation)}</small>" if m.evaluation else "")


def model_rows(models: list[ModelRow]) -> str:
    """Registered model versions: run, dataset, metrics, synthetic share, evaluation split, withdrawn data."""
    head = ["model", "MLflow run", "trained on", "metrics", "synthetic share", "evaluation split",
            "withdrawn data in its lineage"]  # fmt: skip
    rows = [
        [
            e(f"{m.name}/{m.version}"),
            f"<code>{e(m.run_id)}</code>",
            e(m.dataset or "no synthreg dataset") + (" <b>[UNRELEASED]</b>" if m.unreleased else ""),
            _metrics(m),
            _share(m),
            _split(m),
            f"<b>{e(m.withdrawn)}</b>" if m.withdrawn else "none",
        ]
        for m in models
    ]
    return table(head, rows)


def models(seen: ModelsSeen | None, name: str) -> str:
    """The models the MLflow store knew, trained on any version of dataset ``name``, when the report was
    made; or why none can be listed (no store configured, the store unreadable, not asked)."""
    title = "Models trained on this dataset (from the MLflow store)"
    if seen is None:
        body = (
            "<p class='note'>Not asked: this report was made without reading the MLflow store. "
            f"<code>synthreg report {e(name)}@X.Y.Z</code> lists the models as they stand.</p>"
        )
    elif seen.store is None:
        body = f"<p class='note'>No MLflow store configured: no model is known. ({e(seen.error)})</p>"
    elif seen.error is not None:
        body = f"<p class='note'>The MLflow store {e(seen.store)} could not be read: {e(seen.error)}</p>"
    else:
        body = (
            f"<p>The MLflow store <code>{e(seen.store)}</code> as read {seen.asked_at:%Y-%m-%d %H:%M} UTC, "
            f"when this report was made: {len(seen.models)} registered model version(s) trained on "
            f"{e(name)}"
            + (f"; {seen.others} other(s) trained on other data" if seen.others else "")
            + ".</p>"
        )
        body += model_rows(seen.models) if seen.models else "<p>No registered model was trained on it.</p>"
    return section("models", title, body)


def model_evaluation(row: ModelRow | None, released: list[Release], store: str) -> str:
    """A model page's evaluation split and the withdrawn data in its lineage (dataset versions, the
    versions they were derived from, and real sources marked withdrawn in its ``released`` versions)."""
    title = "Evaluation split and withdrawn data"
    withdrawn_sources = [
        f"{s.name} ({s.role}) in {r.name}@{r.version}"
        for r in released
        for s in r.sources
        if s.status == "withdrawn"
    ]
    if row is None:
        body = f"<p class='note'>The model's run could not be read from {e(store)}: the split is unknown.</p>"
    else:
        body = model_rows([row])
    if withdrawn_sources:
        body += "<p><b>Real sources marked withdrawn in its data's lineage:</b></p><ul>" + "".join(
            f"<li>{e(s)}</li>" for s in withdrawn_sources
        ) + "</ul>"  # fmt: skip
    elif row is not None and not row.withdrawn:
        body += "<p>No withdrawn dataset version or source in its lineage.</p>"
    return section("evaluation", title, body)


def lineage_models(seen: ModelsSeen | None) -> list[dict]:
    """The lineage graph's model nodes from what the store held (``report_html._lineage``'s shape)."""
    if seen is None:
        return []
    return [{"name": m.name, "version": m.version, "run_id": m.run_id or "", "datasets": [m.dataset]}
            for m in seen.models if m.dataset]  # fmt: skip


def not_run(report: PolicyReport | None, record: Release) -> str:
    """Every check that did not run, with why (issue 21): what the policy table shows among the others,
    listed apart so a reviewer cannot miss it. Never counted as passed."""
    if report is not None:
        rows = [[f"<code>{e(r.rule_id)}</code>", e(r.severity), e(r.message)] for r in report.not_run]
    else:  # the release record keeps the statuses, not the reasons
        missing = [k for k, v in record.policy_results.items() if v == "not run"]
        rows = [[f"<code>{e(k)}</code>", "", "see policy-report.json"] for k in missing]
    if not rows:
        return section("not-run", "Checks not run", "<p>Every check of the policy packs ran.</p>")
    note = (
        f"<p><b>{len(rows)} check(s) did not run</b>: their inputs were missing, so they show nothing "
        "either way. A pack can require a check to run (<code>require: ran</code>).</p>"
    )
    return section("not-run", "Checks not run", note + table(["rule", "severity", "why"], rows))
