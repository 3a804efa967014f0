"""Train a classifier on a synthreg release with plain PyTorch (not `synthreg train`), and log it to
MLflow so that `synthreg trace model` and `synthreg impact` find it.

    python examples/train_plain.py --workspace . --dataset digits@1.0.0 --epochs 3

The only synthreg calls: `registry.open_release` (read the release from its shards) and
`registry.log_dataset` (log it as the run's input, with its content digest and the sample ids drawn).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import mlflow
import mlflow.pytorch
import torch
from torch import nn

import registry


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", default=".", help="the synthreg workspace")
    ap.add_argument("--dataset", required=True, help="a release, NAME@X.Y.Z")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-name", default=None, help="registered model (default NAME-plain)")
    args = ap.parse_args(argv)
    ws = Path(args.workspace).resolve()

    reader = registry.open_release(ws, args.dataset)  # accepted images, digests checked as read
    data = reader.torch_dataset()  # (float tensor C x H x W in [0, 1], identity index)
    torch.manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True)
    x0, _ = data[0]
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(x0.numel(), 64), nn.ReLU(), nn.Linear(64, len(data.classes))
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.epochs):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)

    uri = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ws / 'mlflow.db'}")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # else $MLFLOW_REGISTRY_URI, if set, wins for the model
    mlflow.set_experiment("plain-pytorch")
    name = args.model_name or f"{reader.release.name}-plain"
    with mlflow.start_run() as run:
        # Every image the loop read: the whole release here (a subset would list only its ids).
        registry.log_dataset(ws, args.dataset, samples=reader.table["sample_id"].to_pylist())
        mlflow.log_params({"epochs": args.epochs, "seed": args.seed, "classes": ",".join(data.classes)})
        mlflow.log_metric("train_accuracy", correct / len(data))
        mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=name,
            input_example=torch.stack([x0, x0]).numpy(),  # needed by MLflow's torch.export format
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    print(f"run {run.info.run_id}; model {name}; train accuracy {correct / len(data):.3f}")
    return run.info.run_id


if __name__ == "__main__":
    main()
