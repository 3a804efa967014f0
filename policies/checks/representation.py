"""Representation and bias: the share of each attribute value among accepted images.

Measured on the attributes asked for in the prompt *and* on the attributes observed on the images
(the filter's measuring function), because a generator can ignore what the prompt asks: tiny-digits,
asked for a thin stroke, draws a bold one about half the time (see its model card).
"""

from __future__ import annotations

from policies.context import Context, Outcome
from registry.policy import Evidence, RepresentationRule


def check(rule: RepresentationRule, ctx: Context) -> Outcome:
    column = "attributes" if rule.measured_on == "requested" else "observed_attributes"
    kept = "decision = 'accepted' OR decision IS NULL"
    measured = ctx.con.execute(
        f"SELECT count(*) FROM manifest WHERE ({kept}) AND {column}[?] IS NOT NULL", [rule.attribute]
    ).fetchall()[0][0]  # fetchall: duckdb 2 keeps a fetchone() result open
    if measured == 0:
        return Outcome(
            False,
            f"attribute {rule.attribute!r} is not {rule.measured_on} on any accepted image, so its "
            "representation cannot be shown",
            threshold=rule.min_ratio,
        )
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
    offending = []
    worst_ratio, worst_share = 1.0, 1.0
    for g, c in counts.items():
        total = sum(c.values())
        shares = {v: c.get(v, 0) / total for v in universe}
        ratio = min(shares.values()) / max(shares.values())
        worst_ratio = min(worst_ratio, ratio)
        worst_share = min(worst_share, *shares.values())
        low = [v for v, s in shares.items() if s < rule.min_share]
        if ratio < rule.min_ratio or low:
            top = max(shares, key=lambda v: shares[v])
            offending.append(
                {
                    "group": g,
                    "shares": {v: round(s, 4) for v, s in shares.items()},
                    "ratio": round(ratio, 4),
                    "dominant": top,
                }
            )
    scope = "per identity" if rule.per_identity else "overall"
    # Report the quantity the rule bounds: the min/max ratio, or the smallest share when only that is set.
    by_share = rule.min_share > 0 and rule.min_ratio == 0
    measured = round(worst_share if by_share else worst_ratio, 4)
    threshold = rule.min_share if by_share else rule.min_ratio
    if not offending:
        return Outcome(
            True,
            f"{rule.measured_on} {rule.attribute} is within bounds {scope} (worst min/max ratio "
            f"{worst_ratio:.2f}, smallest share {worst_share:.2f})",
            measured=measured,
            threshold=threshold,
        )
    first = offending[0]
    where = f"identity {first['group']}" if rule.per_identity else "the dataset"
    sample_where = f"({kept}) AND {column}[?] = ?" + (" AND identity = ?" if rule.per_identity else "")
    params = [rule.attribute, first["dominant"]] + ([first["group"]] if rule.per_identity else [])
    ev = ctx.sample_ids(sample_where, params)
    return Outcome(
        False,
        f"{rule.measured_on} {rule.attribute} is unbalanced {scope}: in {where} the shares are "
        f"{first['shares']} (min/max {first['ratio']:.2f} < {rule.min_ratio}"
        + (f", or a share < {rule.min_share}" if rule.min_share else "")
        + f"); {len(offending)} group(s) offend",
        measured=measured,
        threshold=threshold,
        evidence=Evidence(count=ev.count, sample_ids=ev.sample_ids, details={"groups": offending[:20]}),
    )
