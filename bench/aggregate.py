"""Aggregation helpers shared by the protocols' `summarize` (pure pandas, deterministic order).

Seeds are the unit of replication: a statistic is first computed per seed, then its mean, sample standard
deviation (ddof 1; empty with one seed) and count across seeds are reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from bench.schema import ANGLE, METRIC, OK, PROTOCOL, REFLECT, SEED, STATUS, VALUE, is_grid_angle

MISSING = "—"  # stands in for an unset key inside group-bys (pandas drops NaN keys); undone on the way out


def ok_rows(frame: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """The protocol's rows with status ok and a finite numeric value."""
    if frame is None or frame.empty or PROTOCOL not in frame.columns:
        return pd.DataFrame(columns=[PROTOCOL, METRIC, VALUE])
    d = frame[frame[PROTOCOL] == protocol].copy()
    if STATUS in d.columns:
        d = d[d[STATUS].fillna(OK) == OK]
    d[VALUE] = pd.to_numeric(d[VALUE], errors="coerce")
    d = d[np.isfinite(d[VALUE].astype(float))]
    if REFLECT in d.columns:
        d[REFLECT] = d[REFLECT].fillna("none")
    return d.reset_index(drop=True)


def column(d: pd.DataFrame, name: str) -> pd.Series:
    """d[name], or an all-missing column when the frame lacks it."""
    return d[name] if name in d.columns else pd.Series([None] * len(d), index=d.index, dtype=object)


def with_keys(d: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Missing key columns added and unset keys filled with MISSING, so group-bys keep those rows."""
    d = d.copy()
    for k in keys:
        d[k] = column(d, k).astype(object).where(column(d, k).notna(), MISSING)
    return d


def unkey(df: pd.DataFrame, keys: Iterable[str]) -> pd.DataFrame:
    for k in keys:
        if k in df.columns:
            df[k] = df[k].where(df[k] != MISSING, None)
    return df


def seed_stats(d: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Per key: the mean of each seed's rows, then `mean`, `std` (across seeds) and `n_seeds`."""
    keys = list(keys)
    if d.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n_seeds"])
    d = with_keys(d, [*keys, SEED])
    per_seed = d.groupby([*keys, SEED], sort=True)[VALUE].mean().reset_index()
    out = per_seed.groupby(keys, sort=True)[VALUE].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n_seeds"})
    return unkey(out, keys)


def non_grid(d: pd.DataFrame) -> pd.DataFrame:
    """Rows at angles that are not multiples of 90° (see `bench.schema.is_grid_angle`)."""
    a = pd.to_numeric(column(d, ANGLE), errors="coerce")
    keep = a.notna() & ~a.map(lambda v: is_grid_angle(v) if pd.notna(v) else True).astype(bool)
    return d[keep]


def at_angle(d: pd.DataFrame, angle: float) -> pd.DataFrame:
    a = pd.to_numeric(column(d, ANGLE), errors="coerce")
    return d[(a - angle).abs() < 1e-6]

