"""The diffusers backend: any text-to-image ``DiffusionPipeline`` saved in a local folder.

Stable Diffusion, SDXL, FLUX ... whatever ``DiffusionPipeline.from_pretrained`` can load from disk
with ``local_files_only=True`` (nothing is downloaded). Each sample gets its own CPU
``torch.Generator`` seeded from its request: diffusers draws the initial latents from it, so a sample's
image does not depend on its batch-mates, and CPU generators give the same noise on any device.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from registry.core.digests import weights_digest
from registry.core.errors import GeneratorError
from registry.records.dataset import GenerationRequest, GeneratorRef, GeneratorSpec


class DiffusersBackend:
    def __init__(self, ref: GeneratorRef, folder: Path, device: str = "cpu") -> None:
        import torch
        from diffusers import DiffusionPipeline

        if not (folder / "model_index.json").is_file():
            raise GeneratorError(
                f"{folder} has no model_index.json, so it is not a saved DiffusionPipeline; "
                "save one with pipeline.save_pretrained(folder)"
            )
        digest = weights_digest(folder)
        try:
            pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
            pipe = pipe.to(device)
        except (OSError, ValueError, RuntimeError, TypeError) as e:
            raise GeneratorError(f"cannot load the diffusers pipeline in {folder}: {e}") from e
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.device = device
        self.torch = torch
        self.accepts = set(inspect.signature(pipe.__call__).parameters)
        self.vae_scale = int(getattr(pipe, "vae_scale_factor", 8) or 8)
        sched_cfg = dict(pipe.scheduler.config) if getattr(pipe, "scheduler", None) else {}
        scheduler = type(pipe.scheduler).__name__ if sched_cfg else "none"
        self.spec = GeneratorSpec.loaded(ref, digest, type(pipe).__name__, scheduler, sched_cfg)

    def check(self, req: GenerationRequest) -> None:
        if req.width % self.vae_scale or req.height % self.vae_scale:
            raise GeneratorError(
                f"{self.spec.pipeline_class} needs a size divisible by {self.vae_scale}; "
                f"got {req.width}x{req.height}: change the recipe's size"
            )
        if req.negative_prompt and "negative_prompt" not in self.accepts:
            raise GeneratorError(
                f"{self.spec.pipeline_class} takes no negative prompt; remove negative_prompt from the recipe"
            )

    def generate(self, requests: list[GenerationRequest]) -> list[np.ndarray]:
        torch = self.torch
        first = requests[0]
        shared = ("steps", "guidance", "width", "height")
        if any(getattr(r, k) != getattr(first, k) for r in requests for k in shared) or (
            len({bool(r.negative_prompt) for r in requests}) > 1
        ):
            raise GeneratorError(f"a diffusers batch must share {', '.join(shared)} and negative-prompt use")
        kwargs = dict(
            prompt=[r.prompt for r in requests],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            height=first.height,
            width=first.width,
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests],
            output_type="np",
        )
        if first.negative_prompt:
            kwargs["negative_prompt"] = [r.negative_prompt for r in requests]
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        out = np.clip(np.round(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
        return [img[..., 0] if img.shape[-1] == 1 else img for img in out]
