"""The provenance suite's queries (issue 22): GX's unexpected values and index lists are fetched only for
an expectation whose unexpected count is not 0, and the validation result (the evidence file's content,
the rule's counts and first ids) is what GX gives when it fetches them all."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from policies.checks import _gx_duckdb, provenance
from policies.context import Context, Outcome
from policies.engine import load_kb
from registry.core.errors import PolicyError
from registry.records.dataset import Recipe
from registry.records.policy import ProvenanceRule
from registry.store import manifest as mf
from tests.conftest import REPO
from tests.policies.test_engine import clean_recipe, clean_rows, sid, write_rows

_SKIP = _gx_duckdb.skip_empty_row_lists  # the real one, for the tests that patch it away


def suite_result(path: Path) -> tuple[dict, list[str]]:
    """The suite's validation result on the manifest at ``path`` (GX's load time dropped), and the SQL
    statements GX sent."""
    sent: list[str] = []

    def log(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", log)
    con = mf.connect(path)
    try:
        result = provenance.run_suite(con)
    finally:
        event.remove(Engine, "before_cursor_execute", log)
        con.close()
    result["meta"]["batch_markers"].pop("ge_load_time", None)
    return result, sent


def fetch_every_list(m: pytest.MonkeyPatch) -> None:
    """GX as it runs without the skip: every expectation's lists fetched, whatever its count."""
    m.setattr(_gx_duckdb, "skip_empty_row_lists", lambda engine: None)


def broken_rows() -> list[dict[str, Any]]:
    """Five expectations fail: unique ids, null seed, phash regex, steps range, names."""
    rows = clean_rows()
    rows[5] |= {"sample_id": sid(40), "member": f"{sid(40)}.png"}  # a duplicate id
    rows[42]["seed"] = None
    rows[17]["phash"] = "not-a-phash"
    rows[31]["steps"] = 5000
    rows[23]["member"] = "../escape.png"
    return rows


@pytest.mark.parametrize("rows", [clean_rows, broken_rows], ids=["passing", "failing"])
def test_the_result_is_the_one_of_fetching_every_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: Callable[[], list[dict[str, Any]]]
):
    path = tmp_path / "manifest.parquet"
    write_rows(rows(), path)
    skipped, sent = suite_result(path)
    with monkeypatch.context() as m:
        fetch_every_list(m)
        everything, sent_all = suite_result(path)
    assert skipped == everything  # every key of every result, passing or not
    failing = [r for r in skipped["results"] if not r["success"]]
    passing = len(skipped["results"]) - len(failing)
    assert len(failing) == (5 if rows is broken_rows else 0)
    assert len(sent_all) - len(sent) == 2 * passing  # a values and an index-list query per passing one
    for r in failing:  # their lists were fetched, not assumed empty
        n = r["result"]["unexpected_count"]
        assert n > 0 and len(r["result"]["partial_unexpected_index_list"]) == min(n, 20)


@pytest.mark.parametrize("rows", [clean_rows, broken_rows], ids=["passing", "failing"])
def test_the_outcome_and_the_evidence_file_are_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: Callable[[], list[dict[str, Any]]]
):
    """The rule's verdict, counts, first ids and details, and provenance.gx.json byte for byte, are those
    of GX fetching every list."""
    path = tmp_path / "manifest.parquet"
    write_rows(rows(), path)
    recipe = Recipe.model_validate(clean_recipe())
    rule = ProvenanceRule(id="provenance.complete", kind="provenance", severity="error", description="x")

    def outcome(folder: str) -> tuple[Outcome, bytes]:
        con = mf.connect(path)
        try:
            ctx = Context(ws=tmp_path, manifest=path, recipe=recipe, kb=load_kb(), con=con)
            out = provenance.check(rule, ctx, evidence_dir=tmp_path / folder)
        finally:
            con.close()
        return out, (tmp_path / folder / "provenance.gx.json").read_bytes()

    skipped, evidence = outcome("skipped")
    with monkeypatch.context() as m:
        fetch_every_list(m)
        assert outcome("everything") == (skipped, evidence)
    if rows is clean_rows:
        assert skipped.ok and skipped.message == "all 20 provenance expectations hold on 60 rows"
        return
    assert not skipped.ok and skipped.evidence.count == 7
    assert skipped.evidence.sample_ids == [sid(40), sid(42), sid(17), sid(23), sid(31)]


class FakeMetric:
    def __init__(self, name: str, value_kwargs: dict[str, Any] | None = None) -> None:
        from great_expectations.validator.metric_configuration import MetricConfiguration

        self.metric_name = name
        self.metric_domain_kwargs = {"batch_id": "b", "column": "c"}
        self.metric_value_kwargs = value_kwargs or {}
        self.id = MetricConfiguration(name, self.metric_domain_kwargs, self.metric_value_kwargs).id


class FakeEngine:
    """Resolves a metric to ``values[name]``, and records which it was asked for."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.asked: list[str] = []

    def resolve_metrics(self, metrics_to_resolve: Any, metrics: Any = None, configuration: Any = None):
        out = {}
        for m in metrics_to_resolve:
            self.asked.append(m.metric_name)
            out[m.id] = self.values[m.metric_name]
        return out


FORMAT = {"result_format": {"result_format": "COMPLETE"}, "regex": "x"}


@pytest.mark.parametrize(
    ("count", "queried"), [(0, False), (3, True), (None, True)], ids=["zero", "some", "unknown"]
)
def test_a_list_is_skipped_only_when_its_count_is_zero(count: int | None, queried: bool):
    """A count of 0 answers the list; a count above 0, or none known (after one round's wait), queries
    it: a list is never assumed empty, so a check cannot read as passed without its rows looked at."""
    values = "column_values.match_regex.unexpected_values"
    engine = FakeEngine({values: ["bad"], "column_values.match_regex.unexpected_count": count})
    _SKIP(engine)
    known = {}
    if count is not None:
        c = FakeMetric("column_values.match_regex.unexpected_count", {"regex": "x"})
        known[c.id] = count
    m = FakeMetric(values, FORMAT)
    first = engine.resolve_metrics([m], known)
    if count is None:  # waits one round for the count, then queries
        assert first == {} and engine.asked == []
        first = engine.resolve_metrics([m], known)
    assert first == {m.id: ["bad"] if queried else []}
    assert engine.asked == ([values] if queried else [])


def test_a_list_resolved_with_its_count_waits_for_it():
    """The count and the list in one round (the unique expectation's): the count is resolved first."""
    count = FakeMetric("column_values.unique.unexpected_count")
    values = FakeMetric("column_values.unique.unexpected_index_list", {"result_format": "COMPLETE"})
    for n, expected in ((0, []), (2, [{"sample_id": "a"}])):
        engine = FakeEngine({values.metric_name: [{"sample_id": "a"}], count.metric_name: n})
        _SKIP(engine)
        assert engine.resolve_metrics([values, count], {}) == {count.id: n, values.id: expected}
        assert engine.asked[0] == count.metric_name


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)


def _in_workspace(ws: Path) -> str:
    """The start of a script for ``_fresh``: validate and the provenance module imported (GX not yet),
    ``ws`` the workspace, holding the clean recipe as recipe.yaml."""
    return (
        "import sys, yaml\n"
        "from pathlib import Path\n"
        "from policies.engine import validate\n"
        "from policies.checks import provenance as p\n"
        "from tests.policies.test_engine import clean_recipe\n"
        f"ws = Path({str(ws)!r})\n"
        "(ws / 'recipe.yaml').write_text(yaml.safe_dump(clean_recipe()))\n"
    )


def test_validate_imports_gx_ahead_on_a_thread_and_the_suite_waits_for_it():
    # A fresh process (GX not imported yet): the import runs beside the caller, on one thread, once.
    done = _fresh(
        "import sys, threading\n"
        "from policies.checks import provenance as p\n"
        "assert 'great_expectations' not in sys.modules\n"
        "p.import_ahead(); p.import_ahead()\n"
        "named = [t for t in threading.enumerate() if t.name == 'synthreg-import-gx']\n"
        "assert len(named) == 1, named\n"
        "p._context()\n"
        "assert not p._importing.is_alive()\n"
        "assert len(p.suite().expectations) == 20\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_cyclic_collector_is_paused_while_gx_imports_and_on_again_after():
    # GX's import makes objects that live as long as the process; the collector's full walks over them
    # were a fifth of the import (issue 22). It is paused for the import alone.
    done = _fresh(
        "import gc, time\n"
        "from policies.checks import provenance as p\n"
        "assert gc.isenabled()\n"
        "p.import_ahead()\n"
        "seen_off = False\n"
        "while p._importing.is_alive():\n"
        "    seen_off |= not gc.isenabled()\n"
        "    time.sleep(0.001)\n"
        "assert seen_off, 'the collector ran during the import'\n"
        "assert gc.isenabled(), 'the collector was left off'\n"
        "p._context()\n"
        "assert len(p.suite().expectations) == 20 and gc.isenabled()\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_gx_loads_scipy_stats_only_when_an_expectation_uses_it():
    # GX imports scipy.stats for its KL-divergence and KS-test expectations, which the suite never runs
    # (about 1 s of CPU, issue 22): deferred, it is run on first use, as a plain import would.
    done = _fresh(
        "import sys, importlib\n"
        "from policies.checks import provenance as p\n"
        "p.import_ahead(); p._context()\n"
        "assert len(p.suite().expectations) == 20\n"
        "assert type(sys.modules['scipy.stats']).__name__ == '_LazyModule', 'scipy.stats was run'\n"
        "assert 'scipy.sparse' not in sys.modules\n"
        "kl = importlib.import_module('great_expectations.expectations.core.'\n"
        "    'expect_column_kl_divergence_to_be_less_than')\n"
        "assert abs(kl.stats.entropy([0.5, 0.5], [0.9, 0.1]) - 0.5108256) < 1e-6\n"
        "assert type(sys.modules['scipy.stats']).__name__ == 'module'\n"
        "print('ok')\n"
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_an_import_that_fails_on_the_thread_fails_in_the_suite_with_its_own_error():
    # The thread swallows it; the suite's own import raises it, naming the missing module.
    done = _fresh(
        "import sys\n"
        "sys.modules['great_expectations'] = None\n"
        "from policies.checks import provenance as p\n"
        "p.import_ahead()\n"
        "p.suite()\n"
    )
    assert done.returncode != 0
    assert "ModuleNotFoundError: import of great_expectations halted" in done.stderr, done.stderr[-2000:]
    assert "Exception in thread" not in done.stderr  # the thread kept it to itself


def test_a_validate_refused_after_the_import_started_leaves_no_thread_importing(tmp_path: Path):
    # A waivers file that is not YAML is refused after the packs and the signed waivers are read and
    # the import began: validate waits for it, so a fork that follows cannot inherit the thread's
    # import locks.
    code = _in_workspace(tmp_path) + (
        "(ws / 'waivers.yaml').write_text('waivers: [unclosed')\n"
        "try:\n"
        "    validate('filtered', ws, 'recipe.yaml', waivers='waivers.yaml')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
        "assert p._importing is not None and not p._importing.is_alive()\n"
        "assert 'great_expectations.expectations' in sys.modules\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("PolicyError") and "waivers.yaml" in done.stdout, done.stdout


def test_validate_imports_nothing_ahead_when_it_refuses_the_recipe_or_no_pack_has_a_provenance_rule(
    tmp_path: Path,
):
    # Refused before the packs are read (no intended_use), or packs without a provenance rule: GX's
    # import (about 2 s of CPU) would be wasted, so none starts.
    rule = {"id": "licence.known", "kind": "licence-known", "severity": "error", "description": "known"}
    pack = {"id": "licences-only", "description": "licences only", "rules": [rule]}
    code = _in_workspace(tmp_path) + (
        "recipe = clean_recipe(); recipe.pop('intended_use', None)\n"
        "(ws / 'bare.yaml').write_text(yaml.safe_dump(recipe))\n"
        f"(ws / 'pack.yaml').write_text(yaml.safe_dump({pack!r}))\n"
        "for recipe, packs in (('bare.yaml', None), ('recipe.yaml', ['pack.yaml'])):\n"
        "    try:\n"
        "        validate('filtered', ws, recipe, packs=packs)\n"
        "    except Exception as e:\n"
        "        print(type(e).__name__, str(e)[:300])\n"
        "assert p._importing is None and 'great_expectations' not in sys.modules\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]
    refused = done.stdout.splitlines()
    assert refused[0].startswith("PolicyError recipe for digits declares no intended_use"), refused
    assert "manifest" in refused[1] and "does not exist" in refused[1], refused  # past the packs


class _Cursor:
    """A DuckDB cursor whose statements containing ``fails_on`` raise ``error``, as DuckDB raises them."""

    def __init__(self, cursor: Any, fails_on: str, error: Exception) -> None:
        self._cursor, self._fails_on, self._error = cursor, fails_on, error

    def execute(self, statement: str, *args: Any, **kwargs: Any) -> Any:
        if self._fails_on in statement:
            raise self._error
        return self._cursor.execute(statement, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _FailingConnection:
    """The manifest's connection, handing GX cursors that fail as ``_Cursor`` does; its own queries run."""

    def __init__(self, con: Any, fails_on: str, error: Exception) -> None:
        self._con, self._fails_on, self._error = con, fails_on, error

    def cursor(self) -> _Cursor:
        return _Cursor(self._con.cursor(), self._fails_on, self._error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def _oom() -> Exception:
    import duckdb

    return duckdb.OutOfMemoryException(
        "Out of Memory Error: could not allocate block of size 256.0 KiB (60.8 MiB/61.0 MiB used)\n\n"
        "Possible solutions:\n* Reducing the number of threads (SET threads=X)"
    )


def _conversion() -> Exception:
    import duckdb

    return duckdb.ConversionException("Conversion Error: Could not convert string 'x' to INT32")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (_oom, "DuckDB needed more memory than its cap"),
        (_conversion, "Conversion Error: Could not convert string 'x' to INT32; nothing was written"),
    ],
    ids=["out-of-memory", "another-error"],
)
def test_an_expectation_gx_could_not_compute_stops_the_check_and_is_never_a_finding(
    tmp_path: Path, error: Callable[[], Exception], said: str
):
    """GX catches an error raised by a metric's query and reports the expectation as failed with 0
    unexpected rows (issue 22: the unique-id query out of DuckDB's cap at 10,000,000 rows read "1 of 20
    provenance expectations failed ... (0 rows); regenerate the affected samples"). The check raises
    instead, naming the expectation and the error, and the evidence file from before is left as it was."""
    path = tmp_path / "manifest.parquet"
    write_rows(clean_rows(), path)
    recipe = Recipe.model_validate(clean_recipe())
    rule = ProvenanceRule(id="provenance.complete", kind="provenance", severity="error", description="x")
    evidence = tmp_path / "policy"
    evidence.mkdir()
    (evidence / "provenance.gx.json").write_text("the evidence of the run before\n")
    con = mf.connect(path)
    try:
        # the unique-id expectation's query: it counts the rows of each id (GX 1.24's subquery name)
        failing = _FailingConnection(con, "column_values_count_per_value_subquery", error())
        ctx = Context(ws=tmp_path, manifest=path, recipe=recipe, kb=load_kb(), con=failing)
        with pytest.raises(PolicyError) as raised:
            provenance.check(rule, ctx, evidence_dir=evidence)
        message = str(raised.value)
        assert message.startswith(
            "provenance.complete: Great Expectations could not check expect_column_values_to_be_unique on "
            "sample_id: "
        ), message
        assert said in message
        assert "regenerate" not in message and "failed" not in message
        # GX's log of each failed query (a traceback a retry) goes nowhere: the error above is the output
        gx_log = logging.getLogger("great_expectations")
        assert any(isinstance(h, logging.NullHandler) for h in gx_log.handlers)
        assert (evidence / "provenance.gx.json").read_text() == "the evidence of the run before\n"
        # the same connection without the failure: the suite runs and every expectation holds
        assert provenance.check(rule, Context(tmp_path, path, recipe, load_kb(), con), evidence).ok
    finally:
        con.close()


def test_an_error_quoting_a_hostile_value_is_shown_on_one_escaped_line():
    """DuckDB's message may quote a manifest's value: a control character in it is shown escaped."""
    rule = ProvenanceRule(id="provenance.complete", kind="provenance", severity="error", description="x")
    raised = [("expect_column_values_to_be_between", "seed", "Conversion Error: 'x\x1b[2Jy' is no INT64")]
    message = provenance._not_checked(rule, raised)
    assert "\x1b" not in message and "\\x1b[2J" in message, message


def test_raised_reads_both_shapes_of_gx_exception_info():
    """An expectation that ran has its ``exception_info`` flat; one whose metrics raised has an entry a
    metric. Only a raised one counts."""
    ran = {"raised_exception": False, "exception_message": None, "exception_traceback": None}
    config = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "seed"}}
    result = {
        "results": [
            {"success": True, "expectation_config": config, "exception_info": ran},
            {"success": False, "expectation_config": config, "exception_info": {"m1": ran, "m2": ran}},
            {
                "success": False,
                "expectation_config": config,
                "exception_info": {"m": {"raised_exception": True, "exception_message": "boom"}},
            },
            {  # GX could not run the expectation at all: the entry itself
                "success": False,
                "expectation_config": config | {"kwargs": {"column": "prompt"}},
                "exception_info": {"raised_exception": True, "exception_message": "flat"},
            },
            {  # an empty message: the traceback's last line names the error
                "success": False,
                "expectation_config": config | {"kwargs": {"column": "shard"}},
                "exception_info": {
                    "m": {
                        "raised_exception": True,
                        "exception_message": "",
                        "exception_traceback": "Traceback (most recent call last):\n  ...\nMemoryError\n",
                    }
                },
            },
            {"success": False, "expectation_config": config},  # not a shape GX makes: read as nothing
        ]
    }
    assert provenance._raised(result) == [
        ("expect_column_values_to_not_be_null", "seed", "boom"),
        ("expect_column_values_to_not_be_null", "prompt", "flat"),
        ("expect_column_values_to_not_be_null", "shard", "MemoryError"),
    ]
