"""The HTML audit report as it stands now: a dataset version with its withdrawal, later versions and the
models trained on it, or a registered model with its data (``synthreg report``).

    dataset_html(ws, "digits@1.0.0")        # a released version as it stands now (withdrawn or not)
    model_html(ws, "digits-classifier/1")   # a registered model, its metrics per group and its data
    write_report(ws, out, ref=...)          # render first, then write atomically: nothing on bad input

Rendering is ``registry.exports.report_html``; what a version's page shows from the workspace is
gathered by ``registry.releases.report``, and here what needs MLflow and lineage.
"""

from __future__ import annotations

import re
from pathlib import Path

from registry.core.errors import ReleaseError, SynthregError
from registry.core.fsio import atomic_write_text
from registry.downstream import tracking
from registry.exports.report_html import dataset_page, escape, model_page
from registry.lineage.trace import trace_model
from registry.records.release import Release
from registry.releases.report import licence_facts, read_report, report_data, timeline
from registry.store.releases import load_release, release_folder, versions
from registry.trust.withdrawals import is_withdrawn


def models_using(ws: Path, refs: set[str]) -> tuple[list[dict], str]:
    """Registered model versions whose run logged one of ``refs`` as its dataset (by the tag that
    ``registry.downstream.tracking`` names), and a note when MLflow could not be asked."""
    import os

    if "MLFLOW_TRACKING_URI" not in os.environ and not (ws / "mlflow.db").is_file():
        return [], "<p class='note'>No MLflow store in this workspace: no model is known.</p>"
    try:
        c = tracking.client(ws)
        names = sorted({ref.partition("@")[0] for ref in refs})
        exps = [e.experiment_id for e in c.search_experiments()]
        runs: dict[str, str] = {}
        for name in names:
            for run in c.search_runs(
                exps, f"tags.`{tracking.TAG_DATASET}` LIKE '{name}@%'", max_results=1000
            ):
                ref = run.data.tags.get(tracking.TAG_DATASET, "")
                if ref in refs:
                    runs[run.info.run_id] = ref
        models = []
        for rid, ref in runs.items():
            for mv in c.search_model_versions(f"run_id = '{rid}'"):
                models.append({"name": mv.name, "version": str(mv.version), "run_id": rid, "datasets": [ref]})
    except Exception as e:  # the report still shows everything else, and says what it could not ask
        uri = escape(tracking.tracking_uri(ws))
        return [], f"<p class='note'>MLflow ({uri}) could not be read: {escape(e)}</p>"
    return sorted(models, key=lambda m: (m["name"], int(m["version"]))), ""


def dataset_html(ws: Path, ref: str) -> str:
    """The report of a released version as it stands now: withdrawal, later versions, models."""
    record = load_release(ws, ref)
    folder = release_folder(ws, record.name, record.version)
    try:
        report = read_report(folder)
    except ValueError as e:
        raise ReleaseError(
            f"{folder / 'policy-report.json'} is not a valid policy report ({e}); restore it from git"
        ) from None
    others = [
        (load_release(ws, f"{record.name}@{v}"), is_withdrawn(ws, record.name, v) is not None)
        for v in versions(ws, record.name)
        if v != record.version
    ]
    refs = {f"{r.name}@{r.version}" for r, _ in others} | {f"{record.name}@{record.version}"}
    models, note = models_using(ws, refs)
    withdrawal = is_withdrawn(ws, record.name, record.version)
    return dataset_page(
        report_data(
            ws, folder, record, report, withdrawal=withdrawal, others=others, models=models, models_note=note
        )
    )


def model_html(ws: Path, ref: str) -> str:
    """A registered model version (NAME/VERSION): its metrics overall and per group, the dataset
    versions it was trained on (status, policy, waivers, withdrawal), their licence chain and lineage."""
    t = trace_model(ws, ref)
    released: list[tuple[Release, bool]] = []
    for d in t.datasets:
        if d.released and d.release:
            r = load_release(ws, d.release)
            released.append((r, is_withdrawn(ws, r.name, r.version) is not None))
    events, note = timeline(ws, {r.name for r, _ in released})
    return model_page(t, released, licence_facts(ws, {r.name for r, _ in released}), events, note)


def write_report(ws: Path, out: Path, ref: str | None = None, model: str | None = None) -> Path:
    """Render the report of ``ref`` (NAME@X.Y.Z) or ``model`` (NAME/VERSION) and write it to ``out``.
    Rendered in full before anything is written, and written atomically."""
    if (ref is None) == (model is None):
        raise SynthregError("give a dataset version NAME@X.Y.Z or --model NAME/VERSION, not both or neither")
    if ref is not None and "@" not in ref:
        raise ReleaseError(f"{ref!r} names no version; give NAME@X.Y.Z (see `synthreg list`)")
    text = dataset_html(ws, ref) if ref is not None else model_html(ws, str(model))
    atomic_write_text(out, text)
    return out


def default_out(ws: Path, ref: str | None, model: str | None) -> Path:
    """``reports/NAME@X.Y.Z.html`` or ``reports/model-NAME-VERSION.html`` in the workspace; any character
    outside letters, digits, ``@._-`` becomes ``_``, so a hostile name cannot leave ``reports/``."""
    name = ref if ref is not None else f"model-{model}"
    return ws / "reports" / (re.sub(r"[^A-Za-z0-9@._-]", "_", name).lstrip(".") + ".html")
