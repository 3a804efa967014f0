"""Great Expectations' SQL execution engine on a DuckDB connection we already hold (issue 22).

GX 1.24's SQL data source over DuckDB (the ``duckdb_engine`` SQLAlchemy dialect) fails on every
expectation, for two reasons this module works around:

1. ``SqlAlchemyExecutionEngine.execute_query`` runs a query inside ``with engine.connect()`` and returns
   the cursor result *after* that block has closed the connection; the caller then fetches. Closing
   rolls back the transaction ``duckdb_engine`` began (its ``do_begin`` issues ``BEGIN``), and DuckDB
   drops a pending result on the next statement on its connection, so every fetch comes back empty and
   GX fails in ``resolve_metric_bundle`` (``IndexError: list index out of range``). GX keeps one
   connection open only for sqlite, mssql, bigquery and databricks (``_PERSISTED_CONNECTION_DIALECTS``).
   The dialect below begins, commits and rolls back nothing: the check only reads, and DuckDB runs each
   statement in its own transaction anyway.
2. GX has no DuckDB entry (``GXSqlDialect`` lists none; ``dialect_module`` stays None), so
   ``get_dialect_regex_expression`` finds no regex operator and the regex expectations cannot run.
   ``duckdb_engine`` is a PostgreSQL dialect, and DuckDB has PostgreSQL's ``~`` operator (RE2, as
   pyarrow's regex in the pandas engine), so :func:`engine_for` tells GX to use PostgreSQL's.

The dialect also hands out cursors of a DuckDB connection the caller owns (:func:`shared`), so GX reads
the manifest's view where it already is: no second database, no copy of the rows.

And one for speed (issue 22): with ``result_format`` COMPLETE, GX fetches every expectation's unexpected
values and unexpected index list, each a full scan, even when its own unexpected count is 0;
:func:`skip_empty_row_lists` answers those two from the count when it is 0.
"""

from __future__ import annotations

import atexit
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb_engine

_OPEN: dict[str, Any] = {}  # key in the URL -> the DuckDB connection GX's cursors come from
_DIALECTS: weakref.WeakSet = weakref.WeakSet()  # for _drop_duckdb_references, at exit
URL_SCHEME = "duckdb+synthreg"


class SharedConnectionDialect(duckdb_engine.Dialect):
    """``duckdb_engine``'s dialect on cursors of a connection held by the caller, without transactions."""

    supports_statement_cache = False  # as duckdb_engine's own dialect (SQLAlchemy warns otherwise)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _DIALECTS.add(self)

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        return duckdb_engine.ConnectionWrapper(_OPEN[cparams["database"]].cursor())

    def do_begin(self, connection: Any) -> None:
        pass

    def do_commit(self, connection: Any) -> None:
        pass

    def do_rollback(self, connection: Any) -> None:
        pass


def register() -> None:
    from sqlalchemy.dialects import registry

    registry.register("duckdb.synthreg", __name__, "SharedConnectionDialect")


@atexit.register
def _drop_duckdb_references() -> None:
    """Let go of DuckDB objects that SQLAlchemy would otherwise hold until after DuckDB's bindings
    (nanobind) check for leaks at interpreter exit: each process would then end with ~40 "nanobind: leaked
    instance" lines on stderr. Two holders, found with ``gc.get_referrers``: duckdb_engine's compile hook
    on SQLAlchemy's ``TryCast`` class (``@compiles(TryCast, "duckdb")``; its module globals reach DuckDB,
    and with GX's modules loaded the class outlives DuckDB's), and a dialect's per-type result-processor
    memo, keyed by DuckDB's column types (in a process that keeps the engine, as pytest does). Nothing runs
    SQL by then."""
    for dialect in list(_DIALECTS):
        dialect._type_memos.clear()
    try:
        from sqlalchemy import TryCast

        TryCast.__dict__["_compiler_dispatcher"].specs.pop("duckdb", None)
    except (ImportError, KeyError, AttributeError):
        pass


@contextmanager
def shared(con: Any) -> Iterator[str]:
    """A connection string under which GX's SQL data source reads ``con``'s database, while inside."""
    register()
    key = uuid.uuid4().hex
    _OPEN[key] = con
    try:
        yield f"{URL_SCHEME}:///{key}"
    finally:
        del _OPEN[key]


def engine_for(datasource: Any) -> Any:
    """The data source's GX execution engine, told that DuckDB speaks PostgreSQL's regex operator."""
    import sqlalchemy.dialects.postgresql

    engine = datasource.get_execution_engine()
    engine.dialect_module = sqlalchemy.dialects.postgresql
    return engine


# GX's per-row metrics of a map expectation: a query each, with the same condition as its unexpected count.
_ROW_LISTS = (".unexpected_values", ".unexpected_index_list")


def skip_empty_row_lists(engine: Any) -> None:
    """Make ``engine`` answer a map expectation's unexpected values and index list with ``[]``, without a
    query, when GX's own unexpected count for the same metric, domain and values is 0: both lists select
    the rows the count counts (the same condition), so they are empty, and GX formats the result from
    them as it would. A list whose count is not 0 is queried as before; so is one whose count GX has not
    resolved after one round's wait (never assumed empty)."""
    from great_expectations.validator.metric_configuration import MetricConfiguration

    resolve = engine.resolve_metrics
    waited: set = set()

    def count_id(m: Any) -> Any:
        value_kwargs = {k: v for k, v in m.metric_value_kwargs.items() if k != "result_format"}
        name = m.metric_name.rsplit(".", 1)[0] + ".unexpected_count"
        return MetricConfiguration(name, dict(m.metric_domain_kwargs), value_kwargs).id

    def resolve_metrics(
        metrics_to_resolve: Any, metrics: Any = None, runtime_configuration: Any = None
    ) -> Any:
        todo = list(metrics_to_resolve)
        lists = [m for m in todo if m.metric_name.endswith(_ROW_LISTS)]
        rest = [m for m in todo if not m.metric_name.endswith(_ROW_LISTS)]
        known = dict(metrics or {})
        resolved = dict(resolve(rest, known, runtime_configuration)) if rest else {}
        known.update(resolved)
        run = []
        for m in lists:
            n = known.get(count_id(m))
            if n is not None and n == 0:
                resolved[m.id] = []
            elif n is None and metrics is not None and m.id not in waited:
                # The count comes a round later (after its bundled query): not resolved now, and GX's
                # validation graph (the only caller passing ``metrics``) asks again next round. A direct
                # call (``metrics`` None) expects every metric back, so it is queried.
                waited.add(m.id)
            else:
                run.append(m)
        if run:
            resolved.update(resolve(run, known, runtime_configuration))
        return resolved

    engine.resolve_metrics = resolve_metrics
