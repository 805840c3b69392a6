"""Pure pandas summaries of a run's tidy results frame (no matplotlib; the CLI imports this for its summary).

Every function takes the frame returned by ``ResultsStore.frame()`` (or an already `prepare`d one), uses only
rows with status ``ok`` and a finite value, and iterates in sorted order so the output is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from reports import format as fmt

MAIN_FEATURES = ("logits", "out")  # the network output / the layer output
REFERENCE_NETWORK = "cnn"
REFERENCE_LAYER = "layer_conv2d"
SWEEP_COLUMNS = ("kernel_size", "channels", "batch", "resolution")
OPTIONAL_COLUMNS = ("feature", "rotation", "weights", "floor_kind", "layer", "summary", "condition", "stat",
                    "iqr_ms", *SWEEP_COLUMNS)
NUMERIC_COLUMNS = ("value", "angle_deg", "seed", "iqr_ms", *SWEEP_COLUMNS)
TABLE_ANGLES = (10.0, 22.5, 45.0, 90.0)
ACC_SUMMARIES = ("upright", "mean", "worst", "flip_h", "flip_v")
_ANGLE_TOL = 1e-6


# -- helpers ---------------------------------------------------------------------------------------------------
def is_layer(model: str) -> bool:
    return str(model).startswith("layer_")


def reference_for(model: str) -> str:
    """The plain baseline a model is compared with: `layer_conv2d` for layers, `cnn` for networks."""
    return REFERENCE_LAYER if is_layer(model) else REFERENCE_NETWORK


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """ok rows with a finite value, numeric columns coerced, optional columns present, reflect 'none' filled."""
    if df.attrs.get("reports_prepared"):
        return df
    d = df.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in d.columns:
            d[col] = None
    for col in NUMERIC_COLUMNS:
        d[col] = pd.to_numeric(d[col], errors="coerce")
    status_ok = d["status"].isna() | (d["status"] == "ok")
    d = d[status_ok & d["value"].notna() & np.isfinite(d["value"].astype(float))].copy()
    d["reflect"] = d["reflect"].where(d["reflect"].notna(), "none").astype(str)
    for col in ("model", "protocol", "metric"):
        d[col] = d[col].astype(object)
    d = d.reset_index(drop=True)
    d.attrs["reports_prepared"] = True
    return d


def has(df: pd.DataFrame, col: str) -> pd.Series:
    """Boolean mask: the column is set (not null / NaN)."""
    return df[col].notna()


def distinct(values: Iterable[Any]) -> list[Any]:
    """Sorted distinct non-missing values (numbers numerically, everything else as strings)."""
    vals = {v for v in values if not fmt.is_missing(v)}
    try:
        return sorted(vals)
    except TypeError:
        return sorted(vals, key=str)


def mode_value(values: Iterable[Any]) -> Any:
    """Most frequent non-missing value; ties go to the smallest. None when there is none."""
    s = pd.Series([v for v in values if not fmt.is_missing(v)], dtype=object)
    if s.empty:
        return None
    counts = s.value_counts()
    top = counts.max()
    return distinct(counts[counts == top].index)[0]


def is_grid_angle(a: float, step: float = 90.0) -> bool:
    r = float(a) % step
    return r < _ANGLE_TOL or step - r < _ANGLE_TOL


def non_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Rows at angles that are not multiples of 90° (where pixel-grid rotations need interpolation)."""
    mask = df["angle_deg"].notna() & ~df["angle_deg"].map(lambda a: is_grid_angle(a) if pd.notna(a) else True)
    return df[mask.astype(bool)]


def at_angle(df: pd.DataFrame, angle: float) -> pd.DataFrame:
    return df[(df["angle_deg"] - angle).abs() < _ANGLE_TOL]


def seed_stats(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per key: mean over each seed's rows, then mean / std / n across seeds."""
    if df.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    d = df.assign(_seed=df["seed"].fillna(-1))
    per_seed = d.groupby([*keys, "_seed"], sort=True, dropna=False)["value"].mean().reset_index()
    out = per_seed.groupby(keys, sort=True, dropna=False)["value"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def per_angle(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over seeds at each angle (columns: keys, angle_deg, value, std, n)."""
    s = seed_stats(df[df["angle_deg"].notna()], [*keys, "angle_deg"])
    return s.rename(columns={"mean": "value"})


def varying(df: pd.DataFrame, cols: Iterable[str]) -> list[str]:
    """Those of `cols` that take more than one (non-missing) value in `df` (worth showing as a key column)."""
    return [c for c in cols if c in df.columns and len(distinct(df[c])) > 1]


def choose_weights(eq: pd.DataFrame) -> str | None:
    """'trained' when every model measured has trained-weight rows, else 'init' (one kind for a fair table)."""
    kinds = distinct(eq["weights"])
    if not kinds:
        return None
    if "trained" in kinds:
        models = set(eq["model"])
        trained = set(eq.loc[eq["weights"] == "trained", "model"])
        if models == trained or "init" not in kinds:
            return "trained"
    return "init" if "init" in kinds else kinds[0]


def filter_eq(df: pd.DataFrame, value: Any, col: str) -> pd.DataFrame:
    """Rows where col == value (value None keeps rows where the column is unset)."""
    if value is None:
        return df[df[col].isna()]
    return df[df[col] == value]


# -- efficiency configuration ----------------------------------------------------------------------------------
def reference_config(eff: pd.DataFrame) -> dict[str, Any]:
    """The most common value of each swept column (kernel size, channels, batch, resolution)."""
    return {c: mode_value(eff[c]) for c in SWEEP_COLUMNS if c in eff.columns and eff[c].notna().any()}


def at_reference_config(eff: pd.DataFrame) -> pd.DataFrame:
    """Per model, rows at the reference config (falling back to the model's own most common value)."""
    ref = reference_config(eff)
    parts = []
    for model in distinct(eff["model"]):
        m = eff[eff["model"] == model]
        for col, val in ref.items():
            if not m[col].notna().any():
                continue
            want = val if (m[col] == val).any() else mode_value(m[col])
            m = m[(m[col] == want) | m[col].isna()]
        parts.append(m)
    return pd.concat(parts) if parts else eff.iloc[0:0]


def latency_rows(eff: pd.DataFrame, mode: str = "eval") -> pd.DataFrame:
    """Median-latency rows of a mode (rows without a `stat` are medians; `stat == 'iqr'` rows are spreads)."""
    lat = eff[(eff["metric"] == "latency_ms") & (eff["mode"] == mode)]
    return lat[lat["stat"].isna() | (lat["stat"] == "median")]


def iqr_rows(eff: pd.DataFrame, mode: str = "eval") -> pd.DataFrame:
    """IQR of latency as rows (from `stat == 'iqr'` rows, or the `iqr_ms` column of the median rows)."""
    lat = eff[(eff["metric"] == "latency_ms") & (eff["mode"] == mode)]
    explicit = lat[lat["stat"] == "iqr"]
    if not explicit.empty:
        return explicit
    med = latency_rows(eff, mode)
    med = med[med["iqr_ms"].notna()]
    return med.assign(value=med["iqr_ms"])


def memory_rows(eff: pd.DataFrame) -> pd.DataFrame:
    """Peak-memory rows of one mode: eval when measured, else whatever mode there is."""
    mem = eff[eff["metric"] == "peak_memory_mb"]
    if (mem["mode"] == "eval").any():
        return mem[mem["mode"] == "eval"]
    modes = distinct(mem["mode"])
    return mem[mem["mode"] == modes[0]] if modes else mem


def _per_model_mean(rows: pd.DataFrame) -> pd.Series:
    if rows.empty:
        return pd.Series(dtype=float)
    return rows.groupby("model", sort=True)["value"].mean()


# -- headline --------------------------------------------------------------------------------------------------
def primary_accuracy(d: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Accuracy summary rows of the headline: the dataset with most rows, upright-trained when there is such."""
    acc = d[(d["protocol"] == "accuracy") & (d["metric"] == "accuracy") & has(d, "summary")]
    notes: dict[str, Any] = {}
    if acc.empty:
        return acc, notes
    datasets = acc["dataset"].fillna("")
    counts = datasets.value_counts()
    dataset = distinct(counts[counts == counts.max()].index)[0]
    acc = acc[datasets == dataset]
    notes["dataset"] = dataset or None
    if acc["condition"].notna().any():
        cond = "upright" if (acc["condition"] == "upright").any() else distinct(acc["condition"])[0]
        acc = acc[acc["condition"] == cond]
        notes["condition"] = cond
    units = distinct(acc["unit"])
    notes["acc_unit"] = units[0] if len(units) == 1 else None
    return acc, notes


def main_equivariance(d: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """equivariance_error rows of the main feature (logits / out), no reflection, no per-layer rows."""
    eq = d[(d["protocol"] == "equivariance") & (d["metric"] == "equivariance_error") & ~has(d, "layer")]
    notes: dict[str, Any] = {}
    if eq.empty:
        return eq, notes
    eq = eq[eq["reflect"] == "none"]
    if eq["feature"].notna().any():
        eq = eq[eq["feature"].isin(MAIN_FEATURES)]
    weights = choose_weights(eq)
    if weights is not None:
        eq = eq[eq["weights"] == weights]
        notes["weights"] = weights
    rotation = mode_value(eq["rotation"])
    if rotation is not None:
        eq = eq[eq["rotation"] == rotation]
        notes["rotation"] = rotation
    return eq, notes


def _headline(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    d = prepare(df)
    models = distinct(d["model"])
    out = pd.DataFrame(index=pd.Index(models, name="model"))
    notes: dict[str, Any] = {}
    if not models:
        return out.reset_index(), notes

    eff = d[d["protocol"] == "efficiency"]
    if not eff.empty:
        ref = at_reference_config(eff)
        notes["config"] = {k: v for k, v in reference_config(eff).items()}
        out["params"] = _per_model_mean(ref[ref["metric"] == "params"])
        out["latency_ms"] = _per_model_mean(latency_rows(ref, "eval"))
        mem = memory_rows(ref)
        out["peak_memory_mb"] = _per_model_mean(mem)
        if not mem.empty:
            notes["memory_mode"] = distinct(mem["mode"])[0] if mem["mode"].notna().any() else None

    acc, acc_notes = primary_accuracy(d)
    notes.update(acc_notes)
    for summary in ("upright", "mean", "worst"):
        s = seed_stats(acc[acc["summary"] == summary], ["model"]).set_index("model")
        if not s.empty:
            out[f"acc_{summary}"] = s["mean"]
            out[f"acc_{summary}_std"] = s["std"]
            out[f"acc_{summary}_n"] = s["n"]

    eq, eq_notes = main_equivariance(d)
    notes.update(eq_notes)
    if not eq.empty:
        pa = per_angle(eq, ["model"])
        ng = non_grid(pa)
        if not ng.empty:
            out["eq_mean"] = ng.groupby("model")["value"].mean()
            out["eq_max"] = ng.groupby("model")["value"].max()
        a45 = at_angle(pa, 45.0)
        if not a45.empty:
            out["eq_45"] = a45.groupby("model")["value"].mean()

    lee = d[(d["protocol"] == "equivariance") & (d["metric"] == "lie_derivative") & ~has(d, "layer")]
    if not lee.empty:
        if lee["feature"].isin(MAIN_FEATURES).any():
            lee = lee[lee["feature"].isin(MAIN_FEATURES)]
        if "weights" in notes and (lee["weights"] == notes["weights"]).any():
            lee = lee[lee["weights"] == notes["weights"]]
        out["lee"] = _per_model_mean(lee)

    for col, name in (("params", "params_ratio"), ("latency_ms", "latency_ratio"),
                      ("peak_memory_mb", "memory_ratio")):
        if col in out.columns:
            refs = [reference_for(m) for m in out.index]
            ref_vals = out[col].reindex(refs).to_numpy(dtype=float)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[name] = out[col].to_numpy(dtype=float) / ref_vals
            out.loc[~np.isfinite(out[name].astype(float)), name] = np.nan
    notes["references"] = distinct(reference_for(m) for m in models if reference_for(m) in out.index)
    out = out.dropna(axis=1, how="all")
    return out.reset_index(), notes


HEADLINE_LABELS = {
    "params": "params",
    "acc_upright": "upright acc",
    "acc_mean": "rot. acc mean",
    "acc_worst": "rot. acc worst",
    "eq_mean": "equiv. err (mean)",
    "eq_max": "equiv. err (max)",
    "eq_45": "equiv. err @45°",
    "lee": "LEE",
    "latency_ms": "eval latency (ms)",
    "peak_memory_mb": "peak memory (MB)",
    "params_ratio": "params ×ref",
    "latency_ratio": "latency ×ref",
    "memory_ratio": "memory ×ref",
}


# two-level headers of the HTML headline table: key -> (group, sub-header)
HEADLINE_GROUPS = {
    "params": ("", "params"),
    "acc_upright": ("accuracy", "upright"),
    "acc_mean": ("accuracy", "rot. mean"),
    "acc_worst": ("accuracy", "rot. worst"),
    "eq_mean": ("equivariance error", "mean"),
    "eq_max": ("equivariance error", "max"),
    "eq_45": ("equivariance error", "@45°"),
    "lee": ("", "LEE"),
    "latency_ms": ("cost", "eval latency (ms)"),
    "peak_memory_mb": ("cost", "peak memory (MB)"),
    "params_ratio": ("× plain baseline", "params"),
    "latency_ratio": ("× plain baseline", "latency"),
    "memory_ratio": ("× plain baseline", "memory"),
}


def format_headline(numbers: pd.DataFrame, acc_unit: str | None = None) -> pd.DataFrame:
    """Display strings of `headline_numbers` (3 significant digits, scientific for small errors)."""
    out = pd.DataFrame({"model": numbers["model"]}) if "model" in numbers else pd.DataFrame()
    for key, label in HEADLINE_LABELS.items():
        if key not in numbers.columns:
            continue
        col = numbers[key]
        if key == "params":
            vals = [fmt.count(v) for v in col]
        elif key.startswith("acc_"):
            vals = [fmt.mean_std(m, s, n) for m, s, n in zip(col, numbers.get(f"{key}_std", [None] * len(col)),
                                                              numbers.get(f"{key}_n", [1] * len(col)))]
            if acc_unit:
                label = f"{label} ({acc_unit})"
        elif key.endswith("_ratio"):
            vals = [fmt.ratio(v) for v in col]
        else:
            vals = [fmt.sig(v) for v in col]
        out[label] = vals
    return out


def headline_numbers(df: pd.DataFrame) -> pd.DataFrame:
    """One row per model, numeric: params, acc_* (+ _std, _n), eq_mean/max/45, lee, latency_ms,
    peak_memory_mb and *_ratio to the plain CNN / conv2d layer. Columns with no data are omitted."""
    return _headline(df)[0]


def headline_notes(df: pd.DataFrame) -> dict[str, Any]:
    """Which dataset / weights / rotation / config the headline numbers refer to."""
    return _headline(df)[1]


def headline_table(df: pd.DataFrame, formatted: bool = True) -> pd.DataFrame:
    """The headline comparison, one row per model (display strings unless ``formatted=False``)."""
    numbers, notes = _headline(df)
    if not formatted:
        return numbers
    if numbers.empty:
        return pd.DataFrame(columns=["model"])
    return format_headline(numbers, notes.get("acc_unit"))


# -- equivariance ----------------------------------------------------------------------------------------------
def equivariance_blocks(df: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """Equivariance rows split by weights kind (init / trained shown separately), sorted."""
    d = prepare(df)
    eq = d[d["protocol"] == "equivariance"]
    if eq.empty:
        return []
    kinds = distinct(eq["weights"])
    if not kinds:
        return [(None, eq)]
    order = sorted(kinds, key=lambda k: (k != "init", k != "trained", k))
    blocks = [(k, eq[eq["weights"] == k]) for k in order]
    unset = eq[eq["weights"].isna()]
    if not unset.empty:
        blocks.insert(0, (None, unset))
    return blocks


def _feature_order(features: Iterable[Any]) -> list[Any]:
    feats = distinct(features)
    return sorted(feats, key=lambda f: (f not in MAIN_FEATURES, f))


def equivariance_angle_table(eq: pd.DataFrame) -> pd.DataFrame:
    """equivariance_error at 10°, 22.5°, 45°, 90° (those measured) and mean / max over non-grid angles."""
    e = eq[(eq["metric"] == "equivariance_error") & ~has(eq, "layer")]
    if e.empty:
        return pd.DataFrame()
    extra = varying(e, ("dataset", "rotation"))
    keys = ["model", "feature", *extra, "reflect"]
    e = e.assign(feature=e["feature"].fillna(""))
    pa = per_angle(e, keys)
    rows = []
    for key, g in pa.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key))
        for a in TABLE_ANGLES:
            hit = at_angle(g, a)
            row[fmt.angle(a)] = hit["value"].mean() if not hit.empty else np.nan
        ng = non_grid(g)
        row["mean (non-grid)"] = ng["value"].mean() if not ng.empty else np.nan
        row["max (non-grid)"] = ng["value"].max() if not ng.empty else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_f"] = out["feature"].map(lambda f: (f not in MAIN_FEATURES, f))
    out = out.sort_values(["_f", "model", *extra, "reflect"], kind="stable").drop(columns="_f")
    out = out.dropna(axis=1, how="all")
    if (out["reflect"] == "none").all():
        out = out.drop(columns="reflect")
    if (out["feature"] == "").all():
        out = out.drop(columns="feature")
    return out.reset_index(drop=True)


def metric_summary_table(eq: pd.DataFrame, metrics: tuple[str, ...] = ("invariance_error",
                                                                       "prediction_agreement")) -> pd.DataFrame:
    """Per model / metric / feature: mean and worst over non-grid angles (max error, min agreement) and @45°."""
    e = eq[eq["metric"].isin(metrics) & ~has(eq, "layer") & (eq["reflect"] == "none")]
    if e.empty:
        return pd.DataFrame()
    e = e.assign(feature=e["feature"].fillna(""))
    keys = ["model", "metric", "feature", *varying(e, ("dataset", "rotation"))]
    with_angle = e[e["angle_deg"].notna()]
    rows = []
    for key, g in e.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, key))
        worst = min if row["metric"] == "prediction_agreement" else max
        pa = per_angle(g, []) if g["angle_deg"].notna().any() else None
        if pa is not None and not pa.empty:
            ng = non_grid(pa)
            src = ng if not ng.empty else pa
            row["mean"] = src["value"].mean()
            row["worst"] = worst(src["value"])
            hit = at_angle(pa, 45.0)
            row["@45°"] = hit["value"].mean() if not hit.empty else np.nan
        else:
            row["mean"] = g["value"].mean()
            row["worst"] = worst(g["value"])
        rows.append(row)
    del with_angle
    out = pd.DataFrame(rows).dropna(axis=1, how="all")
    out["metric"] = out["metric"].str.replace("_", " ")
    if (out["feature"] == "").all():
        out = out.drop(columns="feature")
    return out.reset_index(drop=True)


def lie_derivative_table(eq: pd.DataFrame) -> pd.DataFrame:
    """Lie derivative (LEE) per model / feature: mean ± std across seeds."""
    e = eq[(eq["metric"] == "lie_derivative") & ~has(eq, "layer")]
    if e.empty:
        return pd.DataFrame()
    e = e.assign(feature=e["feature"].fillna(""))
    keys = ["model", "feature", *varying(e, ("dataset", "rotation"))]
    s = seed_stats(e, keys)
    s["_f"] = s["feature"].map(lambda f: (f not in MAIN_FEATURES, f))
    s = s.sort_values(["_f", *keys], kind="stable").drop(columns="_f")
    if (s["feature"] == "").all():
        s = s.drop(columns="feature")
    return s.reset_index(drop=True)


def layer_attribution(eq: pd.DataFrame) -> pd.DataFrame:
    """Per-layer equivariance error (mean over non-grid angles when there are some), layers in recorded order."""
    e = eq[(eq["metric"] == "equivariance_error") & has(eq, "layer") & (eq["reflect"] == "none")]
    if e.empty:
        return pd.DataFrame(columns=["model", "layer", "value", "order"])
    order = {layer: i for i, layer in enumerate(dict.fromkeys(e["layer"]))}
    ng = non_grid(e)
    src = ng if not ng.empty else e
    out = src.groupby(["model", "layer"], sort=True)["value"].mean().reset_index()
    out["order"] = out["layer"].map(order)
    return out.sort_values(["model", "order"], kind="stable").reset_index(drop=True)


def floor_band(eq: pd.DataFrame, feature: Any = None) -> pd.DataFrame:
    """Interpolation floor per angle: min and max over floor kinds (each kind averaged over the rest)."""
    f = eq[(eq["metric"] == "interpolation_floor") & eq["angle_deg"].notna() & (eq["reflect"] == "none")]
    if feature is not None and f["feature"].notna().any() and (f["feature"] == feature).any():
        f = f[f["feature"] == feature]
    if f.empty:
        return pd.DataFrame(columns=["angle_deg", "low", "high"])
    kinds = f.assign(floor_kind=f["floor_kind"].fillna("floor"))
    per = kinds.groupby(["floor_kind", "angle_deg"], sort=True)["value"].mean().reset_index()
    band = per.groupby("angle_deg", sort=True)["value"].agg(["min", "max"]).reset_index()
    return band.rename(columns={"min": "low", "max": "high"})


# -- accuracy --------------------------------------------------------------------------------------------------
def accuracy_rows(df: pd.DataFrame) -> pd.DataFrame:
    d = prepare(df)
    return d[(d["protocol"] == "accuracy") & (d["metric"] == "accuracy")]


def accuracy_curves(acc: pd.DataFrame) -> pd.DataFrame:
    """Per dataset / condition / reflect / model / angle: mean and std across seeds."""
    a = acc[acc["angle_deg"].notna() & ~has(acc, "summary")]
    if a.empty:
        return pd.DataFrame(columns=["dataset", "condition", "reflect", "model", "angle_deg", "value", "std", "n"])
    a = a.assign(dataset=a["dataset"].fillna(""), condition=a["condition"].fillna(""))
    return per_angle(a, ["dataset", "condition", "reflect", "model"])


def accuracy_summary_table(acc: pd.DataFrame) -> pd.DataFrame:
    """upright / mean / worst / flip_h / flip_v accuracy per dataset, condition, model ('mean ± std')."""
    s = acc[has(acc, "summary")]
    if s.empty:
        return pd.DataFrame()
    s = s.assign(dataset=s["dataset"].fillna(""), condition=s["condition"].fillna(""))
    stats = seed_stats(s, ["dataset", "condition", "model", "summary"])
    rows = []
    stats = stats.assign(_c=stats["condition"].map(lambda c: (c != "upright", c)))
    stats = stats.sort_values(["dataset", "_c", "model"], kind="stable").drop(columns="_c")
    for key, g in stats.groupby(["dataset", "condition", "model"], sort=False):
        row = dict(zip(["dataset", "condition", "model"], key))
        by = g.set_index("summary")
        for name in ACC_SUMMARIES:
            if name in by.index:
                r = by.loc[name]
                row[name] = fmt.mean_std(r["mean"], r["std"], r["n"])
        row["seeds"] = int(g["n"].max())
        rows.append(row)
    out = pd.DataFrame(rows).rename(columns={"flip_h": "flip h", "flip_v": "flip v"})
    for col in ("dataset", "condition"):
        if out[col].nunique() <= 1:
            out = out.drop(columns=col)
    if (out["seeds"] <= 1).all():
        out = out.drop(columns="seeds")
    return out


# -- efficiency ------------------------------------------------------------------------------------------------
EFFICIENCY_COLUMNS = (
    # label, metric, mode (None: any / the preferred one), formatter
    ("params", "params", None),
    ("FLOPs", "flops", None),
    ("eval latency (ms)", "latency_ms", "eval"),
    ("train latency (ms)", "latency_ms", "train"),
    ("exported eval latency (ms)", "latency_ms", "eval_exported"),
    ("peak memory (MB)", "peak_memory_mb", None),
    ("build (s)", "build_s", None),
)


def efficiency_ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: model, config columns that vary, column (label), value, ratio to cnn / layer_conv2d.

    The reference is measured in the same run at the same configuration; ratio is NaN without one.
    """
    d = prepare(df)
    eff = d[d["protocol"] == "efficiency"]
    if eff.empty:
        return pd.DataFrame(columns=["model", "column", "value", "ratio"])
    config = varying(eff, SWEEP_COLUMNS)
    rows = []
    for label, metric, mode in EFFICIENCY_COLUMNS:
        if metric == "latency_ms":
            part = latency_rows(eff, mode)
        elif metric == "peak_memory_mb":
            mem = eff[eff["metric"] == metric]
            modes = distinct(mem["mode"])
            if len(modes) > 1:
                for m in modes:
                    sub = mem[mem["mode"] == m]
                    rows.extend(_ratio_rows(sub, config, f"peak memory {m} (MB)"))
                continue
            part = mem
        else:
            part = eff[eff["metric"] == metric]
        rows.extend(_ratio_rows(part, config, label))
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["model", *config, "column", "value", "ratio"])
    return out


def _ratio_rows(part: pd.DataFrame, config: list[str], label: str) -> list[dict[str, Any]]:
    if part.empty:
        return []
    p = part.assign(**{c: part[c].astype(float).fillna(-1.0) for c in config})
    means = p.groupby(["model", *config], sort=True)["value"].mean()
    rows = []
    for key, value in means.items():
        key = key if isinstance(key, tuple) else (key,)
        model, cfg = key[0], key[1:]
        ref_key = (reference_for(model), *cfg)
        ref = means.get(ref_key if config else ref_key[0], np.nan)
        ratio = value / ref if ref and np.isfinite(ref) and ref != 0 else np.nan
        row = {"model": model, **{c: (np.nan if v == -1.0 else v) for c, v in zip(config, cfg)},
               "column": label, "value": value, "ratio": ratio}
        rows.append(row)
    return rows


def efficiency_wide(ratio_long: pd.DataFrame) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(key columns, value columns, rows) for the HTML ratio table; each cell is (value text, ratio text).

    A measurement without a config value (e.g. params without a batch size) holds for every value of that
    column, so it is shown on each of the model's rows that agree on the columns it does have.
    """
    if ratio_long.empty:
        return [], [], []
    keys = [c for c in ratio_long.columns if c not in ("column", "value", "ratio")]
    config = keys[1:]
    labels = [lab for lab, *_ in EFFICIENCY_COLUMNS if lab in set(ratio_long["column"])]
    labels += sorted(set(ratio_long["column"]) - set(labels))
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in ratio_long.to_dict("records"):
        key = tuple(None if fmt.is_missing(rec[k]) else rec[k] for k in keys)
        groups.setdefault(key, {})[rec["column"]] = rec
    def covers(big: tuple, small: tuple) -> bool:
        """`big` is a more specific configuration of the same model that agrees with `small`."""
        return (big != small and big[0] == small[0]
                and all(v is None or v == bv for v, bv in zip(small[1:], big[1:]))
                and sum(v is not None for v in big) > sum(v is not None for v in small))

    maximal = [k for k in groups if not any(covers(o, k) for o in groups)]
    merged: dict[tuple, dict[str, Any]] = {k: dict(groups[k]) for k in maximal}
    for key, cells in groups.items():
        if key in merged:
            continue
        for target in (k for k in maximal if covers(k, key)):
            for lab, rec in cells.items():
                merged[target].setdefault(lab, rec)

    def order(k: tuple) -> tuple:
        return (str(k[0]), *((1, 0.0) if v is None else (0, float(v)) for v in k[1:]))

    rows = []
    for key in sorted(merged, key=order):
        cells = merged[key]
        row = {"keys": [fmt.plain(v) for v in key], "cells": []}
        for lab in labels:
            rec = cells.get(lab)
            if rec is None:
                row["cells"].append((fmt.DASH, ""))
                continue
            val = fmt.count(rec["value"]) if lab in ("params", "FLOPs") else fmt.sig(rec["value"])
            ratio = "" if fmt.is_missing(rec["ratio"]) else fmt.ratio(rec["ratio"])
            row["cells"].append((val, ratio))
        rows.append(row)
    # drop config columns that are empty on every shown row
    keep = [0] + [i for i in range(1, len(keys)) if any(r["keys"][i] != fmt.DASH for r in rows)]
    keys = [keys[i] for i in keep]
    for r in rows:
        r["keys"] = [r["keys"][i] for i in keep]
    return keys, labels, rows


def pareto_points(df: pd.DataFrame) -> pd.DataFrame:
    """model, latency_ms (eval, reference config), accuracy (mean rotated), on_front (lower latency, higher acc)."""
    numbers = headline_numbers(df)
    if not {"latency_ms", "acc_mean"} <= set(numbers.columns):
        return pd.DataFrame(columns=["model", "latency_ms", "accuracy", "on_front"])
    p = numbers[["model", "latency_ms", "acc_mean"]].dropna().rename(columns={"acc_mean": "accuracy"})
    p = p.sort_values(["latency_ms", "accuracy", "model"], ascending=[True, False, True], kind="stable")
    best = -np.inf
    front = []
    for acc in p["accuracy"]:
        front.append(bool(acc > best))
        best = max(best, acc)
    p["on_front"] = front
    return p.reset_index(drop=True)


# -- failures --------------------------------------------------------------------------------------------------
def job_label(job: dict[str, Any]) -> str:
    """The runner's label, `protocol:model/dataset:seedN`, from a job record's dict."""
    ds = f"/{job['dataset']}" if job.get("dataset") else ""
    return f"{job.get('protocol', '?')}:{job.get('model', '?')}{ds}:seed{job.get('seed', '?')}"


def failed_jobs(records: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """label, status, message, job_id of each record whose status is not ok, sorted by label."""
    out = [{"label": job_label(r.get("job") or {}), "status": str(r.get("status")),
            "message": str(r.get("message") or ""), "job_id": str(r.get("job_id"))}
           for r in records if r.get("status") != "ok"]
    return sorted(out, key=lambda r: (r["label"], r["job_id"]))


def failed_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows with their own non-ok status (e.g. an 'oom' sweep point) inside jobs that finished ok."""
    out = []
    for rec in records:
        if rec.get("status") != "ok":
            continue
        label = job_label(rec.get("job") or {})
        for row in rec.get("rows") or []:
            status = row.get("status") or "ok"
            if status == "ok":
                continue
            bits = [str(row.get("metric", "?"))]
            for k in ("feature", "mode", "angle_deg", *SWEEP_COLUMNS):
                if not fmt.is_missing(row.get(k)):
                    bits.append(f"{k.replace('_deg', '').replace('_', ' ')} {fmt.plain(row[k])}")
            out.append({"label": label, "what": ", ".join(bits), "status": str(status),
                        "message": str(row.get("message") or "")})
    return sorted(out, key=lambda r: (r["label"], r["what"], r["status"], r["message"]))
