"""The policy report as Markdown: what ``validate`` writes beside report.json (``report.md``) and what
a release carries beside its policy-report.json (``policy-report.md``), for people who read it.

Here, not in ``policies``, because a release renders it too and ``registry`` does not import
``policies`` (CONTRIBUTING.md); ``policies.engine`` imports it from here.
"""

from __future__ import annotations

from registry.records.policy import NOT_APPLICABLE, NOT_RUN, PolicyReport

STATUSES = ("pass", "fail", "warn", "waived", NOT_RUN, NOT_APPLICABLE)


def summary(report: PolicyReport) -> str:
    """``PASSED: 12 pass, 0 fail, 1 warn, 0 waived`` (and ``, 2 not run`` when any check did not run:
    a check that did not run is never counted as a pass)."""
    counts = {s: sum(r.status == s for r in report.results) for s in STATUSES}
    for rare in (NOT_RUN, NOT_APPLICABLE):  # shown when any rule has it (older reports read the same)
        if not counts[rare]:
            del counts[rare]
    return f"{'PASSED' if report.passed else 'FAILED'}: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def render_markdown(report: PolicyReport) -> str:
    from registry.exports.common import markdown_safe

    report = markdown_safe(report)  # a prompt or name holding `<img ...>` is shown as text, never markup
    icon = {
        "pass": "pass",
        "fail": "**FAIL**",
        "warn": "warn",
        "waived": "waived",
        NOT_RUN: "**NOT RUN**",
        NOT_APPLICABLE: "n/a",
    }
    use = report.intended_use
    head, _, counts = summary(report).partition(": ")
    lines = [
        f"# Policy report: {report.dataset}",
        "",
        f"**{head}**: {counts}",
        "",
        f"- manifest `{report.manifest}` sha256 `{report.manifest_sha256}`",
        f"- intended use: {'commercial' if use.commercial else 'non-commercial'}; {', '.join(use.purposes)}",
        *(f"- pack `{name}` sha256 `{digest}`" for name, digest in report.packs.items()),
        f"- licence knowledge base sha256 `{report.licence_kb_sha256}`",
        "",
        "| rule | severity | status | measured | threshold | message |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.results:
        msg = r.message.replace("|", "\\|")
        measured = "" if r.measured is None else r.measured
        threshold = "" if r.threshold is None else r.threshold
        lines.append(
            f"| `{r.rule_id}` | {r.severity} | {icon[r.status]} | {measured} | {threshold} | {msg} |"
        )
    if report.not_run:
        lines += ["", "## Checks not run", ""]
        lines += [f"- `{r.rule_id}` ({r.severity}): {r.message}" for r in report.not_run]
    offending = [r for r in report.results if r.status != "pass" and (r.evidence.count or r.waiver)]
    if offending:
        lines += ["", "## Evidence", ""]
        for r in offending:
            lines.append(f"### `{r.rule_id}` ({r.status})")
            if r.waiver:
                w = r.waiver
                key = f" (key {w.approver_keyid[:16]})" if w.approver_keyid else ""
                lines.append(f"Waived by {w.approver}{key} until {w.expires}: {w.reason}")
            if r.evidence.sample_ids:
                shown = ", ".join(f"`{s}`" for s in r.evidence.sample_ids)
                lines.append(f"{r.evidence.count} samples; first {len(r.evidence.sample_ids)}: {shown}")
            lines.append("")
    if report.ignored_waivers:
        lines += ["", "## Waivers ignored", ""]
        for iw in report.ignored_waivers:
            who = f" by {iw.approver}" if iw.approver else ""
            who += f" (key {iw.approver_keyid[:16]})" if iw.approver_keyid else ""
            lines.append(f"- `{iw.rule_id or '?'}` for {iw.scope or '?'}{who} in `{iw.source}`: {iw.why}")
    return "\n".join(lines) + "\n"
