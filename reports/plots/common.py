"""Shared figure plumbing: a fixed style, stable model colours and deterministic PNG data URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 160  # figures are drawn at ~1.6x their CSS size so they stay sharp on high-density screens
WIDTH_IN = 11.0  # ~1100 CSS px: the report's content width

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.edgecolor": "#9aa3ad",
    "axes.linewidth": 0.8,
    "axes.grid": True,
    "axes.axisbelow": True,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "grid.color": "#e3e7eb",
    "grid.linewidth": 0.7,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "xtick.color": "#4a5560",
    "ytick.color": "#4a5560",
    "lines.linewidth": 1.6,
    "lines.markersize": 3.5,
    "svg.hashsalt": "equibench",
    "path.simplify": False,
}

# colour-blind-safe categorical palette (Okabe-Ito, then tab10 extras)
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8c564b", "#9467bd",
           "#d62728", "#bcbd22", "#17becf", "#7f7f7f"]
STYLE_KEY = "#6b7785"  # legend entries that explain a line style, not a model
REFLECT_STYLE = {"none": "-", "h": "--", "v": ":"}


@dataclass(frozen=True)
class Plot:
    """One embedded figure: title, caption and the PNG as a data URI."""

    title: str
    caption: str
    src: str
    alt: str
    width: int  # CSS pixels (the PNG has DPI/100 times as many, for sharpness)
    height: int


class Colors:
    """The same colour for a model in every figure of a report (assigned over the sorted model list)."""

    def __init__(self, models: Iterable[str]) -> None:
        self._map = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(sorted(set(models)))}

    def __call__(self, model: str) -> str:
        return self._map.get(model, "#444444")


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def figure(height_in: float, width_in: float = WIDTH_IN, ncols: int = 1, nrows: int = 1,
           **kw) -> tuple[Figure, object]:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def to_data_uri(fig: Figure) -> str:
    """PNG bytes that depend only on the figure (no Software / date metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def finish(fig: Figure, title: str, caption: str, alt: str | None = None) -> Plot:
    w, h = fig.get_size_inches()
    return Plot(title=title, caption=caption, src=to_data_uri(fig), alt=alt or title,
                width=round(w * 100), height=round(h * 100))


def legend_outside(ax, handles=None, labels=None, ncol: int = 1) -> None:
    """Legend to the right of the axes (so it never hides data)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=ncol,
                  borderaxespad=0.0, handlelength=2.4)


def plain_log_ticks(axis) -> None:
    """Log-scale ticks as plain numbers at 1-2-5 steps (for axes spanning a few decades, e.g. ms or MB)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
