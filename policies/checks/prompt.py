"""Prompt-content rules, evaluated once per distinct prompt (a million rows hold few distinct prompts)."""

from __future__ import annotations

import re
import time

from policies.context import Context, Outcome
from registry.core.errors import PolicyError
from registry.core.names import shown
from registry.records.policy import PromptDenyRule, PromptLengthRule, PromptPersonalDataRule

# Deliberately simple patterns: a report cites them, and a reviewer must be able to read them.
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d(?!\w)")


def _prompts(ctx: Context) -> list[str]:
    rows = ctx.once(
        "prompts",
        "SELECT DISTINCT p FROM "
        "(SELECT prompt AS p FROM manifest UNION SELECT negative_prompt FROM manifest)",
    )
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


# A pack's deny patterns are input: one with nested repetition such as `(a+)+$` backtracks for ever on a
# long prompt that almost matches (issue 24: `validate` hung until killed). The `regex` module's
# ``timeout`` bounds the work; each rule gets this many seconds over all its prompts. The module checks
# the clock only now and then: measured here, a 0.5 s limit stopped `(a+)+$` on 5,000 characters after
# about 2 s. (google-re2 would not backtrack at all, but refuses lookarounds the packs may use.)
DENY_BUDGET_S = 2.0


def check_deny(rule: PromptDenyRule, ctx: Context) -> Outcome:
    import regex

    budget_s = DENY_BUDGET_S

    flags = regex.IGNORECASE if rule.ignore_case else 0
    try:
        patterns = [regex.compile(p, flags) for p in rule.patterns]
    except regex.error as e:
        raise PolicyError(f"rule {rule.id}: a deny pattern does not compile ({e}); fix the pack") from None
    prompts = _prompts(ctx)
    deadline = time.monotonic() + budget_s
    bad = {}
    for p in prompts:
        for pat in patterns:
            try:
                found = pat.search(p, timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise PolicyError(
                    f"rule {rule.id}: pattern {shown(pat.pattern)} took over {budget_s:g} s on "
                    f"{len(prompts)} prompts (stopped at {shown(p, 40)}); it likely backtracks without "
                    "end (nested repetition such as (a+)+): rewrite it in the pack"
                ) from None
            if found:
                bad[p] = f"matches {pat.pattern!r}"
                break
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
