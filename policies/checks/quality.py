"""Quality, privacy and leakage rules over the filtered manifest and the declared sources."""

from __future__ import annotations

from policies.context import Context, Outcome
from registry.records.policy import Evidence, LeakageRule, QualityRule

_METRICS = {
    # metric: (numerator condition, denominator condition, samples to cite when out of bounds)
    "accepted_share": ("decision = 'accepted'", "TRUE", "decision = 'rejected'"),
    "identity_consistency": (
        "identity_pred = identity",
        "identity_pred IS NOT NULL",
        "identity_pred IS NOT NULL AND identity_pred <> identity",
    ),
    # Over the rows whose distance to the real reference set was computed: a row never measured is not
    # "not memorised" (issue 21: it read `pass 0/300` when no distance had been computed for any row).
    "memorised_rate": (
        "starts_with(reason, 'memorised_copy')",
        "nn_distance IS NOT NULL",
        "starts_with(reason, 'memorised_copy')",
    ),
}

# What a metric needs, said when no row has it.
_NEEDS = {
    "accepted_share": "the manifest has no row",
    "identity_consistency": "no row has an identity prediction (identity_pred): the filter had no identity "
    "classifier for this dataset's domain",
    "memorised_rate": "no row has a distance to a real reference image (nn_distance): the filter had no "
    "real reference set for this dataset's domain",
}


def check(rule: QualityRule, ctx: Context) -> Outcome:
    num, den, cite = _METRICS[rule.metric]
    hits, total = ctx.one(
        f"SELECT count(*) FILTER (WHERE {num}), count(*) FILTER (WHERE {den}) FROM manifest"
    )
    bounds = " and ".join(
        b
        for b in (
            f">= {rule.min}" if rule.min is not None else "",
            f"<= {rule.max}" if rule.max is not None else "",
        )
        if b
    )
    if total == 0:
        return Outcome.not_run(f"{rule.metric} was not measured: {_NEEDS[rule.metric]}", threshold=bounds)
    value = hits / total
    ok = (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max)
    evidence = Evidence() if ok else ctx.sample_ids(cite)
    return Outcome(
        ok,
        f"{rule.metric} = {value:.4f} ({hits}/{total}); required {bounds}",
        measured=round(value, 6),
        threshold=bounds,
        evidence=evidence,
    )


def check_leakage(rule: LeakageRule, ctx: Context) -> Outcome:
    training = ctx.recipe.generator.training_sources
    evaluation = [s for s in ctx.recipe.sources if s.role == "evaluation"]
    if not evaluation:  # nothing to compare with: not a pass (issue 19 found it demanding digests anyway)
        return Outcome.not_run(
            "the recipe declares no evaluation source (role: evaluation), so there is nothing to compare the "
            "generator's training data with; declare the split downstream models are evaluated on"
        )
    undigested = [s.name for s in training + evaluation if not s.digest]
    if undigested:
        return Outcome(
            False,
            f"cannot compare by digest: no digest for {undigested}; add the sources' digests to the recipe",
            evidence=Evidence(count=len(undigested), details={"without_digest": undigested}),
        )
    if {t.digest for t in training} & {e.digest for e in evaluation}:
        pairs = [
            {"generator_training": t.name, "evaluation": e.name, "digest": t.digest}
            for t in training
            for e in evaluation
            if t.digest == e.digest
        ]
        return Outcome(
            False,
            "the generator was trained on data a downstream model is evaluated on: "
            f"{pairs[0]['generator_training']} = {pairs[0]['evaluation']} (sha256 {pairs[0]['digest']}); "
            "evaluate on a split the generator never saw",
            measured=len(pairs),
            threshold=0,
            evidence=Evidence(count=len(pairs), details={"overlap": pairs}),
        )
    return Outcome(
        True,
        f"{len(training)} generator training source(s) and {len(evaluation)} evaluation source(s) "
        "share no digest",
        measured=0,
        threshold=0,
    )
