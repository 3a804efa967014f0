"""The tiny Stable Diffusion pipeline for tests: built by ``generators/tiny_sd.py`` (shipped, so that
``examples/make_tiny_pipeline.py`` makes the same one for trying the diffusers backend out)."""

from generators.tiny_sd import MAX_TOKENS, TEXT_DIM, VOCAB_SIZE, build_tiny_sd_pipeline, save_tiny_sd_pipeline

__all__ = ["MAX_TOKENS", "TEXT_DIM", "VOCAB_SIZE", "build_tiny_sd_pipeline", "save_tiny_sd_pipeline"]
