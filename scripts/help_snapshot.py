"""Write (or check) the text of ``synthreg --help`` and of every command's ``--help``.

    python scripts/help_snapshot.py write tests/registry/fixtures/help    # after changing a command
    python scripts/help_snapshot.py check tests/registry/fixtures/help    # exit 1 on any difference

The snapshot was taken before issue 18 moved the CLI into a command table; ``tests/registry/test_cli.py``
checks it, so a move or a refactor cannot change what a user reads. A deliberate change to a command
rewrites the snapshot with ``write`` in the same commit.
"""

from __future__ import annotations

import sys
from pathlib import Path

WIDTH = {"COLUMNS": "120", "TERM": "dumb", "NO_COLOR": "1"}


def snapshot() -> dict[str, str]:
    """file name -> help text, for the root, every command and every sub-command."""
    import typer.main
    from typer.testing import CliRunner

    from registry.cli import app

    runner = CliRunner()
    root = typer.main.get_command(app)
    out = {}
    paths: list[list[str]] = [[]]
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    for path in paths:
        res = runner.invoke(app, [*path, "--help"], env=WIDTH, prog_name="synthreg")
        out[("_".join(path) or "_root") + ".txt"] = res.output
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("write", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(argv[1])
    found = snapshot()
    if argv[0] == "write":
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.txt"):
            old.unlink()
        for name, text in found.items():
            (folder / name).write_text(text)
        return 0
    kept = {p.name: p.read_text() for p in folder.glob("*.txt")}
    bad = sorted(n for n in set(kept) | set(found) if kept.get(n) != found.get(n))
    print("\n".join(f"differs: {n}" for n in bad) or f"{len(found)} help texts as in {folder}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
