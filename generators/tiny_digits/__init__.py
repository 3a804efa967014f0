"""The embedded default generator: a tiny class-conditional diffusers UNet trained on scikit-learn's digits.

The trained weights, scheduler config and model card live in ``model/``; ``train.py`` rebuilds them
(the frozen ``train_generator`` DVC stage), ``data.py`` defines the real data, its split and the
stroke-weight attribute shared by the trainer, the filters and the bias checks.
"""

__all__ = ["data", "real_digits", "train"]
