"""The docs site's generated pages (a page per command, an API page per layer) are current: a new
command, option or module rewrites them with `python scripts/docs_pages.py write` (CI then builds the
site with `mkdocs build --strict` in `make docs`)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_generated_doc_pages_are_current():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_pages.py"), "check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_readme_is_a_front_page():
    """The reference lives in docs/; the README says what synthreg is, the two quickstart commands, a
    short tour and links (issue 18: about 200 lines)."""
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 230
    assert "make run" in readme and "make test" in readme
