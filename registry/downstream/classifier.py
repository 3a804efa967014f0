"""The downstream classifier `synthreg train` fits: a small CNN, its training loop and its evaluation
(overall and per identity). torch is imported inside each function, so importing this module is cheap."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from registry.records.config import TrainParams


def cnn(size: int, n_classes: int):
    """Two conv layers and a linear head: size x size grey -> n_classes (about 10K parameters at 16 px)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * (size // 4) ** 2, n_classes),
    )


def to_tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(images.astype(np.float32)[:, None] / 255.0)


def fit(
    images: np.ndarray,
    labels: np.ndarray,
    params: TrainParams,
    n_classes: int,
    progress: Callable[..., None] | None = None,
) -> tuple[Any, float]:
    import torch

    torch.manual_seed(params.seed)
    model = cnn(params.image_size, n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    x, y = to_tensor(images), torch.from_numpy(labels)
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


def evaluate(model: Any, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict[str, float]:
    import torch

    with torch.no_grad():
        pred = model(to_tensor(images)).argmax(dim=1).numpy()
    per = {
        classes[d]: float((pred[labels == d] == d).mean()) for d in range(len(classes)) if (labels == d).any()
    }
    return {
        "accuracy": float((pred == labels).mean()),
        "worst_group_gap": max(per.values()) - min(per.values()),
        **{f"accuracy.identity_{k}": v for k, v in per.items()},
    }


def decode_png(png: bytes, sample_id: str, size: int) -> np.ndarray:
    """A grey ``size`` x ``size`` array: every dataset, whatever its image size, trains the same model."""
    from PIL import Image

    from registry.core.images import decode

    img = decode(png, f"sample {sample_id}", mode="L")  # bounded and strict: a named problem, not a crash
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def resized(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:] == (size, size):
        return images
    from PIL import Image

    return np.stack(
        [np.asarray(Image.fromarray(i).resize((size, size), Image.Resampling.BILINEAR)) for i in images]
    )


def fit_and_evaluate(
    x: np.ndarray,
    y: np.ndarray,
    eval_x: np.ndarray,
    eval_y: np.ndarray,
    classes: list[str],
    params: TrainParams,
    progress: Callable[..., None] | None,
) -> tuple[Any, dict[str, float]]:
    """Fit on (x, y) with torch deterministic on ``params.threads`` threads (as it was found after), then
    evaluate on the held-out set; ``progress(epoch, epochs, "loss")``."""
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(params.threads)
    torch.use_deterministic_algorithms(True)
    try:
        model, last_loss = fit(x, y, params, len(classes), progress)
        metrics = evaluate(model, eval_x, eval_y, classes)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    metrics["train_loss"] = last_loss
    return model, metrics
