"""JSON Schema for every persisted record, exported from the pydantic models (never written by hand)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from registry.core.fsio import atomic_write_text
from registry.records.audit import AuditEvent
from registry.records.config import Params
from registry.records.dataset import GenerationRequest, GeneratorSpec, Recipe, SampleRecord, SourceRef
from registry.records.journal import Entry
from registry.records.policy import (
    LicenceBase,
    PolicyPack,
    PolicyReport,
    ValidationStamp,
    WaiverFile,
    WithdrawnList,
)
from registry.records.profile import DatasetProfile
from registry.records.release import Release
from registry.records.signed import LogCheckpoint, SignedWaiver, SignOff, Withdrawal
from registry.records.trust import ReleasePolicy, TrustRoot

MODELS: dict[str, type[BaseModel]] = {
    "recipe": Recipe,
    "params": Params,
    "generator-spec": GeneratorSpec,
    "source-ref": SourceRef,
    "generation-request": GenerationRequest,
    "sample-record": SampleRecord,
    "policy-pack": PolicyPack,
    "policy-report": PolicyReport,
    "licence-base": LicenceBase,
    "waivers": WaiverFile,
    "withdrawn-list": WithdrawnList,
    "release": Release,
    "audit-event": AuditEvent,
    "journal-entry": Entry,
    "mlflow-dataset-profile": DatasetProfile,
    "trust-root": TrustRoot,
    "release-policy": ReleasePolicy,
    "sign-off": SignOff,
    "signed-waiver": SignedWaiver,
    "withdrawal": Withdrawal,
    "log-checkpoint": LogCheckpoint,
    "validation-stamp": ValidationStamp,
}


def render(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    out = []
    for name, model in MODELS.items():
        path = folder / f"{name}.schema.json"
        atomic_write_text(path, render(model))
        out.append(path)
    return out
