"""Commands that read releases and the audit log: list, show, diff, log, schema, the HTML report and
the catalog site.

Tables are rich tables for people (``render_show``, ``render_diff``; tests read them with
``tests/registry/conftest.py`` ``table_rows``); ``--json`` is for machines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from registry.cli.common import (
    KeyOpt,
    TrustOpt,
    Workspace,
    errors,
    load_trust_root,
    make_console,
    workspace_root,
)

if TYPE_CHECKING:
    from registry.records.lineage import ReleaseDiff, WithdrawalState
    from registry.records.release import Release


def list_(trust: TrustOpt = None, workspace: Workspace = None) -> None:
    """Released datasets and their versions, each with its status (final, solo, candidate, withdrawn)."""
    with errors():
        from registry.releases.catalog import list_status

        found = list_status(workspace_root(workspace), trust)
        if not found:
            typer.echo("no releases yet (see `synthreg release --help`)")
        for name, vs in found.items():
            typer.echo(f"{name}: {', '.join(f'{v} ({status})' for v, status in vs)}")


def show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@X.Y.Z (default: the latest)")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole release record")] = False,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Show a release record, its status and who signed it (tables; --json for the whole record)."""
    with errors():
        from registry.releases.catalog import reading_trust, release_status
        from registry.store.releases import load_release, tag_commit
        from registry.trust.approvals import signers_of

        ws = workspace_root(workspace)
        r = load_release(ws, ref)
        if as_json:
            typer.echo(r.model_dump_json(indent=2))
            return
        from registry.trust.withdrawals import is_withdrawn

        trusted = reading_trust(ws, trust)  # issue 20: show never fails because of the trust root
        if isinstance(trusted, str):
            signatures = [f"not checked: {trusted}"]
        else:
            state = signers_of(ws, r.name, r.version, trusted)
            signatures = [state.summary(), *(f"signed by {s.line()}" for s in state.signers)]
        tagged = tag_commit(ws, r.name, r.version)
        render_show(
            r,
            is_withdrawn(ws, r.name, r.version),
            release_status=release_status(ws, r.name, r.version, trusted),
            signatures=signatures,
            git_rows=[
                ("released from commit", r.git_commit),
                (
                    f"tag {r.name}@v{r.version}",
                    tagged or "missing (a candidate, or fetch the tags: `git fetch --tags`)",
                ),
                ("data remote", "not pushed (--no-push)" if r.no_push else r.remote or "not recorded"),
            ],
        )


def diff(
    a: Annotated[str, typer.Argument(help="NAME@A")],
    b: Annotated[str, typer.Argument(help="NAME@B")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    workspace: Workspace = None,
) -> None:
    """Compare two releases: samples added and removed, counts, generators, sources, policy results."""
    with errors():
        import json

        from registry.releases.catalog import diff as run

        d = run(workspace_root(workspace), a, b)
        if as_json:
            typer.echo(json.dumps(d.model_dump(mode="json"), indent=2))
        else:
            render_diff(d)


def log(
    check: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="check every event's hash and parents and every signed checkpoint (exit 1 if broken), "
            "and count the events no signature covers yet",
        ),
    ] = False,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint",
            help="sign the log's current heads with a releaser's or approver's key, and commit",
        ),
    ] = False,
    require_signed: Annotated[
        bool,
        typer.Option(
            "--require-signed",
            help="with --verify: also exit 1 when an event is not covered by a signed checkpoint (CI)",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="one JSON event per line; with --verify, one JSON report")
    ] = False,
    key: KeyOpt = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Show the append-only audit log: the merged timeline of every branch's events (generate, filter,
    validate, waiver, release ...), by time.

    --verify checks the log as a DAG (each event's hash and parents) and that it still holds every
    checkpoint signed into a release sign-off, waiver, withdrawal or `log --checkpoint` (needs the trust
    root), so an edit, a deletion under a checkpoint, a rewrite or a fork is named. It always says how
    many events no signature covers yet, and since when: those could be deleted or forged unseen
    (--require-signed makes that a failure too).
    --checkpoint signs the current heads (--key, as release and approve), covering every event so far."""
    with errors():
        ws = workspace_root(workspace)
        if checkpoint:
            _sign_checkpoint(ws, key, trust)
        elif check:
            _verify_log(ws, trust, as_json, require_signed)
        else:
            _show_log(ws, as_json)


def _sign_checkpoint(ws: Path, key: str | None, trust: Path | None) -> None:
    from registry.releases.checkpoint import sign_checkpoint

    signed = sign_checkpoint(ws, key, trust)
    rec = signed.record
    typer.echo(
        f"signed a checkpoint over {rec.events} event(s) ({len(rec.checkpoint.head_hashes)} head(s)) as "
        f"{rec.role} {rec.name} (key {rec.keyid[:16]}): {signed.newly_covered} event(s) newly covered; "
        f"{signed.path.as_posix()}"
        + (" committed" if signed.committed else " written (not a git repository)")
    )


def _verify_log(ws: Path, trust: Path | None, as_json: bool, require_signed: bool) -> None:
    from registry.trust.checkpoints import verify_log

    report = verify_log(ws, load_trust_root(ws, trust))
    if as_json:
        import json

        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        for p in report.problems:
            typer.echo(f"  {p}")
        n = len(report.problems)
        typer.echo(
            f"audit log: {'intact' if not n else f'{n} problem(s)'} ({ws / report.path}): {report.events} "
            f"event(s), {len(report.heads)} head(s); {report.checkpoints} signed checkpoint(s) checked"
        )
        if report.not_migrated:
            typer.echo(
                f"  {report.not_migrated} event(s) still in audit/events.jsonl: the next append migrates them"
            )
        typer.echo(f"{'unsigned' if report.uncovered else 'signed'}: {report.coverage()}")
        if n:  # a CI log reader sees the verdict last, as verify prints it
            typer.echo(f"FAIL: the audit log has {n} problem(s), listed above")
        if require_signed and report.uncovered:
            typer.echo(f"FAIL: --require-signed, and {report.uncovered} event(s) are unsigned")
    if report.problems or (require_signed and report.uncovered):
        raise typer.Exit(1)


def _show_log(ws: Path, as_json: bool) -> None:
    from registry.store import audit

    for n, e in enumerate(audit.read(ws)):
        if as_json:
            typer.echo(e.model_dump_json())
            continue
        signed = ""
        if e.kind in ("waiver", "approval", "withdrawal") and e.details.get("keyid"):
            who = e.details.get("approver") or e.details.get("name") or e.details.get("signer")
            signed = f"  signed by {who} key {str(e.details['keyid'])[:16]}"
        elif e.kind == "waiver" and e.details.get("approver_keyid"):
            signed = f"  approver {e.details['approver']} key {e.details['approver_keyid'][:16]}"
        line = f"{n:5} {e.hash[:12]} {e.time:%Y-%m-%d %H:%M:%S} {e.kind:10} {e.subject}  by {e.actor}{signed}"
        typer.echo(audit.shown(line))


def schema(
    out: Annotated[Path, typer.Option(help="folder for the JSON Schema files")] = Path("schemas"),
) -> None:
    """Export the JSON Schema of every record from the pydantic models."""
    with errors():
        from registry.records.schemas import write_schemas

        for path in write_schemas(out):
            typer.echo(str(path))


def report(
    ref: Annotated[str | None, typer.Argument(help="dataset version NAME@X.Y.Z")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="a registered model NAME/VERSION instead of a dataset")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: reports/NAME@X.Y.Z.html in the workspace)"),
    ] = None,
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Write a self-contained HTML audit report of a release or a model (works offline, images embedded).

    A release's report checks every sign-off against your trust root (--trust) when it is made, and
    lists the models the MLflow store knows then."""
    with errors():
        from registry.lineage.report import default_out, write_report

        ws = workspace_root(workspace)
        path = write_report(ws, out or default_out(ws, ref, model), ref, model, trust)
        typer.echo(f"report {path}")


def catalog(
    out: Annotated[
        Path, typer.Option("--out", help="folder for the site (new, empty, or a catalog made before)")
    ],
    trust: TrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """Write a static, offline catalog site: every dataset version (status, approvals, policy, its HTML
    report), every registered model, and a search by sample id, generator digest or prompt text.

    Open OUT/index.html in a browser; nothing is fetched from the network. OUT is replaced as a whole,
    only once the new site is complete."""
    with errors():
        from registry.cli.common import progress_bar
        from registry.lineage.catalog_site import write_catalog

        ws = workspace_root(workspace)
        with progress_bar("catalog", unit="step") as progress:
            s = write_catalog(ws, out, trust, progress=progress)
        typer.echo(
            f"catalog {s.out / 'index.html'}: {s.datasets} dataset(s), {s.versions} version(s), "
            f"{s.models} model version(s), {s.indexed_rows} sample row(s) searchable"
        )
        if s.models_note:
            typer.echo(f"  models: {s.models_note}")
        for ref, why in s.not_indexed:
            typer.echo(f"  not searchable: {ref}: {why}")


# --- progress where nobody watches a terminal --------------------------------------------------------


# --- tables for people (`show`, `diff`); `--json` stays the machine form ------------------------------


def _status(value: str | None) -> str:
    colours = {
        "pass": "green",
        "fail": "bold red",
        "warn": "yellow",
        "waived": "yellow",
        "not run": "bold magenta",
        "not applicable": "dim",
    }
    colour = colours.get(value or "", "")
    return f"[{colour}]{escape(str(value))}[/]" if colour else escape(str(value))


def render_show(
    record: Release,
    withdrawal: WithdrawalState | None,
    release_status: str | None = None,
    signatures: list[str] | None = None,
    git_rows: list[tuple[str, str]] | None = None,
) -> None:
    """`synthreg show`: what the version is (status and who signed it, when given), then its generators,
    sources, policy and waivers."""
    from rich.table import Table

    r = record
    console = make_console()
    head = Table(title=f"{r.name}@{r.version}", show_header=False, title_justify="left")
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    if withdrawal:
        head.add_row("status", f"[bold red]WITHDRAWN[/] {escape(withdrawal.day)} by "
                     f"{escape(withdrawal.actor)}: {escape(withdrawal.reason)}")  # fmt: skip
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
    _render_filter(console, r)
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


def _render_filter(console: Any, r: Release) -> None:
    """`show`'s filter table (issue 21): the signed settings, the models that scored the images, the
    filter checks that did not run, and how many images had each of the filter's reasons."""
    from rich.table import Table

    t = Table(title="filter", title_justify="left", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    f = r.filter
    if f is None:
        t.add_row("settings", "not recorded (released before synthreg signed the filter settings)")
    else:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(f.params.items()) if v is not None)
        t.add_row("settings", escape(settings))
        domain = f.domain or {}
        t.add_row("scoring domain", escape(str(domain.get("domain", "none"))))
        for what in ("identity_classifier", "embedding"):
            m = domain.get(what)
            if isinstance(m, dict):
                t.add_row(what.replace("_", " "), escape(f"{m.get('model')} sha256 {m.get('sha256')}"))
        for line in f.not_checked:
            t.add_row("[bold magenta]not run[/]", escape(line))
    for reason, n in r.counts.reasons.items():  # the filter's reason per image, accepted ones' too
        t.add_row("images by reason", escape(f"{n} {reason}"))
    console.print(t)


def render_diff(d: ReleaseDiff) -> None:
    """`synthreg diff`: samples added and removed, then only what changed."""
    from rich.table import Table

    console = make_console()
    a, b = d.a, d.b
    s = d.samples
    t = Table(title=f"{a} -> {b}", title_justify="left")
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_column("first sample ids", overflow="fold")
    t.add_row("added", str(s.added), escape(", ".join(s.first_added[:5])))
    t.add_row("removed", str(s.removed), escape(", ".join(s.first_removed[:5])))
    console.print(t)
    if d.accepted_per_identity:
        ids = Table(title="accepted per identity (changed)", title_justify="left")
        for col in ("identity", a, b):
            ids.add_column(escape(col), justify="right")
        for identity, c in d.accepted_per_identity.items():
            ids.add_row(escape(identity), str(c.a), str(c.b))
        console.print(ids)
    for what in ("generators", "sources"):
        changes = [("+", x) for x in getattr(d, what).added] + [("-", x) for x in getattr(d, what).removed]
        if changes:
            ch = Table(title=f"{what} (changed)", title_justify="left")
            ch.add_column("")
            ch.add_column(what[:-1], overflow="fold")
            for sign, x in changes:
                ch.add_row(sign, escape(" ".join(map(str, x)) if isinstance(x, list) else str(x)))
            console.print(ch)
    if d.policy:
        pol = Table(title="policy results (changed)", title_justify="left")
        for col in ("rule", a, b):
            pol.add_column(escape(col))
        for rule, c in d.policy.items():
            pol.add_row(escape(rule), _status(c.a), _status(c.b))
        console.print(pol)
    if not (d.accepted_per_identity or d.policy or s.added or s.removed):
        console.print("no sample, count or policy result differs")
