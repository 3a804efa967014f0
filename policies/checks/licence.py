"""Licence rules: known licences, licences against the intended use, attribution, withdrawn sources.

The knowledge base (``policies/licenses.yaml``) states each licence's commercial terms and use
restrictions with citations. A generator's restrictions apply to the dataset only where they flow to
outputs (FLUX.1-dev §4(a), OpenRAIL-M paragraph 5); a source's licence always applies, because the
synthetic images are derived from it (conditioning, filtering or the generator's own training).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from policies.context import Context, Outcome
from registry.core.errors import ConfigError
from registry.core.workspace import inside
from registry.records.config import load_yaml_model
from registry.records.policy import (
    AttributionRule,
    Evidence,
    LicenceKnownRule,
    LicenceUseRule,
    SourceWithdrawnRule,
    WithdrawnList,
)


def _subjects(ctx: Context, kinds: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(what, licence id, is a generator) for every generator and source in scope."""
    out = []
    if "generators" in kinds:
        out += [(f"generator {g['name']}", g["licence"], True) for g in ctx.generators()]
    if "sources" in kinds:
        out += [(f"source {s.name}", s.licence, False) for s in ctx.recipe.sources]
    if "generator-training-sources" in kinds:
        out += [
            (f"generator training source {s.name}", s.licence, False)
            for s in ctx.recipe.generator.training_sources
        ]
    return out


def check_known(rule: LicenceKnownRule, ctx: Context) -> Outcome:
    subjects = _subjects(ctx, ["generators", "sources", "generator-training-sources"])
    unknown = sorted({(what, lic) for what, lic, _ in subjects if ctx.kb.get(lic) is None})
    if unknown:
        listed = "; ".join(f"{what}: {lic!r}" for what, lic in unknown)
        return Outcome(
            False,
            f"licence id not in the knowledge base: {listed}. Use a known id "
            "(policies/licenses.yaml) or add the licence there with citations",
            measured=len(unknown),
            threshold=0,
            evidence=Evidence(count=len(unknown), details={"unknown": [lic for _, lic in unknown]}),
        )
    return Outcome(True, f"all {len(subjects)} licences are known", measured=0, threshold=0)


def check_use(rule: LicenceUseRule, ctx: Context) -> Outcome:
    use = ctx.recipe.intended_use
    assert use is not None  # the engine refuses to validate without one
    purposes = set(use.purposes)
    for p in list(purposes):
        purposes |= set(ctx.kb.purpose_implies.get(p, []))
    if use.commercial:
        purposes.add("commercial")
    conflicts = []
    for what, licence_id, is_generator in _subjects(ctx, rule.subjects):
        lic = ctx.kb.get(licence_id)
        if lic is None:
            continue  # licence-known reports it; an unknown licence never passes that rule
        if is_generator and not lic.restrictions_flow_to_outputs:
            continue
        forbidden = set(lic.restricted_uses)
        if lic.non_commercial:
            forbidden.add("commercial")
        for purpose in sorted(purposes & forbidden):
            cite = lic.citations.get(purpose) or lic.citations.get("restricted_uses") or lic.url
            conflicts.append({"subject": what, "licence": lic.id, "use": purpose, "citation": cite})
    if conflicts:
        first = conflicts[0]
        return Outcome(
            False,
            f"{first['subject']} is licensed {first['licence']}, which does not allow "
            f"{first['use']} ({first['citation']})"
            + (f"; and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""),
            measured=len(conflicts),
            threshold=0,
            evidence=Evidence(count=len(conflicts), details={"conflicts": conflicts}),
        )
    return Outcome(True, f"every licence allows {sorted(purposes)}", measured=0, threshold=0)


def check_attribution(rule: AttributionRule, ctx: Context) -> Outcome:
    duties = []
    for what, licence_id, _ in _subjects(ctx, ["generators", "sources", "generator-training-sources"]):
        lic = ctx.kb.get(licence_id)
        if lic is not None and (lic.attribution or lic.share_alike):
            duties.append(
                {
                    "subject": what,
                    "licence": lic.id,
                    "attribution": lic.attribution,
                    "share_alike": lic.share_alike,
                    "text": lic.attribution_text or f"{what}, licensed under {lic.name} ({lic.url})",
                }
            )
    return Outcome(
        True,
        f"{len(duties)} attribution duties collected for the dataset card",
        measured=len(duties),
        evidence=Evidence(count=len(duties), details={"duties": duties}),
    )


def load_withdrawn(ws: Path, path: str) -> WithdrawnList:
    file = inside(ws, path, "withdrawn-sources list")
    if not file.exists():
        return WithdrawnList()
    return load_yaml_model(file, WithdrawnList, "withdrawn-sources list", ConfigError)


def check_withdrawn(rule: SourceWithdrawnRule, ctx: Context) -> Outcome:
    deny = {w.name: w for w in load_withdrawn(ctx.ws, rule.deny_list).withdrawn}
    hits = []
    for s in ctx.sources():
        if s.status == "withdrawn":
            hits.append({"source": s.name, "why": "marked withdrawn in the recipe"})
        elif s.name in deny:
            hits.append({"source": s.name, "why": f"on {rule.deny_list}: {deny[s.name].reason}"})
    if hits:
        return Outcome(
            False,
            f"withdrawn source used: {hits[0]['source']} ({hits[0]['why']}); remove it and regenerate",
            measured=len(hits),
            threshold=0,
            evidence=Evidence(count=len(hits), details={"withdrawn": hits}),
        )
    return Outcome(True, f"none of {len(ctx.sources())} sources is withdrawn", measured=0, threshold=0)
