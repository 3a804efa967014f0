"""From a run, model or image back to what made it, and from a generator, source, prompt or sample
forward to everything it reached: trace, image, impact, working (unreleased manifests), common
(queries over every released manifest), report (the HTML report with models), catalog_site (the static
site of every release and model, with its search index), openlineage (the stages' OpenLineage run
events).

The public modules are named in ``__all__``; importing the package imports none of them.
"""

__all__ = [
    "catalog_site",
    "common",
    "image",
    "impact",
    "openlineage",
    "report",
    "trace",
    "working",
]
