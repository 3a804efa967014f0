"""Generation and filtering: recipe -> plan (``plan``), backends (``backends``), the runners (``generate``,
``filter``, ``reproduce``), the per-shard and per-chunk work both executors share (``shard``, ``scoring``),
the Ray executor (``ray_executor``), the tiny-digits model (``tiny_digits``) and a tiny diffusers pipeline
for tests and examples (``tiny_sd``).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "backends",
    "filter",
    "generate",
    "plan",
    "ray_executor",
    "reproduce",
    "scoring",
    "shard",
    "tiny_digits",
    "tiny_sd",
]
