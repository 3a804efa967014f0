"""What a command declares about its run, as plain typed records (no ``openlineage`` import): the
datasets it reads and writes (``Manifest``, ``File``, ``ReleaseRef``, ``Model``) on a ``Stage``.
``facets`` turns them into OpenLineage datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Manifest:
    """A Parquet manifest in the workspace, named by its workspace path: its sha256 (the dataset version),
    its Arrow schema and its data source. With ``derived_from`` (the dataset it was made from), column
    lineage: the ``changed`` columns are computed from the images, every other one is copied."""

    path: Path
    derived_from: Manifest | ReleaseRef | None = None
    changed: tuple[str, ...] = ()


@dataclass(frozen=True)
class File:
    """Another workspace file or folder (a recipe, a policy pack, a policy report, a generator's
    weights): its version is ``version`` when known (the weights' digest), else the file's sha256."""

    path: Path
    version: str | None = None
    kind: str = "FILE"


@dataclass(frozen=True)
class ReleaseRef:
    """A released version ``name@version``: its manifest's digest and schema, its data source (the DVC
    remote it was pushed to), the release and its signature; the withdrawal when it has one. A derived
    version names its parent (``derived_from``) and the columns its criteria read (``left_out_by``)."""

    name: str
    version: str
    trust: Path | None = None  # the trust root its status is judged by (default: $SYNTHREG_TRUST...)
    derived_from: ReleaseRef | None = None
    left_out_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """A registered MLflow model version and the run that trained it."""

    name: str
    version: str
    run_id: str
    tracking_uri: str


Spec = Manifest | File | ReleaseRef | Model


class Stage:
    """The inputs and outputs of one run, declared by the command as it learns them. Inputs declared
    before the work are in START (described once, then reused); outputs are described in COMPLETE only,
    after they are written (a FAIL names them without facets: what is there may be an older run's)."""

    def __init__(self) -> None:
        self.inputs: list[Spec] = []
        self.outputs: list[Spec] = []

    def input(self, *specs: Spec) -> None:
        self.inputs.extend(s for s in specs if s not in self.inputs)

    def output(self, *specs: Spec) -> None:
        self.outputs.extend(s for s in specs if s not in self.outputs)
