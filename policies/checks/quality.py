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
    if not evaluation:  # issue 19: it demanded digests anyway, then accepted a made-up one
        return Outcome.not_applicable(
            "the recipe declares no evaluation source (role: evaluation), so no evaluation split must be "
            "kept from the generator's training data; no digest is needed"
        )
    undigested = [s.name for s in training + evaluation if not s.digest]
    if undigested:
        return Outcome(
            False,
            f"cannot compare by digest: no digest for {undigested}; add the sources' digests to the recipe",
            evidence=Evidence(count=len(undigested), details={"without_digest": undigested}),
        )
    verified, unverified, wrong = _check_digests(ctx, training + evaluation)
    if wrong:
        first = wrong[0]
        return Outcome(
            False,
            f"source {first['source']}'s declared digest {first['declared'][:12]} is not what its files at "
            f"{first['path']} hash to ({first['found'][:12]}); fix the recipe's digest or the files",
            measured=len(wrong),
            threshold=0,
            evidence=Evidence(count=len(wrong), details={"digest_mismatch": wrong}),
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
    how = "; ".join(
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("checked against their files", verified),
            ("declared, not verified", unverified),
        )
        if names
    )
    return Outcome(
        True,
        f"{len(training)} generator training source(s) and {len(evaluation)} evaluation source(s) "
        f"share no digest ({how})",
        measured=0,
        threshold=0,
        evidence=Evidence(details={"verified": verified, "declared_not_verified": unverified}),
    )


def _check_digests(ctx: Context, sources: list) -> tuple[list[str], list[str], list[dict]]:
    """Each source's declared digest against its files, when the recipe gives a ``path`` that is at hand:
    (verified, declared but not verified, mismatches)."""
    from registry.core.digests import folder_digest, sha256_file
    from registry.core.errors import WorkspaceError
    from registry.core.workspace import inside

    verified: list[str] = []
    unverified: list[str] = []
    wrong: list[dict] = []
    for s in sources:
        try:
            at = inside(ctx.ws, s.path, f"source {s.name}'s path") if s.path else None
        except WorkspaceError:
            at = None  # a path out of the workspace is not read: the digest stays unverified
        if at is None or not at.exists():
            unverified.append(s.name)
            continue
        found = folder_digest(at) if at.is_dir() else sha256_file(at)
        if found == s.digest:
            verified.append(s.name)
        else:
            wrong.append({"source": s.name, "path": s.path, "declared": s.digest, "found": found})
    return list(dict.fromkeys(verified)), list(dict.fromkeys(unverified)), wrong
