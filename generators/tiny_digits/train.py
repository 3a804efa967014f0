"""Train tiny-digits: the embedded default generator (the frozen ``train_generator`` DVC stage).

    python -m generators.tiny_digits.train --out generators/tiny_digits/model

A class-conditional diffusers ``UNet2DModel`` (16x16, block_out_channels (32, 64, 64), one layer per
block, no attention) learns to denoise the train split of scikit-learn's digits under a cosine DDPM
schedule. The class is ``digit * 2 + stroke`` (stroke 0 = thin, 1 = bold); class 20 is the "null"
class, substituted for the real one in 10% of steps so classifier-free guidance can be used at
sampling time. The held-out split is never touched here; its digest is recorded so that a downstream
evaluation can prove it.

Training is deterministic for a fixed seed and thread count: the same command gives the same weights
digest (the weights are committed, so the default path never trains).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from generators.tiny_digits import data

NULL_CLASS = 20
N_CLASSES = 21


def unet_config() -> dict:
    return dict(
        sample_size=data.IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=N_CLASSES,
    )


def class_labels(digits: np.ndarray, strokes: list[str]) -> np.ndarray:
    return np.array([int(d) * 2 + data.STROKES.index(s) for d, s in zip(digits, strokes, strict=True)])


def train(out: Path, epochs: int, batch_size: int, lr: float, seed: int, threads: int) -> dict:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)

    train_split, held_out = data.load_splits()
    thresholds = data.stroke_thresholds(train_split)
    strokes = data.stroke_of(train_split.images, train_split.labels, thresholds)
    labels = torch.from_numpy(class_labels(train_split.labels, strokes))
    x0 = torch.from_numpy(train_split.images).float().div(127.5).sub(1.0).unsqueeze(1)

    unet = UNet2DModel(**unet_config())
    noise_schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    opt = torch.optim.AdamW(unet.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = (len(x0) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)

    started = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        perm = torch.randperm(len(x0), generator=gen)
        total = 0.0
        for i in range(0, len(x0), batch_size):
            idx = perm[i : i + batch_size]
            clean, lab = x0[idx], labels[idx].clone()
            drop = torch.rand(len(idx), generator=gen) < 0.1
            lab[drop] = NULL_CLASS
            noise = torch.randn(clean.shape, generator=gen)
            t = torch.randint(0, 1000, (len(idx),), generator=gen)
            noisy = noise_schedule.add_noise(clean, noise, t)
            loss = torch.nn.functional.mse_loss(unet(noisy, t, class_labels=lab).sample, noise)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / len(x0))
        print(f"epoch {epoch + 1}/{epochs} loss {losses[-1]:.4f}", flush=True)
    seconds = time.perf_counter() - started

    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet", safe_serialization=True)
    DDIMScheduler.from_config(noise_schedule.config).save_pretrained(out / "scheduler")
    meta = {
        "generator": "tiny-digits",
        "null_class": NULL_CLASS,
        "classes": "digit * 2 + stroke index (thin=0, bold=1)",
        "identities": [str(d) for d in range(10)],
        "attributes": {"stroke": list(data.STROKES)},
        "stroke_thresholds": {str(k): v for k, v in thresholds.items()},
        "train_split": {"n": len(train_split.labels), "sha256": train_split.digest},
        "held_out_split": {"n": len(held_out.labels), "sha256": held_out.digest},
        "source": {
            "name": data.SOURCE_NAME,
            "licence": data.SOURCE_LICENCE,
            "url": data.SOURCE_URL,
        },
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "threads": threads,
            "seconds": round(seconds, 1),
            "final_loss": round(losses[-1], 5),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
    }
    (out / "tiny_digits.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "model")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = p.parse_args()
    from registry.core.errors import SynthregError
    from registry.records.config import load_params

    try:  # params.yaml's train_generator section, bounded and validated like every other YAML input
        cfg = load_params(a.params).train_generator.model_dump()
    except SynthregError as e:
        raise SystemExit(f"error: {e}") from None
    meta = train(a.out, **cfg)
    print(json.dumps(meta["training"], indent=2))


if __name__ == "__main__":
    main()
