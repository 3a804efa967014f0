"""Charts for the HTML audit report, drawn with matplotlib (Agg) and embedded as PNG data: URIs.

Each function returns the PNG bytes of one figure; ``report_html`` base64-encodes them, so the report
is one file that works offline. matplotlib is imported here, inside the functions, never by the CLI.
"""

from __future__ import annotations

import io
from typing import Any

# A colour-blind-safe pair (Okabe-Ito blue and orange) for "requested" against "observed".
REQUESTED, OBSERVED = "#0072B2", "#E69F00"
_KIND_COLOUR = {"source": "#CC79A7", "generator": "#009E73", "version": "#0072B2", "model": "#D55E00"}


def _plain(text: str) -> str:
    """Text drawn as written: matplotlib reads ``$...$`` as mathtext, so a name holding dollar signs (a
    model or identity named by a user) would be typeset, or fail to parse and break the whole report."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=100)


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    # metadata=None for the software key keeps the PNG bytes independent of the matplotlib version.
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def grouped_bars(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str) -> bytes:
    """Bars per category, one bar per series side by side (e.g. requested vs observed shares)."""
    return _png(bars_figure(title, categories, series, ylabel))


def bars_figure(title: str, categories: list[str], series: dict[str, list[float]], ylabel: str) -> Any:
    """``grouped_bars``' figure, laid out (``tight_layout``), before it becomes a PNG. The legend sits
    outside the axes, right of the plot, so it never covers a bar however tall (issue 21: legends covered
    the bars); ``tests/registry/test_report_html.py`` checks the boxes do not overlap."""
    import numpy as np

    fig, ax = _figure(max(4.0, 0.6 * len(categories) + 2), 3.2)
    x = np.arange(len(categories))
    width = 0.8 / max(1, len(series))
    colours = [REQUESTED, OBSERVED, "#009E73", "#CC79A7"]
    for i, (label, values) in enumerate(series.items()):
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width, values, width, label=_plain(label), color=colours[i % 4]
        )
    ax.set_xticks(x, [_plain(c) for c in categories], rotation=0 if len(categories) < 12 else 60)
    ax.set_ylabel(_plain(ylabel))
    ax.set_title(_plain(title))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()  # makes room for the legend outside the axes
    return fig


def lineage_graph(layers: list[list[tuple[str, str, str]]], edges: list[tuple[str, str]]) -> bytes:
    """A left-to-right layered graph: ``layers`` of (node id, label, kind) from sources to models;
    ``edges`` (from id, to id). Laid out by layer and position; drawn with matplotlib annotations."""
    rows = max((len(layer) for layer in layers), default=1)
    fig, ax = _figure(3.2 * max(1, len(layers)), max(2.5, 0.9 * rows + 1))
    pos: dict[str, tuple[float, float]] = {}
    for col, layer in enumerate(layers):
        for row, (node, _, _) in enumerate(layer):
            pos[node] = (col, (rows - 1) / 2 + (len(layer) - 1) / 2 - row)  # each layer centred
    for a, b in edges:
        if a in pos and b in pos:
            ax.annotate(
                "",
                xy=pos[b],
                xytext=pos[a],
                arrowprops={"arrowstyle": "-|>", "color": "#555555", "shrinkA": 42, "shrinkB": 42},
            )
    for layer in layers:
        for node, label, kind in layer:
            x, y = pos[node]
            ax.text(
                x,
                y,
                _plain(label),
                ha="center",
                va="center",
                fontsize=8,
                color="white",
                bbox={"boxstyle": "round,pad=0.4", "facecolor": _KIND_COLOUR.get(kind, "#777777")},
            )
    ax.set_xlim(-0.6, max(0, len(layers) - 1) + 0.6)
    ax.set_ylim(-0.8, rows - 0.2)
    ax.axis("off")
    titles = ["sources", "generators", "dataset versions", "models"]
    for col, _ in enumerate(layers):
        ax.text(col, rows - 0.35, titles[col] if col < len(titles) else "", ha="center", fontsize=9)
    return _png(fig)
