"""Efficiency figures: latency vs kernel size, memory vs batch, accuracy-vs-latency Pareto front."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D

from reports import tables
from reports.plots.common import (
    STYLE_KEY,
    Colors,
    Plot,
    figure,
    finish,
    legend_outside,
    plain_log_ticks,
    style,
)

MODE_STYLE = {"eval": "-", "train": "--", "eval_exported": ":"}


def _sweep_plot(rows: pd.DataFrame, x: str, colors: Colors, ylabel: str, title: str, caption: str,
                logy: bool = False) -> Plot | None:
    rows = rows[rows[x].notna()]
    per = rows.groupby(["model", "mode", x], sort=True, dropna=False)["value"].mean().reset_index()
    per["mode"] = per["mode"].fillna("")
    lines = [(k, g) for k, g in per.groupby(["model", "mode"], sort=True) if g[x].nunique() > 1]
    if not lines:
        return None
    modes = sorted({mode for (_, mode), _ in lines})
    with style():
        fig, axes = figure(height_in=3.2, width_in=8.5)
        ax = axes[0][0]
        for (model, mode), g in lines:
            g = g.sort_values(x)
            ax.plot(g[x], g["value"], color=colors(model), linestyle=MODE_STYLE.get(mode, "-."), marker="o")
        xs = tables.distinct(per[x])
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        if logy:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(ylabel)
        handles = [Line2D([], [], color=colors(m), marker="o", label=m)
                   for m in sorted({m for (m, _), _ in lines})]
        if len(modes) > 1:
            handles += [Line2D([], [], color=STYLE_KEY, linestyle=MODE_STYLE.get(md, "-."), label=md or "—")
                        for md in modes]
        legend_outside(ax, handles, [h.get_label() for h in handles])
        return finish(fig, title, caption)


def latency_vs_kernel(eff: pd.DataFrame, colors: Colors) -> Plot | None:
    if len(tables.distinct(eff["kernel_size"])) < 2:
        return None
    rows = tables.sweep_rows(eff, "kernel_size")
    lat = pd.concat([tables.latency_rows(rows, m) for m in ("eval", "train")])
    return _sweep_plot(lat, "kernel_size", colors, "median latency (ms)", "Latency vs kernel size",
                       "Median latency of an eval pass (solid) and a training step (dashed), other settings at "
                       "the base configuration.", logy=True)


def memory_vs_batch(eff: pd.DataFrame, colors: Colors) -> Plot | None:
    if len(tables.distinct(eff["batch"])) < 2:
        return None
    rows = tables.sweep_rows(eff, "batch")
    mem, kind = tables.memory_kind(rows[rows["metric"] == "peak_memory_mb"])
    what = {"step": "peak minus the baseline before the step", "peak": "absolute peak"}.get(kind or "", "")
    return _sweep_plot(mem, "batch", colors, "peak memory (MB)", "Peak memory vs batch size",
                       f"Peak memory of one pass{f' ({what})' if what else ''}: eval solid, train dashed; other "
                       "settings at the base configuration.", logy=True)


def pareto(df: pd.DataFrame, colors: Colors) -> Plot | None:
    p = tables.pareto_points(df)
    if len(p) < 2:
        return None
    with style():
        fig, axes = figure(height_in=3.4, width_in=8.5)
        ax = axes[0][0]
        front = p[p["on_front"]].sort_values("latency_ms")
        ax.step(front["latency_ms"], front["accuracy"], where="post", color="#9aa3ad", linewidth=1.2,
                zorder=1, label="Pareto front")
        for rec in p.to_dict("records"):
            ax.scatter([rec["latency_ms"]], [rec["accuracy"]], s=46 if rec["on_front"] else 30,
                       color=colors(rec["model"]), edgecolor="black" if rec["on_front"] else "none",
                       linewidth=0.9, zorder=3)
            ax.annotate(rec["model"], (rec["latency_ms"], rec["accuracy"]), xytext=(5, 4),
                        textcoords="offset points", fontsize=8, color="#222")
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("eval latency (ms, log scale)")
        units = tables.distinct(df.loc[(df["protocol"] == "accuracy") & (df["metric"] == "accuracy"), "unit"])
        unit = f" ({units[0]})" if len(units) == 1 and units[0] else ""
        ax.set_ylabel(f"mean rotated accuracy{unit}")
        handles = [Line2D([], [], color="#9aa3ad", label="Pareto front"),
                   Line2D([], [], color="#666", marker="o", linestyle="", markeredgecolor="black",
                          label="on the front")]
        legend_outside(ax, handles, [h.get_label() for h in handles])
        return finish(fig, "Accuracy vs latency",
                      "Mean accuracy over rotation angles against median eval latency; outlined points are on "
                      "the Pareto front (no other model is both faster and more accurate).")
