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

MAIN_FEATURES = ("logits", "out", "out:gpool")  # the network output / the layer output
# The headline's "equivariance error of the output", first available per model: (metric, feature). Network
# logits are invariant vectors (invariance_error); a layer's output map is compared after group pooling when it
# is a regular field (`out:gpool` covers every angle, `out` only the angles inside the model's group).
MAIN_OUTPUT = (("equivariance_error", "logits"), ("invariance_error", "logits"),
               ("equivariance_error", "out:gpool"), ("equivariance_error", "out"))
LEE_FEATURES = ("logits", "out:gpool", "out")
SPLIT_COLUMNS = ("dataset", "inputs", "rotation")  # shown / split by only when they vary
REFERENCE_NETWORK = "cnn"
REFERENCE_LAYER = "layer_conv2d"
SWEEP_COLUMNS = ("kernel_size", "channels", "batch", "resolution")
OPTIONAL_COLUMNS = ("feature", "rotation", "weights", "floor_kind", "layer", "summary", "condition", "stat",
                    "iqr_ms", "memory", "sweep", "inputs", *SWEEP_COLUMNS)
MEMORY_KINDS = ("step", "peak", "reserved")  # preferred peak-memory kind first (step = peak - baseline)
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
    frac = (d["metric"] == "accuracy") & (d["unit"] == "fraction")
    if frac.any():  # accuracy is shown in percent
        d.loc[frac, "value"] = d.loc[frac, "value"].astype(float) * 100.0
        d.loc[frac, "unit"] = "%"
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
    eq = eq[eq["metric"] != "interpolation_floor"]
    kinds = [k for k in distinct(eq["weights"]) if k != "none"]
    if not kinds:
        return None
    if "trained" in kinds:
        models = set(eq["model"])
        trained = set(eq.loc[eq["weights"] == "trained", "model"])
        if models == trained or "init" not in kinds:
            return "trained"
    return "init" if "init" in kinds else kinds[0]


# -- efficiency configuration ----------------------------------------------------------------------------------
def has_base_points(eff: pd.DataFrame) -> bool:
    """Rows carry the efficiency protocol's `sweep` column with base-point rows."""
    return "sweep" in eff.columns and bool((eff["sweep"] == "base").any())


def reference_config(eff: pd.DataFrame) -> dict[str, Any]:
    """The configuration the headline reports: the protocol's base point (`sweep == 'base'`) when rows say so,
    else the most common value of each swept column (kernel size, channels, batch, resolution)."""
    src = eff[eff["sweep"] == "base"] if has_base_points(eff) else eff
    return {c: mode_value(src[c]) for c in SWEEP_COLUMNS if c in src.columns and src[c].notna().any()}


def at_reference_config(eff: pd.DataFrame) -> pd.DataFrame:
    """Per model, its base-point rows; without those, rows at the reference config (a model never measured at
    a reference value uses its own most common one)."""
    base = has_base_points(eff)
    ref = reference_config(eff)
    parts = []
    for model in distinct(eff["model"]):
        m = eff[eff["model"] == model]
        if base and (m["sweep"] == "base").any():
            parts.append(m[m["sweep"] == "base"])
            continue
        for col, val in ref.items():
            if not m[col].notna().any():
                continue
            want = val if (m[col] == val).any() else mode_value(m[col])
            m = m[(m[col] == want) | m[col].isna()]
        parts.append(m)
    return pd.concat(parts) if parts else eff.iloc[0:0]


def sweep_rows(eff: pd.DataFrame, free: str) -> pd.DataFrame:
    """Rows of the one-factor sweep over `free` (other settings at the base / reference configuration)."""
    if has_base_points(eff):
        return eff[((eff["sweep"] == free) | (eff["sweep"] == "base")) & eff[free].notna()]
    ref = reference_config(eff)
    out = eff
    for col, val in ref.items():
        if col == free:
            continue
        parts = []
        for model in distinct(out["model"]):
            m = out[out["model"] == model]
            if m[col].notna().any():
                want = val if (m[col] == val).any() else mode_value(m[col])
                m = m[(m[col] == want) | m[col].isna()]
            parts.append(m)
        out = pd.concat(parts) if parts else out
    return out[out[free].notna()]


def latency_rows(eff: pd.DataFrame, mode: str = "eval") -> pd.DataFrame:
    """Median-latency rows of a mode (rows without a `stat` are medians; `stat == 'iqr'` rows are spreads)."""
    lat = eff[(eff["metric"] == "latency_ms") & (eff["mode"] == mode)]
    return lat[lat["stat"].isna() | (lat["stat"] == "median")]


def iqr_rows(eff: pd.DataFrame, mode: str = "eval") -> pd.DataFrame:
    """IQR of latency as rows (from `stat == 'iqr'` rows, or the `iqr_ms` extra column of the median rows)."""
    lat = eff[(eff["metric"] == "latency_ms") & (eff["mode"] == mode)]
    explicit = lat[lat["stat"] == "iqr"]
    if not explicit.empty:
        return explicit
    med = latency_rows(eff, mode)
    med = med[med["iqr_ms"].notna()]
    return med.assign(value=med["iqr_ms"])


def memory_kind(mem: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Peak-memory rows of one kind (`memory` column: step, else peak, else reserved) and that kind."""
    kinds = distinct(mem["memory"])
    if not kinds:
        return mem, None
    kind = next((k for k in MEMORY_KINDS if k in kinds), kinds[0])
    return mem[mem["memory"] == kind], kind


def memory_rows(eff: pd.DataFrame) -> pd.DataFrame:
    """Peak-memory rows of one kind and one mode: eval when measured, else whatever mode there is."""
    mem, _ = memory_kind(eff[eff["metric"] == "peak_memory_mb"])
    if (mem["mode"] == "eval").any():
        return mem[mem["mode"] == "eval"]
    modes = distinct(mem["mode"])
    return mem[mem["mode"] == modes[0]] if modes else mem


def mode_rows(part: pd.DataFrame, mode: str | None) -> pd.DataFrame:
    """Rows of `mode` (rows without a mode stand in when that mode was never recorded); None: all rows."""
    if mode is None:
        return part
    hit = part[part["mode"] == mode]
    return hit if not hit.empty else part[part["mode"].isna()]


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
    """Per model, rows of its main output (see MAIN_OUTPUT), no reflection, no per-layer rows."""
    eq = d[(d["protocol"] == "equivariance") & d["metric"].isin(("equivariance_error", "invariance_error"))
           & ~has(d, "layer") & (d["reflect"] == "none")]
    notes: dict[str, Any] = {}
    if eq.empty:
        return eq, notes
    weights = choose_weights(eq)
    if weights is not None:
        eq = eq[eq["weights"] == weights]
        notes["weights"] = weights
    rotation = mode_value(eq["rotation"])
    if rotation is not None:
        eq = eq[eq["rotation"] == rotation]
        notes["rotation"] = rotation
    inputs = mode_value(eq["inputs"])
    if inputs is not None:
        eq = eq[eq["inputs"] == inputs]
    parts, used = [], {}
    for model in distinct(eq["model"]):
        m = eq[eq["model"] == model]
        if not m["feature"].notna().any():
            parts.append(m[m["metric"] == "equivariance_error"])
            continue
        for metric, feature in MAIN_OUTPUT:
            hit = m[(m["metric"] == metric) & (m["feature"] == feature)]
            if not hit.empty:
                parts.append(hit)
                used[model] = f"{feature} ({metric.split('_')[0]})"
                break
    notes["outputs"] = used
    return (pd.concat(parts) if parts else eq.iloc[0:0]), notes


def main_lie(d: pd.DataFrame, weights: str | None) -> pd.DataFrame:
    """lie_derivative rows of each model's output feature (logits, else out:gpool, else out)."""
    lee = d[(d["protocol"] == "equivariance") & (d["metric"] == "lie_derivative") & ~has(d, "layer")]
    if weights is not None and (lee["weights"] == weights).any():
        lee = lee[lee["weights"] == weights]
    if lee.empty or not lee["feature"].notna().any():
        return lee
    parts = []
    for model in distinct(lee["model"]):
        m = lee[lee["model"] == model]
        for feature in LEE_FEATURES:
            if (m["feature"] == feature).any():
                parts.append(m[m["feature"] == feature])
                break
    return pd.concat(parts) if parts else lee.iloc[0:0]


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
        notes["base_point"] = has_base_points(eff)
        out["params"] = _per_model_mean(ref[ref["metric"] == "params"])
        out["latency_ms"] = _per_model_mean(latency_rows(ref, "eval"))
        mem = memory_rows(ref)
        out["peak_memory_mb"] = _per_model_mean(mem)
        if not mem.empty:
            notes["memory_mode"] = distinct(mem["mode"])[0] if mem["mode"].notna().any() else None
            notes["memory_kind"] = memory_kind(mem)[1]

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

    lee = main_lie(d, notes.get("weights"))
    if not lee.empty:
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
    """Equivariance rows split by weights kind (init, then trained; shown separately); floor rows, which do not
    depend on the weights (`weights` = none or unset), go with every block."""
    d = prepare(df)
    eq = d[d["protocol"] == "equivariance"]
    if eq.empty:
        return []
    shared = eq[(eq["metric"] == "interpolation_floor") | eq["weights"].isna() | (eq["weights"] == "none")]
    rest = eq.drop(index=shared.index)
    kinds = distinct(rest["weights"])
    if not kinds:
        return [(None, eq)]
    order = sorted(kinds, key=lambda k: (k != "init", k != "trained", k))
    return [(k, pd.concat([rest[rest["weights"] == k], shared])) for k in order]


def _feature_order(features: Iterable[Any]) -> list[Any]:
    feats = distinct(features)
    return sorted(feats, key=feature_key)


def feature_key(f: Any) -> tuple:
    """Output features first (logits, out, out:gpool), then the rest alphabetically."""
    return (f not in MAIN_FEATURES, MAIN_FEATURES.index(f) if f in MAIN_FEATURES else 0, str(f))


REFLECT_ORDER = {"none": 0, "h": 1, "v": 2}


def equivariance_angle_table(eq: pd.DataFrame) -> pd.DataFrame:
    """equivariance_error at 10°, 22.5°, 45°, 90° (those measured) and mean / max over non-grid angles."""
    e = eq[(eq["metric"] == "equivariance_error") & ~has(eq, "layer")]
    if e.empty:
        return pd.DataFrame()
    extra = varying(e, SPLIT_COLUMNS)
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
    out["_f"] = out["feature"].map(feature_key)
    out["_r"] = out["reflect"].map(lambda r: (REFLECT_ORDER.get(r, 9), r))
    out = out.sort_values(["_f", "model", *extra, "_r"], kind="stable").drop(columns=["_f", "_r"])
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
    keys = ["model", "metric", "feature", *varying(e, SPLIT_COLUMNS)]
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
    keys = ["model", "feature", *varying(e, SPLIT_COLUMNS)]
    s = seed_stats(e, keys)
    s["_f"] = s["feature"].map(feature_key)
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
    # label, metric, mode (None: rows of any mode)
    ("params", "params", None),
    ("FLOPs", "flops", "eval"),
    ("eval latency (ms)", "latency_ms", "eval"),
    ("eval IQR (ms)", "latency_iqr", "eval"),
    ("train latency (ms)", "latency_ms", "train"),
    ("exported eval latency (ms)", "latency_ms", "eval_exported"),
    ("peak memory (MB)", "peak_memory_mb", None),
    ("build (s)", "build_s", None),
)


def efficiency_ratio_table(df: pd.DataFrame) -> pd.DataFrame:
    """Long table: model, config columns that vary, column (label), value, ratio to cnn / layer_conv2d.

    Values are means over seeds. Ratios come from `bench.cost.ratios.ratio_table` (the efficiency protocol's
    definition: same measurement point, median of repeats) when it is importable, else value / reference value
    at the same configuration here; NaN without a reference measurement.
    """
    d = prepare(df)
    eff = d[d["protocol"] == "efficiency"]
    if eff.empty:
        return pd.DataFrame(columns=["model", "column", "value", "ratio"])
    config = varying(eff, SWEEP_COLUMNS)
    external = _external_ratios(d, config)
    rows = []
    for label, metric, mode in EFFICIENCY_COLUMNS:
        part = eff[eff["metric"] == metric]
        if metric == "latency_ms":
            part = latency_rows(eff, mode)
        elif metric == "latency_iqr":  # spread of the eval latency: shown, not compared
            rows.extend({**r, "ratio": np.nan} for r in _ratio_rows(iqr_rows(eff, mode), config, label, None,
                                                                     (metric, mode)))
            continue
        elif metric == "peak_memory_mb":
            part, _ = memory_kind(part)
            modes = distinct(part["mode"])
            if len(modes) > 1:
                for m in modes:
                    rows.extend(_ratio_rows(part[part["mode"] == m], config, f"peak memory {m} (MB)",
                                            external, ("peak_memory_mb", m)))
                continue
        else:
            part = mode_rows(part, mode)
        rows.extend(_ratio_rows(part, config, label, external, (metric, mode)))
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["model", *config, "column", "value", "ratio"])
    return out


def _external_ratios(d: pd.DataFrame, config: list[str]) -> dict[tuple, float] | None:
    """{(metric, mode, model, *config): ratio} from bench.cost.ratios.ratio_table, or None without it."""
    try:
        from bench.cost.ratios import ratio_table
    except ImportError:
        return None
    raw = d[d["protocol"] == "efficiency"]
    unset = (raw["metric"] == "latency_ms") & raw["stat"].isna()
    if unset.any():  # latency rows without `stat` are medians (their spread in `iqr_ms`)
        raw = raw.assign(stat=raw["stat"].where(~unset, "median"))
    if "memory" in raw.columns and raw["memory"].notna().any():
        mem = raw[raw["metric"] == "peak_memory_mb"]
        raw = pd.concat([raw[raw["metric"] != "peak_memory_mb"], memory_kind(mem)[0]])
    try:
        rt = ratio_table(raw)
    except Exception:  # noqa: BLE001 - a broken helper must not take the report down; fall back
        return None
    out: dict[tuple, list[float]] = {}
    for rec in rt.to_dict("records"):
        key = (rec["metric"], None if fmt.is_missing(rec.get("mode")) else rec["mode"], rec["model"],
               *(_cfg(rec.get(c)) for c in config))
        if not fmt.is_missing(rec["ratio"]):
            out.setdefault(key, []).append(float(rec["ratio"]))
    return {k: float(np.median(v)) for k, v in out.items()}


def _cfg(v: Any) -> float:
    return -1.0 if fmt.is_missing(v) else float(v)


def _ratio_rows(part: pd.DataFrame, config: list[str], label: str, external: dict[tuple, float] | None,
                what: tuple[str, str | None]) -> list[dict[str, Any]]:
    if part.empty:
        return []
    p = part.assign(**{c: part[c].astype(float).fillna(-1.0) for c in config})
    means = p.groupby(["model", *config], sort=True)["value"].mean()
    modes = distinct(part["mode"])
    metric_mode = (what[0], what[1] if what[1] in modes else (modes[0] if len(modes) == 1 else None))
    rows = []
    for key, value in means.items():
        key = key if isinstance(key, tuple) else (key,)
        model, cfg = key[0], key[1:]
        ref_model = reference_for(model)
        if model == ref_model:
            ratio = 1.0
        elif external is not None:
            ratio = external.get((*metric_mode, model, *cfg), np.nan)
        else:
            ref = means.get((ref_model, *cfg) if config else ref_model, np.nan)
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
    slots = [lab for lab, *_ in EFFICIENCY_COLUMNS]

    def label_key(lab: str) -> tuple:
        slot = "peak memory (MB)" if lab.startswith("peak memory") else lab
        return (slots.index(slot) if slot in slots else len(slots), lab)

    labels = sorted(set(ratio_long["column"]), key=label_key)
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in ratio_long.to_dict("records"):
        key = tuple(None if fmt.is_missing(rec[k]) else rec[k] for k in keys)
        groups.setdefault(key, {})[rec["column"]] = rec
    def covers(big: tuple, small: tuple) -> bool:
        """`big` is a more specific configuration of the same model that agrees with `small`."""
        return (big != small and big[0] == small[0]
                and all(v is None or v == bv for v, bv in zip(small[1:], big[1:]))
                and sum(v is not None for v in big) > sum(v is not None for v in small))

    # A row whose config is a strict subset of other rows' (e.g. params recorded without a batch size) is folded
    # into them when it only adds columns they lack; otherwise (e.g. a base point at the model's default kernel
    # size, None here) it is a measurement point of its own.
    merged: dict[tuple, dict[str, Any]] = {k: dict(v) for k, v in groups.items()}
    for key in sorted(groups, key=lambda k: sum(v is not None for v in k)):
        cells = groups[key]
        targets = [k for k in groups if covers(k, key)]
        if not targets or any(set(cells) & set(groups[t]) for t in targets):
            continue
        for t in targets:
            for lab, rec in cells.items():
                merged[t].setdefault(lab, rec)
        del merged[key]

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
