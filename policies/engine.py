"""The policy engine: load packs, the licence knowledge base and waivers; evaluate; write the report.

    report = validate(Path("data/digits/filtered"), ws)   # writes policy/report.json and report.md
    report.passed                                         # False: an error rule failed, unwaived

A rule's outcome becomes its status: pass; fail (error rule) or warn (warn rule) when not ok;
waived when a failing error rule has a waiver for this dataset that has not expired; ``not run`` when the
check's inputs are missing (no classifier observed the attribute, no memorisation distance was computed,
the recipe declares no such attribute), with why. A rule with ``require: ran`` fails (or warns) instead.
``not run`` is never counted as a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from policies import reuse
from policies.checks import licence, prompt, provenance, quality, representation
from policies.context import Context, Outcome
from policies.reuse import REUSABLE_KINDS
from registry.core import yamlio
from registry.core.digests import sha256_file
from registry.core.errors import PolicyError
from registry.core.fsio import atomic_write_text
from registry.core.names import shown
from registry.core.workspace import inside, relative
from registry.exports.policy_md import render_markdown
from registry.records.config import format_validation_error, load_recipe, load_yaml_model
from registry.records.dataset import Recipe
from registry.records.policy import (
    NOT_APPLICABLE,
    NOT_RUN,
    IgnoredWaiver,
    LicenceBase,
    PolicyPack,
    PolicyReport,
    RepresentationRule,
    Rule,
    RuleResult,
    ValidationStamp,
    Waiver,
    WaiverFile,
)
from registry.store import audit
from registry.store import manifest as mf

PACKAGE = Path(__file__).parent
DEFAULT_PACKS = [PACKAGE / "packs" / "default.yaml"]
DEFAULT_KB = PACKAGE / "licenses.yaml"

CHECKS: dict[str, Callable[..., Outcome]] = {
    "licence-use": licence.check_use,
    "licence-known": licence.check_known,
    "attribution": licence.check_attribution,
    "source-withdrawn": licence.check_withdrawn,
    "prompt-deny": prompt.check_deny,
    "prompt-personal-data": prompt.check_personal_data,
    "prompt-length": prompt.check_length,
    "representation": representation.check,
    "provenance": provenance.check,
    "quality": quality.check,
    "leakage": quality.check_leakage,
}


def load_pack(path: Path) -> PolicyPack:
    """A pack, or a PolicyError naming the file, the rule and the problem."""
    if not path.is_file():
        raise PolicyError(f"policy pack {path} does not exist; check params.yaml's validate.packs")
    data = yamlio.load_file(path, "policy pack", PolicyError)
    try:
        return PolicyPack.model_validate(data)
    except ValidationError as e:
        rules = data.get("rules") if isinstance(data, dict) else None
        lines = format_validation_error(e, f"policy pack {path}").splitlines()
        named = [lines[0]]
        for line, err in zip(lines[1:], e.errors(), strict=True):
            loc = err["loc"]
            if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(rules, list):
                rid = rules[loc[1]].get("id", "?") if isinstance(rules[loc[1]], dict) else "?"
                field = ".".join(shown(p)[1:-1] if isinstance(p, str) else str(p) for p in loc[3:])
                rid = shown(rid) if isinstance(rid, str) else "?"
                line = f"  rule {rid} (rules[{loc[1]}]) {field or '(the rule)'}: " + line.split(": ", 1)[-1]
            named.append(line)
        raise PolicyError("\n".join(named)) from None


def load_packs(paths: list[Path]) -> list[tuple[Path, PolicyPack]]:
    packs = [(p, load_pack(p)) for p in paths]
    seen: dict[str, Path] = {}
    for path, pack in packs:
        for rule in pack.rules:
            if rule.id in seen:
                raise PolicyError(
                    f"rule id {rule.id!r} is in both {seen[rule.id]} and {path}; ids must be unique"
                )
            seen[rule.id] = path
    return packs


def load_kb(path: Path = DEFAULT_KB) -> LicenceBase:
    return load_yaml_model(path, LicenceBase, "licence knowledge base", PolicyError)


def load_waivers(path: Path | None) -> list[Waiver]:
    if path is None or not path.exists():
        return []
    return load_yaml_model(path, WaiverFile, "waivers file", PolicyError).waivers


def _status(rule: Rule, outcome: Outcome, waiver: Waiver | None) -> str:
    if outcome.ok:
        return "pass"
    if not outcome.applies:
        return NOT_APPLICABLE
    if not outcome.ran and rule.require != "ran":
        return NOT_RUN
    if rule.severity == "warn":
        return "warn"
    return "waived" if waiver else "fail"


def evaluate(
    ctx: Context,
    packs: list[tuple[Path, PolicyPack]],
    waivers: list[Waiver],
    today: date,
    evidence_dir: Path | None = None,
    progress: Callable[..., None] | None = None,
    reuse: Mapping[str, RuleResult] | None = None,
) -> list[RuleResult]:
    """Every rule of every pack, its results in pack order; ``progress(done, total, rule_id)`` before each
    rule is checked. A rule ``reusable`` from ``reuse`` (validate's results, when ``policies.reuse``
    found the same inputs) keeps its outcome, and only its waiver is decided again.

    Provenance rules are checked last (and shown last by ``progress``): their Great Expectations suite
    waits for GX's import (``provenance.import_ahead``), and the other rules' DuckDB queries run
    meanwhile."""
    todo = [(pack, rule) for _, pack in packs for rule in pack.rules]
    done: dict[int, RuleResult] = {}
    for i in sorted(range(len(todo)), key=lambda i: todo[i][1].kind == "provenance"):  # a stable sort
        pack, rule = todo[i]
        if progress:
            progress(len(done), len(todo), rule.id)
        waiver = next(
            (
                w
                for w in waivers
                if w.rule_id == rule.id and w.scope in (ctx.recipe.dataset, "*") and w.expires >= today
            ),
            None,
        )
        if (before := reusable(rule, pack, reuse)) is not None:
            done[i] = _waived_again(before, waiver)
            continue
        check = CHECKS[rule.kind]
        extra: dict[str, Any] = {"evidence_dir": evidence_dir} if rule.kind == "provenance" else {}
        outcome = check(rule, ctx, **extra)
        status = _status(rule, outcome, waiver)
        if not outcome.ran and rule.require == "ran":
            outcome.message = f"required to run ({rule.id} has require: ran), but {outcome.message}"
        done[i] = RuleResult(
            rule_id=rule.id,
            pack=pack.id,
            kind=rule.kind,
            severity=rule.severity,
            status=status,
            message=outcome.message,
            measured=outcome.measured,
            threshold=outcome.threshold,
            evidence=outcome.evidence,
            waiver=waiver if status == "waived" else None,
        )
    if progress:
        progress(len(todo), len(todo))
    return [done[i] for i in range(len(todo))]


def reusable(rule: Rule, pack: PolicyPack, reuse: Mapping[str, RuleResult] | None) -> RuleResult | None:
    """Validate's result for ``rule`` when its outcome may be reused (its kind reads nothing the stamp
    does not bind, and it is the same rule of the same pack), else None: the rule is checked again."""
    before = reuse.get(rule.id) if reuse is not None and rule.kind in REUSABLE_KINDS else None
    if before is None or (before.pack, before.kind, before.severity) != (pack.id, rule.kind, rule.severity):
        return None
    return before


def _waived_again(before: RuleResult, waiver: Waiver | None) -> RuleResult:
    """``before`` with its waiver decided again: a failing error rule (``fail`` or ``waived``, the only
    statuses a waiver changes, see ``_status``) is waived by ``waiver`` now, or fails."""
    if before.status not in ("fail", "waived"):
        return before
    status = "waived" if waiver else "fail"
    return before.model_copy(update={"status": status, "waiver": waiver})


def check(
    ws: Path,
    manifest_path: Path,
    recipe: Recipe,
    packs: Sequence[Path | str] | None = None,
    waivers: Path | str | None = None,
    licences: Path | str | None = None,
    evidence_dir: Path | None = None,
    today: date | None = None,
    manifest_name: str | None = None,
    progress: Callable[..., None] | None = None,
) -> PolicyReport:
    """Evaluate the packs on the manifest at ``manifest_path``; the report, written nowhere.

    ``manifest_name`` is what the report calls the manifest (default: its path in the workspace).
    """
    return _checked(
        ws, manifest_path, recipe, packs, waivers, licences, evidence_dir, today, manifest_name, progress
    )[0]


@dataclass(frozen=True)
class Recheck:
    """What a re-check did: the rules whose outcome it reused from validate, those it checked again, and
    why it could not reuse more (None: all it may reuse)."""

    reused: list[str]
    ran: list[str]
    why: str | None

    def summary(self) -> str:
        """One line for a person, e.g. in `synthreg release`'s output."""
        n = len(self.reused) + len(self.ran)
        if not self.reused:
            return f"policy re-check: ran all {n} rules again ({self.why or 'none may be reused'})"
        head = (
            f"policy re-check: reused validate's result for {len(self.reused)} of {n} rules (report.json as "
            "validate wrote it in this clone; same manifest, packs, licence base, waivers file, recipe and "
            "policy code)"
        )
        return head + (f"; ran again: {', '.join(self.ran)} (they read other files)" if self.ran else "")


def recheck(
    ws: Path,
    manifest_path: Path,
    recipe: Recipe,
    report_text: str,
    packs: Sequence[Path | str] | None = None,
    waivers: Path | str | None = None,
    licences: Path | str | None = None,
    today: date | None = None,
) -> tuple[PolicyReport, Recheck]:
    """``check`` again for the report whose text is ``report_text``, reusing validate's outcomes where
    ``policies.reuse`` finds that validate wrote exactly this report from the same inputs (issue 22)."""
    from registry.core.digests import sha256_bytes

    said = sha256_bytes(report_text.encode())
    found = reuse.read_stamp(ws, said)
    before = PolicyReport.model_validate_json(report_text) if found is not None else None
    report, stamp = _checked(
        ws, manifest_path, recipe, packs, waivers, licences, today=today, reuse_from=(found, before)
    )
    why = reuse.why_not(found, stamp)
    earlier = {r.rule_id: r for r in before.results} if why is None and before is not None else {}
    reused = [
        r.rule_id
        for r in report.results
        if r.kind in REUSABLE_KINDS
        and (e := earlier.get(r.rule_id)) is not None
        and (e.pack, e.kind, e.severity) == (r.pack, r.kind, r.severity)
    ]  # the rules ``reusable`` let evaluate reuse
    ran = [r.rule_id for r in report.results if r.rule_id not in reused]
    return report, Recheck(reused, ran, why)


def _checked(
    ws: Path,
    manifest_path: Path,
    recipe: Recipe,
    packs: Sequence[Path | str] | None = None,
    waivers: Path | str | None = None,
    licences: Path | str | None = None,
    evidence_dir: Path | None = None,
    today: date | None = None,
    manifest_name: str | None = None,
    progress: Callable[..., None] | None = None,
    reuse_from: tuple[ValidationStamp | None, PolicyReport | None] = (None, None),
    ahead: bool = False,
) -> tuple[PolicyReport, ValidationStamp]:
    """``check``'s report, and the stamp of what made it (``report_sha256`` left empty); with
    ``reuse_from`` (validate's stamp and report), the reusable outcomes of the report when the stamp
    names the same inputs. ``ahead``: ``provenance.import_ahead`` once the packs are accepted."""
    if recipe.intended_use is None:
        raise PolicyError(
            f"recipe for {recipe.dataset} declares no intended_use; add one (commercial: true|false, "
            "purposes: [...]) so the licence rules have something to check against"
        )
    # Packs a workspace names must live in it (they are reviewed and versioned with it); the packaged
    # default is used only when none is named.
    pack_paths = [inside(ws, p, "policy pack") for p in packs or []] or DEFAULT_PACKS
    loaded = load_packs(pack_paths)
    _attributes_declared(loaded, recipe)
    kb_path = inside(ws, licences, "licence knowledge base") if licences else DEFAULT_KB
    kb = load_kb(kb_path)
    waivers_path = inside(ws, waivers, "waivers file") if waivers else None
    # Only waivers signed by a trusted approver count (registry.trust.waivers); plain entries are reported.
    from registry.trust.waivers import load_signed

    known = {r.id for _, pack in loaded for r in pack.rules}
    signed, ignored = load_signed(ws, known, today or date.today())
    if ahead and any(r.kind == "provenance" for _, pack in loaded for r in pack.rules):
        provenance.import_ahead()  # after the waivers' securesystemslib: see ``import_ahead``
    plain = load_waivers(waivers_path)
    ignored = [
        IgnoredWaiver(
            rule_id=w.rule_id,
            scope=w.scope,
            approver=w.approver,
            source=relative(ws, waivers_path) if waivers_path else "?",
            why="unsigned (a waivers file entry): only waivers signed by a trusted approver count; "
            "sign it with `synthreg waive`",
        )
        for w in plain
    ] + ignored

    con = _connected(manifest_path)
    ctx = Context(ws=ws, manifest=manifest_path, recipe=recipe, kb=kb, con=con)
    if evidence_dir is not None:  # only now: bad input above leaves no folder behind
        evidence_dir.mkdir(parents=True, exist_ok=True)
    inputs = ValidationStamp(
        report_sha256="0" * 64,  # not known before the report is written; reuse.why_not ignores it
        manifest_sha256=sha256_file(manifest_path),
        packs={_name(ws, p): sha256_file(p) for p, _ in loaded},
        licence_kb_sha256=sha256_file(kb_path),
        waivers_sha256=sha256_file(waivers_path) if waivers_path and waivers_path.exists() else None,
        recipe_sha256=reuse.recipe_sha256(recipe),
        engine_sha256=reuse.engine_sha256(),
    )
    stamp, before = reuse_from
    same = before is not None and stamp is not None and reuse.why_not(stamp, inputs) is None
    earlier = {r.rule_id: r for r in before.results} if same and before is not None else None
    results = evaluate(ctx, loaded, signed, today or date.today(), evidence_dir, progress, earlier)
    report = PolicyReport(
        dataset=recipe.dataset,
        manifest=manifest_name or relative(ws, manifest_path),
        manifest_sha256=inputs.manifest_sha256,
        packs=inputs.packs,
        licence_kb_sha256=inputs.licence_kb_sha256,
        waivers_sha256=inputs.waivers_sha256,
        intended_use=recipe.intended_use,
        results=results,
        ignored_waivers=ignored,
        passed=not any(r.status == "fail" for r in results),
    )
    return report, inputs


def _connected(manifest_path: Path) -> Any:
    """The manifest's DuckDB connection for the rules and GX's suite. They query it about fifteen times,
    and each query parsed its Parquet footer again (issue 22: 0.01-0.02 s each at 1,000,000 rows in 244
    row groups): DuckDB keeps the footer now, while the file's modification time is the same (the check
    only reads it). GLOBAL, so that the cursors GX reads by keep it too."""
    con = mf.connect(manifest_path)
    con.execute("SET GLOBAL parquet_metadata_cache = true")
    return con


def _attributes_declared(packs: list[tuple[Path, PolicyPack]], recipe: Recipe) -> None:
    """Refuse a pack whose representation rule measures an attribute the recipe does not declare (issue
    19: the digits pack's stroke rules on a pets dataset): it is the wrong pack for the dataset, and no
    waiver should be needed for a rule about an attribute the dataset does not have."""
    for path, pack in packs:
        for rule in pack.rules:
            if isinstance(rule, RepresentationRule) and rule.attribute not in recipe.attributes:
                declared = ", ".join(recipe.attributes) or "none"
                raise PolicyError(
                    f"policy pack {path.name} rule {rule.id} measures attribute {rule.attribute!r}, which "
                    f"the recipe of {recipe.dataset} does not declare (it declares: {declared}); use a pack "
                    "made for this dataset (`synthreg init` writes one) or drop the rule"
                )


def _datasets_by_duckdb(manifest_path: Path) -> tuple[list, list[str]]:
    """``mf.datasets_and_columns`` by DuckDB, for the files it leaves to DuckDB (one pyarrow cannot
    read, names that differ only in case, a dataset column that is not text): for a file that is not
    Parquet, a ManifestError naming it."""
    con = mf.connect(manifest_path)
    try:
        columns = [r[0] for r in con.execute("DESCRIBE manifest").fetchall()]
        if "dataset" not in columns:
            return [], columns
        found = con.execute("SELECT DISTINCT dataset FROM manifest ORDER BY 1").fetchall()
        return [r[0] for r in found], columns
    finally:
        con.close()


def uncovered_attributes(ws: Path, recipe: Recipe, packs: Sequence[Path | str] | None) -> list[str]:
    """The recipe's attributes that no representation rule of the packs measures."""
    pack_paths = [inside(ws, p, "policy pack") for p in packs or []] or DEFAULT_PACKS
    measured = {
        rule.attribute
        for _, pack in load_packs(pack_paths)
        for rule in pack.rules
        if isinstance(rule, RepresentationRule)
    }
    return [a for a in recipe.attributes if a not in measured]


def validate(
    filtered: Path | str,
    ws: Path,
    recipe: Path | str,
    packs: Sequence[Path | str] | None = None,
    waivers: Path | str | None = None,
    licences: Path | str | None = None,
    out: Path | str | None = None,
    today: date | None = None,
    progress: Callable[..., None] | None = None,
) -> PolicyReport:
    """Evaluate the packs on ``filtered/manifest.parquet``; write ``report.json`` and ``report.md``."""
    in_dir = inside(ws, filtered, "filtered folder")
    manifest_path = in_dir / "manifest.parquet"
    recipe_model = load_recipe(inside(ws, recipe, "recipe"))
    _same_dataset(manifest_path, recipe_model, recipe)
    out_dir = inside(ws, out or in_dir.parent / "policy", "report folder")  # symlinks included
    audit.log_path(ws)  # refused before anything is written
    try:
        report, stamp = _checked(
            ws,
            manifest_path,
            recipe_model,
            packs,
            waivers,
            licences,
            out_dir,
            today,
            progress=progress,
            ahead=True,
        )
    finally:  # no thread is left importing (a fork after validate would inherit its import locks)
        provenance.imported()
    atomic_write_text(out_dir / "report.json", report.to_json())
    atomic_write_text(out_dir / "report.md", render_markdown(report))
    written = sha256_file(out_dir / "report.json")
    reuse.write_stamp(ws, stamp.model_copy(update={"report_sha256": written}))  # for release's re-check
    audit.append_validation(ws, report, relative(ws, out_dir), written)
    return report


def _same_dataset(manifest_path: Path, recipe: Recipe, recipe_path: Path | str) -> None:
    """Refuse to check a manifest against another dataset's recipe (its title and intended use would be
    the wrong ones): without --recipe, params.yaml's recipe is used, whatever the manifest holds. A
    missing manifest is left to ``check``, which names it after the packs are read."""
    if not manifest_path.is_file():
        return
    found, columns = mf.datasets_and_columns(manifest_path) or _datasets_by_duckdb(manifest_path)
    missing = [c for c in mf.SCHEMA.names if c not in columns]
    if missing:  # issue 24: a Binder error (a traceback) before
        raise PolicyError(
            f"manifest {manifest_path} lacks the column(s) {', '.join(missing[:8])}"
            + (" ..." if len(missing) > 8 else "")
            + "; it was not written by synthreg: run `synthreg filter` to make it"
        )
    if found != [recipe.dataset]:
        raise PolicyError(
            f"manifest {manifest_path} holds dataset {', '.join(map(repr, found)) or '(none)'}, but recipe "
            f"{recipe_path} is for {recipe.dataset!r}; pass --recipe with the recipe that made it"
        )


def _name(ws: Path, path: Path) -> str:
    return (
        relative(ws, path) if path.resolve().is_relative_to(ws) else f"synthreg:{path.relative_to(PACKAGE)}"
    )
