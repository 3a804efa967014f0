"""Every persisted shape, as a pydantic model: the one schema, exported as JSON Schema (``schemas``).

base (the strict model, sha256), dataset (recipe, generator, source, request, sample), domain (a recipe's
own scoring models), config (params.yaml), policy (packs, reports,
waivers), release (the Release record), audit (events, checkpoints), journal (an unfinished
operation), trust (the trust root), signed (sign-offs, waivers, withdrawals), profile (what a run
logs to MLflow); and lineage: the typed results of trace, impact, withdrawal state, diff and the model
index (returned and printed, not persisted). Records import only ``registry.core``.

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "audit",
    "base",
    "config",
    "dataset",
    "domain",
    "journal",
    "lineage",
    "policy",
    "profile",
    "release",
    "schemas",
    "signed",
    "trust",
]
