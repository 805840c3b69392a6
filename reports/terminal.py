"""The headline table as terminal text (what `equibench run` prints), formatted like the HTML."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from bench.tables import read_tables
from reports import format as fmt

COLUMNS = (("params", "params", fmt.count), ("acc_upright_pct", "upright %", fmt.sig),
           ("acc_mean_pct", "rot. mean %", fmt.sig), ("acc_worst_pct", "rot. worst %", fmt.sig),
           ("eq_mean", "eq. err mean", fmt.sig), ("eq_45", "eq. err @45°", fmt.sig), ("lee", "LEE", fmt.sig),
           ("latency_ms", "latency ms", fmt.sig), ("latency_ratio", "× ref", fmt.ratio),
           ("peak_memory_mb", "memory MB", fmt.sig))


def terminal_headline(run_dir: str | os.PathLike[str]) -> str:
    """The headline of a run folder as a plain-text table ('' when the run has none)."""
    head = read_tables(Path(run_dir)).get("headline")
    if head is None or head.empty:
        return ""
    shown = [(c, label, f) for c, label, f in COLUMNS if c in head.columns and head[c].notna().any()]
    out = pd.DataFrame({"model": head["model"], **{label: [f(v) for v in head[c]] for c, label, f in shown}})
    return out.to_string(index=False)
