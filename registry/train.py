"""Training a downstream classifier on a real/synthetic mix, judged on held-out real digits, logged to MLflow.

    result = train(ws, TrainParams(synthetic_share=0.5), "digits@1.0.0")
    result.metrics["accuracy"], result.run_id, result.model_version

The mix follows Diff-Person (arXiv 2406.06045) and the synthetic-data survey (arXiv 2310.01830): a few
real images per identity, topped up with synthetic ones, the synthetic share raised step by step and
judged by downstream results on real data the generator never saw.

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
  identity, and the worst-group gap (max - min per-identity accuracy).

The run is logged by the conventions in ``registry.tracking``: a dataset input named ``NAME@X.Y.Z`` (or
``NAME@working``) whose digest is the manifest's sha256 (as much of it as MLflow stores: see
``MLFLOW_DIGEST_CHARS``), the ``synthreg.*`` tags, and the model
(``torch.export`` format, so loading it needs no synthreg code) registered under ``registered_model``.
torch and MLflow are imported inside the functions.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from registry import tracking
from registry.config import TrainParams
from registry.digests import sha256_file
from registry.errors import ConfigError, ManifestError, ReleaseError, TrackingError
from registry.fsio import atomic_write_text
from registry.models import DATASET_NAME
from registry.real_digits import IMAGE_SIZE
from registry.workspace import inside

CLASSES = [str(d) for d in range(10)]  # identity of a digit image = the digit
SOURCE_TYPE = "synthreg"  # MLflow dataset source type of the inputs logged here
# MLflow stores a dataset digest in 36 characters at most (mlflow/utils/validation.py
# MAX_DATASET_DIGEST_SIZE, the datasets.digest VARCHAR(36) column): a sha256 (64 hex) does not fit. The
# input's digest is the manifest sha256's first 36 hex characters (144 bits); the whole sha256 is in the
# input's profile ({"manifest_sha256": ...}) and in the tag synthreg.manifest_sha256.
MLFLOW_DIGEST_CHARS = 36
_SIZE = IMAGE_SIZE  # the real digits' size; synthetic images must match


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_version: str
    dataset: str  # the dataset input's name: NAME@X.Y.Z or NAME@working
    manifest_sha256: str
    n_real: int
    n_synthetic: int
    metrics: dict[str, float]
    metrics_path: Path


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


def _head(ws: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


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
    from registry.release import RELEASES, load_release, parse_ref

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
        return _Dataset(name, version, manifest, digest, policy, _head(ws), None)
    record = load_release(ws, ref)
    manifest = ws / RELEASES / record.name / record.version / record.manifest_path
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


def _labels(identities: list[str], where: str) -> np.ndarray:
    unknown = sorted(set(identities) - set(CLASSES))
    if unknown:
        raise ManifestError(
            f"{where} has identities {unknown[:5]} that are not digits 0-9; "
            "synthreg train evaluates on real digits and trains digit datasets only"
        )
    return np.array([CLASSES.index(i) for i in identities], dtype=np.int64)


def _decode(png: bytes, sample_id: str) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("L")
    if img.size != (_SIZE, _SIZE):
        raise ManifestError(
            f"sample {sample_id} is {img.size[0]}x{img.size[1]}; synthreg train needs {_SIZE}x{_SIZE} "
            "images like the real digits"
        )
    return np.asarray(img, dtype=np.uint8)


def _nested_pick(pool: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``n`` of one seeded permutation of ``range(pool)``, sorted: a smaller n picks a subset."""
    return np.sort(rng.permutation(pool)[: min(n, pool)])


def _synthetic(
    ws: Path, ds: _Dataset, use_rejected: bool, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(images uint8 (k, 16, 16), labels, pool size): ``n`` rows (at most the pool) drawn by ``seed``."""
    rng = np.random.default_rng([seed, 2])
    if ds.release_ref is not None:
        from registry.loader import open_release

        reader = open_release(ws, ds.release_ref, accepted_only=not use_rejected)
        pool = len(reader)
        pick = _nested_pick(pool, n, rng)
        ids = reader.table["sample_id"].to_pylist()
        images = [_decode(reader.image_bytes(int(i)), ids[i]) for i in pick]
        identities = reader.table["identity"].to_pylist()
    else:
        from registry import manifest as mf
        from registry.shards import iter_images

        where = "" if use_rejected else "WHERE decision = 'accepted'"
        # The release reader's order (by plan index), so a release and the working manifest it was
        # made from give the same draw for the same seed.
        table = (
            mf.connect(ds.manifest)
            .sql(
                "SELECT sample_id, identity, shard, member, image_sha256 "
                f"FROM manifest {where} ORDER BY index"
            )
            .to_arrow_table()
        )
        pool = table.num_rows
        pick = _nested_pick(pool, n, rng)
        cols = table.to_pydict()
        rows = [
            (cols["sample_id"][i], cols["shard"][i], cols["member"][i], cols["image_sha256"][i]) for i in pick
        ]
        pixels = {sid: _decode(png, sid) for sid, png in iter_images(ws, rows)}
        images = [pixels[r[0]] for r in rows]
        identities = cols["identity"]
    labels = _labels([identities[i] for i in pick], ds.input_name)
    stacked = np.stack(images) if images else np.zeros((0, _SIZE, _SIZE), np.uint8)
    return stacked, labels, pool


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


def _cnn():
    """Two conv layers and a linear head: 16x16 grey -> 10 digits (about 10K parameters)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (_SIZE // 4) ** 2, len(CLASSES)),
    )


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)


def _fit(
    images: np.ndarray, labels: np.ndarray, params: TrainParams, progress: Callable[..., None] | None = None
) -> tuple[Any, float]:
    import torch

    torch.manual_seed(params.seed)
    model = _cnn()
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    x, y = _tensor(images), torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(params.seed)
    reps = math.ceil(params.train_size / len(x))
    loss = torch.tensor(float("nan"))
    model.train()
    for epoch in range(params.epochs):
        if progress:
            progress(epoch, params.epochs, f"loss {loss.item():.4f}" if epoch else "")
        order = torch.cat([torch.randperm(len(x), generator=gen) for _ in range(reps)])[: params.train_size]
        for start in range(0, len(order), params.batch_size):
            batch = order[start : start + params.batch_size]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
    if progress:
        progress(params.epochs, params.epochs, f"loss {loss.item():.4f}")
    model.eval()
    return model, loss.detach().item()


def _evaluate(model: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    import torch

    with torch.no_grad():
        pred = model(_tensor(images)).argmax(dim=1).numpy()
    per = {CLASSES[d]: float((pred[labels == d] == d).mean()) for d in range(len(CLASSES))}
    return {
        "accuracy": float((pred == labels).mean()),
        "worst_group_gap": max(per.values()) - min(per.values()),
        **{f"accuracy.identity_{k}": v for k, v in per.items()},
    }


# --- MLflow ----------------------------------------------------------------------------------------------

_source_class: Any = None


def mlflow_source(uri: str):
    """An MLflow DatasetSource for ``synthreg://releases/...`` (type ``synthreg``, JSON ``{"uri": ...}``).

    MLflow's HTTPDatasetSource would accept the string but claim type ``http`` and try to download it
    on ``load()``; a release is opened with ``registry.open_release`` instead. The class is registered
    with MLflow, so ``mlflow.data.get_source(dataset_input)`` parses it back in this process.
    """
    global _source_class
    if _source_class is None:
        from mlflow.data.dataset_source import DatasetSource
        from mlflow.data.dataset_source_registry import register_dataset_source

        class SynthregDatasetSource(DatasetSource):
            def __init__(self, uri: str) -> None:
                self.uri = uri

            @staticmethod
            def _get_source_type() -> str:
                return SOURCE_TYPE

            def load(self) -> str:
                raise TrackingError(
                    f"{self.uri} is a synthreg release; read it with registry.open_release(ws, 'NAME@X.Y.Z')"
                )

            @staticmethod
            def _can_resolve(raw_source: Any) -> bool:
                return isinstance(raw_source, str) and raw_source.startswith(f"{SOURCE_TYPE}://")

            @classmethod
            def _resolve(cls, raw_source: Any) -> SynthregDatasetSource:
                return cls(raw_source)

            def to_dict(self) -> dict[str, Any]:
                return {"uri": self.uri}

            @classmethod
            def from_dict(cls, source_dict: dict[Any, Any]) -> SynthregDatasetSource:
                return cls(source_dict["uri"])

        # MLflow annotates the argument as an instance, but registers (and needs) the class.
        register_dataset_source(SynthregDatasetSource)  # type: ignore[arg-type]
        _source_class = SynthregDatasetSource
    return _source_class(uri)


def _input(ds: _Dataset, source: Any):
    """The run's dataset input: metadata only (MetaDataset), digest and profile as said at the top.

    MLflow keeps one row per (experiment, name, digest), so the profile holds facts of the dataset only,
    never of the run (which images it drew are run params).
    """
    from mlflow.data.meta_dataset import MetaDataset

    profile = {"manifest_sha256": ds.manifest_sha256}

    class ReleaseInput(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return profile

        def to_dict(self) -> dict[str, str]:
            return super().to_dict() | {"profile": json.dumps(profile, sort_keys=True)}

    return ReleaseInput(source, name=ds.input_name, digest=ds.manifest_sha256[:MLFLOW_DIGEST_CHARS])


def _log_run(
    ws: Path,
    params: TrainParams,
    ds: _Dataset,
    run_params: dict[str, Any],
    metrics: dict[str, float],
    model: Any,
) -> tuple[str, str]:
    """Log one run by the ``registry.tracking`` conventions; register the model. -> (run id, version)."""
    import mlflow
    import torch

    with warnings.catch_warnings():
        # Noise about MLflow's own chat-agent types, raised once on importing mlflow.pyfunc (mlflow 3.17).
        warnings.filterwarnings("ignore", ".*Any type hint is inferred as AnyType", UserWarning)
        import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    uri = tracking.tracking_uri(ws)
    source = tracking.dataset_source(ds.name, ds.version, ds.git_commit)
    tags = {
        tracking.TAG_DATASET: ds.input_name,
        tracking.TAG_MANIFEST: ds.manifest_sha256,
        tracking.TAG_GIT: _head(ws),
        tracking.TAG_SHARE: str(params.synthetic_share),
    }
    if ds.policy_report_sha256:
        tags[tracking.TAG_POLICY] = ds.policy_report_sha256
    example = np.zeros((2, 1, _SIZE, _SIZE), dtype=np.float32)  # batch 2: exported with a dynamic batch
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    try:
        tracking.client(ws)
        mlflow.set_experiment(params.experiment)
        with mlflow.start_run() as run:
            mlflow.log_params(run_params)
            mlflow.set_tags(tags)
            mlflow.log_input(_input(ds, mlflow_source(source)), context="training")
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                registered_model_name=params.registered_model,
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
        raise TrackingError(
            f"MLflow did not register model {params.registered_model!r} for run {run.info.run_id}"
        )
    return run.info.run_id, str(version)


# --- the whole run ---------------------------------------------------------------------------------------


def train(
    ws: Path, params: TrainParams, dataset: str | None = None, progress: Callable[..., None] | None = None
) -> TrainResult:
    """Train on the mix ``params`` describes, evaluate on held-out real digits, log and register the model.

    ``dataset`` overrides ``params.dataset``. Writes the metrics JSON (``params.metrics``) for DVC.
    """
    import torch

    from registry.real_digits import load_splits

    ds = _resolve(ws, dataset or params.dataset)
    metrics_path = inside(ws, params.metrics or f"data/{ds.name}/train/metrics.json", "metrics file")
    tracking.tracking_uri(ws)  # a malformed MLFLOW_TRACKING_URI fails before any work

    want_syn = round(params.synthetic_share * params.train_size)
    syn_x, syn_y, syn_pool = _synthetic(ws, ds, params.use_rejected, want_syn, params.seed)
    train_split, held_out = load_splits()  # held_out: never seen by the generator
    real_x, real_y, real_pool = _real(
        train_split, params.real_per_class, params.train_size - want_syn, params.seed
    )
    if len(syn_x) + len(real_x) == 0:
        raise ConfigError(
            f"nothing to train on: {want_syn} synthetic images asked of {ds.input_name} "
            f"(pool {syn_pool}) and {params.train_size - want_syn} real (pool {real_pool}); "
            "raise train.real_per_class or train.synthetic_share"
        )
    x, y = np.concatenate([real_x, syn_x]), np.concatenate([real_y, syn_y])

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(params.threads)
    torch.use_deterministic_algorithms(True)
    try:
        model, last_loss = _fit(x, y, params, progress)  # progress(epoch, epochs, "loss ...")
        metrics = _evaluate(model, held_out.images, held_out.labels)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    metrics["train_loss"] = last_loss

    run_params = {
        "dataset": ds.input_name,
        "synthetic_share": params.synthetic_share,
        "train_size": params.train_size,
        "real_per_class": params.real_per_class,
        "use_rejected": params.use_rejected,
        "n_real": len(real_x),
        "n_synthetic": len(syn_x),
        "real_pool": real_pool,
        "synthetic_pool": syn_pool,
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "lr": params.lr,
        "seed": params.seed,
        "real_train_sha256": train_split.digest,
        "eval_sha256": held_out.digest,
        "eval_images": len(held_out.labels),
        "model": "cnn2-conv16-conv32-linear",
    }
    run_id, version = _log_run(ws, params, ds, run_params, metrics, model)
    summary = {
        "dataset": ds.input_name,
        "manifest_sha256": ds.manifest_sha256,
        "run_id": run_id,
        "model_version": version,
        "n_real": len(real_x),
        "n_synthetic": len(syn_x),
        "synthetic_share": params.synthetic_share,
        **metrics,
    }
    atomic_write_text(metrics_path, json.dumps(summary, indent=2) + "\n")
    return TrainResult(
        run_id=run_id,
        model_version=version,
        dataset=ds.input_name,
        manifest_sha256=ds.manifest_sha256,
        n_real=len(real_x),
        n_synthetic=len(syn_x),
        metrics=metrics,
        metrics_path=metrics_path,
    )
