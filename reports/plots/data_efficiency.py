"""Data-efficiency figure from the `data_efficiency_curve` table: accuracy vs training-set size per dataset."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from reports.plots.common import (
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


def accuracy_vs_size(curve: pd.DataFrame | None, styles: Styles, targets: list[float] | None = None) -> Plot | None:
    """Mean accuracy over the evaluated rotations vs examples per class (log x), ± one std band across seeds;
    one panel per dataset, dotted lines at the examples-needed targets."""
    if curve is None or curve.empty:
        return None
    c = curve.dropna(subset=["mean_pct"])
    panels = [(dataset, g) for dataset, g in c.groupby("dataset", sort=True) if g["per_class"].nunique() >= 2]
    if not panels:
        return None
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    with style():
        fig, axes = figure(height_in=3.2 * nrows + 0.3, ncols=ncols, nrows=nrows, sharey=True,
                           width_in=8.5 if ncols == 1 else 11.0)
        for i, (dataset, g) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            drawn = []
            for model, m in g.groupby("model", sort=True):
                m = m.sort_values("per_class")
                if len(m) < 2:
                    continue
                x, y = m["per_class"].to_numpy(float), m["mean_pct"].to_numpy(float)
                draw_line(ax, x, y, styles, model, zorder=3)
                std = m["mean_std"].fillna(0.0).to_numpy(float)
                if (std > 0).any():
                    ax.fill_between(x, y - std, y + std, color=styles(model).color, alpha=0.15, linewidth=0,
                                    zorder=2)
                drawn.append(model)
            handles = model_handles(styles, drawn)
            for t in targets or []:
                ax.axhline(t, color=STYLE_KEY, linestyle=":", linewidth=0.9, zorder=1)
            if targets:
                handles.append(Line2D([], [], color=STYLE_KEY, linestyle=":", linewidth=0.9,
                                      label="target accuracy"))
            sizes = sorted(g["per_class"].unique())
            ax.set_xscale("log")
            ax.set_xticks(sizes, [f"{s:g}" for s in sizes])
            ax.minorticks_off()
            ax.set_xlabel("training examples per class (log scale)")
            if i % ncols == 0:
                ax.set_ylabel("test accuracy (%)")
            ax.set_title(str(dataset), loc="left")
            legend_outside(ax, handles)
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return finish(fig, "Accuracy vs training-set size",
                      "Test accuracy (mean over the evaluated rotations of the test set) of each model trained on "
                      "nested, class-balanced subsets of the training split, the same number of optimizer steps "
                      "at every size; line: mean across seeds, band: ± one standard deviation (when several "
                      "seeds ran); dotted: the targets of the examples-needed table.")

