"""synthreg's datasets as OpenLineage datasets and facets, and the client as OpenLineage configures it.

Imported only once ``emit.configured()`` found a configuration, so ``openlineage`` is imported here at
the top. Names and namespaces follow the OpenLineage naming spec's shape (a namespace for where the data
lives, a name unique within it):

- namespace: the workspace, as its git ``origin`` URL (credentials removed), so every clone of one
  repository names a dataset alike; without one ``file://HOST/ABSOLUTE/PATH``. Jobs use
  ``$OPENLINEAGE_NAMESPACE`` when set (the variable OpenLineage integrations read), else the same.
- names: a manifest or file by its workspace path (``data/digits/filtered/manifest.parquet``), a
  release as ``NAME@X.Y.Z``, a model as ``models:/NAME/VERSION`` (MLflow's model URI).

Facets: ``version`` (the sha256 of the bytes; a release's manifest digest; a model's version), ``schema``
(from the manifest's Arrow schema, with the field descriptions of ``SampleRecord``), ``dataSource`` (the
workspace, a release's DVC remote, a model's MLflow store), ``columnLineage`` (filter: scores from the
image columns, the rest copied; derive: every column copied, rows left out by the criteria's columns),
``outputStatistics`` (rows, bytes), and synthreg's own ``synthreg_release``, ``synthreg_signature``,
``synthreg_withdrawal`` and ``synthreg_policy``, whose JSON Schemas ship beside this module (``*.json``)
at the ``_schemaURL`` they carry. Every value from data (names, reasons, actors, prompts) is a JSON
string in a facet: serialised by ``json``, never interpreted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.constants import __version__ as CLIENT_VERSION
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    DatasetFacet,
    column_lineage_dataset,
    dataset_type_dataset,
    dataset_version_dataset,
    datasource_dataset,
    documentation_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    processing_engine_run,
    schema_dataset,
    set_producer,
)
from openlineage.client.uuid import generate_new_uuid

from registry.core.digests import sha256_file
from registry.lineage.openlineage.specs import File, Manifest, Model, ReleaseRef, Spec

SCHEMAS = Path(__file__).parent  # the JSON Schemas of synthreg's facets
SCHEMA_BASE = "https://synthreg.dev/spec/openlineage/facets/1-0-0/"
PRODUCER = "https://synthreg.dev/openlineage/producer"
# The columns a filter score is computed from: the image, found by its shard and member.
IMAGE_COLUMNS = ("shard", "member", "image_sha256")


# --- synthreg's own facets ----------------------------------------------------------------------------------


def _url(name: str) -> str:
    return f"{SCHEMA_BASE}{name}.json#/$defs/{name}"


@attr.define(kw_only=True)
class SynthregReleaseDatasetFacet(DatasetFacet):
    """``synthreg_release``: the release record's facts (field names camelCase, as OpenLineage's)."""

    name: str
    version: str
    manifestSha256: str
    samples: dict[str, int]
    shards: int
    gitCommit: str
    actor: str
    createdAt: str
    licence: str
    policyPassed: bool
    policyReportSha256: str
    status: str | None = None
    flatManifestSha256: str | None = None
    promptTemplates: list[str] = attr.field(factory=list)
    sources: list[dict[str, Any]] = attr.field(factory=list)
    remote: str | None = None
    derivedFrom: dict[str, Any] | None = None

    @staticmethod
    def _get_schema() -> str:
        return _url("SynthregReleaseDatasetFacet")


@attr.define(kw_only=True)
class SynthregSignatureDatasetFacet(DatasetFacet):
    envelope: str
    envelopeSha256: str
    payloadType: str
    keyids: list[str]
    signoffs: int | None = None

    @staticmethod
    def _get_schema() -> str:
        return _url("SynthregSignatureDatasetFacet")


@attr.define(kw_only=True)
class SynthregWithdrawalDatasetFacet(DatasetFacet):
    reason: str
    actor: str
    time: str
    trusted: bool
    signer: str | None = None
    keyid: str | None = None
    whyUntrusted: str | None = None
    envelopeSha256: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return _url("SynthregWithdrawalDatasetFacet")


@attr.define(kw_only=True)
class SynthregPolicyDatasetFacet(DatasetFacet):
    passed: bool
    manifestSha256: str
    results: dict[str, str]

    @staticmethod
    def _get_schema() -> str:
        return _url("SynthregPolicyDatasetFacet")


# --- the client ---------------------------------------------------------------------------------------------


class _Stderr(logging.Handler):
    """The console transport's events on stderr (stdout holds a command's results and ``--json``), on
    whatever ``sys.stderr`` is at the time."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        sys.stderr.write(self.format(record) + "\n")


def _quiet() -> None:
    """The client logs its own warnings; without a handler Python would print them (``lastResort``).
    synthreg says what matters in one line of its own, so they go nowhere unless logging is set up."""
    top = logging.getLogger("openlineage")
    if not any(isinstance(h, logging.NullHandler) for h in top.handlers):
        top.addHandler(logging.NullHandler())


def client() -> tuple[OpenLineageClient | None, str]:
    """The client as OpenLineage configures it, and where its events go (for a warning); None when the
    configuration found names no transport (the client would fall back to printing every event)."""
    _quiet()
    set_producer(f"{PRODUCER}/{_synthreg_version()}")  # the facets' _producer: synthreg made them
    before = {k for k in os.environ if k.startswith("OPENLINEAGE__")}
    try:
        c = OpenLineageClient()
    finally:
        # With OPENLINEAGE_URL the client writes OPENLINEAGE__TRANSPORT__TRANSPORTS__DEFAULT_HTTP__* into
        # os.environ; undone, so a later check in this process sees only what the user set.
        for k in [k for k in os.environ if k.startswith("OPENLINEAGE__") and k not in before]:
            del os.environ[k]
    transport = c.config.transport or {}
    if not transport.get("type") and not os.environ.get("OPENLINEAGE_URL"):
        return None, "no transport"
    if c.transport.kind == "console":
        console = logging.getLogger("openlineage.client.transport.console")
        if not any(isinstance(h, _Stderr) for h in console.handlers):
            console.addHandler(_Stderr())
        console.setLevel(logging.INFO)
        console.propagate = False
    return c, endpoint(c.transport)


def endpoint(transport: Any) -> str:
    """Where ``transport`` sends events, for a message: a URL without credentials or query, a file."""
    kind = getattr(transport, "kind", None)
    if kind in ("http", "async_http"):
        return without_credentials(urljoin(transport.url, transport.endpoint))
    if kind == "file":
        return f"file {transport.config.log_file_path}"
    if kind == "composite":
        return ", ".join(endpoint(t) for t in transport.transports)
    if kind == "console":
        return "the console (stderr)"
    return f"the {kind} transport"


def without_credentials(url: str) -> str:
    """``url`` with no user, password, query or fragment (an API key in a URL stays out of events and
    messages); anything that is not a ``scheme://`` URL as it is."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return url  # as it was: sqlite:////abs/path keeps its slashes
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def new_run_id() -> str:
    return str(generate_new_uuid())


def workspace_namespace(ws: Path) -> str:
    from registry.core import vcs

    origin = vcs.run_git(ws, "remote", "get-url", "origin")
    if origin.returncode == 0 and origin.stdout.strip():
        return without_credentials(origin.stdout.strip())
    return f"file://{socket.gethostname()}{ws.resolve().as_posix()}"


def _synthreg_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synthreg")
    except PackageNotFoundError:
        return "unknown"


# --- events -------------------------------------------------------------------------------------------------


def run_event(
    state: str,
    run_id: str,
    job: str,
    namespace: str,
    ws: Path,
    inputs: list[InputDataset],
    outputs: list[OutputDataset],
    error: str | None = None,
) -> RunEvent:
    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=_synthreg_version(), name="synthreg", openlineageAdapterVersion=CLIENT_VERSION
        )
    }
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python"
        )
    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="SYNTHREG", jobType="COMMAND"
        )
    }
    return RunEvent(
        eventType=RunState[state],
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=run_id, facets=run_facets),
        job=Job(namespace=os.environ.get("OPENLINEAGE_NAMESPACE") or namespace, name=job, facets=job_facets),
        inputs=inputs,
        outputs=outputs,
        producer=f"{PRODUCER}/{_synthreg_version()}",
    )


def input_dataset(ws: Path, namespace: str, spec: Spec) -> InputDataset:
    return InputDataset(namespace=namespace, name=name_of(ws, spec), facets=_facets(ws, namespace, spec))


def _facets(ws: Path, namespace: str, spec: Spec) -> dict[str, Any]:
    """``describe``, or no facets when the data is not there to describe (a release that does not exist:
    the stage's own error says so)."""
    from registry.core.errors import SynthregError

    try:
        return describe(ws, namespace, spec)
    except SynthregError:
        return {}


def output_dataset(ws: Path, namespace: str, spec: Spec, complete: bool) -> OutputDataset:
    """With ``complete``, the dataset as written, with its facets; otherwise its name only."""
    if not complete:
        return OutputDataset(namespace=namespace, name=name_of(ws, spec))
    stats: dict[str, Any] = {}
    if isinstance(spec, Manifest) and _file(ws, spec.path).is_file():
        import pyarrow.parquet as pq

        path = _file(ws, spec.path)
        stats["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=pq.ParquetFile(path).metadata.num_rows, size=path.stat().st_size, fileCount=1
        )
    return OutputDataset(
        namespace=namespace, name=name_of(ws, spec), facets=_facets(ws, namespace, spec), outputFacets=stats
    )


def _file(ws: Path, path: Path) -> Path:
    return path if path.is_absolute() else ws / path


def name_of(ws: Path, spec: Spec) -> str:
    if isinstance(spec, ReleaseRef):
        return f"{spec.name}@{spec.version}"
    if isinstance(spec, Model):
        return f"models:/{spec.name}/{spec.version}"
    path = _file(ws, spec.path).resolve()
    root = ws.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()


def describe(ws: Path, namespace: str, spec: Spec) -> dict[str, Any]:
    """The dataset facets of ``spec`` as it is now on disk (none for a file that is not there)."""
    if isinstance(spec, Manifest):
        return _manifest(ws, namespace, spec)
    if isinstance(spec, ReleaseRef):
        return _release(ws, namespace, spec)
    if isinstance(spec, Model):
        return {
            "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=spec.version),
            "dataSource": datasource_dataset.DatasourceDatasetFacet(
                name="mlflow", uri=without_credentials(spec.tracking_uri)
            ),
            "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="MODEL"),
            "documentation": documentation_dataset.DocumentationDatasetFacet(
                description=f"MLflow registered model {spec.name} version {spec.version}, trained in MLflow "
                f"run {spec.run_id}"
            ),
        }
    return _other_file(ws, namespace, spec)


def _source(namespace: str) -> datasource_dataset.DatasourceDatasetFacet:
    return datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=namespace)


def _other_file(ws: Path, namespace: str, spec: File) -> dict[str, Any]:
    path = _file(ws, spec.path)
    version = spec.version or (sha256_file(path) if path.is_file() else None)
    out: dict[str, Any] = {
        "dataSource": _source(namespace),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType=spec.kind),
    }
    if version is not None:
        out["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=version)
    if path.name == "report.json" and path.is_file():
        policy = _policy(path)
        if policy is not None:
            out["synthreg_policy"] = policy
    return out


def _policy(path: Path) -> SynthregPolicyDatasetFacet | None:
    from pydantic import ValidationError

    from registry.records.policy import PolicyReport

    try:
        report = PolicyReport.model_validate_json(path.read_bytes())
    except ValidationError:  # not a policy report after all: the file's digest says enough
        return None
    return SynthregPolicyDatasetFacet(
        passed=report.passed,
        manifestSha256=report.manifest_sha256,
        results={r.rule_id: r.status for r in report.results},
    )


def _manifest(ws: Path, namespace: str, spec: Manifest) -> dict[str, Any]:
    path = _file(ws, spec.path)
    if not path.is_file():
        return {}
    out: dict[str, Any] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=sha256_file(path)),
        "schema": schema_facet(path),
        "dataSource": _source(namespace),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="FILE", subType="PARQUET"),
    }
    if spec.derived_from is not None:
        parent = _manifest_path(ws, spec.derived_from)
        if parent is not None and parent.is_file():
            out["columnLineage"] = column_lineage(
                path, parent, namespace, name_of(ws, spec.derived_from), spec.changed
            )
    return out


def _manifest_path(ws: Path, spec: Spec) -> Path | None:
    if isinstance(spec, Manifest):
        return _file(ws, spec.path)
    if isinstance(spec, ReleaseRef):
        from registry.store.releases import load_release, release_folder

        record = load_release(ws, f"{spec.name}@{spec.version}")
        return release_folder(ws, record.name, record.version, record.manifest_path)
    return None


def schema_facet(path: Path) -> schema_dataset.SchemaDatasetFacet:
    """The manifest's Arrow schema (read from the Parquet footer only), described by ``SampleRecord``."""
    import pyarrow.parquet as pq

    from registry.records.dataset import SampleRecord

    described = {n: f.description for n, f in SampleRecord.model_fields.items()}
    return schema_dataset.SchemaDatasetFacet(
        fields=[
            schema_dataset.SchemaDatasetFacetFields(
                name=f.name, type=str(f.type), description=described.get(f.name), ordinal_position=i
            )
            for i, f in enumerate(pq.read_schema(path), start=1)
        ]
    )


def column_lineage(
    path: Path,
    parent: Path,
    namespace: str,
    parent_name: str,
    changed: tuple[str, ...],
    left_out_by: tuple[str, ...] = (),
) -> column_lineage_dataset.ColumnLineageDatasetFacet:
    """Each column of ``path`` from ``parent``'s: a ``changed`` column computed from the image columns
    (DIRECT, TRANSFORMATION), any other copied (DIRECT, IDENTITY). ``left_out_by``: the columns that
    decided which rows were left out (INDIRECT, FILTER), for the dataset as a whole."""
    import pyarrow.parquet as pq

    cl = column_lineage_dataset
    theirs = set(pq.read_schema(parent).names)

    def field(column: str, subtype: str, description: str | None = None) -> Any:
        how = cl.Transformation(type="DIRECT", subtype=subtype, description=description)
        return cl.InputField(namespace=namespace, name=parent_name, field=column, transformations=[how])

    fields: dict[str, Any] = {}
    for column in pq.read_schema(path).names:
        if column in changed:
            inputs = [
                field(c, "TRANSFORMATION", "scored from the image by the filter")
                for c in IMAGE_COLUMNS
                if c in theirs
            ]
        elif column in theirs:
            inputs = [field(column, "IDENTITY")]
        else:
            continue
        if inputs:
            fields[column] = cl.Fields(inputFields=inputs)
    dataset = [
        cl.InputField(
            namespace=namespace,
            name=parent_name,
            field=column,
            transformations=[
                cl.Transformation(type="INDIRECT", subtype="FILTER", description="rows left out by derive")
            ],
        )
        for column in left_out_by
        if column in theirs
    ]
    return cl.ColumnLineageDatasetFacet(fields=fields, dataset=dataset)


# --- releases -----------------------------------------------------------------------------------------------


def _release(ws: Path, namespace: str, spec: ReleaseRef) -> dict[str, Any]:
    from registry.store.releases import load_release, release_folder

    record = load_release(ws, f"{spec.name}@{spec.version}")
    folder = release_folder(ws, record.name, record.version)
    manifest = folder / record.manifest_path
    remote_name, _, remote_url = (record.remote or "").partition(" ")
    remote = f"{remote_name} {without_credentials(remote_url)}".strip() if record.remote else None
    out: dict[str, Any] = {
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=record.manifest_sha256),
        "dataSource": datasource_dataset.DatasourceDatasetFacet(
            name=remote_name or namespace, uri=without_credentials(remote_url) if remote_url else namespace
        ),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="FILE", subType="RELEASE"),
    }
    if manifest.is_file():
        out["schema"] = schema_facet(manifest)
    d = record.derived_from
    out["synthreg_release"] = SynthregReleaseDatasetFacet(
        name=record.name,
        version=record.version,
        status=_status(ws, spec),
        manifestSha256=record.manifest_sha256,
        flatManifestSha256=record.flat_manifest_sha256,
        samples={
            "total": record.counts.total,
            "accepted": record.counts.accepted,
            "rejected": record.counts.rejected,
        },
        shards=len(record.shards),
        gitCommit=record.git_commit,
        actor=record.actor,
        createdAt=record.created_at.isoformat(),
        licence=record.dataset_licence,
        policyPassed=record.policy_passed,
        policyReportSha256=record.policy_report_sha256,
        promptTemplates=list(record.prompt_templates),
        sources=[
            {"name": s.name, "version": s.version, "licence": s.licence, "status": s.status, "role": s.role}
            for s in record.sources
        ],
        remote=remote,
        derivedFrom={"parent": d.parent, "reason": d.reason, "removed": d.removed} if d else None,
    )
    signature = _signature(ws, folder)
    if signature is not None:
        out["synthreg_signature"] = signature
    withdrawal = _withdrawal(ws, record.name, record.version, folder)
    if withdrawal is not None:
        out["synthreg_withdrawal"] = withdrawal
    if spec.derived_from is not None and manifest.is_file():
        parent = _manifest_path(ws, spec.derived_from)
        if parent is not None and parent.is_file():
            out["columnLineage"] = column_lineage(
                manifest, parent, namespace, name_of(ws, spec.derived_from), (), spec.left_out_by
            )
    return out


def _status(ws: Path, spec: ReleaseRef) -> str | None:
    from registry.core.errors import SynthregError
    from registry.releases.catalog import release_status
    from registry.trust.root import load_trust

    try:
        return str(release_status(ws, spec.name, spec.version, load_trust(ws, spec.trust)))
    except SynthregError:  # no trust root here: the status is not known, and not guessed
        return None


def _signature(ws: Path, folder: Path) -> SynthregSignatureDatasetFacet | None:
    from registry.records.signed import SIGNOFFS
    from registry.trust.approvals import ENVELOPE

    path = folder / ENVELOPE
    if not path.is_file():
        return None
    envelope = json.loads(path.read_bytes())
    signoffs = folder / SIGNOFFS
    count = len(json.loads(signoffs.read_bytes())) if signoffs.is_file() else None
    return SynthregSignatureDatasetFacet(
        envelope=path.relative_to(ws).as_posix(),
        envelopeSha256=sha256_file(path),
        payloadType=str(envelope.get("payloadType", "")),
        keyids=[str(s.get("keyid", "")) for s in envelope.get("signatures", [])],
        signoffs=count,
    )


def _withdrawal(ws: Path, name: str, version: str, folder: Path) -> SynthregWithdrawalDatasetFacet | None:
    from registry.records.signed import WITHDRAWAL
    from registry.trust.withdrawals import is_withdrawn

    w = is_withdrawn(ws, name, version)
    if w is None:
        return None
    envelope = folder / WITHDRAWAL
    return SynthregWithdrawalDatasetFacet(
        reason=w.reason,
        actor=w.actor,
        time=w.time.isoformat(),
        trusted=w.trusted,
        signer=w.signer,
        keyid=w.keyid,
        whyUntrusted=w.why_untrusted,
        envelopeSha256=sha256_file(envelope) if envelope.is_file() else None,
    )
