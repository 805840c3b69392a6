"""Equivariance figures: error vs angle (log scale, floor band, reflections dashed) and per-layer attribution."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullLocator

from reports import tables
from reports.plots.common import REFLECT_STYLE, STYLE_KEY, Colors, Plot, figure, finish, style


def _panels(e: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """One panel per (metric, feature), output features first, split further by dataset / inputs / rotation
    when those vary."""
    extra = tables.varying(e, tables.SPLIT_COLUMNS)
    e = e.assign(feature=e["feature"].fillna(""), **{c: e[c].fillna("") for c in extra})
    out = []
    keys = sorted({(f, m) for f, m in zip(e["feature"], e["metric"])},
                  key=lambda fm: (tables.feature_key(fm[0]), fm[1] != "equivariance_error"))
    for feat, metric in keys:
        ef = e[(e["feature"] == feat) & (e["metric"] == metric)]
        if not extra:
            out.append(((metric, feat), ef))
            continue
        for key, g in ef.groupby(extra, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            out.append(((metric, feat, *key), g))
    return out


ROUNDOFF = 1e-8  # errors below this are float round-off on exactly equivariant elements


def error_vs_angle(eq: pd.DataFrame, colors: Colors, weights: str | None) -> Plot | None:
    e = eq[eq["metric"].isin(("equivariance_error", "invariance_error")) & ~tables.has(eq, "layer")
           & eq["angle_deg"].notna()]
    if e.empty:
        return None
    panels = _panels(e)
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    positive = e["value"][e["value"] > 0]
    floor_rows = eq[(eq["metric"] == "interpolation_floor") & (eq["value"] > 0)]
    lows = [positive.min()] if not positive.empty else []
    if not floor_rows.empty:
        lows.append(floor_rows["value"].min())
    # exact elements give float round-off (1e-7 fp32 ... 1e-16 fp64); drawing it would squash the axis
    clip = max((min(lows) / 3.0) if lows else ROUNDOFF, ROUNDOFF)
    models_seen: list[str] = []
    reflects_seen: set[str] = set()
    has_floor = False
    with style():
        fig, axes = figure(height_in=2.6 * nrows + 0.6, ncols=ncols, nrows=nrows, sharex=True)
        for i, (key, g) in enumerate(panels):
            ax = axes[i // ncols][i % ncols]
            metric, feat = key[0], key[1]
            band = tables.floor_band(eq, feat or None)
            if not band.empty:
                has_floor = True
                ax.fill_between(band["angle_deg"], np.maximum(band["low"], clip), np.maximum(band["high"], clip),
                                color="#9aa3ad", alpha=0.35, linewidth=0, zorder=1)
            pa = tables.per_angle(g, ["model", "reflect"])
            for (model, reflect), c in pa.groupby(["model", "reflect"], sort=True):
                c = c.sort_values("angle_deg")
                ax.plot(c["angle_deg"], np.maximum(c["value"].to_numpy(float), clip), color=colors(model),
                        linestyle=REFLECT_STYLE.get(reflect, "-."), marker="o" if len(c) <= 25 else None,
                        zorder=3)
                if model not in models_seen:
                    models_seen.append(model)
                reflects_seen.add(reflect)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_xlim(0, 360)
            ax.set_xticks(range(0, 361, 45))
            name = feat or "output"
            if metric == "invariance_error":
                name += " (invariance)"
            ax.set_title(" · ".join([name, *(str(k) for k in key[2:] if k)]), loc="left")
            if i % ncols == 0:
                ax.set_ylabel("relative error")
            if i // ncols == nrows - 1 or i + ncols >= len(panels):
                ax.set_xlabel("rotation angle (°)")
                ax.tick_params(labelbottom=True)
        for j in range(len(panels), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        handles = [Line2D([], [], color=colors(m), label=m) for m in sorted(models_seen)]
        if "h" in reflects_seen or "v" in reflects_seen:
            handles.append(Line2D([], [], color=STYLE_KEY, linestyle="-", label="rotation"))
            for r in sorted(reflects_seen - {"none"}):
                handles.append(Line2D([], [], color=STYLE_KEY, linestyle=REFLECT_STYLE.get(r, "-."),
                                      label=f"flip {r} ∘ rotation"))
        if has_floor:
            handles.append(Patch(color="#9aa3ad", alpha=0.35, label="interpolation floor"))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
        what = f" ({weights} weights)" if weights else ""
        caption = ("Relative equivariance error of feature maps (invariance error of vectors such as logits) vs "
                   "rotation angle, mean over seeds, log scale. Grey band: interpolation floor (between the floor "
                   "kinds measured); dashed: reflection composed with the rotation. Features named …:gpool are "
                   f"compared after group pooling. Values below {clip:.0e} (round-off on exact elements) are drawn at {clip:.0e}.")
        if not has_floor:
            caption = caption.replace(" Grey band: interpolation floor (between the floor kinds measured);", "")
        return finish(fig, f"Equivariance error vs angle{what}", caption)


def layer_attribution(eq: pd.DataFrame, colors: Colors, weights: str | None) -> Plot | None:
    la = tables.layer_attribution(eq)
    if la.empty:
        return None
    models = tables.distinct(la["model"])
    ncols = min(len(models), 3)
    nrows = math.ceil(len(models) / ncols)
    n_layers = int(la.groupby("model").size().max())
    with style():
        fig, axes = figure(height_in=nrows * (0.7 + 0.22 * n_layers) + 0.2, ncols=ncols, nrows=nrows)
        for i, model in enumerate(models):
            ax = axes[i // ncols][i % ncols]
            m = la[la["model"] == model].sort_values("order")
            y = np.arange(len(m))
            ax.barh(y, m["value"], color=colors(model), height=0.65)
            ax.set_yticks(y, [str(v) for v in m["layer"]])
            ax.invert_yaxis()
            ax.set_title(model, loc="left")
            ax.set_xlabel("equivariance error")
            ax.grid(axis="y", visible=False)
            vals = m["value"].to_numpy(float)
            if (vals > 0).all() and vals.max() / vals.min() > 100:  # exact stages next to lossy ones
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, numticks=5))
                ax.xaxis.set_minor_locator(NullLocator())
            else:
                ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        for j in range(len(models), nrows * ncols):
            axes[j // ncols][j % ncols].set_visible(False)
        what = f" ({weights} weights)" if weights else ""
        return finish(fig, f"Per-layer equivariance error{what}",
                      "Equivariance error each stage adds on its own (stage fed the rotated input vs the "
                      "rotated stage output), mean over non-grid angles and seeds, stages in network order; "
                      "log scale where errors span more than two decades.")
