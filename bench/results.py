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
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from bench.schema import (
    COLUMNS,
    DATASET,
    DEVICE,
    JOB_ID,
    MESSAGE,
    MODEL,
    OK,
    PROTOCOL,
    RESULTS_CSV,
    RESULTS_FILE,
    SEED,
    STATUS,
    STATUSES,
)


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
               message: str = "", elapsed_s: float | None = None, started: float | None = None,
               finished: float | None = None) -> None:
        """Atomically append one finished job's record (one line, flushed and fsynced).

        `started` / `finished` are wall-clock epoch seconds of the job's run (what proves that a dependent job
        started only after its prerequisite finished)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        finished = time.time() if finished is None else finished
        record = {
            "job_id": job_id, "job": job, "status": status, "message": message, "elapsed_s": elapsed_s,
            "started": started if started is not None else finished, "finished": finished,
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

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last record of every job id, in first-appearance order (a resumed job's new record wins)."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            out.pop(rec["job_id"], None)
            out[rec["job_id"]] = rec
        return out

    def statuses(self) -> dict[str, str]:
        """job id -> status of its latest record."""
        return {k: r["status"] for k, r in self.latest().items()}

    def recorded_job_ids(self) -> set[str]:
        """Ids with any record at all."""
        return {r["job_id"] for r in self.records()}

    def finished_job_ids(self) -> set[str]:
        """Ids whose latest record is ok (what `--resume` skips; failed and skipped jobs run again)."""
        return {k for k, status in self.statuses().items() if status == OK}

    def frame(self) -> pd.DataFrame:
        """results.csv as a DataFrame: every row of every ok job, plus one row per job that did not finish ok
        (its status and message, no value), so a reader of the CSV sees failures too."""
        return rows_to_frame(self._flat_rows())

    def _flat_rows(self) -> Iterable[dict[str, Any]]:
        for rec in self.latest().values():
            if rec["status"] == OK:
                for row in rec["rows"]:
                    yield {**row, JOB_ID: rec["job_id"]}
            else:
                job = rec.get("job") or {}
                yield {MODEL: job.get("model"), PROTOCOL: job.get("protocol"), DATASET: job.get("dataset"),
                       SEED: job.get("seed"), DEVICE: job.get("device"), STATUS: rec["status"],
                       MESSAGE: rec.get("message") or "", JOB_ID: rec["job_id"]}

    def export_csv(self) -> Path:
        """Write results.csv (tidy long format, unfinished jobs included); returns its path."""
        out = self.dir / RESULTS_CSV
        write_csv(self.frame(), out)
        return out


def rows_to_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = sorted(c for c in df.columns if c not in COLUMNS)
    return df[COLUMNS + extra]


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically (a reader never sees half a file); floats keep full precision."""
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
