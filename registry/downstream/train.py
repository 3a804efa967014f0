"""Training a downstream classifier on a real/synthetic mix, judged on held-out data, logged to MLflow.

    result = train(ws, TrainParams(synthetic_share=0.5), "digits@1.0.0")
    result.metrics["accuracy"], result.run_id, result.model_version

The mix follows Diff-Person (arXiv 2406.06045) and the survey arXiv 2310.01830: a few real images per
identity topped up with synthetic ones, the share raised step by step, judged on unseen real data.

- real part: ``real_per_class`` images per digit from the real train split (-1: all of it), chosen by
  ``seed``; ``train_size - n_synthetic`` of them are used (all, when the pool is smaller);
- synthetic part: ``round(synthetic_share * train_size)`` images from a released version (accepted rows,
  read from its shards by ``open_release``) or from the working filtered manifest
  (``data/NAME/filtered/manifest.parquet``, images from the candidate shards); ``use_rejected`` draws
  from every row instead, for the filtered-vs-unfiltered comparison;
- draws are nested: with one seed, the synthetic images of a smaller share are a subset of a larger
  one's, the real pool does not depend on the share, and fewer real images are a subset of more, so two
  mixes differ only in what the share changes;
- an epoch is ``train_size`` examples (a smaller actual set is cycled), so every mix gets the same number
  of gradient steps and a real-only run is not simply under-trained;
- evaluation: the held-out real split (360 images, never seen by the generator): accuracy, accuracy per
  identity, and the worst-group gap (max - min per-identity accuracy);
- any dataset: the classes are the dataset's identities and every image is turned grey and resized to
  ``image_size``. The real source is the sklearn digits (``real_source: auto`` picks it when every
  identity is a digit); a dataset without one trains on synthetic images alone and is evaluated on a
  seeded held-out synthetic split (``holdout_share``), which the run, the metrics file and the CLI say;
- the share really used (``n_synthetic / (n_real + n_synthetic)``) is logged beside the one asked
  (param, metric and tag), and ``TrainResult.notes`` says when they differ.

The run is logged by the conventions in ``registry.downstream.tracking``: a dataset input ``NAME@X.Y.Z``
(or ``NAME@working``) whose digest is the manifest's sha256 (``MLFLOW_DIGEST_CHARS`` of it) and profile
says what the data was (``registry.downstream.track``), the sample ids drawn as an artifact, the
``synthreg.*`` tags, and the model (``torch.export``: loading it needs no synthreg code) registered as
``registered_model`` or ``NAME-classifier``; and in the audit log (``train``). torch and MLflow are
imported inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry.core import vcs
from registry.core.digests import sha256_file
from registry.core.errors import AuditError, ConfigError, ManifestError, ReleaseError, TrackingError
from registry.core.workspace import inside
from registry.downstream import run_files, tracking
from registry.downstream.classifier import decode_png, fit_and_evaluate, resized
from registry.records.config import TrainParams
from registry.records.dataset import DATASET_NAME
from registry.records.lineage import WithdrawalState

CLASSES = [str(d) for d in range(10)]  # identity of a digit image = the digit
REAL_DIGITS = "sklearn-digits"  # the default domain's real source
SOURCE_TYPE = (
    "synthreg"  # MLflow dataset source type of the inputs logged here (registry.downstream.mlflow_source)
)


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_name: str
    model_version: str
    dataset: str  # the dataset input's name: NAME@X.Y.Z or NAME@working
    manifest_sha256: str
    n_real: int
    n_synthetic: int
    synthetic_share_used: float
    evaluation: str  # what the metrics were measured on, in words
    metrics: dict[str, float]
    metrics_path: Path
    notes: list[str]  # said to the user: a share that differs from the one asked, synthetic-only training


@dataclass(frozen=True)
class _Dataset:
    """A resolved dataset reference: what the run's input and tags say about it."""

    name: str
    version: str  # X.Y.Z or "working"
    manifest: Path
    manifest_sha256: str
    policy_report_sha256: str | None  # None: no policy report made for this manifest
    git_commit: str  # the commit the release was made from; HEAD for the working manifest
    release_ref: str | None  # NAME@X.Y.Z for a release

    @property
    def input_name(self) -> str:
        return f"{self.name}@{self.version}"


def _working_name(ws: Path) -> str:
    found = sorted(p.parent.parent.name for p in (ws / "data").glob("*/filtered/manifest.parquet"))
    if len(found) != 1:
        which = f"there are {len(found)} ({', '.join(found)})" if found else "there is none"
        raise ReleaseError(
            f"dataset 'working' needs exactly one filtered manifest under data/*/filtered, but {which}; "
            "name it, e.g. digits@working"
        )
    return found[0]


def _resolve(ws: Path, ref: str) -> _Dataset:
    """``NAME@X.Y.Z``, ``NAME`` (latest release), ``NAME@working`` or ``working`` -> what to train on."""
    from registry.store.releases import load_release, parse_ref, release_folder

    name, version = (_working_name(ws), tracking.WORKING) if ref == tracking.WORKING else parse_ref(ref)
    if not DATASET_NAME.fullmatch(name):
        raise ReleaseError(
            f"dataset {ref!r} is not NAME@X.Y.Z, NAME or NAME@working; see `synthreg list` for releases"
        )
    if version == tracking.WORKING:
        manifest = ws / "data" / name / "filtered" / "manifest.parquet"
        if not manifest.is_file():
            raise ManifestError(
                f"no filtered manifest for {name} at {manifest}; run `dvc repro filter` "
                f"(or `synthreg filter`), or train on a release ({name}@X.Y.Z)"
            )
        digest = sha256_file(manifest)
        report = ws / "data" / name / "policy" / "report.json"
        policy = None
        if report.is_file():
            try:
                made_for = json.loads(report.read_text()).get("manifest_sha256")
            except (ValueError, AttributeError):
                made_for = None
            policy = sha256_file(report) if made_for == digest else None  # a stale report names nothing
        return _Dataset(name, version, manifest, digest, policy, vcs.head(ws), None)
    record = load_release(ws, ref)
    manifest = release_folder(ws, record.name, record.version, record.manifest_path)
    if not manifest.is_file():
        raise ReleaseError(f"{manifest} is missing; run `dvc checkout` (or `dvc pull`) to restore it")
    if sha256_file(manifest) != record.manifest_sha256:  # the run would name content it did not read
        raise ReleaseError(
            f"the manifest of {record.name}@{record.version} does not match its release record; "
            f"run `synthreg verify {record.name}@{record.version}`"
        )
    return _Dataset(
        record.name,
        record.version,
        manifest,
        record.manifest_sha256,
        record.policy_report_sha256,
        record.git_commit,
        f"{record.name}@{record.version}",
    )


# --- data ------------------------------------------------------------------------------------------------


def _labels(identities: list[str], classes: list[str], where: str) -> np.ndarray:
    unknown = sorted(set(identities) - set(classes))
    if unknown:
        raise ManifestError(
            f"{where} has identities {unknown[:5]} that the real source sklearn-digits does not have "
            "(digits 0-9); set train.real_source: none to train on the synthetic images alone"
        )
    return np.array([classes.index(i) for i in identities], dtype=np.int64)


def _nested_pick(pool: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``n`` of one seeded permutation of ``range(pool)``, sorted: a smaller n picks a subset."""
    return np.sort(rng.permutation(pool)[: min(n, pool)])


@dataclass(frozen=True)
class _Pool:
    """The synthetic rows a run may draw from, in the release reader's order (by plan index), so a
    release and the working manifest it was made from give the same draw for the same seed."""

    ids: list[str]
    identities: list[str]
    read: Callable[[list[int]], list[bytes]]

    def images(self, pick: np.ndarray, size: int) -> np.ndarray:
        idx = [int(i) for i in pick]
        data = self.read(idx)
        if not idx:
            return np.zeros((0, size, size), np.uint8)
        return np.stack([decode_png(png, self.ids[i], size) for i, png in zip(idx, data, strict=True)])


def _pool(ws: Path, ds: _Dataset, use_rejected: bool, allow_withdrawn: bool = False) -> _Pool:
    if ds.release_ref is not None:
        from registry.releases.loader import open_release

        reader = open_release(
            ws, ds.release_ref, accepted_only=not use_rejected, allow_withdrawn=allow_withdrawn
        )
        return _Pool(
            reader.table["sample_id"].to_pylist(),
            reader.table["identity"].to_pylist(),
            lambda idx: [reader.image_bytes(i) for i in idx],
        )
    from registry.store import manifest as mf
    from registry.store.shards import iter_images

    where = "" if use_rejected else "WHERE decision = 'accepted'"
    con = mf.connect(ds.manifest)
    try:
        cols = (
            con.sql(
                "SELECT sample_id, identity, shard, member, image_sha256 "
                f"FROM manifest {where} ORDER BY index"
            )
            .to_arrow_table()
            .to_pydict()
        )
    finally:
        con.close()

    def read(idx: list[int]) -> list[bytes]:
        rows = [
            (cols["sample_id"][i], cols["shard"][i], cols["member"][i], cols["image_sha256"][i]) for i in idx
        ]
        found = dict(iter_images(ws, rows))
        return [found[r[0]] for r in rows]

    return _Pool(cols["sample_id"], cols["identity"], read)


def _real(split: Any, real_per_class: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, labels, pool size): ``n`` (at most the pool) of ``real_per_class`` per digit of ``split``."""
    rng = np.random.default_rng([seed, 0])
    pool = []
    for d in range(len(CLASSES)):
        idx = np.flatnonzero(split.labels == d)
        pool.append(idx if real_per_class < 0 else np.sort(rng.permutation(idx)[:real_per_class]))
    pool_idx = np.concatenate(pool)
    pick = pool_idx[_nested_pick(len(pool_idx), n, np.random.default_rng([seed, 1]))]
    return split.images[pick], split.labels[pick], len(pool_idx)


# --- model -----------------------------------------------------------------------------------------------


# --- MLflow ----------------------------------------------------------------------------------------------


def mlflow_source(uri: str):
    """An MLflow DatasetSource for ``synthreg://releases/...`` (:mod:`registry.downstream.mlflow_source`,
    which MLflow finds by its ``mlflow.dataset_source`` entry point in any process)."""
    from registry.downstream.mlflow_source import SynthregDatasetSource

    return SynthregDatasetSource(uri)


def model_name(params: TrainParams, dataset: str) -> str:
    """The registered model: ``params.registered_model``, else ``NAME-classifier`` after the dataset, so
    training another dataset never becomes the latest version of this one's model."""
    return params.registered_model or f"{dataset}-classifier"


def _log_run(
    ws: Path,
    params: TrainParams,
    ds: _Dataset,
    model: Any,
    logged: tuple[dict[str, Any], dict[str, float], list[str], float, list[Path]],
) -> tuple[str, str]:
    """Log one run by the ``registry.downstream.tracking`` conventions; register the model. ``logged``:
    the run's parameters, its metrics, the sample ids drawn, the share used, and the dataset's report
    files (``registry.downstream.run_files.report_files``).

    -> (run id, version)"""
    import mlflow
    import torch

    from registry.downstream import track

    run_params, metrics, samples, share_used, report = logged
    with warnings.catch_warnings():
        # Noise about MLflow's own chat-agent types, raised once on importing mlflow.pyfunc (mlflow 3.17).
        warnings.filterwarnings("ignore", ".*Any type hint is inferred as AnyType", UserWarning)
        import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    uri = tracking.tracking_uri(ws)
    name = model_name(params, ds.name)
    profile = track.describe(ws, ds.name, ds.version, ds.manifest, ds.git_commit)
    tags = {
        tracking.TAG_GIT: vcs.head(ws),
        tracking.TAG_SHARE: str(share_used),
        tracking.TAG_SHARE_ASKED: str(params.synthetic_share),
    }
    if ds.policy_report_sha256:
        tags[tracking.TAG_POLICY] = ds.policy_report_sha256
    size = params.image_size
    example = np.zeros((2, 1, size, size), dtype=np.float32)  # batch 2: exported with a dynamic batch
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    try:
        tracking.client(ws)
        mlflow.set_experiment(params.experiment)
        with mlflow.start_run() as run:
            mlflow.log_params(run_params)
            mlflow.set_tags(tags)
            track.log_profile(profile, "training", samples)
            for page in report:  # the dataset's report, beside the run's other synthreg artifacts
                mlflow.log_artifact(str(page), run_files.report_artifact_dir(ds.name, ds.version))
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                registered_model_name=name,
                signature=signature,
                input_example=example,
                # Explicit, so MLflow never infers requirements (it would import and probe packages).
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
            # On the run and on the logged model (MLflow 3), so models can be searched by accuracy.
            mlflow.log_metrics(metrics, model_id=info.model_id)
    except MlflowException as e:
        raise TrackingError(
            f"MLflow store {uri} refused the run: {e.message}; check MLFLOW_TRACKING_URI"
        ) from None
    except OSError as e:
        raise TrackingError(f"MLflow store {uri} cannot be written: {e}; check MLFLOW_TRACKING_URI") from e
    version = info.registered_model_version
    if version is None:
        raise TrackingError(f"MLflow did not register model {name!r} for run {run.info.run_id}")
    return run.info.run_id, str(version)


# --- the whole run ---------------------------------------------------------------------------------------


def _real_source(params: TrainParams, identities: list[str]) -> str:
    if params.real_source != "auto":
        return params.real_source
    return REAL_DIGITS if identities and set(identities) <= set(CLASSES) else "none"


@dataclass
class _Split:
    """What trains and what judges: the classes, the synthetic pool's labels and training rows, the real
    images mixed in, and the held-out evaluation set (real when the domain has one)."""

    classes: list[str]
    labels: np.ndarray
    train_idx: np.ndarray
    want_syn: int
    real_x: np.ndarray
    real_y: np.ndarray
    real_pool: int
    eval_x: np.ndarray
    eval_y: np.ndarray
    eval_ids: list[str]
    evaluation: str
    eval_params: dict[str, str]
    notes: list[str]


def _split(
    ds: _Dataset, pool: _Pool, params: TrainParams, real_source: str, found: list[str], want_syn: int
) -> _Split:
    """Real + synthetic judged on held-out real images (the sklearn digits for a digits dataset), or
    synthetic alone judged on a seeded held-out synthetic split, independent of the share."""
    size = params.image_size
    notes: list[str] = []
    if real_source == REAL_DIGITS:
        from generators.tiny_digits.real_digits import load_splits

        classes = list(CLASSES)
        labels = _labels(pool.identities, classes, ds.input_name)
        train_idx = np.arange(len(pool.ids))
        train_split, held_out = load_splits()  # held_out: never seen by the generator
        real_x, real_y, real_pool = _real(
            train_split, params.real_per_class, params.train_size - want_syn, params.seed
        )
        real_x = resized(real_x, size)
        eval_x, eval_y = resized(held_out.images, size), held_out.labels
        eval_ids: list[str] = []
        evaluation = (
            f"held-out real digits (sklearn-digits, {len(eval_y)} images never seen by the generator)"
        )
        eval_params = {
            "real_train_sha256": train_split.digest,
            "eval_sha256": held_out.digest,
            tracking.PARAM_EVAL_SPLIT: "real held-out",
        }
    else:
        classes = found
        if len(classes) < 2:
            raise ConfigError(
                f"{ds.input_name} has {len(classes)} identity ({', '.join(classes) or 'none'}); "
                "a classifier needs at least two"
            )
        labels = np.array([classes.index(i) for i in pool.identities], dtype=np.int64)
        # A seeded held-out split of the synthetic pool, independent of the share (so mixes compare).
        order = np.random.default_rng([params.seed, 3]).permutation(len(pool.ids))
        n_eval = max(1, round(params.holdout_share * len(pool.ids)))
        eval_idx, train_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:])
        eval_x, eval_y = pool.images(eval_idx, size), labels[eval_idx]
        eval_ids = [pool.ids[i] for i in eval_idx]
        real_x, real_y, real_pool = np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64), 0
        evaluation = (
            f"held-out synthetic split ({len(eval_y)} images of {ds.input_name}, not used for training): "
            "not real data, so this says how well the model fits the generator, not the real world"
        )
        eval_params = {
            "eval_sha256": hashlib.sha256("\n".join(eval_ids).encode()).hexdigest(),
            tracking.PARAM_EVAL_SPLIT: "synthetic",
        }
        notes.append(f"no real source for {ds.input_name}: trained on synthetic images only")
        if params.synthetic_share < 1:
            want_syn = params.train_size  # nothing real to mix in
    return _Split(
        classes,
        labels,
        train_idx,
        want_syn,
        real_x,
        real_y,
        real_pool,
        eval_x,
        eval_y,
        eval_ids,
        evaluation,
        eval_params,
        notes,
    )


def _audit_run(
    ws: Path,
    ds: _Dataset,
    params: TrainParams,
    name: str,
    version: str,
    run_id: str,
    withdrawn: WithdrawalState | None,
    share_used: float,
) -> None:
    """The train event (and allow-withdrawn, for a withdrawn release trained on knowingly)."""
    from registry.store import audit

    if withdrawn:  # trained on a withdrawn release, knowingly: say so where auditors look
        tracking.client(ws).set_tag(run_id, "synthreg.allow_withdrawn", withdrawn.reason[:500])
        audit.append(ws, "allow-withdrawn", ds.input_name, {"run_id": run_id, "withdrawal": withdrawn.reason})
    try:
        audit.append(
            ws,
            "train",
            f"{name}/{version}",
            {
                "run_id": run_id,
                "dataset": ds.input_name,
                "manifest_sha256": ds.manifest_sha256,
                "model": name,
                "model_version": version,
                "synthetic_share": params.synthetic_share,
                "synthetic_share_used": share_used,
            },
        )
    except AuditError as e:  # the run exists in MLflow: say so rather than leave it unmentioned
        raise AuditError(
            f"run {run_id} (model {name}/{version}) is logged in MLflow, but its train event could not be "
            f"appended to the audit log: {e}"
        ) from e


def _run_params(
    ds: _Dataset,
    params: TrainParams,
    real_source: str,
    sp: _Split,
    n_synthetic: int,
    syn_pool: int,
    share_used: float,
) -> dict[str, Any]:
    """What the MLflow run records as its parameters."""
    return {
        "dataset": ds.input_name,
        "synthetic_share": params.synthetic_share,
        "synthetic_share_used": share_used,
        "train_size": params.train_size,
        "real_per_class": params.real_per_class,
        "real_source": real_source,
        "use_rejected": params.use_rejected,
        "n_real": len(sp.real_x),
        "n_synthetic": n_synthetic,
        "real_pool": sp.real_pool,
        "synthetic_pool": syn_pool,
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "lr": params.lr,
        "seed": params.seed,
        "image_size": params.image_size,
        "classes": ",".join(sp.classes)[:500],
        "evaluation": sp.evaluation[:500],
        "eval_images": len(sp.eval_y),
        "model": "cnn2-conv16-conv32-linear",
        **sp.eval_params,
    }


def train(
    ws: Path,
    params: TrainParams,
    dataset: str | None = None,
    allow_withdrawn: bool = False,
    progress: Callable[..., None] | None = None,
) -> TrainResult:
    """Train on the mix ``params`` describes, evaluate on held-out data, log and register the model.

    With a real source (the sklearn digits for a digits dataset) the mix is real + synthetic and the
    model is judged on held-out real images; without one it trains on synthetic images alone and is
    judged on a held-out synthetic split, and says so. ``dataset`` overrides ``params.dataset``.
    Writes the metrics JSON (``params.metrics``, numbers only) and its side files for DVC
    (``registry.downstream.run_files``), logs the dataset's report with the run, and appends a ``train``
    audit event.
    A release must be final and trusted; a withdrawn one is refused unless ``allow_withdrawn``, which
    is then recorded as the run's tag ``synthreg.allow_withdrawn`` and an audit event.
    """

    ds = _resolve(ws, dataset or params.dataset)
    withdrawn: WithdrawalState | None = None
    subjects: dict[str, str] = {}
    if ds.release_ref is not None:  # trust, approval and withdrawal, before any work
        from registry.releases.loader import admit

        _, subjects, withdrawn = admit(ws, ds.release_ref, allow_withdrawn)
    metrics_path = inside(ws, params.metrics or f"data/{ds.name}/train/metrics.json", "metrics file")
    tracking.tracking_uri(ws)  # a malformed MLFLOW_TRACKING_URI fails before any work

    pool = _pool(ws, ds, params.use_rejected, allow_withdrawn)
    found = sorted(set(pool.identities))
    real_source = _real_source(params, found)
    size = params.image_size
    notes: list[str] = []
    want_syn = round(params.synthetic_share * params.train_size)
    sp = _split(ds, pool, params, real_source, found, want_syn)
    notes += sp.notes
    classes, labels, train_idx, want_syn = sp.classes, sp.labels, sp.train_idx, sp.want_syn
    real_x, real_y, real_pool = sp.real_x, sp.real_y, sp.real_pool
    eval_x, eval_y, eval_ids, evaluation = sp.eval_x, sp.eval_y, sp.eval_ids, sp.evaluation
    pick = train_idx[_nested_pick(len(train_idx), want_syn, np.random.default_rng([params.seed, 2]))]
    syn_x, syn_y = pool.images(pick, size), labels[pick]
    syn_pool = len(train_idx)
    if len(syn_x) + len(real_x) == 0:
        raise ConfigError(
            f"nothing to train on: {want_syn} synthetic images asked of {ds.input_name} "
            f"(pool {syn_pool}) and {params.train_size - want_syn} real (pool {real_pool}); "
            "raise train.real_per_class or train.synthetic_share"
        )
    x, y = np.concatenate([real_x, syn_x]), np.concatenate([real_y, syn_y])
    share_used = round(len(syn_x) / len(x), 4)
    if abs(share_used - params.synthetic_share) > 1e-9:
        notes.append(
            f"synthetic share used {share_used} differs from the {params.synthetic_share} asked: "
            f"{len(syn_x)} synthetic (pool {syn_pool}) + {len(real_x)} real (pool {real_pool}) images"
        )

    model, metrics = fit_and_evaluate(x, y, eval_x, eval_y, classes, params, progress)
    metrics["synthetic_share_used"] = share_used

    run_params = _run_params(ds, params, real_source, sp, len(syn_x), syn_pool, share_used)
    drawn = [pool.ids[i] for i in pick] + eval_ids
    report, missing = run_files.report_files(
        ws, ds.name, ds.version, ds.release_ref is not None, subjects, ds.policy_report_sha256
    )
    notes += [missing] if missing else []
    logged = (run_params, metrics, drawn, share_used, report)
    run_id, version = _log_run(ws, params, ds, model, logged)
    name = model_name(params, ds.name)
    _audit_run(ws, ds, params, name, version, run_id, withdrawn, share_used)
    info: dict[str, object] = {
        "dataset": ds.input_name,
        "manifest_sha256": ds.manifest_sha256,
        "run_id": run_id,
        "model": name,
        "model_version": version,
        "evaluation": evaluation,
        "report": [f"{run_files.report_artifact_dir(ds.name, ds.version)}/{p.name}" for p in report],
    }
    counts = {"n_real": len(real_x), "n_synthetic": len(syn_x), "synthetic_share": params.synthetic_share}
    run_files.write(metrics_path, info, counts | metrics, classes)
    return TrainResult(
        run_id=run_id,
        model_name=name,
        model_version=version,
        dataset=ds.input_name,
        manifest_sha256=ds.manifest_sha256,
        n_real=len(real_x),
        n_synthetic=len(syn_x),
        synthetic_share_used=share_used,
        evaluation=evaluation,
        metrics=metrics,
        metrics_path=metrics_path,
        notes=notes,
    )
