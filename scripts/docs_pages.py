"""Write (or check) the generated pages of the docs site: one page per CLI command, one API page per layer.

    python scripts/docs_pages.py write     # after adding a command, a module or an option
    python scripts/docs_pages.py check     # exit 1 when a page is stale (tests/test_docs.py runs this)

The CLI pages hold each command's ``--help`` as the user sees it; the API pages hold a mkdocstrings
directive (``::: module``) for every public module of the layer, so the reference is rendered from the
docstrings by ``mkdocs build`` and a new module cannot be left out.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

DOCS = REPO / "docs"
# (page, title, packages whose modules it documents, what the layer is for)
LAYERS = [
    ("cli", "registry.cli", ["registry.cli"], "typer commands: parse, call one library function, render."),
    ("lineage", "registry.lineage", ["registry.lineage"], "trace, impact, working manifests, reports."),
    ("downstream", "registry.downstream", ["registry.downstream"], "MLflow conventions, log_dataset, train."),
    ("releases", "registry.releases", ["registry.releases"], "one module per verb, verify, loader, catalog."),
    ("generators", "generators", ["generators", "generators.backends"], "plan, backends, runners, shards."),
    ("policies", "policies", ["policies", "policies.checks"], "the engine and the checks, by kind of rule."),
    ("trust", "registry.trust", ["registry.trust"], "signing, trust root, approvals, withdrawals, C2PA."),
    ("exports", "registry.exports", ["registry.exports"], "pure renderings: card, Croissant, PROV, HTML."),
    ("store", "registry.store", ["registry.store"], "bytes on disk and the read side of releases/."),
    (
        "records",
        "registry.records",
        ["registry.records"],
        "every persisted pydantic model, and the typed results of trace, impact and diff.",
    ),
    ("core", "registry.core", ["registry.core"], "errors, files, digests, names, workspace, vcs."),
]


def _modules(package: str) -> list[str]:
    folder = REPO / package.replace(".", "/")
    return [
        f"{package}.{p.stem}"
        for p in sorted(folder.glob("*.py"))
        if p.stem != "__init__" and not p.stem.startswith("_")
    ]


def api_pages() -> dict[str, str]:
    pages = {}
    intro = "Layer by layer, from the top; each imports only the layers below it."
    index = ["# API reference", "", intro, ""]
    for page, title, packages, what in LAYERS:
        body = [f"# {title}", "", what, ""]
        for package in packages:
            for module in _modules(package):
                body += [f"## `{module}`", "", f"::: {module}", ""]
        pages[f"reference/{page}.md"] = "\n".join(body)
        index.append(f"- [{title}]({page}.md): {what}")
    pages["reference/index.md"] = "\n".join(index) + "\n"
    return pages


def cli_pages() -> dict[str, str]:
    from help_snapshot import snapshot

    helps = snapshot()
    pages = {}
    index = ["# Commands", "", "Every command of `synthreg`, as its `--help` prints it.", ""]
    for name in sorted(helps, key=lambda n: (n != "_root.txt", n)):
        text = helps[name].rstrip()
        if name == "_root.txt":
            index += ["```text", text, "```", ""]
            continue
        command = name.removesuffix(".txt").replace("_", " ")
        slug = name.removesuffix(".txt")
        pages[f"cli/{slug}.md"] = f"# synthreg {command}\n\n```text\n{text}\n```\n"
        index.append(f"- [`synthreg {command}`]({slug}.md)")
    pages["cli/index.md"] = "\n".join(index) + "\n"
    return pages


def main(argv: list[str]) -> int:
    if argv not in (["write"], ["check"]):
        print(__doc__, file=sys.stderr)
        return 2
    pages = {**api_pages(), **cli_pages()}
    stale = [p for p, text in pages.items() if not (DOCS / p).is_file() or (DOCS / p).read_text() != text]
    kept = [p for d in ("cli", "reference") for p in (DOCS / d).glob("*.md")]
    generated = {p.relative_to(DOCS).as_posix() for p in kept}
    extra = sorted(generated - set(pages))
    if argv == ["check"]:
        lines = [*(f"stale: {p}" for p in stale), *(f"not generated: {p}" for p in extra)]
        print("\n".join(lines) or "current")
        return 1 if stale or extra else 0
    for p in extra:
        (DOCS / p).unlink()
    for p in stale:
        (DOCS / p).parent.mkdir(parents=True, exist_ok=True)
        (DOCS / p).write_text(pages[p])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
