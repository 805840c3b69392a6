"""Costs relative to the plain reference measured in the same run: the suite's one definition of a cost ratio.

``ratio = value / reference_value`` where the reference is `bench.schema.reference_model(model)` (`layer_conv2d`
for layers, `cnn` for networks) measured at the same point: equal metric, unit, mode, statistic, memory kind,
batch, resolution, kernel size, channels, threads, device and dtype. Repeated measurements of one point (several
seeds, or a point reached by two sweeps) are reduced to their median first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.schema import model_level

RATIO_METRICS = ("params", "flops", "latency_ms", "peak_memory_mb", "build_s")
POINT_COLUMNS = ("metric", "unit", "mode", "stat", "memory", "batch", "resolution", "kernel_size", "channels",
                 "threads", "device", "dtype")
OUT_COLUMNS = ["model", "level", "reference", "sweeps", *POINT_COLUMNS, "value", "reference_value", "ratio"]
_UNSET = "<unset>"  # stands in for a missing point column inside the group-by (pandas drops NaN keys)


def ratio_table(rows: pd.DataFrame, references: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per model and measurement point: the median value, the reference's and their ratio.

    `rows` are ok efficiency rows (any other rows are ignored). The reference model's own rows have ratio 1;
    points the reference was not measured at get an empty ratio. `sweeps` lists the sweeps that reached the
    point (comma-separated, e.g. 'base,kernel_size')."""
    from bench.schema import REFERENCE_MODELS

    refs = dict(REFERENCE_MODELS if references is None else references)
    if rows is None or rows.empty or "metric" not in rows.columns:
        return pd.DataFrame(columns=OUT_COLUMNS)
    d = rows[rows["metric"].isin(RATIO_METRICS)].copy()
    if "protocol" in d.columns:
        d = d[d["protocol"].fillna("efficiency") == "efficiency"]
    if "status" in d.columns:
        d = d[d["status"].fillna("ok") == "ok"]
    d = d[pd.to_numeric(d["value"], errors="coerce").notna()]
    if d.empty:
        return pd.DataFrame(columns=OUT_COLUMNS)
    for col in (*POINT_COLUMNS, "sweep"):
        if col not in d.columns:
            d[col] = None
    d["value"] = pd.to_numeric(d["value"], errors="coerce")
    keys = list(POINT_COLUMNS)
    d[keys] = d[keys].astype(object).where(d[keys].notna(), _UNSET)
    g = d.groupby(["model", *keys], sort=True)
    out = g["value"].median().reset_index()
    sweeps = g["sweep"].agg(lambda s: ",".join(sorted({str(v) for v in s if isinstance(v, str)})))
    out["sweeps"] = sweeps.to_numpy()
    out["level"] = out["model"].map(model_level)
    out["reference"] = out["level"].map(refs)
    ref = out[out["model"] == out["reference"]][["model", *keys, "value"]]
    ref = ref.rename(columns={"model": "reference", "value": "reference_value"})
    out = out.merge(ref, on=["reference", *keys], how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = out["value"] / out["reference_value"].where(out["reference_value"] != 0)
    for k in keys:
        out[k] = out[k].where(out[k] != _UNSET, None)
    return out[OUT_COLUMNS].reset_index(drop=True)
