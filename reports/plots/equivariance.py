"""Equivariance figures from the protocol's tables: error vs angle (log scale, floors) and per-stage attribution.

Layers and networks get separate figures; every panel's legend names exactly the models it draws.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullLocator

from reports.plots.common import (
    FLOOR_COLOR,
    Plot,
    Styles,
    draw_line,
    figure,
    finish,
    legend_outside,
    model_handles,
    style,
)

ROUNDOFF = 1e-8  # errors below this are float round-off on exactly equivariant elements
CURVE_METRICS = ("invariance_error", "equivariance_error")
MAIN_FIRST = ("logits", "out", "out:gpool")
FLOOR_STYLE = {"blur": "--", "roundtrip": ":"}


def _feature_rank(feature: str) -> tuple:
    return (feature not in MAIN_FIRST, MAIN_FIRST.index(feature) if feature in MAIN_FIRST else 0, feature)


def error_vs_angle(by_angle: pd.DataFrame, floor: pd.DataFrame | None, styles: Styles, level: str, weights: str,
                   models: list[str]) -> Plot | None:
    """One panel per (feature, metric) of `models` (all of one level) at `weights`, rotation only."""
    e = by_angle[by_angle["model"].isin(models) & (by_angle["weights"] == weights)
                 & by_angle["metric"].isin(CURVE_METRICS) & (by_angle["reflect"] == "none")]
    if e.empty:
        return None
    panels = sorted({(f, m) for f, m in zip(e["feature"], e["metric"])}, key=lambda fm: _feature_rank(fm[0]))
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    positive = e["mean"][e["mean"] > 0]
    clip = max(positive.min() / 3.0, ROUNDOFF) if not positive.empty else ROUNDOFF
    input_floor = _input_floor(floor, level, e)
    with style():
        fig, axes = figure(height_in=2.7 * nrows + 0.3, ncols=ncols, nrows=nrows, sharex=True)
        for i, (feature, metric) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            g = e[(e["feature"] == feature) & (e["metric"] == metric)]
            drawn = []
            for model, c in g.groupby("model", sort=True):
                c = c.sort_values("angle_deg")
                draw_line(ax, c["angle_deg"].to_numpy(), np.maximum(c["mean"].to_numpy(float), clip), styles,
                          model, zorder=3)
                drawn.append(model)
            handles = model_handles(styles, drawn)
            if metric == "equivariance_error" and input_floor is not None:
                for kind, f in input_floor.groupby("floor_kind", sort=True):
                    f = f.sort_values("angle_deg")
                    ax.plot(f["angle_deg"], np.maximum(f["mean"].to_numpy(float), clip), color=FLOOR_COLOR,
                            linestyle=FLOOR_STYLE.get(kind, "-."), linewidth=1.3, zorder=2)
                    handles.append(Line2D([], [], color=FLOOR_COLOR, linestyle=FLOOR_STYLE.get(kind, "-."),
                                          label=f"floor: {kind} (input)"))
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
            ax.yaxis.set_minor_locator(NullLocator())
            top = 360 if g["angle_deg"].max() > 180 else 180 if g["angle_deg"].max() > 90 else 90
            ax.set_xlim(0, top)
            ax.set_xticks(range(0, top + 1, 45 if top > 90 else 15))
            ax.set_title(f"{feature}" + (" (invariance)" if metric == "invariance_error" else ""), loc="left")
            legend_outside(ax, handles)
            if i % ncols == 0:
                ax.set_ylabel("relative error")
            ax.set_xlabel("rotation angle (°)")
            ax.tick_params(labelbottom=True)
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        what = {"layer": "Layers", "network": "Networks"}.get(level, level)
        caption = (f"{what}, {weights} weights: relative equivariance error of each exposed feature map (invariance "
                   "error of vectors such as logits) vs rotation angle, mean over images and seeds, log scale. "
                   "Grey: the floor the rotation alone causes on the inputs (dashed: an isotropic Gaussian blur, "
                   "an exactly equivariant operator; dotted: the round trip). Features named …:gpool are compared "
                   f"after group pooling. Values below {clip:.0e} (round-off on exact elements) are drawn at "
                   f"{clip:.0e}. Reflections are in the summary table.")
        return finish(fig, f"{what}: equivariance error vs angle ({weights} weights)", caption)


def _input_floor(floor: pd.DataFrame | None, level: str, e: pd.DataFrame) -> pd.DataFrame | None:
    """The input floor rows of this level and the panel's rotation method / inputs (one curve per kind)."""
    if floor is None or floor.empty:
        return None
    f = floor[(floor["feature"] == "input") & (floor["level"] == level)]
    for col in ("rotation", "inputs"):
        values = e[col].dropna().unique()
        if len(values) == 1:
            f = f[f[col] == values[0]]
    datasets = e["dataset"].dropna().unique()
    f = f[f["dataset"].isin(datasets)] if len(datasets) == 1 else f[f["dataset"].isna()] if not len(datasets) else f
    if f.empty or f.duplicated(["floor_kind", "angle_deg"]).any():
        return None  # several cases mixed in one panel: no single floor to draw
    return f


def stage_attribution(stages: pd.DataFrame, styles: Styles) -> Plot | None:
    """Horizontal bars per model: the error each stage adds on its own, stages in execution order."""
    if stages is None or stages.empty:
        return None
    models = styles.order(stages["model"].unique())
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    n_stages = int(stages.groupby(["model", "weights"]).size().max())
    with style():
        fig, axes = figure(height_in=nrows * (0.7 + 0.22 * n_stages) + 0.2, ncols=ncols, nrows=nrows)
        for i, model in enumerate(models):
            ax = axes[i // ncols][i % ncols]
            m = stages[stages["model"] == model]
            weights = "trained" if (m["weights"] == "trained").any() else m["weights"].iloc[0]
            m = m[m["weights"] == weights].sort_values("stage_index")
            y = np.arange(len(m))
            ax.barh(y, m["mean"], color=styles(model).color, height=0.65)
            ax.set_yticks(y, [str(v) for v in m["stage"]])
            ax.invert_yaxis()
            ax.set_title(f"{model} ({weights})", loc="left")
            ax.set_xlabel(f"error at {m['angle_deg'].iloc[0]:g}°")
            ax.grid(axis="y", visible=False)
            vals = m["mean"].to_numpy(float)
            if (vals > 0).all() and vals.max() / vals.min() > 100:
                ax.set_xscale("log")
            else:
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        for j in range(len(models), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return finish(fig, "Per-stage attribution",
                      "Equivariance error each stage adds on its own (the stage fed the rotated input vs the rotated "
                      "stage output), mean over seeds, stages in execution order; trained weights where measured.")
