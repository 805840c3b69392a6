"""Equivariance figures from the protocol's tables: error vs angle (log scale, with each map's floor) and
per-stage attribution (error, floor and excess per stage).

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
    STYLE_KEY,
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
FLOOR_STYLE = "--"
SAME_FLOOR_RTOL = 1e-9  # models whose floor curves agree this closely share one grey curve


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
            if metric == "equivariance_error":
                handles += _draw_feature_floors(ax, feature_floor(floor, feature, weights, g), styles, clip)
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
                   "error of vectors such as logits) vs rotation angle, mean over images and seeds, log scale, "
                   "compared inside each map's disk less the ring its padding reaches. Dashed: the map's floor, "
                   "the error an exactly equivariant operator producing a map of that size gets under the same "
                   "rotation (grey when every model's map shares it, else in the model's colour). Features named "
                   f"…:gpool are compared after group pooling. Values below {clip:.0e} (round-off on exact "
                   f"elements) are drawn at {clip:.0e}. Reflections are in the summary table.")
        return finish(fig, f"{what}: equivariance error vs angle ({weights} weights)", caption)


def feature_floor(floor: pd.DataFrame | None, feature: str, weights: str, e: pd.DataFrame) -> pd.DataFrame | None:
    """The blur floor rows of `feature` for the models, weights and case (rotation / inputs / dataset) of a
    panel's curves `e`, one curve per model."""
    if floor is None or floor.empty or "weights" not in floor.columns:
        return None
    f = floor[(floor["feature"] == feature) & (floor["floor_kind"] == "blur") & (floor["weights"] == weights)
              & floor["model"].isin(e["model"].unique())]
    for col in ("rotation", "inputs", "dataset"):
        values = e[col].dropna().unique()
        f = f[f[col].isin(values)] if len(values) else f[f[col].isna()]
    if f.empty or f.duplicated(["model", "angle_deg"]).any():
        return None  # several cases mixed in one panel: no single floor per model to draw
    return f


def _draw_feature_floors(ax, f: pd.DataFrame | None, styles: Styles, clip: float) -> list[Line2D]:
    """One grey dashed curve when every model's floor is the same, else one per model in its colour."""
    if f is None:
        return []
    curves = {m: c.sort_values("angle_deg") for m, c in f.groupby("model", sort=True)}
    ref = next(iter(curves.values()))
    same = all(len(c) == len(ref) and np.allclose(c["mean"].to_numpy(float), ref["mean"].to_numpy(float),
                                                  rtol=SAME_FLOOR_RTOL, atol=0) for c in curves.values())
    if same:
        ax.plot(ref["angle_deg"], np.maximum(ref["mean"].to_numpy(float), clip), color=FLOOR_COLOR,
                linestyle=FLOOR_STYLE, linewidth=1.3, zorder=2)
        return [Line2D([], [], color=FLOOR_COLOR, linestyle=FLOOR_STYLE, label="floor (this map's size)")]
    for model, c in curves.items():
        ax.plot(c["angle_deg"], np.maximum(c["mean"].to_numpy(float), clip), color=styles(model).color,
                linestyle=FLOOR_STYLE, linewidth=1.0, zorder=2)
    return [Line2D([], [], color=STYLE_KEY, linestyle=FLOOR_STYLE, label="floor of each model's map")]


STAGE_BARS = (("error", 0.35), ("floor", None), ("excess", 1.0))  # column, alpha (None: grey)


def stage_attribution(stages: pd.DataFrame, styles: Styles) -> Plot | None:
    """Per model, stages in execution order: each stage's error on its own, its floor and the excess."""
    if stages is None or stages.empty:
        return None
    models = styles.order(stages["model"].unique())
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    n_stages = int(stages.groupby(["model", "weights"]).size().max())
    with style():
        fig, axes = figure(height_in=nrows * (0.9 + 0.42 * n_stages) + 0.2, ncols=ncols, nrows=nrows)
        for i, model in enumerate(models):
            ax = axes[i // ncols][i % ncols]
            m = stages[stages["model"] == model]
            weights = "trained" if (m["weights"] == "trained").any() else m["weights"].iloc[0]
            m = m[m["weights"] == weights].sort_values("stage_index")
            y = np.arange(len(m))
            handles = []
            for j, (col, alpha) in enumerate(STAGE_BARS):
                color = FLOOR_COLOR if alpha is None else styles(model).color
                ax.barh(y + (j - 1) * 0.27, m[col].fillna(0.0).to_numpy(float), height=0.25, color=color,
                        alpha=alpha or 1.0)
                handles.append(Line2D([], [], color=color, alpha=alpha or 1.0, linewidth=6, label=col))
            ax.set_yticks(y, [str(v) for v in m["stage"]])
            ax.invert_yaxis()
            ax.set_title(f"{model} ({weights})", loc="left")
            ax.set_xlabel(f"relative error at {m['angle_deg'].iloc[0]:g}°")
            ax.grid(axis="y", visible=False)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            legend_outside(ax, handles)
        for j in range(len(models), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return finish(fig, "Per-stage attribution",
                      "Per stage, in execution order (mean over seeds; trained weights where measured): its error "
                      "on its own (the stage fed the rotated input vs its rotated output; light), its floor (grey: "
                      "what an exactly equivariant stage of the same kind gets - a pointwise stage such as a ReLU or "
                      "an eval-mode batch norm is its own equivariant version, so its floor is its error; a spatial "
                      "stage gets an isotropic blur at its output size) and the excess = max(error − floor, 0) "
                      "(dark): what the stage itself breaks. Exact numbers: tables/equivariance_stages.csv.")
