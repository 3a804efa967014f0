"""Sizes of the code, as issue 18 counts them: modules per folder, the longest module and function, and
every function over the limit with the reason it is still long.

    python scripts/sizes.py           # the counts; exit 1 when a module or function over the limit is
                                      # not listed in LONG below with its reason

Limits (CONTRIBUTING.md): a module of about 600 lines, a function of about 80. A function over 80 lines
is either split or named in ``LONG`` with why it reads better whole or what is left to split.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("registry", "generators", "policies")
MODULE_LIMIT = 600
FUNCTION_LIMIT = 80

# function (module:qualified name) -> why it is still over FUNCTION_LIMIT lines
LONG: dict[str, str] = {
    # Read better whole: one document, built in the order a reader checks it against its standard.
    "registry.exports.prov:prov_document": "one W3C PROV document, entity by entity in the order of PROV-DM",
    "registry.exports.croissant:_rai": "one Croissant RAI object, a property a line as the spec lists them",
    # One sequence of refusals before anything is written, then one transaction: split, the order of the
    # checks (what is refused before what) would be spread over several functions.
    "registry.releases.publish:publish": "the journalled transaction's stage step, signed in one place",
    "registry.releases.approve:approve": "refusals in order, then one journalled transaction",
    "registry.releases.withdraw:withdraw": "refusals in order (one-line reason, actor), then one transaction",
    "registry.releases.verify:verify": "its problems' order is its output; each step marks the checklist",
    "registry.trust.credentials:load_credentials": "every refusal of a C2PA key and chain, in order",
    "registry.trust.credentials:keygen_c2pa": "one test certificate chain, root to signer",
    # Not split yet (issue 18 moved them, and split the longest: impact, verify, assemble, derive):
    "registry.cli.pipeline:init": "one typer option per recipe field it writes; the body is six lines",
    "registry.cli.releases:derive": "one typer option per exclusion criterion; the body calls derive once, "
    "inside its OpenLineage stage",
    "registry.downstream.train:train": "resolve, split, mix, fit, log in order; the mix shares ~10 locals",
    "registry.releases.derive:derive": "refusals in order, then the derived manifest and one publish",
}


def functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method, nested ones included."""
    out: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                out.append((prefix + child.name, (child.end_lineno or start) - start + 1))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")

    walk(ast.parse(path.read_text()), "")
    return out


def main() -> int:
    files = sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))
    per_folder = Counter(p.parent.relative_to(REPO).as_posix() for p in files)
    lines = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in files}
    funcs = [
        (f"{p.relative_to(REPO).with_suffix('').as_posix().replace('/', '.')}:{name}", n)
        for p in files
        for name, n in functions(p)
    ]
    print("modules per folder:")
    for folder, n in sorted(per_folder.items()):
        print(f"  {folder:32} {n}")
    longest = max(lines, key=lines.__getitem__)
    print(f"longest module: {longest} ({lines[longest]} lines)")
    name, n = max(funcs, key=lambda f: f[1])
    print(f"longest function: {name} ({n} lines)")
    over_modules = sorted((m, n) for m, n in lines.items() if n > MODULE_LIMIT)
    over_functions = sorted(((f, n) for f, n in funcs if n > FUNCTION_LIMIT), key=lambda f: -f[1])
    print(f"modules over {MODULE_LIMIT} lines: {len(over_modules)}")
    for m, n in over_modules:
        print(f"  {m} ({n})")
    print(f"functions over {FUNCTION_LIMIT} lines: {len(over_functions)}")
    bad = [m for m, _ in over_modules]
    for f, n in over_functions:
        why = LONG.get(f)
        print(f"  {f} ({n}): {why or 'NOT LISTED in scripts/sizes.py LONG'}")
        if why is None:
            bad.append(f)
    stale = sorted(set(LONG) - {f for f, _ in over_functions})
    for f in stale:
        print(f"  listed but no longer long (remove it from LONG): {f}")
    return 1 if bad or stale else 0


if __name__ == "__main__":
    sys.exit(main())
