"""synthreg's library surface: everything a user may call, in one list.

Attributes load lazily (PEP 562), so ``import registry`` (and ``synthreg --help``) pulls in no
pyarrow, DuckDB, torch or diffusers until a function that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # records
    "Recipe": "registry.records.dataset",
    "GeneratorRef": "registry.records.dataset",
    "GeneratorSpec": "registry.records.dataset",
    "SourceRef": "registry.records.dataset",
    "IntendedUse": "registry.records.dataset",
    "GenerationRequest": "registry.records.dataset",
    "SampleRecord": "registry.records.dataset",
    "PolicyPack": "registry.records.policy",
    "PolicyReport": "registry.records.policy",
    "RuleResult": "registry.records.policy",
    "Waiver": "registry.records.policy",
    "Release": "registry.records.release",
    "AuditEvent": "registry.records.audit",
    # config and errors
    "load_recipe": "registry.records.config",
    "load_params": "registry.records.config",
    "SynthregError": "registry.core.errors",
    # manifests
    "read_table": "registry.store.manifest",
    "find_sample": "registry.store.manifest",
    "check_manifest": "registry.core.names",
    # releases
    "release": "registry.releases.release",
    "load_release": "registry.store.releases",
    "verify": "registry.releases.verify",
    "list_releases": "registry.releases.catalog",
    "diff": "registry.releases.catalog",
    "open_release": "registry.releases.loader",
    "keygen": "registry.trust.signing",
    "pull": "registry.releases.remote",
    # trust: who may sign what (a separate block to ease merging)
    "TrustRoot": "registry.records.trust",
    "load_trust": "registry.trust.root",
    "approve": "registry.releases.approve",
    "waive": "registry.releases.waive",
    "list_status": "registry.releases.catalog",
    "doctor": "registry.releases.doctor",
    # downstream runs and lineage
    "train": "registry.downstream.train",
    "log_dataset": "registry.downstream.track",
    "DatasetProfile": "registry.records.profile",
    "list_models": "registry.downstream.model_index",
    "trace_run": "registry.lineage.trace",
    "trace_model": "registry.lineage.trace",
    "trace_image": "registry.lineage.image",
    "impact": "registry.lineage.impact",
    "withdraw": "registry.releases.withdraw",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
