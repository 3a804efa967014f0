"""The files around a ``synthreg train`` run: what it writes for DVC, and the report it logs to MLflow.

For DVC (issue 23: `dvc exp show` was 92 columns, mostly `…`, because the metrics file held strings and
digests), beside the metrics file ``data/NAME/train/metrics.json`` that dvc.yaml's train stage names:

``metrics.json``    numbers only: accuracy, worst-group gap, train loss, the share asked and used,
                    n_real, n_synthetic; what `dvc metrics show|diff` and `dvc exp show` tabulate
``run-info.json``   what the numbers belong to: the dataset, its manifest sha256, the MLflow run id,
                    the registered model and version, what the model was evaluated on (a plain output)
``per-class.json``  held-out accuracy per identity, one row each: a `dvc plots` bar chart
``mix.json``        one row (share asked, share used, accuracy, worst-group gap): `dvc plots diff` over
                    the experiments of a sweep draws accuracy against the synthetic share

A metrics file named other than ``metrics.json`` (``train.metrics``) gets its side files named after it
(``first.json`` -> ``first.run-info.json``), so two runs into one folder never share one.

For MLflow, the dataset's report: a release's ``report.html``, the HTML audit report signed with it
(logged only when its sha256 is the signed one); an unreleased (working) manifest has no HTML report, so
its run carries the policy report (``report.json`` and ``report.md``) made for that manifest, if any.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from registry.core.digests import sha256_file
from registry.core.fsio import atomic_write_text

PER_CLASS_PREFIX = "accuracy.identity_"  # the per-identity metrics' names (registry.downstream.classifier)
SIDE_FILES = ("run-info.json", "per-class.json", "mix.json")


def side_file(metrics: Path, name: str) -> Path:
    """``name`` (one of ``SIDE_FILES``) beside the metrics file ``metrics``."""
    return metrics.with_name(name if metrics.name == "metrics.json" else f"{metrics.stem}.{name}")


def write(
    metrics_path: Path, info: Mapping[str, object], numbers: dict[str, float], classes: list[str]
) -> None:
    """Write the metrics file and its side files. ``numbers``: every metric of the run, the per-identity
    accuracies (``accuracy.identity_<class>``) included; they go to ``per-class.json``, in class order."""
    per_class = [
        {"identity": c, "accuracy": numbers[f"{PER_CLASS_PREFIX}{c}"]}
        for c in classes
        if f"{PER_CLASS_PREFIX}{c}" in numbers
    ]
    plain = {k: v for k, v in numbers.items() if not k.startswith(PER_CLASS_PREFIX)}
    point = {
        k: plain[k]
        for k in ("synthetic_share", "synthetic_share_used", "accuracy", "worst_group_gap")
        if k in plain
    }
    for name, data in (
        ("run-info.json", info),
        ("per-class.json", per_class),
        ("mix.json", [point]),
    ):
        atomic_write_text(side_file(metrics_path, name), json.dumps(data, indent=2) + "\n")
    atomic_write_text(metrics_path, json.dumps(plain, indent=2) + "\n")  # last: DVC's view of the run


def report_files(
    ws: Path, name: str, version: str, released: bool, subjects: dict[str, str], policy_sha256: str | None
) -> tuple[list[Path], str | None]:
    """The dataset's report to log with a run -> (files, a note when there is none to log).

    ``subjects``: a release's signed subjects (path -> sha256); ``policy_sha256``: the working manifest's
    policy report digest (None: no report was made for this manifest)."""
    ref = f"{name}@{version}"
    if released:
        from registry.store.releases import release_folder

        page = release_folder(ws, name, version, "report.html")
        if page.is_file() and subjects.get("report.html") == sha256_file(page):
            return [page], None
        return [], (
            f"{ref}'s report.html is missing or not as signed, so the run carries no report; "
            f"run `synthreg verify {ref}`"
        )
    folder = ws / "data" / name / "policy"
    report = folder / "report.json"
    if policy_sha256 is None or not report.is_file() or sha256_file(report) != policy_sha256:
        return [], (
            f"no policy report was made for {ref}'s manifest, so the run carries none; "
            "run `synthreg validate` (or `dvc repro`) first to have it logged"
        )
    return [p for p in (report, folder / "report.md") if p.is_file()], None


def report_artifact_dir(name: str, version: str) -> str:
    """Where the report goes among the run's artifacts: ``synthreg/report/NAME/VERSION``."""
    return f"synthreg/report/{name}/{version}"
