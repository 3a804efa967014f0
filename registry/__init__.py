"""synthreg's library surface: everything a user may call, in one list.

Attributes load lazily (PEP 562), so ``import registry`` (and ``synthreg --help``) pulls in no
pyarrow, DuckDB, torch or diffusers until a function that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # records
    "Recipe": "registry.models",
    "GeneratorRef": "registry.models",
    "GeneratorSpec": "registry.models",
    "SourceRef": "registry.models",
    "IntendedUse": "registry.models",
    "GenerationRequest": "registry.models",
    "SampleRecord": "registry.models",
    "PolicyPack": "registry.policy",
    "PolicyReport": "registry.policy",
    "RuleResult": "registry.policy",
    "Waiver": "registry.policy",
    "Release": "registry.release_record",
    "AuditEvent": "registry.audit",
    # config and errors
    "load_recipe": "registry.config",
    "load_params": "registry.config",
    "SynthregError": "registry.errors",
    # manifests
    "read_table": "registry.manifest",
    "find_sample": "registry.manifest",
    "check_manifest": "registry.names",
    # releases
    "release": "registry.release",
    "load_release": "registry.release",
    "verify": "registry.verify",
    "list_releases": "registry.catalog",
    "diff": "registry.catalog",
    "open_release": "registry.loader",
    "keygen": "registry.signing",
    "pull": "registry.remote",
    # trust: who may sign what (a separate block to ease merging)
    "TrustRoot": "registry.trust",
    "load_trust": "registry.trust",
    "approve": "registry.approval",
    "waive": "registry.waivers",
    "list_status": "registry.catalog",
    "doctor": "registry.doctor",
    # downstream runs and lineage
    "train": "registry.train",
    "log_dataset": "registry.track",
    "DatasetProfile": "registry.track",
    "list_models": "registry.model_index",
    "trace_run": "registry.lineage",
    "trace_model": "registry.lineage",
    "trace_image": "registry.lineage",
    "impact": "registry.lineage",
    "withdraw": "registry.lineage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
