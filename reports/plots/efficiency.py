"""Efficiency figures from the efficiency tables and the headline: latency vs kernel size, memory vs batch,
accuracy vs latency. Layers and networks are drawn in separate panels."""

from __future__ import annotations

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
    plain_log_ticks,
    style,
)

MODE_STYLE = {"eval": "-", "train": "--", "eval_exported": ":"}
LEVEL_TITLE = {"layer": "Layers", "network": "Networks"}


def _sweep(points: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Rows of the one-factor sweep over `axis` (the base point included)."""
    reached = points["sweeps"].fillna("").str.split(",")
    return points[reached.map(lambda s: axis in s or "base" in s) & points[axis].notna()]


def _sweep_plot(rows: pd.DataFrame, x: str, styles: Styles, ylabel: str, title: str, caption: str) -> Plot | None:
    levels = [lv for lv in ("network", "layer") if (rows["level"] == lv).any()
              and rows[rows["level"] == lv].groupby("model")[x].nunique().max() > 1]
    if not levels:
        return None
    with style():
        fig, axes = figure(height_in=3.2, ncols=len(levels))
        for ax, level in zip(axes[0], levels):
            r = rows[rows["level"] == level]
            drawn, modes = [], []
            for (model, mode), g in r.groupby(["model", "mode"], sort=True):
                if g[x].nunique() < 2:
                    continue
                g = g.sort_values(x)
                draw_line(ax, g[x].to_numpy(), g["value"].to_numpy(float), styles, model,
                          linestyle=MODE_STYLE.get(mode, "-."))
                drawn.append(model)
                modes.append(mode)
            xs = sorted(r[x].dropna().unique())
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
            ax.set_xlabel(x.replace("_", " "))
            ax.set_ylabel(ylabel)
            ax.set_title(LEVEL_TITLE[level], loc="left")
            handles = model_handles(styles, set(drawn))
            handles += [Line2D([], [], color=STYLE_KEY, linestyle=MODE_STYLE.get(m, "-."), label=m)
                        for m in sorted(set(modes))]
            legend_outside(ax, handles)
        return finish(fig, title, caption)


def latency_vs_kernel(points: pd.DataFrame, styles: Styles) -> Plot | None:
    rows = _sweep(points, "kernel_size")
    rows = rows[(rows["metric"] == "latency_ms") & (rows["stat"] == "median") & rows["mode"].isin(("eval", "train"))]
    return _sweep_plot(rows, "kernel_size", styles, "median latency (ms)", "Latency vs kernel size",
                       "Median latency of an eval pass (solid) and a training step (dashed), other settings at the "
                       "base point.")


def memory_vs_batch(points: pd.DataFrame, styles: Styles) -> Plot | None:
    rows = _sweep(points, "batch")
    rows = rows[(rows["metric"] == "peak_memory_mb") & (rows["memory"] == "step")]
    return _sweep_plot(rows, "batch", styles, "peak memory (MB)", "Peak memory vs batch size",
                       "Peak memory of one pass (peak minus the baseline before the step): eval solid, train dashed; "
                       "other settings at the base point.")


def accuracy_vs_latency(headline: pd.DataFrame, styles: Styles) -> Plot | None:
    """One point per network: mean rotated accuracy against eval latency."""
    if headline is None or not {"acc_mean_pct", "latency_ms"} <= set(headline.columns):
        return None
    p = headline.dropna(subset=["acc_mean_pct", "latency_ms"])
    if len(p) < 2:
        return None
    with style():
        fig, axes = figure(height_in=3.4, width_in=8.5)
        ax = axes[0][0]
        for rec in p.to_dict("records"):
            st = styles(rec["model"])
            ax.scatter([rec["latency_ms"]], [rec["acc_mean_pct"]], s=46, color=st.color, marker=st.marker,
                       zorder=3)
            ax.annotate(rec["model"], (rec["latency_ms"], rec["acc_mean_pct"]), xytext=(5, 4),
                        textcoords="offset points", fontsize=8, color="#222")
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel("eval latency (ms, log scale)")
        dataset = p["acc_dataset"].dropna().unique()
        ax.set_ylabel("mean rotated accuracy (%)" + (f", {dataset[0]}" if len(dataset) == 1 else ""))
        legend_outside(ax, model_handles(styles, p["model"], line=False))
        return finish(fig, "Accuracy vs latency",
                      "Mean test accuracy over rotation angles against the median eval latency at the efficiency "
                      "base point, one point per network (upper left is better).")


PAPER_STYLE = {"linestyle": "--", "marker": "x", "markersize": 6, "linewidth": 1.2}
PAPER_COLOR = "#6b7785"  # a published series without a model of ours in the run


def _on_kernel_line(points: pd.DataFrame) -> pd.DataFrame:
    """Median latency rows of the kernel-size sweep (the base point included)."""
    rows = _sweep(points, "kernel_size")
    return rows[(rows["metric"] == "latency_ms") & (rows["stat"] == "median") & rows["mode"].isin(("eval", "train"))]


def _paper_series(ref: pd.DataFrame, col: str) -> dict[str, tuple[list[float], list[float], str | None]]:
    """{series label: (kernel sizes, values of `col`, first counterpart model)} of the published values."""
    out = {}
    for series, g in ref.dropna(subset=["kernel_size", col]).groupby("series", sort=True):
        g = g.drop_duplicates("kernel_size").sort_values("kernel_size")
        models = g["model"].dropna()
        out[series] = (g["kernel_size"].astype(float).tolist(), g[col].astype(float).tolist(),
                       models.iloc[0] if len(models) else None)
    return out


def kernel_reference(points: pd.DataFrame, reference: pd.DataFrame | None, styles: Styles) -> Plot | None:
    """The GMR paper's teaser (b): seconds per 1,000 convolutions vs kernel size, ours solid, the published
    series dashed; bottom row the ratio to the plain layer (the comparison that carries across machines)."""
    if reference is None or reference.empty or points is None or points.empty:
        return None
    ref = reference[(reference["metric"] == "latency_ms") & reference["kernel_size"].notna()]
    if ref.empty:
        return None
    baseline = ref["baseline"].iloc[0]
    models = set(ref["model"].dropna()) | {baseline}
    ours = _on_kernel_line(points)
    ours = ours[ours["model"].isin(models)]
    modes = [m for m in ("eval", "train") if (ours["mode"] == m).any()]
    if not modes:
        return None
    on_gpu = ours["device"].astype(str).str.startswith("cuda").any()
    with style():
        fig, axes = figure(height_in=6.0, ncols=len(modes), nrows=2, sharex=True)
        for col, mode in enumerate(modes):
            m = ours[ours["mode"] == mode]
            for row, (value_col, paper_col) in enumerate((("value", "paper_value"), ("ratio", "paper_ratio"))):
                ax = axes[row][col]
                drawn = []
                for model, g in m.groupby("model", sort=True):
                    if value_col == "ratio":
                        g = g[g["reference"] == baseline]
                    g = g.dropna(subset=[value_col]).sort_values("kernel_size")
                    if g.empty:
                        continue
                    draw_line(ax, g["kernel_size"].to_numpy(float), g[value_col].to_numpy(float), styles, model)
                    drawn.append(model)
                handles = model_handles(styles, drawn)
                if on_gpu or value_col == "ratio":
                    for series, (ks, vs, model) in _paper_series(ref, paper_col).items():
                        color = styles(model).color if model in drawn else PAPER_COLOR
                        ax.plot(ks, vs, color=color, **PAPER_STYLE)
                        handles.append(Line2D([], [], color=color, label=f"paper: {series}", **PAPER_STYLE))
                xs = sorted(set(m["kernel_size"].dropna().astype(int)) | set(ref["kernel_size"].astype(int)))
                ax.set_xticks(xs, [str(v) for v in xs])
                ax.set_yscale("log")
                plain_log_ticks(ax.yaxis)
                ax.set_ylabel("s per 1,000 convolutions" if value_col == "value" else f"ratio to {baseline}")
                if row == 1:
                    ax.set_xlabel("kernel size")
                ax.set_title(f"{'training step' if mode == 'train' else 'eval'}"
                             f"{'' if value_col == 'value' else ': ratio'}", loc="left")
                legend_outside(ax, handles)
        device = ", ".join(sorted(ours["device"].dropna().astype(str).unique()))
        caption = (f"Seconds per 1,000 convolutions (= median ms per call) vs kernel size on {device}, other "
                   "settings at the base point; dashed with crosses: the GMR paper's teaser (b), read off its "
                   "figure (a GPU; its layer shape and mode are not stated). Bottom: ratio to "
                   f"{baseline} at the same kernel size, the comparison that carries across machines.")
        if not on_gpu:
            caption += " Top: ours only, since this run's CPU seconds and the paper's GPU seconds are not comparable."
        return finish(fig, "Seconds per 1,000 convolutions vs kernel size (GMR paper, teaser b)", caption)
