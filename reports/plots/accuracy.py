"""Accuracy figures from the accuracy tables: accuracy vs rotation angle, one panel per dataset and condition."""

from __future__ import annotations

import math

import pandas as pd

from reports.plots.common import Plot, Styles, draw_line, figure, finish, legend_outside, model_handles, style


def accuracy_vs_angle(by_angle: pd.DataFrame, styles: Styles) -> Plot | None:
    """Rotated test accuracy (mean across seeds, ± one std band), flips left to the summary table."""
    a = by_angle[by_angle["reflect"] == "none"] if by_angle is not None else None
    if a is None or a.empty:
        return None
    panels = list(a.groupby(["dataset", "condition"], sort=True))
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    with style():
        fig, axes = figure(height_in=3.0 * nrows + 0.3, ncols=ncols, nrows=nrows, sharey=True)
        for i, ((dataset, condition), g) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            drawn = []
            for model, c in g.groupby("model", sort=True):
                c = c.sort_values("angle_deg")
                if len(c) < 2:
                    continue
                draw_line(ax, c["angle_deg"].to_numpy(), c["accuracy_pct"].to_numpy(float), styles, model, zorder=3)
                std = c["std_pct"].fillna(0.0).to_numpy(float)
                if (std > 0).any():
                    ax.fill_between(c["angle_deg"], c["accuracy_pct"] - std, c["accuracy_pct"] + std,
                                    color=styles(model).color, alpha=0.15, linewidth=0, zorder=2)
                drawn.append(model)
            ax.set_xlim(0, 360)
            ax.set_xticks(range(0, 361, 45))
            ax.set_xlabel("rotation angle of the test set (°)")
            if i % ncols == 0:
                ax.set_ylabel("accuracy (%)")
            ax.set_title(f"{dataset} · trained {condition}", loc="left")
            legend_outside(ax, model_handles(styles, drawn))
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        return finish(fig, "Accuracy vs rotation angle",
                      "Test accuracy on rotated inputs; line: mean across seeds, band: ± one standard deviation "
                      "(when several seeds ran). Flipped test sets are in the summary table.")
