"""Accuracy figures: accuracy vs rotation angle, one line per model (mean across seeds, ±std band)."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.lines import Line2D

from reports import tables
from reports.plots.common import REFLECT_STYLE, STYLE_KEY, Colors, Plot, figure, finish, style


def accuracy_vs_angle(acc: pd.DataFrame, colors: Colors) -> Plot | None:
    curves = tables.accuracy_curves(acc)
    if curves.empty:
        return None
    panels = list(curves.groupby(["dataset", "condition"], sort=True))
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    units = tables.distinct(acc["unit"])
    unit = f" ({units[0]})" if len(units) == 1 and units[0] else ""
    models_seen: set[str] = set()
    reflects_seen: set[str] = set()
    with style():
        fig, axes = figure(height_in=3.0 * nrows + 0.5, ncols=ncols, nrows=nrows, sharey=True)
        for i, ((dataset, condition), g) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            for (reflect, model), c in g.groupby(["reflect", "model"], sort=True):
                c = c.sort_values("angle_deg")
                if len(c) < 2:  # e.g. flips measured at 0° only: they are in the summary table
                    continue
                color = colors(model)
                ax.plot(c["angle_deg"], c["value"], color=color, linestyle=REFLECT_STYLE.get(reflect, "-."),
                        marker="o" if len(c) <= 25 else None, zorder=3)
                if c["n"].max() > 1 and reflect == "none":
                    std = c["std"].fillna(0.0)
                    ax.fill_between(c["angle_deg"], c["value"] - std, c["value"] + std, color=color,
                                    alpha=0.15, linewidth=0, zorder=2)
                models_seen.add(model)
                reflects_seen.add(reflect)
            ax.set_xlim(0, 360)
            ax.set_xticks(range(0, 361, 45))
            ax.set_xlabel("rotation angle of the test set (°)")
            if i % ncols == 0:
                ax.set_ylabel(f"accuracy{unit}")
            title = " · ".join(x for x in (dataset, f"trained {condition}" if condition else "") if x)
            if title:
                ax.set_title(title, loc="left")
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        handles = [Line2D([], [], color=colors(m), label=m) for m in sorted(models_seen)]
        for r in sorted(reflects_seen - {"none"}):
            handles.append(Line2D([], [], color=STYLE_KEY, linestyle=REFLECT_STYLE.get(r, "-."),
                                  label=f"flip {r} ∘ rotation"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
        return finish(fig, "Accuracy vs rotation angle",
                      "Test accuracy on rotated inputs; line: mean across seeds, band: ± one standard deviation "
                      "(when several seeds ran); dashed/dotted: horizontally/vertically flipped inputs.")
