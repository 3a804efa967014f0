"""Commands of lineage: trace run|model|image, impact, models; and the tables they print without
``--json`` (the same look as `show`).

Every fact and warning of the JSON is shown; digests are shown whole, folded when a column is too narrow
(never cut). The tables print to stdout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from registry.cli.common import (
    C2paTrustOpt,
    JsonOpt,
    Workspace,
    emit,
    errors,
    fail,
    make_console,
    workspace_root,
)

if TYPE_CHECKING:
    from registry.records.lineage import DatasetEntry, ImageTrace, Impact, RunTrace


def _emit_trace(result: RunTrace, as_json: bool) -> None:
    """Print a trace; then fail when part of it resolves nowhere (the output says where it looked)."""

    emit(result, as_json, render_trace)
    gone = result.unresolved or []
    if gone:
        u = gone[0]
        fail(
            f"{u.dataset} (manifest sha256 {u.manifest_sha256}) resolves nowhere; looked in "
            f"{'; '.join(u.looked)}; restore it (git/dvc checkout, dvc pull) to trace its images"
        )


def trace_run(
    run_id: Annotated[str, typer.Argument(help="MLflow run id")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A run's dataset versions -> generators (weights digest), prompts, seeds, sources, policy, withdrawn.

    Exits 1 after printing when a working manifest the run trained on resolves nowhere."""
    with errors():
        from registry.lineage import trace as lineage

        _emit_trace(lineage.trace_run(workspace_root(workspace), run_id), as_json)


def trace_model(
    ref: Annotated[str, typer.Argument(help="registered model NAME/VERSION, NAME/latest or NAME@ALIAS")],
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """A registered model version -> its run -> everything `trace run` shows (exit 1 as `trace run`)."""
    with errors():
        from registry.lineage import trace as lineage

        _emit_trace(lineage.trace_model(workspace_root(workspace), ref), as_json)


def trace_image(
    file: Annotated[Path, typer.Argument(help="image file")],
    as_json: JsonOpt = False,
    c2pa_trust: C2paTrustOpt = None,
    workspace: Workspace = None,
) -> None:
    """An image -> its sample record and every released version holding it (exact, else perceptual),
    and what its synthetic-media marking and C2PA content credentials say."""
    with errors():
        from registry.lineage.image import trace_credentials, trace_image
        from registry.store.marking import trace_marking
        from registry.trust.credentials import load_anchors

        ws = workspace_root(workspace)
        res = trace_image(ws, file)
        png = file.read_bytes()
        res.marking = trace_marking(png, res.images)  # issue 12: is it marked?
        first = res.images[0] if res.images else None
        res.c2pa = trace_credentials(ws, png, res.versions, first, load_anchors(c2pa_trust, ws))
        emit(res, as_json, render_image)


def impact(
    generator: Annotated[
        str | None, typer.Option(help="generator name or weights digest prefix (8+ hex)")
    ] = None,
    source: Annotated[str | None, typer.Option(help="real data source name")] = None,
    prompt: Annotated[str | None, typer.Option(help="regular expression over prompts")] = None,
    sample: Annotated[str | None, typer.Option(help="sample id")] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="a released version NAME@X.Y.Z: the runs and models trained on it"),
    ] = None,
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """Every dataset version, MLflow run and registered model that a generator, source, prompt or sample
    reached; or the runs and models trained on one version."""
    with errors():
        from registry.lineage.impact import impact as impact_of

        res = impact_of(workspace_root(workspace), generator, source, prompt, sample, version)
        emit(res, as_json, render_impact)


def models(
    name: Annotated[str | None, typer.Argument(help="only this registered model")] = None,
    as_json: JsonOpt = False,
    workspace: Workspace = None,
) -> None:
    """Registered models: each version's dataset, synthetic share (used and asked) and held-out metrics."""
    with errors():
        from registry.downstream.model_index import format_models, list_models

        rows = list_models(workspace_root(workspace), name)
        emit({"models": rows}, as_json, lambda _: format_models(rows))


# --- tables -------------------------------------------------------------------------------------------

FLAG = "[bold red]{}[/]"


def _e(value: object) -> str:
    """A cell from data, escaped whole; ``-`` for a fact that is absent."""
    return escape("-" if value is None else str(value))


def _fields(title: str) -> Any:
    """A two-column table of facts, as `show` prints the head of a version."""
    from rich.table import Table

    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    return t


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    return t


def _warnings(console: Any, warnings: list[str], title: str = "warnings") -> None:
    if warnings:
        t = _table(title, "warning")
        for w in warnings:
            t.add_row(FLAG.format(escape(w)))
        console.print(t)


def _samples_rows(t: Any, d: DatasetEntry, recipe_sha: bool) -> None:
    s, f = d.samples, d.filter
    if s:
        recipe = f"recipe seed {d.recipe_seed}" + (f", recipe sha256 {d.recipe_sha256}" if recipe_sha else "")
        seeds = f"seeds {s.seed_min}..{s.seed_max}"
        # a logged profile may say anything: every cell built from data is escaped whole
        t.add_row("samples", escape(f"{s.count} ({s.accepted} accepted); {seeds} ({recipe})"))
    if f:
        reasons = ", ".join(f"{k} {v}" for k, v in f.reasons.items())
        t.add_row("filter", escape(f"{f.accepted} accepted / {f.rejected} rejected ({reasons})"))


def _lineage_tables(console: Any, d: DatasetEntry, name: str) -> None:
    """A traced dataset's generators, prompt templates and sources (and waivers, when released)."""
    gens = _table(f"{name}: generators", "name", "backend", "licence", "weights sha256", "images")
    for g in d.generators:
        names = (_e(g.name), _e(g.backend), _e(g.licence))
        gens.add_row(*names, escape(str(g.weights_digest)), escape(str(g.images)))
    console.print(gens)
    if d.prompt_templates:
        prompts = _table(f"{name}: prompt templates", "template")
        for p in d.prompt_templates:
            prompts.add_row(escape(repr(p)))
        console.print(prompts)
    if d.sources:
        srcs = _table(f"{name}: sources", "name", "role", "status", "licence", "identities")
        for src in d.sources:
            status = escape(src.status)
            if src.withdrawn_since is not None:
                status += ", " + FLAG.format("now on the withdrawn list")
            only = ", ".join(src.identities or []) or "all"
            srcs.add_row(_e(src.name), _e(src.role), status, _e(src.licence), _e(only))
        console.print(srcs)
    waivers = d.policy.waivers if d.policy else []
    if waivers:
        wt = _table(f"{name}: waivers", "rule", "approver", "expires", "reason")
        for w in waivers:
            wt.add_row(escape(w.rule_id), escape(w.approver), escape(str(w.expires)), escape(w.reason))
        console.print(wt)


def _dataset(console: Any, d: DatasetEntry) -> None:
    title = f"dataset {d.name}" + (f" ({d.context})" if d.context else "")
    if d.withdrawn:
        title += " ** WITHDRAWN **"
    t = _fields(escape(title))
    t.add_row("logged digest", escape(str(d.digest)))
    t.add_row("logged source", escape(d.source_url or "-"))
    for w in d.warnings:
        t.add_row("warning", FLAG.format(escape(w)))
    if d.drawn:
        x = d.drawn
        t.add_row(
            "drew",
            escape(f"{x.count} sample(s), listed in artifact {x.artifact} (sha256 {x.sha256})"),
        )
    notes = [("note", escape(n)) for n in d.notes]
    if d.unreleased:
        t.add_row("status", FLAG.format("UNRELEASED"))
        t.add_row("manifest sha256", _e(d.manifest_sha256))
        t.add_row("DVC md5", escape(d.dvc_md5 or "-"))
        if d.resolved:
            t.add_row("found in", _e(d.resolved_from))
        else:
            t.add_row("found in", FLAG.format("NOT FOUND") + "; looked in " + escape("; ".join(d.looked)))
        if d.samples:  # from the manifest or the run's logged profile
            _samples_rows(t, d, recipe_sha=True)
        passed = d.policy.passed if d.policy else None
        verdict = {True: "passed", False: FLAG.format("FAILED"), None: "never validated"}[passed]
        t.add_row("policy (as logged)", verdict)
    elif d.released:
        if d.digest_matches:
            t.add_row("digest", f"matches the release's manifest sha256 ({_e(d.digest_compared)})")
        else:
            t.add_row("digest", FLAG.format("DOES NOT MATCH the release's manifest sha256"))
        when = f"{d.created_at:%Y-%m-%dT%H:%M}" if d.created_at else "-"
        t.add_row("released", escape(f"{when} by {d.actor}"))
        t.add_row("git commit", _e(d.git_commit))
        t.add_row("licence", _e(d.dataset_licence))
        if d.derived_from:
            p = d.derived_from
            only = f" (sources {', '.join(p.excluded_sources)})" if p.excluded_sources else ""
            t.add_row("derived from", escape(f"{p.parent} without {p.removed} sample(s): {p.reason}{only}"))
        _samples_rows(t, d, recipe_sha=False)
        if d.policy:
            bad = {k: v for k, v in d.policy.results.items() if v != "pass"}
            verdict = "passed" if d.policy.passed else FLAG.format("FAILED")
            t.add_row("policy", verdict + (f" ({escape(str(bad))})" if bad else ""))
    for row in notes:
        t.add_row(*row)
    console.print(t)
    if d.unreleased or d.released:
        _lineage_tables(console, d, escape(d.name))


def render_trace(t: RunTrace) -> None:
    """`trace run` / `trace model`: the model and run, then each dataset it logged with its lineage."""
    from registry.downstream import tracking

    console = make_console()
    run = t.run
    m = t.model
    head = _fields(escape(f"model {m.name}/{m.version}" if m else f"run {run.run_id}"))
    if m:
        head.add_row("model", escape(f"{m.name}/{m.version} ({m.status})"))
    where = f"in experiment {run.experiment_id}, {run.status}"
    head.add_row("run", escape(f"{run.run_id} ({run.run_name}) {where}"))
    head.add_row("tracking URI", escape(t.tracking_uri))
    share = run.tags.get(tracking.TAG_SHARE)
    if share is not None:
        head.add_row("synthetic share", escape(str(share)))
    console.print(head)
    for d in t.datasets:
        _dataset(console, d)
    shown = {w for d in t.datasets for w in d.warnings}
    _warnings(console, [w for w in t.warnings if w not in shown])


def render_image(t: ImageTrace) -> None:
    """`trace image`: how the file matched, each sample with the versions holding it, its marking."""
    console = make_console()
    how = "exact sha256" if t.match == "exact" else f"perceptual hash (phash {t.phash})"
    head = _fields(escape(str(t.file)))
    head.add_row("matched", escape(f"{len(t.images)} sample(s) by {how}"))
    head.add_row("in", escape(", ".join(t.versions)))
    mark = t.marking
    if mark:
        head.add_row("marking", escape(mark.summary))
        for p in mark.problems:
            head.add_row("marking problem", FLAG.format(escape(p)))
    c2pa = t.c2pa
    # none found, none asked: nothing to say
    if c2pa and (c2pa.found is not None or c2pa.asked_by or c2pa.unchecked):
        head.add_row("C2PA", escape(c2pa.summary))
        if c2pa.asked_by:
            head.add_row("C2PA required by", escape(", ".join(c2pa.asked_by)))
        for p in c2pa.problems:
            head.add_row("C2PA problem", FLAG.format(escape(p)))
    console.print(head)
    for im in t.images:
        s = _fields(escape(f"sample {im.sample_id}"))
        s.add_row("identity", escape(str(im.identity)))
        if t.match != "exact":
            s.add_row("distance", escape(str(im.distance)))
        s.add_row("generator", escape(f"{im.generator_name} [{im.generator_licence}]"))
        s.add_row("weights sha256", escape(im.weights_digest))
        s.add_row("prompt", escape(repr(im.prompt)))
        s.add_row("negative prompt", escape(repr(im.negative_prompt)))
        size = f"{im.width}x{im.height}"
        s.add_row("sampling", escape(f"seed {im.seed}, {im.steps} steps, guidance {im.guidance}, {size}"))
        s.add_row("image sha256", escape(im.image_sha256))
        s.add_row("stored in", escape(f"{im.shard}:{im.member}"))
        console.print(s)
        vt = _table(escape(f"sample {im.sample_id}: versions"), "version", "decision", "reason", "status")
        for v in im.versions:
            flag = FLAG.format("WITHDRAWN") if v.withdrawn else "released"
            vt.add_row(escape(v.release), escape(str(v.decision)), escape(str(v.reason)), flag)
        console.print(vt)
        if im.versions and im.versions[0].sources:
            st = _table(escape(f"sample {im.sample_id}: sources"), "name", "role", "status", "licence")
            for src in im.versions[0].sources:
                st.add_row(_e(src.name), _e(src.role), _e(src.status), _e(src.licence))
            console.print(st)
    _warnings(console, t.warnings)


def render_impact(t: Impact) -> None:
    """`impact`: the counts, then every version, run and model version reached."""
    console = make_console()
    ((kind, value),) = t.selector.items()
    c = t.counts
    head = _fields(escape(f"{kind} {value!r}"))
    reached = (
        f"{c.versions} version(s), {c.samples} sample(s) ({c.accepted} accepted), "
        f"{c.runs} run(s), {c.model_versions} model version(s)"
    )
    head.add_row("reached", escape(reached))
    console.print(head)
    if t.versions:
        vt = _table("dataset versions", "version", "samples", "accepted", "status")
        for v in t.versions:
            status = FLAG.format("WITHDRAWN") if v.withdrawn else "released"
            if v.unreleased:
                status = FLAG.format("UNRELEASED") + escape(
                    f" (manifest {v.manifest_sha256} in {v.resolved_from})"
                )
            vt.add_row(escape(v.release), escape(str(v.samples)), escape(str(v.accepted)), status)
        console.print(vt)
    runs = t.runs or t.unresolved_runs
    if runs:
        cols = ["run", "name", "experiment", "status", "datasets", "input", "claim"]
        if "sample" in t.selector:
            cols.append("drew the sample")
        rt = _table("MLflow runs", *cols)
        for r in t.runs:
            row = [escape(str(x)) for x in (r.run_id, r.run_name, r.experiment_id, r.status)]
            row.append(escape(", ".join(r.datasets)))
            row.append(FLAG.format("UNRELEASED") if r.unreleased else "released")
            claim = r.claim.status if r.claim else "unsigned"
            row.append(FLAG.format("UNSIGNED") if claim == "unsigned" else escape(claim))
            if "sample" in t.selector:
                row.append({True: "yes", False: "no", None: "unknown"}[r.drew])
            rt.add_row(*row)
        for u in t.unresolved_runs:
            why = FLAG.format("UNRESOLVED") + escape(f" ({u.why})")
            row = [_e(u.run_id), "", "", "", _e(u.dataset), why, FLAG.format("UNSIGNED")]
            rt.add_row(*row, *([""] if "sample" in t.selector else []))
        console.print(rt)
    if t.model_versions:
        mt = _table("registered model versions", "model", "status", "from run")
        for m in t.model_versions:
            mt.add_row(escape(f"{m.name}/{m.version}"), _e(m.status), _e(m.run_id))
        console.print(mt)
    _warnings(console, t.warnings)
