"""The ``synthreg`` MLflow dataset source: ``synthreg://releases/NAME/X.Y.Z?git=<commit>``.

MLflow finds it through the ``mlflow.dataset_source`` entry point this package declares
(pyproject.toml), so ``mlflow.data.get_source(dataset_input)`` parses a synthreg input back in any
Python process where synthreg is installed, not only inside ``synthreg train``.

This module imports MLflow at the top (a DatasetSource subclass cannot be made lazily and still be an
entry point), so nothing on the CLI's import path may import it: ``registry.downstream.tracking`` and
``registry.downstream.track`` import it inside their functions.
"""

from __future__ import annotations

from typing import Any

from mlflow.data.dataset_source import DatasetSource

from registry.core.errors import TrackingError

SOURCE_TYPE = "synthreg"  # MLflow dataset source type of every input synthreg logs


class SynthregDatasetSource(DatasetSource):
    """Names a synthreg dataset version (or working manifest); the data is read with synthreg itself.

    MLflow's HTTPDatasetSource would accept the string but claim type ``http`` and try to download it
    on ``load()``; a release is opened with ``registry.open_release`` instead.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return SOURCE_TYPE

    def load(self) -> str:
        raise TrackingError(
            f"{self.uri} is a synthreg dataset; read it with registry.open_release(ws, 'NAME@X.Y.Z')"
        )

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith(f"{SOURCE_TYPE}://")

    @classmethod
    def _resolve(cls, raw_source: Any) -> SynthregDatasetSource:
        return cls(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> SynthregDatasetSource:
        return cls(source_dict["uri"])
