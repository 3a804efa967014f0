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
from datetime import UTC, datetime
from pathlib import Path

from registry.core.errors import ReleaseError, SynthregError
from registry.core.fsio import atomic_write_text
from registry.downstream import tracking
from registry.downstream.model_index import list_models
from registry.exports.report_html import dataset_page, model_page
from registry.lineage.trace import trace_model
from registry.records.lineage import ModelsSeen
from registry.records.release import Release
from registry.releases.report import licence_facts, read_report, report_data, signatures_seen, timeline
from registry.store.releases import load_outline, load_release, release_folder, versions
from registry.trust.withdrawals import is_withdrawn


def models_seen(ws: Path, name: str) -> ModelsSeen:
    """The registered model versions the MLflow store holds now that were trained on a version of dataset
    ``name`` (``synthreg models``' rows: metrics, synthetic share, evaluation split, withdrawn data), or
    why none can be listed: no store configured, or the store could not be read. MLflow is imported by
    ``list_models`` only when a store is there to ask."""
    import os

    now = datetime.now(UTC)
    if "MLFLOW_TRACKING_URI" not in os.environ and not (ws / "mlflow.db").is_file():
        why = "neither MLFLOW_TRACKING_URI nor mlflow.db in the workspace"
        return ModelsSeen(store=None, asked_at=now, error=why)
    try:
        store = tracking.shown(tracking.tracking_uri(ws))
    except SynthregError as e:
        return ModelsSeen(store=None, asked_at=now, error=str(e))
    try:
        rows = list_models(ws)
    except Exception as e:  # the report still shows everything else, and says what it could not ask
        return ModelsSeen(store=store, asked_at=now, error=f"{type(e).__name__}: {str(e)[:300]}")
    mine = [r for r in rows if r.dataset and r.dataset.partition("@")[0] == name]
    return ModelsSeen(store=store, asked_at=now, models=mine, others=len(rows) - len(mine))


def dataset_html(ws: Path, ref: str, trust: Path | str | None = None) -> str:
    """The report of a released version as it stands now: withdrawal, later versions, models, and every
    sign-off checked against the trust root ``trust`` (default: this machine's, ``load_trust``)."""
    record = load_release(ws, ref)
    folder = release_folder(ws, record.name, record.version)
    try:
        report = read_report(folder)
    except ValueError as e:
        raise ReleaseError(
            f"{folder / 'policy-report.json'} is not a valid policy report ({e}); restore it from git"
        ) from None
    others = [
        (load_outline(ws, f"{record.name}@{v}"), is_withdrawn(ws, record.name, v) is not None)
        for v in versions(ws, record.name)
        if v != record.version
    ]
    withdrawal = is_withdrawn(ws, record.name, record.version)
    return dataset_page(
        report_data(
            ws,
            folder,
            record,
            report,
            withdrawal=withdrawal,
            others=others,
            signatures=signatures_seen(ws, record.name, record.version, trust),
            models=models_seen(ws, record.name),
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
    assert t.model is not None  # trace_model raises when there is no such model
    m = t.model
    row = next((r for r in list_models(ws, m.name) if r.version == m.version), None)
    store = tracking.shown(tracking.tracking_uri(ws))
    facts = licence_facts(ws, {r.name for r, _ in released})
    return model_page(t, released, facts, events, note, row=row, store=store)


def write_report(
    ws: Path, out: Path, ref: str | None = None, model: str | None = None, trust: Path | str | None = None
) -> Path:
    """Render the report of ``ref`` (NAME@X.Y.Z) or ``model`` (NAME/VERSION) and write it to ``out``.
    Rendered in full before anything is written, and written atomically."""
    if (ref is None) == (model is None):
        raise SynthregError("give a dataset version NAME@X.Y.Z or --model NAME/VERSION, not both or neither")
    if ref is not None and "@" not in ref:
        raise ReleaseError(f"{ref!r} names no version; give NAME@X.Y.Z (see `synthreg list`)")
    text = dataset_html(ws, ref, trust) if ref is not None else model_html(ws, str(model))
    atomic_write_text(out, text)
    return out


def default_out(ws: Path, ref: str | None, model: str | None) -> Path:
    """``reports/NAME@X.Y.Z.html`` or ``reports/model-NAME-VERSION.html`` in the workspace; any character
    outside letters, digits, ``@._-`` becomes ``_``, so a hostile name cannot leave ``reports/``."""
    name = ref if ref is not None else f"model-{model}"
    return ws / "reports" / (re.sub(r"[^A-Za-z0-9@._-]", "_", name).lstrip(".") + ".html")
