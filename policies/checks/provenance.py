"""Provenance completeness: a Great Expectations suite over the manifest.

Every image must carry what made it: no missing weights digest, seed, prompt or licence; unique
sample ids; well-formed sha256 digests and perceptual hashes; settings within their ranges. GX runs
the suite where the manifest is, in DuckDB, through its SQL data source (``_gx_duckdb`` says what that
takes with GX 1.24), and its validation result is kept beside the policy report as evidence.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
from pathlib import Path

from policies.context import EVIDENCE_CAP, Context, Outcome
from registry.core import collector, duck, stack
from registry.core.errors import PolicyError
from registry.core.fsio import atomic_write_text
from registry.core.names import SQL_ANY, SQL_PROBLEM, one_line
from registry.records.policy import Evidence, ProvenanceRule

HEX64 = r"^[0-9a-f]{64}$"
COLUMNS = [
    "sample_id",
    "weights_digest",
    "image_sha256",
    "phash",
    "seed",
    "prompt",
    "generator_licence",
    "generator_name",
    "steps",
    "guidance",
    "width",
    "height",
    "scheduler",
    "shard",
    "member",
]


_importing: threading.Thread | None = None


def import_ahead() -> None:
    """Start importing Great Expectations on a thread, once a process, so that its import (about 2 s of
    Python on a quiet machine, most of a fresh `synthreg validate` at 1M rows) overlaps the DuckDB work
    that comes before the suite: the other packs' rules and the name check (DuckDB releases the GIL).
    ``imported`` waits for it; an import that fails there is left for the caller's own import to raise
    with its traceback. Not a daemon: a process that ends early waits for the import rather than
    tearing down a half-imported module.

    Call it once the caller has imported what it needs that GX imports too: importing a module that
    another thread is importing waits for that thread (issue 22: the signed waivers' securesystemslib
    brings boto3 and cryptography, and validate waited 1 s for them at 1,000,000 rows, until it read
    the waivers before starting this). Modules GX loads for expectations the suite never runs are
    deferred (``DEFERRED``)."""
    global _importing
    if _importing is not None or "great_expectations.expectations" in sys.modules:
        return
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network, ever

    def load() -> None:
        try:
            with collector.paused():  # see ``suite``
                for name in DEFERRED:
                    defer(name)
                import great_expectations.data_context.types.base
                import great_expectations.expectations  # noqa: F401
        except Exception:  # the caller's own import raises it, with its traceback
            return

    # GX's import calls at the edge of a frame-stack chunk about 49,000 times (``stack``).
    _importing = threading.Thread(target=stack.deep, args=(load,), name="synthreg-import-gx")
    _importing.start()


# Modules Great Expectations imports when it loads, for expectations this suite never runs: scipy.stats
# (about 1 s of a quiet machine's CPU, half of GX's import) for its KL-divergence and KS-test
# expectations, imported there as ``from scipy import stats`` and used only inside them (GX 1.24).
DEFERRED = ("scipy.stats",)


def defer(name: str) -> None:
    """Make module ``name`` load when first used rather than now (``importlib.util.LazyLoader``): an
    ``import`` of it, or ``from <parent> import <it>``, then costs nothing, and reading any of its
    attributes runs it as a plain import would. Nothing when it is loaded already or not installed.
    On Python 3.11 the lazy module has no lock: two threads first using it at once could see it half
    run. synthreg never uses scipy.stats; GX's expectations that would run in the suite's one thread."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)  # imports the parent package, as an import of it would
    except ModuleNotFoundError:  # the parent is not installed
        return
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def imported() -> None:
    """Wait for ``import_ahead``'s import, if one was started."""
    if _importing is not None:
        _importing.join()


def suite():
    imported()
    # When nothing imported GX ahead (validate called in process). GX's import makes about 2,000 modules
    # and pydantic classes that live as long as the process, and the cyclic collector's full walks over
    # them were a fifth of its time (issue 22: 2.05 s against 1.62 s with it paused).
    with collector.paused():
        for name in DEFERRED:
            defer(name)
        import great_expectations as gx
        import great_expectations.expectations as gxe

    s = gx.ExpectationSuite(name="synthreg-provenance")
    for col in (
        "sample_id",
        "weights_digest",
        "image_sha256",
        "seed",
        "prompt",
        "generator_licence",
        "generator_name",
        "scheduler",
        "shard",
        "member",
    ):
        s.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=col))
    s.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="sample_id"))
    # registry/core/names.py's verdict per row (one DuckDB expression): ids, members and shards that
    # extraction would turn into paths outside their folder.
    s.add_expectation(gxe.ExpectColumnValuesToBeNull(column="name_problem"))
    s.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="weights_digest", regex=HEX64))
    s.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="image_sha256", regex=HEX64))
    s.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="phash", regex=r"^[0-9a-f]{16}$"))
    s.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="seed", min_value=0, max_value=2**63 - 1))
    s.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="steps", min_value=1, max_value=1000))
    s.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="guidance", min_value=0, max_value=100))
    s.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="width", min_value=1, max_value=4096))
    s.add_expectation(gxe.ExpectColumnValuesToBeBetween(column="height", min_value=1, max_value=4096))
    return s


ASSET = "rows"  # the GX data asset, and the DuckDB view it reads: manifest columns and name_problem
_PROBLEMS = "provenance_name_problems"


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network, ever
    imported()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX logs a query that failed with its traceback, for every retry (three, of the bundle and of each
    # metric alone): with no handler of ours, Python printed 1,988 lines before synthreg's one-line error
    # (a table-level query out of DuckDB's memory). The error itself reaches the rule (``_raised``).
    gx_log = logging.getLogger("great_expectations")
    if not any(isinstance(h, logging.NullHandler) for h in gx_log.handlers):
        gx_log.addHandler(logging.NullHandler())
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["sample_id"],
    "partial_unexpected_count": EVIDENCE_CAP,
}


def run_suite(con) -> dict:
    """The suite on the manifest view of DuckDB connection ``con``, run by GX in DuckDB; the GX validation
    result as a JSON-able dict. The rows stay in DuckDB: GX sends each metric as SQL (issue 22; before,
    every row went through a pandas frame, fingerprinted twice, in partitions of 200,000 rows)."""
    from policies.checks import _gx_duckdb

    # registry/core/names.py's verdict per row is one regex-heavy expression, counted first. Where some
    # rows have a problem, it is computed once into a one-column table (almost all NULL, so small) and
    # lined up with the manifest's rows by position, rather than evaluated again by each of GX's queries
    # on the column. Where none has, the view gives the column as the NULL it is on every row: GX's
    # bundled query over the POSITIONAL JOIN took twice as long (issue 22, 1,000,000 rows: 0.77 s
    # against 0.38 s), and the table was one more pass over the names.
    if con.execute(f"SELECT count(*) FROM manifest WHERE {SQL_ANY}").fetchall()[0][0]:
        con.execute(
            f"CREATE OR REPLACE TABLE {_PROBLEMS} AS SELECT {SQL_PROBLEM} AS name_problem FROM manifest"
        )
        problems = f"name_problem FROM manifest POSITIONAL JOIN {_PROBLEMS}"
    else:
        problems = "CAST(NULL AS VARCHAR) AS name_problem FROM manifest"
    con.execute(f"CREATE OR REPLACE VIEW {ASSET} AS SELECT {', '.join(COLUMNS)}, {problems}")
    try:
        with _gx_duckdb.shared(con) as url:
            datasource = _context().data_sources.add_sql("manifest", connection_string=url)
            engine = _gx_duckdb.engine_for(datasource)
            _gx_duckdb.skip_empty_row_lists(engine)
            try:
                batch = (
                    datasource.add_table_asset(ASSET, table_name=ASSET)
                    .add_batch_definition_whole_table("all")
                    .get_batch()
                )
                return batch.validate(suite(), result_format=_FORMAT).to_json_dict()
            finally:  # the pooled cursors of con go now, not at interpreter exit
                engine.engine.dispose()
                datasource.get_engine().dispose()
    finally:
        con.execute(f"DROP VIEW IF EXISTS {ASSET}")
        con.execute(f"DROP TABLE IF EXISTS {_PROBLEMS}")


def check(rule: ProvenanceRule, ctx: Context, evidence_dir: Path | None = None) -> Outcome:
    present = {r[0] for r in ctx.con.sql("DESCRIBE manifest").fetchall()}
    missing = [c for c in COLUMNS if c not in present]
    if missing:
        return Outcome(
            False, f"manifest lacks provenance columns {missing}", measured=len(missing), threshold=0
        )
    rows = ctx.one("SELECT count(*) FROM manifest")[0]
    result = run_suite(ctx.con)
    if raised := _raised(result):
        raise PolicyError(_not_checked(rule, raised))
    for r in result["results"]:  # COMPLETE lists every offending row; the first ids are evidence
        for key in ("unexpected_list", "unexpected_index_list"):
            if key in r["result"]:
                r["result"][key] = r["result"][key][:EVIDENCE_CAP]
    failed: list[dict] = []
    ids: list[str] = []
    total = 0
    for r in result["results"]:
        if r["success"]:
            continue
        cfg = r["expectation_config"]
        n = r["result"].get("unexpected_count") or 0
        total += n
        failed.append({"expectation": cfg["type"], "column": cfg["kwargs"].get("column"), "unexpected": n})
        for idx in r["result"].get("unexpected_index_list") or []:
            if len(ids) < EVIDENCE_CAP and idx.get("sample_id") not in ids:
                ids.append(idx.get("sample_id"))
    if evidence_dir is not None:
        for r in result["results"]:  # keep the evidence file small: counts and the first ids only
            r["result"].pop("unexpected_index_list", None)
            r["result"].pop("unexpected_list", None)
            r["result"].pop("unexpected_index_query", None)
        # GX stamps the batch with its load time; the file is a pipeline output whose bytes must depend
        # only on the manifest checked (issue 9), so the time goes (the validate audit event has it).
        result.get("meta", {}).get("batch_markers", {}).pop("ge_load_time", None)
        atomic_write_text(
            evidence_dir / "provenance.gx.json", json.dumps(result, indent=2, default=str) + "\n"
        )
    n_exp = len(result["results"])
    if failed:
        f = failed[0]
        return Outcome(
            False,
            f"{len(failed)} of {n_exp} provenance expectations failed, first {f['expectation']} on "
            f"{f['column']} ({f['unexpected']} rows); regenerate the affected samples",
            measured=len(failed),
            threshold=0,
            evidence=Evidence(count=total, sample_ids=ids, details={"failed_expectations": failed}),
        )
    return Outcome(True, f"all {n_exp} provenance expectations hold on {rows} rows", measured=0, threshold=0)


def _raised(result: dict) -> list[tuple[str, str | None, str]]:
    """Each expectation GX could not compute, as (expectation, column, an error's message). GX catches
    an error raised by a metric's query (DuckDB out of its memory cap, a query DuckDB refuses) and reports
    the expectation as failed with nothing unexpected, the traceback in ``exception_info``: an entry a
    metric, or the entry itself (``raised_exception`` false for an expectation that ran; true where GX
    could not resolve its metrics or run it at all). Issue 22: at
    10,000,000 rows on one DuckDB thread the unique-id expectation ran out of memory, and the rule read
    "1 of 20 provenance expectations failed, first expect_column_values_to_be_unique on sample_id (0
    rows); regenerate the affected samples": a check that did not run, reported as a finding about the
    data."""
    out = []
    for r in result["results"]:
        info = r.get("exception_info") or {}
        entries = [info] if "raised_exception" in info else list(info.values())
        messages = [_message(e) for e in entries if isinstance(e, dict) and e.get("raised_exception")]
        if messages:  # one an expectation, out of memory first: its metrics may each have raised
            cfg = r["expectation_config"]
            message = next((m for m in messages if duck.OUT_OF_MEMORY in m), messages[0])
            out.append((cfg["type"], cfg["kwargs"].get("column"), message))
    return out


def _message(entry: dict) -> str:
    """An ``exception_info`` entry's message, or where it is empty (a ``MemoryError``) the traceback's
    last line, which names the error."""
    message = str(entry.get("exception_message") or "").strip()
    if message:
        return message
    lines = [line for line in str(entry.get("exception_traceback") or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _not_checked(rule: ProvenanceRule, raised: list[tuple[str, str | None, str]]) -> str:
    """The error for a suite whose expectations in ``raised`` could not be computed: DuckDB's memory advice
    where one ran out of memory, else the first error, with how many expectations it stopped. The rule
    neither passes nor fails on a suite that did not run, and no evidence file is written for it."""
    first = next(((e, c, m) for e, c, m in raised if duck.OUT_OF_MEMORY in m), raised[0])
    expectation, column, message = first
    where = f"{expectation} on {column}" if column else expectation
    head = f"{rule.id}: Great Expectations could not check {where}"
    more = f" ({len(raised)} expectations could not be checked)" if len(raised) > 1 else ""
    # the error's first line, escaped where it is not printable (it may quote a value of the manifest)
    if duck.OUT_OF_MEMORY in message:
        error = one_line(message[message.index(duck.OUT_OF_MEMORY) :].splitlines()[0][:300])
        return f"{head}{more}: {duck.memory_advice(error)}"
    error = one_line(message.strip().splitlines()[0][:300]) if message.strip() else "no message"
    return f"{head}{more}: {error}; nothing was written for this check, fix the cause and run it again"
