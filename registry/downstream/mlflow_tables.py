"""Read-only answers from an MLflow SQLite store's own tables, for ``trace`` and ``impact``, with no
``import mlflow`` (issue 22: that import alone is 1-3 s, several times the 1.5 s a trace may take).

:func:`open_tables` gives a :class:`Tables` only when MLflow would open the store without changing it:

- the URI is ``sqlite:///PATH`` and the file exists (opened read-only, ``mode=ro``); when it does not
  but its folder does, a :class:`NoStore` says there are no runs and no models, and nothing creates
  the file;
- its ``alembic_version`` is the head revision of the installed MLflow's own migrations
  (:func:`head_revision` reads them from the package folder, without importing it): the check MLflow's
  ``SqlAlchemyStore`` makes on every open (``mlflow.store.db.utils._verify_schema``), done here for
  the price of one query;
- workspaces are off (``MLFLOW_ENABLE_WORKSPACES``), nothing is outside the default workspace and the
  default experiment exists (else MLflow's store raises, or creates it, on open).

Otherwise the caller uses MLflow's client, as before. A :class:`Tables` answers the questions trace and
impact ask (a run by id, runs by dataset input name or ``synthreg.dataset`` tag, experiments, model
versions by name, version or run id) with the SQL MLflow 3's ``SqlAlchemyStore`` runs for them, so the
answers and their order are the same (``tests/registry/test_mlflow_tables.py`` compares them on real
stores). Anything else, and every miss (a run or model that is not there, whose error message is
MLflow's), goes to MLflow's client, opened then.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

VIEW_ALL = 3  # mlflow.entities.ViewType.ALL (live and deleted): the only view trace and impact ask for
DEFAULT_WORKSPACE = "default"  # mlflow.utils.workspace_utils.DEFAULT_WORKSPACE_NAME
DELETED_VERSION = "Deleted_Internal"  # mlflow.entities.model_registry.model_version_stages
PROMPT_TAG = "mlflow.prompt.is_prompt"  # mlflow.prompt.constants.IS_PROMPT_TAG_KEY
_REVISION = re.compile(r"^revision\b[^=\n]*=\s*['\"](\w+)['\"]", re.M)
_DOWN = re.compile(r"^down_revision\b[^=\n]*=(.*)$", re.M)


def head_revision() -> str | None:
    """The schema revision the installed MLflow expects, from its migrations folder (the one alembic
    revision no other names as ``down_revision``); None when MLflow is absent or the folder is not one
    chain with one head (MLflow itself refuses a store then)."""
    spec = importlib.util.find_spec("mlflow")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    revisions, downs = set(), set()
    for script in folder.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev, down = _REVISION.search(text), _DOWN.search(text)
        if rev:
            revisions.add(rev.group(1))
            downs.update(re.findall(r"['\"](\w+)['\"]", down.group(1)) if down else [])
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def open_tables(uri: str, fallback: Callable[[], Any]) -> Tables | NoStore | None:
    """A :class:`Tables` over the store at ``uri`` when its schema is current (see the module), a
    :class:`NoStore` when its file does not exist yet; None when MLflow's client must answer.
    ``fallback`` makes that client, for what these do not answer."""
    if not uri.startswith("sqlite:///") or _truthy(os.environ.get("MLFLOW_ENABLE_WORKSPACES")):
        return None
    path = uri.removeprefix("sqlite:///")
    if not path or path == ":memory:" or "?" in path:
        return None
    if not Path(path).exists() and Path(path).parent.is_dir():
        return NoStore(fallback)  # (a folder that is not there either: MLflow's error names it)
    if not Path(path).is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        current = [r[0] for r in db.execute("SELECT version_num FROM alembic_version")]
        ok = (
            current == [head_revision()]
            and db.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone() is not None
            and not any(
                db.execute(
                    f"SELECT 1 FROM {table} WHERE workspace IS NOT NULL AND workspace != ? LIMIT 1",
                    (DEFAULT_WORKSPACE,),
                ).fetchone()
                for table in ("experiments", "registered_models", "webhooks")
            )
        )
    except sqlite3.Error:  # not an MLflow store, or an older one without these tables
        ok = False
    if not ok:
        db.close()
        return None
    db.execute("PRAGMA case_sensitive_like = true")  # as MLflow sets on each SQLite connection
    return Tables(db, fallback)


# --- the records, with the attributes of MLflow's entities that trace and impact read ----------------


class Page(list):
    """One page of results that is the whole answer (MLflow's PagedList with no next page)."""

    token: str | None = None


@dataclass
class Experiment:
    experiment_id: str


@dataclass
class RunInfo:
    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    lifecycle_stage: str
    start_time: int | None


@dataclass
class RunData:
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@dataclass
class Dataset:
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None
    profile: str | None


@dataclass
class InputTag:
    key: str
    value: str


@dataclass
class DatasetInput:
    dataset: Dataset
    tags: list[InputTag] = field(default_factory=list)


@dataclass
class RunInputs:
    dataset_inputs: list[DatasetInput]


@dataclass
class Run:
    info: RunInfo
    data: RunData
    inputs: RunInputs


@dataclass
class RegisteredModel:
    name: str
    aliases: dict[str, int]  # alias -> version


@dataclass
class ModelVersion:
    name: str
    version: int
    run_id: str | None
    source: str | None
    status: str | None
    tags: dict[str, str]
    aliases: list[str]
    model_id: str | None = None


# --- the queries ------------------------------------------------------------------------------------

_RUN_COLUMNS = (
    "runs.run_uuid, runs.name, runs.status, runs.start_time, runs.lifecycle_stage, runs.experiment_id"
)
# the filters synthreg writes (registry.lineage), as MLflow's search grammar spells them
_QUOTED = r"'([^'\\]*)'"
_DATASETS_IN = re.compile(rf"datasets\.name IN \(({_QUOTED}(?:, {_QUOTED})*)\)")
_DATASETS_LIKE = re.compile(rf"datasets\.name LIKE {_QUOTED}")
_TAG = re.compile(rf"tags\.`([\w.]+)` (=|LIKE) {_QUOTED}")
_MV_NAME = re.compile(rf"name = {_QUOTED}")
_MV_RUNS = re.compile(rf"run_id IN \(({_QUOTED}(?:, {_QUOTED})*)\)")
# a version's tags, as SqlModelVersion's lazy load reads them
_MV_TAGS = (
    'SELECT model_version_tags."key", model_version_tags.value FROM model_version_tags '
    "WHERE ? = model_version_tags.workspace AND ? = model_version_tags.name "
    "AND ? = model_version_tags.version"
)
_CHUNK = 500  # ids per IN (...): SQLite allows 32,766 parameters; SQLAlchemy's selectin loads use 500


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _quoted(listed: str) -> list[str]:
    return re.findall(_QUOTED, listed)


class _Fallback:
    """Passes every call it does not answer itself to MLflow's client, made by ``fallback`` on first need."""

    def __init__(self, fallback: Callable[[], Any]) -> None:
        self._fallback = fallback
        self._client: Any = None

    def _mlflow(self) -> Any:
        if self._client is None:
            self._client = self._fallback()
        return self._client

    def __getattr__(self, name: str) -> Any:  # get_logged_model, download_artifacts, aliases...
        return getattr(self._mlflow(), name)


class NoStore(_Fallback):
    """A SQLite store whose file does not exist yet (nothing was ever tracked in this workspace): no
    runs and no models. MLflow's client would create the file and run every migration (seconds) only
    to find nothing, and a read would leave a store behind. Any other question, a run or a model asked
    for by name included, goes to MLflow's client, whose error is MLflow's own."""

    def search_experiments(self, *args: Any, **kwargs: Any) -> Page:
        return Page()

    def search_runs(self, *args: Any, **kwargs: Any) -> Page:
        return Page()

    def search_model_versions(self, *args: Any, **kwargs: Any) -> Page:
        return Page()


class Tables(_Fallback):
    """The subset of ``MlflowClient`` that trace and impact call, read from the store's tables. A call
    it cannot answer exactly is passed to MLflow's client (``fallback``), made on first need."""

    def __init__(self, db: sqlite3.Connection, fallback: Callable[[], Any]) -> None:
        super().__init__(fallback)
        self._db = db

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return self._db.execute(sql, tuple(params)).fetchall()

    # --- runs -------------------------------------------------------------------------------------

    def _runs(self, rows: list[tuple]) -> list[Run]:
        """Runs from ``runs`` rows, with their params, latest metrics, tags and dataset inputs, read as
        SqlAlchemyStore reads them (``_get_eager_run_query_options``, ``_get_run_inputs``)."""
        ids = [r[0] for r in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        inputs: dict[str, dict[str, DatasetInput]] = {i: {} for i in ids}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = _marks(len(chunk))
            for run, key, value in self._rows(
                f'SELECT params.run_uuid, params."key", params.value FROM params '
                f"WHERE params.run_uuid IN ({marks})",
                chunk,
            ):
                params[run][key] = value
            for run, key, value, is_nan in self._rows(
                f'SELECT latest_metrics.run_uuid, latest_metrics."key", latest_metrics.value, '
                f"latest_metrics.is_nan FROM latest_metrics WHERE latest_metrics.run_uuid IN ({marks})",
                chunk,
            ):
                metrics[run][key] = float("nan") if is_nan else value
            for run, key, value in self._rows(
                f'SELECT tags.run_uuid, tags."key", tags.value FROM tags WHERE tags.run_uuid IN ({marks})',
                chunk,
            ):
                tags[run][key] = value
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for run, ds_id, name, digest, stype, source, schema, profile, tkey, tvalue in self._rows(
                "SELECT inputs.destination_id AS run_uuid, datasets.dataset_uuid, datasets.name, "
                "datasets.digest, datasets.dataset_source_type, datasets.dataset_source, "
                "datasets.dataset_schema, datasets.dataset_profile, input_tags.name, input_tags.value "
                "FROM inputs JOIN datasets ON inputs.source_id = datasets.dataset_uuid "
                "LEFT OUTER JOIN input_tags ON input_tags.input_uuid = inputs.input_uuid "
                f"WHERE inputs.destination_type = ? AND inputs.destination_id IN ({_marks(len(chunk))}) "
                "ORDER BY run_uuid",
                ["RUN", *chunk],
            ):
                di = inputs[run].get(ds_id)
                if di is None:
                    di = inputs[run][ds_id] = DatasetInput(
                        Dataset(name, digest, stype, source, schema, profile)
                    )
                if tkey is not None:
                    di.tags.append(InputTag(tkey, tvalue))
        out = []
        for run_id, name, status, start_time, stage, exp_id in rows:
            # SqlRun.to_mlflow_entity: a run without a name takes its mlflow.runName tag
            name = name or tags[run_id].get("mlflow.runName") or name
            info = RunInfo(run_id, name, str(exp_id), status, stage, start_time)
            data = RunData(tags[run_id], params[run_id], metrics[run_id])
            out.append(Run(info, data, RunInputs(list(inputs[run_id].values()))))
        return out

    def get_run(self, run_id: str) -> Any:
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM runs WHERE runs.run_uuid = ?", [run_id])
        if len(rows) != 1:
            return self._mlflow().get_run(run_id)  # MLflow's own "not found" error
        return self._runs(rows)[0]

    def search_experiments(
        self, view_type: int = VIEW_ALL, max_results: int = 1000, page_token: str | None = None
    ) -> Any:
        if view_type != VIEW_ALL or page_token is not None:
            return self._mlflow().search_experiments(
                view_type=view_type, max_results=max_results, page_token=page_token
            )
        return Page(
            Experiment(str(r[0]))
            for r in self._rows(
                "SELECT experiments.experiment_id FROM experiments "
                "WHERE experiments.lifecycle_stage IN ('deleted', 'active') "
                "ORDER BY experiments.creation_time DESC, experiments.experiment_id ASC"
            )
        )

    def _run_filter(self, filter_string: str) -> tuple[str, list[str]] | None:
        """The join that selects the runs ``filter_string`` asks for, as MLflow's search builds it
        (``_get_sqlalchemy_filter_clauses``); None for a filter this class does not read."""
        if m := _DATASETS_IN.fullmatch(filter_string):
            names = _quoted(m.group(1))
            where, params = f"datasets.name IN ({_marks(len(names))})", names
        elif m := _DATASETS_LIKE.fullmatch(filter_string):
            where, params = "datasets.name LIKE ?", [m.group(1)]
        elif m := _TAG.fullmatch(filter_string):
            key, op, value = m.groups()
            return (
                "JOIN (SELECT tags.run_uuid AS run_uuid FROM tags "
                f'WHERE tags."key" = ? AND tags.value {op} ?) AS anon_1 ON runs.run_uuid = anon_1.run_uuid',
                [key, value],
            )
        else:
            return None
        return (
            "JOIN (SELECT inputs.destination_id AS destination_id FROM datasets "
            f"JOIN inputs ON inputs.source_id = datasets.dataset_uuid WHERE {where}) AS anon_1 "
            "ON runs.run_uuid = anon_1.destination_id",
            params,
        )

    def search_runs(
        self,
        experiment_ids: list[str],
        filter_string: str = "",
        run_view_type: int = VIEW_ALL,
        max_results: int = 1000,
        page_token: str | None = None,
    ) -> Any:
        """Every matching run, live or deleted, in one page (MLflow's pages joined: the same order,
        ``start_time DESC, run_uuid``)."""
        join = self._run_filter(filter_string)
        if join is None or run_view_type != VIEW_ALL or page_token is not None:
            return self._mlflow().search_runs(
                experiment_ids, filter_string, run_view_type=run_view_type, max_results=max_results,
                page_token=page_token,
            )  # fmt: skip
        sql, params = join
        exp_ids = [int(e) for e in experiment_ids]
        rows = self._rows(
            f"SELECT DISTINCT {_RUN_COLUMNS} FROM runs {sql} "
            f"WHERE runs.experiment_id IN ({_marks(len(exp_ids))}) "
            "AND runs.lifecycle_stage IN ('deleted', 'active') ORDER BY runs.start_time DESC, runs.run_uuid",
            [*params, *exp_ids],
        )
        return Page(self._runs(rows))

    # --- the model registry -----------------------------------------------------------------------

    def _is_prompt(self, name: str) -> bool:
        return bool(
            self._rows(
                'SELECT 1 FROM registered_model_tags WHERE workspace = ? AND name = ? AND "key" = ? LIMIT 1',
                [DEFAULT_WORKSPACE, name, PROMPT_TAG],
            )
        )

    def get_registered_model(self, name: str) -> Any:
        found = self._rows(
            "SELECT name FROM registered_models WHERE workspace = ? AND name = ?", [DEFAULT_WORKSPACE, name]
        )
        if len(found) != 1 or self._is_prompt(name):
            return self._mlflow().get_registered_model(name)  # MLflow's own error
        return RegisteredModel(name, dict(self._aliases(name)))

    def _aliases(self, name: str) -> list[tuple[str, int]]:
        """(alias, version) of a registered model, as its ``registered_model_aliases`` load reads them."""
        return self._rows(
            "SELECT registered_model_aliases.alias, registered_model_aliases.version "
            "FROM registered_model_aliases WHERE ? = registered_model_aliases.workspace "
            "AND ? = registered_model_aliases.name",
            [DEFAULT_WORKSPACE, name],
        )

    def _versions(self, where: str, params: list[Any], order: str = "") -> list[ModelVersion]:
        rows = self._rows(
            "SELECT model_versions.name, model_versions.version, model_versions.run_id, "
            "model_versions.source, model_versions.status FROM model_versions "
            f"WHERE model_versions.workspace = ? AND {where} "
            f"AND model_versions.current_stage != ?{order}",
            [DEFAULT_WORKSPACE, *params, DELETED_VERSION],
        )
        return [
            ModelVersion(n, v, run, src, st, dict(self._rows(_MV_TAGS, [DEFAULT_WORKSPACE, n, v])), [])
            for n, v, run, src, st in rows
        ]

    def get_model_version(self, name: str, version: str) -> Any:
        if not str(version).isdigit():
            return self._mlflow().get_model_version(name, version)
        found = self._versions("model_versions.name = ? AND model_versions.version = ?", [name, int(version)])
        if len(found) != 1 or PROMPT_TAG in found[0].tags:
            return self._mlflow().get_model_version(name, version)  # MLflow's own error
        mv = found[0]
        mv.aliases = [alias for alias, v in self._aliases(name) if v == mv.version]
        return mv

    def search_model_versions(
        self, filter_string: str | None = None, max_results: int = 10000, page_token: str | None = None
    ) -> Any:
        """Model versions of no prompt, by name, by run ids or all (aliases not filled, as MLflow's
        search leaves them), in MLflow's order: last updated first, then name, then version down."""
        if not filter_string:
            where, params = "1 = 1", []
        elif m := _MV_NAME.fullmatch(filter_string):
            where, params = "model_versions.name = ?", [m.group(1)]
        elif m := _MV_RUNS.fullmatch(filter_string):
            ids = _quoted(m.group(1))
            where, params = f"model_versions.run_id IN ({_marks(len(ids))})", ids
        else:
            where = ""
        if not where or page_token is not None:
            return self._mlflow().search_model_versions(
                filter_string, max_results=max_results, page_token=page_token
            )
        prompts = (
            "model_versions.name NOT IN (SELECT name FROM model_version_tags WHERE workspace = ? "
            'AND "key" = ? AND value = ?)'
        )
        order = (
            " ORDER BY model_versions.last_updated_time DESC, model_versions.name ASC, "
            "model_versions.version DESC"
        )
        return Page(
            self._versions(f"{where} AND {prompts}", [*params, DEFAULT_WORKSPACE, PROMPT_TAG, "true"], order)
        )
