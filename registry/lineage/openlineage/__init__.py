"""OpenLineage run events for the pipeline's stages: generate, filter, validate, release, derive, withdraw
and train each send START, then COMPLETE or FAIL, with their input and output datasets, to wherever
OpenLineage is configured (``openlineage.yml``, ``OPENLINEAGE_URL``, ``OPENLINEAGE__TRANSPORT__*``).

    specs.py    what a command declares: ``Manifest``, ``File``, ``ReleaseRef``, ``Model`` on a ``Stage``
    emit.py     the one context manager every command wraps its work in (``stage``), the cheap check that
                anything is configured (``configured``), the dataset descriptions a command declares
    facets.py   those descriptions as OpenLineage datasets and facets (imported only when configured)
    *.json      the JSON Schemas of synthreg's own facets, which their ``_schemaURL`` names

Nothing here imports ``openlineage`` until a configuration is found, so a command without one pays for a
few ``os.environ`` look-ups and two ``stat`` calls.
"""

from registry.lineage.openlineage.emit import configured, stage
from registry.lineage.openlineage.specs import (
    File,
    Manifest,
    Model,
    ReleaseRef,
    Stage,
)

__all__ = ["File", "Manifest", "Model", "ReleaseRef", "Stage", "configured", "stage"]
