"""Sections of a dataset's audit report read from the signed record alone (issue 21): how the images
were filtered, and how they are marked as AI-generated (with the command to check one yourself)."""

from __future__ import annotations

from registry.exports.html_parts import e, section, table
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
