"""The HTML building blocks the audit report's modules share: escaping, tables, sections."""

from __future__ import annotations

import html
from collections.abc import Iterable


def e(value: object) -> str:
    """Text made safe for HTML (None is empty)."""
    return html.escape("" if value is None else str(value))


def table(head: list[str], rows: Iterable[Iterable[str]]) -> str:
    """Cells of ``rows`` are HTML already (escape values with ``e`` before)."""
    out = ["<table><tr>", *(f"<th>{e(h)}</th>" for h in head), "</tr>"]
    for row in rows:
        out += ["<tr>", *(f"<td>{cell}</td>" for cell in row), "</tr>"]
    out.append("</table>")
    return "".join(out)


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{e(title)}</h2>{body}</section>'
