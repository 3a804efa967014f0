"""A tiny Stable Diffusion pipeline built from configs with random weights, for offline tests and for
trying the diffusers backend out (`examples/make_tiny_pipeline.py`): it makes noise, not pictures.

Modelled on diffusers' own ``get_dummy_components`` (tests/pipelines/stable_diffusion): every
component is the smallest config that still runs, the tokenizer is written locally (vocab.json +
merges.txt), and nothing is downloaded. ``torch.manual_seed(0)`` before each component makes the
weights, and so the saved files and their digest, deterministic.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

TEXT_DIM = 16
VOCAB_SIZE = 128  # >= the tokenizer's vocabulary (84 entries)
MAX_TOKENS = 77


def _tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    # Letters, digits and a little punctuation, each inside a word and at its end ("</w>").
    chars = string.ascii_lowercase + string.digits + "!,.-'"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(chars) + [c + "</w>" for c in chars]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    # No merges: every word is spelled out letter by letter, which is all a test needs.
    (folder / "merges.txt").write_text("#version: 0.2\n")
    # from_pretrained on the folder reads the two files whichever tokenizer API this transformers has
    # (v4: vocab_file/merges_file arguments; v5: vocab/merges objects).
    return CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=MAX_TOKENS)


def build_tiny_sd_pipeline():
    """The pipeline object itself (random weights, deterministic)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,  # latent size for 32 px: two VAE blocks give a scale factor of 2
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
    )
    torch.manual_seed(0)
    text_config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=TEXT_DIM,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_TOKENS,
    )
    text_encoder = CLIPTextModel(text_config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _tiny_tokenizer(Path(tmp))
    return StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd_pipeline(folder: Path) -> Path:
    """Build the tiny pipeline and save it to ``folder`` (safetensors); return ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_sd_pipeline()
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
