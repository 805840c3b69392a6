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
from matplotlib.lines import Line2D

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

# Families share a hue (GMR oranges, C_N/D_N blues, steerable greens, plain greys, plugins purples); within a
# family, models differ by shade and marker. Layers and networks never share a panel, so each level has its own
# assignment and the same colour may mean a layer in one panel and a network in another.
FAMILY_PALETTES = {
    "gmr": ["#D55E00", "#E69F00", "#8C3B00", "#F4A261", "#B8860B"],
    "group": ["#0072B2", "#56B4E9", "#1B3A6B", "#4F6BD8", "#00A5C8", "#7FA7D9"],
    "steerable": ["#009E73", "#66C2A5", "#1B5E20", "#8BC34A", "#00695C"],
    "plain": ["#222222", "#8A8A8A", "#555555"],
    "plugin": ["#CC79A7", "#7B3294", "#E7298A", "#9467BD"],
}
FAMILY_ORDER = ("plain", "gmr", "group", "steerable", "plugin")
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
STYLE_KEY = "#6b7785"  # legend entries that explain a line style, not a model
FLOOR_COLOR = "#9aa3ad"


@dataclass(frozen=True)
class ModelStyle:
    color: str
    marker: str


class Styles:
    """One colour and marker per model for every figure of a report, assigned from (family, level, name)."""

    def __init__(self, models: Iterable[tuple[str, str, str]]) -> None:
        """`models`: (name, family, level) triples, e.g. from the headline table."""
        self._map: dict[str, ModelStyle] = {}
        counters: dict[tuple[str, str], int] = {}
        for name, family, level in sorted(set(models), key=lambda m: (_family_rank(m[1]), m[2], m[0])):
            palette = FAMILY_PALETTES.get(family, FAMILY_PALETTES["plugin"])
            i = counters.get((family, level), 0)
            counters[(family, level)] = i + 1
            self._map[name] = ModelStyle(palette[i % len(palette)], MARKERS[i % len(MARKERS)])

    def __call__(self, model: str) -> ModelStyle:
        return self._map.get(model, ModelStyle("#444444", "o"))

    def order(self, models: Iterable[str]) -> list[str]:
        """`models` in legend order: by family, then name."""
        keys = list(self._map)
        return sorted(set(models), key=lambda m: (keys.index(m) if m in keys else len(keys), m))


def _family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


@dataclass(frozen=True)
class Plot:
    """One embedded figure: title, caption and the PNG as a data URI."""

    title: str
    caption: str
    src: str
    alt: str
    width: int  # CSS pixels (the PNG has DPI/100 times as many, for sharpness)
    height: int


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


def model_handles(styles: Styles, models: Iterable[str], line: bool = True) -> list[Line2D]:
    """Legend entries for exactly the models a panel draws."""
    return [Line2D([], [], color=styles(m).color, marker=styles(m).marker, linestyle="-" if line else "",
                   label=m) for m in styles.order(models)]


def draw_line(ax, x, y, styles: Styles, model: str, **kw) -> None:
    st = styles(model)
    ax.plot(x, y, color=st.color, marker=st.marker, markevery=max(1, len(x) // 12), label=model, **kw)




def legend_outside(ax, handles=None) -> None:
    """Legend to the right of the axes (so it never hides data); `handles` default to the labelled artists."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                  handlelength=2.2)


def plain_log_ticks(axis) -> None:
    """Log-scale ticks as plain numbers at 1-2-5 steps (for axes spanning a few decades, e.g. ms or MB)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
