"""Provenance completeness: a Great Expectations suite over the manifest.

Every image must carry what made it: no missing weights digest, seed, prompt or licence; unique
sample ids; well-formed sha256 digests and perceptual hashes; settings within their ranges. The suite
runs on the columns it needs only (fetched through DuckDB), and its full validation result is kept
beside the policy report as evidence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from policies.context import EVIDENCE_CAP, Context, Outcome
from registry.core.fsio import atomic_write_text
from registry.core.names import SQL_PROBLEM
from registry.records.policy import Evidence, ProvenanceRule

HEX64 = r"^[0-9a-f]{64}$"
PART_ROWS = 200_000  # rows of the manifest handed to Great Expectations at once (see check())
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


def suite():
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


def _batches():
    """A function from a pandas DataFrame to a GX batch, on one ephemeral context (made once per check)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no network, ever
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    definition = (
        context.data_sources.add_pandas("manifest")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("all")
    )
    return lambda df: definition.get_batch(batch_parameters={"dataframe": df})


_FORMAT = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": ["sample_id"],
    "partial_unexpected_count": EVIDENCE_CAP,
}


def validate(df) -> dict:
    """Run the suite on a pandas DataFrame; the GX validation result as a JSON-able dict."""
    return _batches()(df).validate(suite(), result_format=_FORMAT).to_json_dict()


def _merge(parts: list[dict]) -> dict:
    """One validation result from the results of the same suite on disjoint parts of the rows: counts
    summed, percentages recomputed over the whole, partial lists concatenated up to the evidence cap.
    Every row of a sample id is in one part (parts are hash partitions of sample_id), so uniqueness per
    part is uniqueness overall."""
    out = json.loads(json.dumps(parts[0]))
    for i, r in enumerate(out["results"]):
        rs = [p["results"][i] for p in parts]
        r["success"] = all(x["success"] for x in rs)
        res, got = r["result"], [x["result"] for x in rs]
        for key in ("element_count", "missing_count", "unexpected_count"):
            if key in res:
                res[key] = sum(g.get(key) or 0 for g in got)
        for key in ("partial_unexpected_list", "partial_unexpected_index_list", "unexpected_index_list"):
            if key in res:
                res[key] = [v for g in got for v in g.get(key) or []][
                    : EVIDENCE_CAP if "partial" in key else None
                ]
        if "unexpected_list" in res:
            res["unexpected_list"] = [v for g in got for v in g.get("unexpected_list") or []]
        if "partial_unexpected_counts" in res:
            counts: dict[str, int] = {}
            for g in got:
                for c in g.get("partial_unexpected_counts") or []:
                    counts[json.dumps(c["value"])] = counts.get(json.dumps(c["value"]), 0) + c["count"]
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:EVIDENCE_CAP]
            res["partial_unexpected_counts"] = [{"value": json.loads(v), "count": n} for v, n in top]
        n, missing, bad = (
            res.get("element_count", 0),
            res.get("missing_count", 0),
            res.get("unexpected_count"),
        )
        if bad is not None and n:
            res["unexpected_percent_total"] = bad / n * 100 if "unexpected_percent_total" in res else None
            nonmissing = n - (missing or 0)
            pct = bad / nonmissing * 100 if nonmissing else 0.0
            res["unexpected_percent"] = pct if "missing_count" in res else bad / n * 100
            if "unexpected_percent_nonmissing" in res:
                res["unexpected_percent_nonmissing"] = pct
            if "missing_percent" in res:
                res["missing_percent"] = (missing or 0) / n * 100
        if res.get("unexpected_percent_total") is None:
            res.pop("unexpected_percent_total", None)
    ok = sum(r["success"] for r in out["results"])
    total = len(out["results"])
    out["success"] = ok == total
    out["statistics"] = {
        "evaluated_expectations": total,
        "successful_expectations": ok,
        "unsuccessful_expectations": total - ok,
        "success_percent": ok / total * 100 if total else None,
    }
    out["meta"]["batch_markers"] = {
        "pandas_data_fingerprints": [
            p["meta"].get("batch_markers", {}).get("pandas_data_fingerprint") for p in parts
        ]
    }
    out["meta"]["synthreg_partitions"] = {"count": len(parts), "rows": "hash(sample_id) % count"}
    return out


def check(rule: ProvenanceRule, ctx: Context, evidence_dir: Path | None = None) -> Outcome:
    present = {r[0] for r in ctx.con.sql("DESCRIBE manifest").fetchall()}
    missing = [c for c in COLUMNS if c not in present]
    if missing:
        return Outcome(
            False, f"manifest lacks provenance columns {missing}", measured=len(missing), threshold=0
        )
    # Great Expectations reads pandas: the whole manifest at once would take ~2 KB a row (2.2 GB at 1M
    # rows, issue 13), so above PART_ROWS it runs on hash partitions of sample_id, one at a time, and the
    # results are merged (_merge); a duplicate id always falls in one partition.
    rows = ctx.one("SELECT count(*) FROM manifest")[0]
    parts = max(1, -(-rows // PART_ROWS))
    select = f"SELECT {', '.join(COLUMNS)}, {SQL_PROBLEM} AS name_problem FROM manifest"
    batch = _batches()
    results = []
    for i in range(parts):
        where = f" WHERE coalesce(hash(sample_id) % {parts}, 0) = {i}" if parts > 1 else ""
        df = ctx.con.sql(select + where).df()
        result = batch(df).validate(suite(), result_format=_FORMAT).to_json_dict()
        del df
        for r in result["results"]:  # COMPLETE lists every offending row; the first ids are evidence
            for key in ("unexpected_list", "unexpected_index_list"):
                if key in r["result"]:
                    r["result"][key] = r["result"][key][:EVIDENCE_CAP]
        results.append(result)
    result = results[0] if parts == 1 else _merge(results)
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
