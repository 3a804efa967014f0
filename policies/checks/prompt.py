"""Prompt-content rules, evaluated once per distinct prompt (a million rows hold few distinct prompts)."""

from __future__ import annotations

import re

from policies.context import Context, Outcome
from registry.records.policy import PromptDenyRule, PromptLengthRule, PromptPersonalDataRule

# Deliberately simple patterns: a report cites them, and a reviewer must be able to read them.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")


def _prompts(ctx: Context) -> list[str]:
    rows = ctx.con.sql(
        "SELECT DISTINCT p FROM (SELECT prompt AS p FROM manifest UNION SELECT negative_prompt FROM manifest)"
    ).fetchall()
    return [r[0] for r in rows if r[0]]


def _outcome(ctx: Context, bad: dict[str, str], what: str, total: int) -> Outcome:
    if not bad:
        return Outcome(True, f"none of {total} distinct prompts has {what}", measured=0, threshold=0)
    evidence = ctx.sample_ids(
        "list_contains(?, prompt) OR list_contains(?, negative_prompt)", [list(bad)] * 2
    )
    first, why = next(iter(bad.items()))
    evidence = evidence.model_copy(update={"details": {"prompts": dict(list(bad.items())[:20])}})
    return Outcome(
        False,
        f"{evidence.count} samples have {what}: {first!r} ({why}); change the recipe's prompt templates",
        measured=evidence.count,
        threshold=0,
        evidence=evidence,
    )


def check_deny(rule: PromptDenyRule, ctx: Context) -> Outcome:
    flags = re.IGNORECASE if rule.ignore_case else 0
    patterns = [re.compile(p, flags) for p in rule.patterns]
    prompts = _prompts(ctx)
    bad = {}
    for p in prompts:
        hit = next((pat.pattern for pat in patterns if pat.search(p)), None)
        if hit:
            bad[p] = f"matches {hit!r}"
    return _outcome(ctx, bad, "a denied pattern", len(prompts))


def check_personal_data(rule: PromptPersonalDataRule, ctx: Context) -> Outcome:
    prompts = _prompts(ctx)
    bad = {}
    for p in prompts:
        if rule.emails and EMAIL.search(p):
            bad[p] = "an e-mail address"
        elif rule.phones and PHONE.search(p):
            bad[p] = "a phone number"
    return _outcome(ctx, bad, "personal data", len(prompts))


def check_length(rule: PromptLengthRule, ctx: Context) -> Outcome:
    prompts = _prompts(ctx)
    bad = {p: f"{len(p)} characters > {rule.max_chars}" for p in prompts if len(p) > rule.max_chars}
    longest = max((len(p) for p in prompts), default=0)
    out = _outcome(ctx, bad, "an over-long prompt", len(prompts))
    out.measured, out.threshold = longest, rule.max_chars
    return out
