"""Representation and bias: the share of each attribute value among accepted images.

Measured on the attributes asked for in the prompt *and* on the attributes observed on the images
(the filter's measuring function), because a generator can ignore what the prompt asks: tiny-digits,
asked for a thin stroke, draws a bold one about half the time (see its model card).
"""

from __future__ import annotations

from policies.context import Context, Outcome
from registry.records.policy import Evidence, RepresentationRule


def _shares(
    rule: RepresentationRule, counts: dict[str, dict[str, int]], universe: list[str]
) -> tuple[list[dict], float, float]:
    """The groups (identities, or the whole dataset) whose shares break the rule's bounds, and the worst
    min/max ratio and smallest share over every group."""
    offending = []
    worst_ratio, worst_share = 1.0, 1.0
    for g, c in counts.items():
        total = sum(c.values())
        shares = {v: c.get(v, 0) / total for v in universe}
        ratio = min(shares.values()) / max(shares.values())
        smallest = min(shares.values())
        worst_ratio, worst_share = min(worst_ratio, ratio), min(worst_share, smallest)
        if ratio < rule.min_ratio or smallest < rule.min_share:
            offending.append(
                {
                    "group": g,
                    "shares": {v: round(s, 4) for v, s in shares.items()},
                    "ratio": round(ratio, 4),
                    "smallest_share": round(smallest, 4),
                    "dominant": max(shares, key=lambda v: shares[v]),
                }
            )
    return offending, worst_ratio, worst_share


def _describe(
    rule: RepresentationRule, offending: list[dict], n_groups: int, worst_ratio: float, worst_share: float
) -> tuple[str, str, str]:
    """The words of a failure: which bound broke, which groups, the worst of them."""
    first = offending[0]
    broken = " and ".join(
        b
        for b in (
            f"min/max ratio {worst_ratio:.4f} < {rule.min_ratio}" if worst_ratio < rule.min_ratio else "",
            f"smallest share {worst_share:.4f} < {rule.min_share}" if worst_share < rule.min_share else "",
        )
        if b
    )
    names = [str(o["group"]) for o in offending]
    groups = (
        f"{len(offending)} of {n_groups} identities ({', '.join(names[:10])}"
        + (", ..." if len(names) > 10 else "")
        + ")"
        if rule.per_identity
        else "the dataset"
    )
    worst_group = f"identity {first['group']}" if rule.per_identity else "the dataset"
    return broken, groups, worst_group


def _unmeasured(rule: RepresentationRule, ctx: Context, column: str, kept: str) -> Outcome | None:
    """Why the rule cannot be measured (not run, or a manifest that lacks what it was asked for), or None."""
    measured = ctx.one(
        f"SELECT count(*) FROM manifest WHERE ({kept}) AND {column}[?] IS NOT NULL", [rule.attribute]
    )[0]
    if measured == 0 and rule.measured_on == "observed":
        return Outcome.not_run(
            f"attribute {rule.attribute!r} was observed on no accepted image: the filter had no attribute "
            "classifier for it, so the observed representation was not measured",
            threshold=rule.min_ratio,
        )
    if measured == 0:  # declared and asked for, yet on no image: the manifest is wrong
        return Outcome(
            False,
            f"attribute {rule.attribute!r} is not {rule.measured_on} on any accepted image, so its "
            "representation cannot be shown",
            threshold=rule.min_ratio,
        )
    return None


def check(rule: RepresentationRule, ctx: Context) -> Outcome:
    column = "attributes" if rule.measured_on == "requested" else "observed_attributes"
    kept = "decision = 'accepted' OR decision IS NULL"
    unmeasured = _unmeasured(rule, ctx, column, kept)
    if unmeasured is not None:
        return unmeasured
    values = list(ctx.recipe.attributes.get(rule.attribute, []))
    group = "identity" if rule.per_identity else "'all'"
    rows = ctx.con.execute(
        f"SELECT {group} AS g, {column}[?] AS v, count(*) FROM manifest "
        f"WHERE ({kept}) AND {column}[?] IS NOT NULL GROUP BY ALL ORDER BY ALL",
        [rule.attribute, rule.attribute],
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for g, v, n in rows:
        counts.setdefault(g, {})[v] = n
    universe = sorted(set(values) | {v for c in counts.values() for v in c})
    offending, worst_ratio, worst_share = _shares(rule, counts, universe)
    scope = "per identity" if rule.per_identity else "overall"
    # Report the quantity the rule bounds: the min/max ratio, or the smallest share when only that is set.
    # When it fails, the quantity that broke its bound (the ratio first), so measured < threshold always.
    by_share = (rule.min_share > 0 and rule.min_ratio == 0) or (
        worst_ratio >= rule.min_ratio and worst_share < rule.min_share
    )
    measured = round(worst_share if by_share else worst_ratio, 4)
    threshold = rule.min_share if by_share else rule.min_ratio
    bounds = " and ".join(
        b
        for b in (
            f"min/max ratio >= {rule.min_ratio}" if rule.min_ratio else "",
            f"every share >= {rule.min_share}" if rule.min_share else "",
        )
        if b
    )
    worst = f"worst min/max ratio {worst_ratio:.4f}, smallest share {worst_share:.4f}"
    if not offending:
        return Outcome(
            True,
            f"{rule.measured_on} {rule.attribute} is within bounds {scope} ({worst}; required {bounds})",
            measured=measured,
            threshold=threshold,
        )
    # One message for every offending group (issue 12: it used to quote one group's shares as if they
    # were all): which groups, the worst of them, the bound; evidence = the dominant value's samples in
    # every offending group, the images that tip the balance.
    offending.sort(key=lambda o: (o["smallest_share"] if by_share else o["ratio"], str(o["group"])))
    first = offending[0]
    broken, groups, worst_group = _describe(rule, offending, len(counts), worst_ratio, worst_share)
    clauses = [
        f"({column}[?] = ?" + (" AND identity = ?)" if rule.per_identity else ")") for _ in offending[:100]
    ]
    params: list = [rule.attribute]
    for o in offending[:100]:
        params += [rule.attribute, o["dominant"]] + ([o["group"]] if rule.per_identity else [])
    ev = ctx.sample_ids(f"({kept}) AND {column}[?] IS NOT NULL AND ({' OR '.join(clauses)})", params)
    return Outcome(
        False,
        f"{rule.measured_on} {rule.attribute} is unbalanced {scope}: {broken}, in "
        f"{groups}; worst is {worst_group} with shares {first['shares']}",
        measured=measured,
        threshold=threshold,
        evidence=Evidence(count=ev.count, sample_ids=ev.sample_ids, details={"groups": offending[:20]}),
    )
