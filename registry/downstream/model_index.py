"""Registered models at a glance: every version with the dataset it was trained on, the synthetic share
it really used (and the one asked), and its held-out metrics. ``synthreg models`` renders this.

    list_models(ws)   # -> [ModelRow(name, version, aliases, run_id, dataset, synthetic_share, ...)]

Read from MLflow by the conventions of :mod:`registry.downstream.tracking`; a version whose run logged no
synthreg
dataset says so (``dataset`` None) rather than being left out. MLflow is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from registry.downstream import tracking
from registry.downstream.claims import Claims
from registry.downstream.claims import load as load_claims
from registry.downstream.tracking import mlflow_errors
from registry.records.lineage import ClaimCheck, EvaluationSplit, ModelRow


def _paged(call: Any, **kw: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = call(page_token=token, **kw)
        out += list(page)
        token = page.token
        if not token:
            return out


def _float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _withdrawn(ws: Path, dataset: str | None) -> str | None:
    """Why ``dataset`` (NAME@X.Y.Z), or a version it was derived from, was withdrawn; None when neither
    was (or it is no released version)."""
    from registry.core.errors import SynthregError
    from registry.store.releases import PLAIN_SEMVER, load_release, versions
    from registry.trust.withdrawals import is_withdrawn

    seen: set[str] = set()
    ref = dataset
    while ref and ref not in seen:
        seen.add(ref)
        name, _, version = ref.partition("@")
        if not PLAIN_SEMVER.fullmatch(version) or version not in versions(ws, name):
            return None
        try:
            w = is_withdrawn(ws, name, version)
            if w is not None:
                return f"{ref} withdrawn on {w.day}: {w.reason}" + (
                    "" if w.trusted else " (untrusted record)"
                )
            parent = load_release(ws, ref).derived_from
        except SynthregError as e:  # a damaged record: say so rather than hide the model
            return f"{ref}: cannot tell ({e})"
        ref = parent.parent if parent else None
    return None


def evaluation_split(params: dict[str, str], run: Any) -> EvaluationSplit:
    """What a run's metrics were measured on (issue 21): ``train``'s own word (its ``evaluation_split``
    parameter, or the ``evaluation`` text of runs logged before it), else a synthreg dataset a user's script
    logged as its evaluation input (``log_dataset(..., context="evaluation")``: synthetic by definition),
    else ``unknown``: a run that does not say is never assumed to be judged on real data."""
    said = params.get(tracking.PARAM_EVAL_SPLIT)
    if said in ("real held-out", "synthetic"):
        return said  # type: ignore[return-value]
    text = params.get("evaluation") or ""
    if text.startswith("held-out real"):
        return "real held-out"
    if text.startswith("held-out synthetic"):
        return "synthetic"
    for di in run.inputs.dataset_inputs if run is not None and run.inputs else []:
        context = {t.key: t.value for t in di.tags}.get("mlflow.data.context")
        # "synthreg": the source type of every input log_dataset logs (registry.downstream.mlflow_source)
        if context in tracking.EVAL_CONTEXTS and di.dataset.source_type == "synthreg":
            return "synthetic"
    return "unknown"


def _claim(ws: Path, claims: Claims, run_id: str | None, dataset: str, tags: dict) -> ClaimCheck:
    """How far the run's claim to have trained on ``dataset`` is backed: against the release's manifest
    sha256 for a released version, the logged one for a working manifest."""
    from registry.core.errors import SynthregError
    from registry.store.releases import load_release

    sha = tags.get(tracking.TAG_MANIFEST)
    if not dataset.endswith(f"@{tracking.WORKING}"):
        try:
            sha = load_release(ws, dataset.replace("@v", "@")).manifest_sha256
        except SynthregError:
            return ClaimCheck(status="unsigned", why=f"{dataset} is not a release of this workspace")
    return claims.check(run_id, dataset, sha)


def list_models(ws: Path, name: str | None = None) -> list[ModelRow]:
    """Every registered model version (of ``name`` only, if given), newest version first per model."""
    uri = tracking.tracking_uri(ws)
    rows: list[ModelRow] = []
    claims = load_claims(ws)
    with mlflow_errors(uri):
        c = tracking.client(ws)
        models = _paged(c.search_registered_models, max_results=1000)
        # Every version at once, grouped here: a name with a quote in it cannot be put in a filter string
        # (MLflow's parser takes no escaped quote, so such a model was silently left out).
        by_name: dict[str, list[Any]] = {}
        for mv in _paged(c.search_model_versions, max_results=1000):
            by_name.setdefault(mv.name, []).append(mv)
        for m in sorted(models, key=lambda m: m.name):
            if name is not None and m.name != name:
                continue
            aliases: dict[str, list[str]] = {}
            for alias, version in (m.aliases or {}).items():
                aliases.setdefault(str(version), []).append(alias)
            for mv in sorted(by_name.get(m.name, []), key=lambda v: -int(v.version)):
                run = c.get_run(mv.run_id) if mv.run_id else None
                tags = dict(run.data.tags) if run else {}
                params = dict(run.data.params) if run else {}
                metrics = dict(run.data.metrics) if run else {}
                dataset = (
                    tags.get(tracking.TAG_DATASET)
                    or next((di.dataset.name for di in run.inputs.dataset_inputs), None)
                    if run
                    else None
                )
                rows.append(
                    ModelRow(
                        name=m.name,
                        version=str(mv.version),
                        aliases=sorted(aliases.get(str(mv.version), [])),
                        status=mv.status,
                        run_id=mv.run_id,
                        dataset=dataset,
                        unreleased=bool(dataset and dataset.endswith(f"@{tracking.WORKING}")),
                        manifest_sha256=tags.get(tracking.TAG_MANIFEST),
                        synthetic_share=_float(tags.get(tracking.TAG_SHARE)),
                        synthetic_share_asked=_float(
                            tags.get(tracking.TAG_SHARE_ASKED, params.get("synthetic_share"))
                        ),
                        accuracy=_float(metrics.get("accuracy")),
                        worst_group_gap=_float(metrics.get("worst_group_gap")),
                        evaluation=params.get("evaluation"),
                        metrics={k: v for k, v in sorted(metrics.items()) if _float(v) is not None},
                        withdrawn=_withdrawn(ws, dataset),
                        evaluation_split=evaluation_split(params, run),
                        claim=_claim(ws, claims, mv.run_id, dataset, tags) if dataset else None,
                    )
                )
    return rows


def format_models(rows: list[ModelRow]) -> list[str]:
    if not rows:
        return ["no registered models (train one: `synthreg train`)"]

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4g}"

    lines = []
    for r in rows:
        alias = f" @{',@'.join(r.aliases)}" if r.aliases else ""
        share = num(r.synthetic_share)
        if r.synthetic_share_asked is not None and r.synthetic_share_asked != r.synthetic_share:
            share += f" (asked {num(r.synthetic_share_asked)})"
        data = (r.dataset or "no synthreg dataset") + (" [UNRELEASED]" if r.unreleased else "")
        if r.accuracy is not None or not r.metrics:
            scores = f"accuracy {num(r.accuracy)}  gap {num(r.worst_group_gap)}"
        else:  # a user's own script logs its own metrics: show them rather than dashes
            scores = "  ".join(f"{k} {num(v)}" for k, v in list(r.metrics.items())[:4])
        split = f"  evaluated on {r.evaluation_split}"  # real held-out, synthetic or unknown (issue 21)
        lines.append(f"{r.name}/{r.version}{alias}  {data}  share {share}  {scores}  run {r.run_id}{split}")
        if r.withdrawn:
            lines.append(f"    WITHDRAWN DATA: {r.withdrawn}")
        if r.claim and r.claim.status == "unsigned":
            lines.append(f"    UNSIGNED CLAIM: {r.claim.why}")
        elif r.claim:
            lines.append(f"    claim {r.claim.status}: {r.claim.why}")
        if r.evaluation:
            lines.append(f"    evaluated on {r.evaluation}")
    return lines
