"""Costs relative to the plain reference measured in the same run (pure pandas; no plotting imports).

`ratio_table(df)` takes the results frame (`ResultsStore.frame()`, any protocols mixed in) and returns, for every
ok efficiency row of a non-reference model, the reference's value at the same measurement point and the ratio
``value / reference_value``. Layer models are compared with ``layer_conv2d``, networks with ``cnn``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

REFERENCES: dict[str, str] = {"layer": "layer_conv2d", "network": "cnn"}
RATIO_METRICS = ("params", "flops", "latency_ms", "peak_memory_mb", "build_s")
# Columns that identify a measurement point; a row matches the reference row with equal values in all of
# them (missing columns are ignored, NaN equals NaN).
POINT_COLUMNS = ("metric", "unit", "mode", "stat", "memory", "batch", "resolution", "kernel_size", "channels",
                 "threads", "device", "dtype")
OUT_COLUMNS = ["model", "reference", "level", *POINT_COLUMNS, "value", "reference_value", "ratio"]


def model_level(name: str) -> str:
    """'layer' or 'network' (registry metadata; 'layer_' prefix as a fallback for unknown names)."""
    try:
        from bench.models import model_info

        level = model_info(name).get("level")
        if level in ("layer", "network"):
            return str(level)
    except Exception:  # noqa: BLE001 - unknown names fall back to the naming convention
        pass
    return "layer" if str(name).startswith("layer_") else "network"


def ratio_table(df: pd.DataFrame, references: Mapping[str, str] | None = None,
                metrics: tuple[str, ...] = RATIO_METRICS) -> pd.DataFrame:
    """Per model and measurement point: value, the reference's value and ``ratio = value / reference_value``.

    Only ``protocol == 'efficiency'`` rows with status ok and a value are used; latency uses the median rows
    (``stat == 'median'``) only. Repeated measurements of one point (several seeds, or the same point reached by
    two sweeps) are reduced to their median first. Points the reference was not measured at are left out.
    """
    refs = dict(REFERENCES if references is None else references)
    if df is None or df.empty or "metric" not in df.columns:
        return pd.DataFrame(columns=OUT_COLUMNS)
    d = df
    if "protocol" in d.columns:
        d = d[d["protocol"] == "efficiency"]
    if "status" in d.columns:
        d = d[d["status"].fillna("ok") == "ok"]
    d = d[d["metric"].isin(metrics) & d["value"].notna()]
    if "stat" in d.columns:
        d = d[(d["metric"] != "latency_ms") | (d["stat"] == "median")]
    if d.empty:
        return pd.DataFrame(columns=OUT_COLUMNS)
    keys = [c for c in POINT_COLUMNS if c in d.columns]
    d = d.assign(value=pd.to_numeric(d["value"], errors="coerce"))
    d = d.assign(**{k: d[k].astype(object).where(d[k].notna(), "") for k in keys})
    d = d.groupby(["model", *keys], sort=True, dropna=False)["value"].median().reset_index()
    d["level"] = d["model"].map(model_level)
    d["reference"] = d["level"].map(refs)
    ref_rows = d[d["model"] == d["reference"]][["model", *keys, "value"]]
    ref_rows = ref_rows.rename(columns={"model": "reference", "value": "reference_value"})
    out = d[d["model"] != d["reference"]].merge(ref_rows, on=["reference", *keys], how="inner")
    out["ratio"] = out["value"] / out["reference_value"].where(out["reference_value"] != 0)
    out = out.sort_values(["metric", "model", *keys[1:]], key=_sort_key, kind="stable")
    for k in keys:
        out[k] = out[k].where(out[k] != "", None)
    for col in OUT_COLUMNS:
        if col not in out.columns:
            out[col] = None
    return out[OUT_COLUMNS].reset_index(drop=True)


def _sort_key(s: pd.Series) -> pd.Series:
    """Numbers sort numerically, everything else as text ('' = missing sorts first)."""
    num = pd.to_numeric(s, errors="coerce")
    if num.notna().sum() == (s != "").sum():
        return num.fillna(float("-inf"))
    return s.astype(str)
