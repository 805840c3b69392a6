"""The append-only results store and the tidy long-format schema.

Each finished job appends exactly one JSON line ``{"job_id", "job", "status", "message", "rows": [...]}`` that
is flushed and fsynced before the next job starts. One line per job makes a job's rows atomic: a process killed
mid-write leaves at most a torn last line, which readers ignore and `--resume` truncates, so finished rows are
never lost and never duplicated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS_FILE = "results.jsonl"
CSV_FILE = "results.csv"

# Columns every row has, in this order; protocols may add more (feature, rotation, weights, batch, ...).
COLUMNS = [
    "model", "protocol", "dataset", "metric", "value", "unit", "angle_deg", "reflect", "mode",
    "seed", "device", "dtype", "status", "message", "job_id",
]
STATUSES = ("ok", "oom", "nan", "timeout", "error")


def _clean(value: Any) -> Any:
    """JSON-safe scalars (NaN/inf become None so the file stays strict JSON)."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class ResultsStore:
    """Append-only JSON-lines store of job records under a run directory."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(out_dir)
        self.path = self.dir / RESULTS_FILE

    # -- writing -----------------------------------------------------------------------------------------
    def append(self, job_id: str, job: dict[str, Any], status: str, rows: list[dict[str, Any]],
               message: str = "", elapsed_s: float | None = None) -> None:
        """Atomically append one finished job's record (one line, flushed and fsynced)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        record = {
            "job_id": job_id, "job": job, "status": status, "message": message, "elapsed_s": elapsed_s,
            "rows": [{k: _clean(v) for k, v in r.items()} for r in rows],
        }
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def repair(self) -> int:
        """Drop a torn trailing line left by a killed writer; returns the number of bytes removed."""
        if not self.path.exists():
            return 0
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        with open(self.path, "r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return len(data) - keep

    # -- reading -----------------------------------------------------------------------------------------
    def records(self) -> Iterator[dict[str, Any]]:
        """Complete job records, in append order (a torn or corrupt line is skipped)."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def finished_job_ids(self) -> set[str]:
        return {r["job_id"] for r in self.records()}

    def failed(self) -> list[dict[str, Any]]:
        """Records of jobs whose status is not ok (for the report's failure list)."""
        return [r for r in self.records() if r["status"] != "ok"]

    def frame(self) -> pd.DataFrame:
        """All rows as a tidy long-format DataFrame (standard columns first)."""
        return rows_to_frame(self._flat_rows())

    def _flat_rows(self) -> Iterable[dict[str, Any]]:
        for rec in self.records():
            for row in rec["rows"]:
                yield {**row, "job_id": rec["job_id"]}

    def export_csv(self) -> Path:
        """Write results.csv (tidy long format) and one summary CSV per protocol; returns results.csv."""
        df = self.frame()
        out = self.dir / CSV_FILE
        df.to_csv(out, index=False)
        for protocol, part in df.groupby("protocol", sort=True):
            summary = summarize(part)
            summary.to_csv(self.dir / f"summary_{protocol}.csv", index=False)
        return out


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    return df[COLUMNS + extra]


SUMMARY_KEYS = ["model", "protocol", "dataset", "metric", "unit", "mode", "reflect", "device"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, metric, ...) mean / std / min / max / count over angles and seeds (ok rows only)."""
    ok = df[(df["status"] == "ok") & df["value"].notna()]
    extra_keys = [k for k in ("feature", "weights", "rotation", "condition", "summary") if k in ok.columns]
    keys = [k for k in SUMMARY_KEYS + extra_keys if k in ok.columns]
    if ok.empty:
        return pd.DataFrame(columns=keys + ["mean", "std", "min", "max", "count"])
    filled = ok.assign(**{k: ok[k].fillna("") for k in keys})
    agg = filled.groupby(keys, sort=True)["value"].agg(["mean", "std", "min", "max", "count"]).reset_index()
    return agg
