"""The tiny-digits backend: class-conditional DDIM sampling with the embedded default UNet.

The whole generation path is in this file (diffusers' single-file policy). The model is
class-conditional, not text-conditional: the class is ``digit * 2 + stroke`` read from the request's
identity and ``stroke`` attribute; the prompt is recorded but does not steer it. Guidance follows the
diffusers convention: ``eps = eps_null + g * (eps_cond - eps_null)``, so ``g <= 1`` needs one UNet pass
per step and ``g > 1`` two.

Each sample draws its initial noise from its own ``torch.Generator`` seeded with the request's seed,
and DDIM with eta = 0 adds no further noise, so an image depends only on its request and the weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from registry.core.digests import weights_digest
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerationRequest, GeneratorRef, GeneratorSpec

PIPELINE_CLASS = "synthreg.TinyDigitsDDIM(UNet2DModel)"


class TinyDigitsBackend:
    def __init__(self, ref: GeneratorRef, folder: Path, device: str = "cpu") -> None:
        import torch
        from diffusers import DDIMScheduler, UNet2DModel

        meta_path = folder / "tiny_digits.json"
        if not meta_path.is_file():
            raise GeneratorError(
                f"{folder} is not a tiny-digits model folder (no tiny_digits.json); "
                "use generators/tiny_digits/model or retrain with `python -m generators.tiny_digits.train`"
            )
        self.meta = json.loads(meta_path.read_text())
        digest = weights_digest(folder)
        try:
            self.unet = UNet2DModel.from_pretrained(folder / "unet").to(device).eval()
            self.scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
        except (OSError, ValueError, RuntimeError) as e:
            raise GeneratorError(f"cannot load tiny-digits weights from {folder}: {e}") from e
        self.device = device
        self.torch = torch
        scheduler = type(self.scheduler).__name__
        self.spec = GeneratorSpec.loaded(ref, digest, PIPELINE_CLASS, scheduler, dict(self.scheduler.config))
        self.size = int(self.unet.config.sample_size)
        self.null_class = int(self.meta["null_class"])
        self.strokes = list(self.meta["attributes"]["stroke"])

    def check(self, req: GenerationRequest) -> None:
        """Refuse a request the model cannot honour, before any image is made."""
        known = self.meta["identities"]
        if req.identity not in known:
            raise GeneratorError(
                f"identity {req.identity!r} is not known to generator {self.spec.name} "
                f"(it knows {', '.join(known)}); fix the recipe's identities"
            )
        if set(req.attributes) != {"stroke"} or req.attributes["stroke"] not in self.strokes:
            raise GeneratorError(
                f"generator {self.spec.name} is conditioned on exactly one attribute, "
                f"stroke in {self.strokes}; got attributes {req.attributes}"
            )
        if (req.width, req.height) != (self.size, self.size):
            raise GeneratorError(
                f"generator {self.spec.name} makes {self.size}x{self.size} images; "
                f"set the recipe's size to {self.size} (got {req.width}x{req.height})"
            )

    def class_label(self, req: GenerationRequest) -> int:
        return int(req.identity) * 2 + self.strokes.index(req.attributes["stroke"])

    def generate(self, requests: list[GenerationRequest]) -> list[np.ndarray]:
        """One batch: all requests must share steps and guidance (the plan batches them so)."""
        torch = self.torch
        steps, guidance = requests[0].steps, requests[0].guidance
        if any(r.steps != steps or r.guidance != guidance for r in requests):
            raise GeneratorError("a tiny-digits batch must share steps and guidance")
        labels = torch.tensor([self.class_label(r) for r in requests], device=self.device)
        noise = [
            torch.randn((1, self.size, self.size), generator=torch.Generator().manual_seed(r.seed))
            for r in requests
        ]
        images = sample(
            self.unet,
            self.scheduler,
            torch.stack(noise).to(self.device),
            labels,
            steps,
            guidance,
            self.null_class,
        )
        return list(images)


def sample(unet, scheduler, x, labels, steps: int, guidance: float, null_class: int) -> np.ndarray:
    """DDIM sampling from initial noise ``x``; returns uint8 images of shape (N, H, W)."""
    import torch

    scheduler.set_timesteps(steps)
    with torch.inference_mode():
        null = torch.full_like(labels, null_class)
        for t in scheduler.timesteps:
            if guidance > 1:
                eps_c, eps_u = unet(
                    torch.cat([x, x]), t, class_labels=torch.cat([labels, null])
                ).sample.chunk(2)
                eps = eps_u + guidance * (eps_c - eps_u)
            else:
                eps = unet(x, t, class_labels=labels).sample
            x = scheduler.step(eps, t, x).prev_sample
        out = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return out[:, 0].cpu().numpy()
