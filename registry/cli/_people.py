"""Commands for the people who review and use a release (issue 12): the HTML audit report.

Thin, like ``_app``: parse, call ``registry.exports.report_html``, print where the file went.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from registry.cli._app import Workspace, _errors, _workspace, app

if TYPE_CHECKING:
    from registry.release_record import Release


@app.command()
def report(
    ref: Annotated[str | None, typer.Argument(help="dataset version NAME@X.Y.Z")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="a registered model NAME/VERSION instead of a dataset")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: reports/NAME@X.Y.Z.html in the workspace)"),
    ] = None,
    workspace: Workspace = None,
) -> None:
    """Write a self-contained HTML audit report of a release or a model (works offline, images embedded)."""
    with _errors():
        from registry.exports.report_html import default_out, write_report

        ws = _workspace(workspace)
        path = write_report(ws, out or default_out(ws, ref, model), ref, model)
        typer.echo(f"report {path}")


# --- progress where nobody watches a terminal --------------------------------------------------------


class PlainProgress:
    """Progress as plain lines on stderr, for logs (inside `dvc repro`, in CI): at most one line every
    ``$SYNTHREG_PROGRESS_SECONDS`` (default 10), from the first update that far into the work, and then
    the last, each with the count, the rate and the time left, e.g. ``generate: 480/1000 (48%), 30.2
    img/s, 17 s left``. Work shorter than that prints nothing, so a quick command's stderr holds only its
    message (an `error:` line stays the first line a script or a test reads)."""

    def __init__(self, label: str, unit: str) -> None:
        import os
        import time

        self.label, self.unit, self.clock = label, unit, time.monotonic
        self.every = float(os.environ.get("SYNTHREG_PROGRESS_SECONDS", "10"))
        self.start = self.last = self.clock()
        self.shown = -1
        self.pending: tuple[int, int, str] | None = None

    def update(self, done: int, total: int, what: str = "") -> None:
        now = self.clock()
        if now - self.last >= self.every or (done >= total and self.shown >= 0):
            self._line(done, total, what, now)
        else:
            self.pending = (done, total, what)

    def _line(self, done: int, total: int, what: str, now: float) -> None:
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 and done else 0.0
        left = f", {(total - done) / rate:.0f} s left" if rate and done < total else ""
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        speed = f", {rate:.1f} {self.unit}/s" if rate else ""
        typer.echo(f"{self.label}: {done}/{total}{pct}{speed}{left}" + (f" {what}" if what else ""), err=True)
        self.last, self.shown, self.pending = now, done, None

    def close(self) -> None:
        """Show the last state if it was held back (a run that stops between lines)."""
        if self.pending is not None and self.shown >= 0 and self.pending[0] != self.shown:
            self._line(*self.pending, self.clock())


# --- tables for people (`show`, `diff`); `--json` stays the machine form ------------------------------


def _console() -> Any:
    from rich.console import Console

    # Not a terminal (a pipe, CI, DVC): no colour codes, and wide enough that a digest stays on one line.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _status(value: str | None) -> str:
    colour = {"pass": "green", "fail": "bold red", "warn": "yellow", "waived": "yellow"}.get(value or "", "")
    return f"[{colour}]{escape(str(value))}[/]" if colour else escape(str(value))


def render_show(
    record: Release,
    withdrawal: dict | None,
    release_status: str | None = None,
    signatures: list[str] | None = None,
    git_rows: list[tuple[str, str]] | None = None,
) -> None:
    """`synthreg show`: what the version is (status and who signed it, when given), then its generators,
    sources, policy and waivers."""
    from rich.table import Table

    r = record
    console = _console()
    head = Table(title=f"{r.name}@{r.version}", show_header=False, title_justify="left")
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    if withdrawal:
        head.add_row("status", f"[bold red]WITHDRAWN[/] {escape(withdrawal['time'][:10])} by "
                     f"{escape(withdrawal['actor'])}: {escape(withdrawal['reason'])}")  # fmt: skip
    if release_status:
        head.add_row("release status", escape(release_status))
    for line in signatures or []:
        head.add_row("signatures", escape(line))
    head.add_row("released", f"{r.created_at:%Y-%m-%d %H:%M} UTC by {escape(r.actor)}")
    head.add_row("images", f"{r.counts.accepted} accepted / {r.counts.total}")
    head.add_row("licence", escape(r.dataset_licence))
    use = r.intended_use
    head.add_row("intended use", escape(f"{'commercial' if use.commercial else 'non-commercial'}; "
                                        + ", ".join(use.purposes)))  # fmt: skip
    head.add_row("policy", "passed" if r.policy_passed else "[bold red]FAILED[/]")
    head.add_row("manifest sha256", r.manifest_sha256)
    head.add_row("shards", str(len(r.shards)))
    for label, value in git_rows or [("git commit", r.git_commit)]:
        head.add_row(escape(label), escape(value))
    if r.derived_from:
        d = r.derived_from
        head.add_row("derived from", escape(f"{d.parent} without {d.removed} sample(s): {d.reason}"))
    console.print(head)
    gens = Table(title="generators", title_justify="left")
    for col in ("name", "licence", "weights sha256", "images"):
        gens.add_column(col, overflow="fold")
    for g in r.generators:
        gens.add_row(escape(g.name), escape(g.licence), g.weights_digest, str(g.images))
    console.print(gens)
    if r.sources:
        srcs = Table(title="sources", title_justify="left")
        for col in ("name", "role", "status", "licence", "identities"):
            srcs.add_column(col, overflow="fold")
        for s in r.sources:
            status: str = "[bold red]withdrawn[/]" if s.status == "withdrawn" else s.status
            srcs.add_row(
                escape(s.name),
                s.role,
                status,
                escape(s.licence),
                escape(", ".join(s.identities or [])) or "all",
            )
        console.print(srcs)
    pol = Table(title="policy at release", title_justify="left")
    pol.add_column("rule")
    pol.add_column("status")
    for rule, status in r.policy_results.items():
        pol.add_row(escape(rule), _status(status))
    console.print(pol)
    if r.waivers:
        wt = Table(title="waivers", title_justify="left")
        for col in ("rule", "approver", "key", "expires", "reason"):
            wt.add_column(col, overflow="fold")
        for w in r.waivers:
            key = (w.approver_keyid or "unsigned")[:16]
            wt.add_row(escape(w.rule_id), escape(w.approver), key, str(w.expires), escape(w.reason))
        console.print(wt)


def render_diff(d: dict) -> None:
    """`synthreg diff`: samples added and removed, then only what changed."""
    from rich.table import Table

    console = _console()
    a, b = d["a"], d["b"]
    s = d["samples"]
    t = Table(title=f"{a} -> {b}", title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_column("first sample ids", overflow="fold")
    t.add_row("added", str(s["added"]), escape(", ".join(s["first_added"][:5])))
    t.add_row("removed", str(s["removed"]), escape(", ".join(s["first_removed"][:5])))
    console.print(t)
    if d["accepted_per_identity"]:
        ids = Table(title="accepted per identity (changed)", title_justify="left")
        for col in ("identity", a, b):
            ids.add_column(escape(col), justify="right")
        for identity, c in d["accepted_per_identity"].items():
            ids.add_row(escape(identity), str(c["a"]), str(c["b"]))
        console.print(ids)
    for what in ("generators", "sources"):
        changes = [("+", x) for x in d[what]["added"]] + [("-", x) for x in d[what]["removed"]]
        if changes:
            ch = Table(title=f"{what} (changed)", title_justify="left")
            ch.add_column("")
            ch.add_column(what[:-1], overflow="fold")
            for sign, x in changes:
                ch.add_row(sign, escape(" ".join(map(str, x)) if isinstance(x, list) else str(x)))
            console.print(ch)
    if d["policy"]:
        pol = Table(title="policy results (changed)", title_justify="left")
        for col in ("rule", a, b):
            pol.add_column(escape(col))
        for rule, c in d["policy"].items():
            pol.add_row(escape(rule), _status(c["a"]), _status(c["b"]))
        console.print(pol)
    if not (d["accepted_per_identity"] or d["policy"] or s["added"] or s["removed"]):
        console.print("no sample, count or policy result differs")
