"""Every summary table of a run, computed once: each protocol's `summarize`, the headline and the failure list.

`build_tables(store)` is the only place the run's numbers are aggregated; `write_tables` puts each table into
``<run>/tables/<name>.csv`` with unrounded values; the report and the terminal only format these tables, so the
CSV and the HTML always show the same number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bench.protocols import get_protocol, protocol_order
from bench.protocols.base import TableSpec
from bench.results import ResultsStore, write_csv
from bench.schema import OK, TABLES_DIR, model_family, model_level, reference_model

HEADLINE = TableSpec(
    "headline", "Headline comparison",
    "One row per model: each protocol's headline numbers (see the protocol tables for their definitions).",
    {"model": "model", "family": "plain | gmr | group | steerable | plugin", "level": "layer | network",
     "reference": "plain baseline of the same level",
     "params": "trainable parameters (efficiency base point)",
     "acc_dataset": "dataset of the accuracy columns (the one most models were trained on)",
     "acc_upright_pct": "upright test accuracy (%), upright-trained", "acc_upright_std": "std across seeds",
     "acc_mean_pct": "mean accuracy over rotation angles (%)", "acc_mean_std": "std across seeds",
     "acc_worst_pct": "worst accuracy over rotation angles (%)", "acc_worst_std": "std across seeds",
     "de_dataset": "dataset of the data-efficiency column", "de_target_pct": "its target accuracy (%)",
     "de_examples": "training examples per class to reach it (empty: not reached)",
     "eq_weights": "weights of the equivariance columns (trained when measured, else init)",
     "eq_feature": "output feature measured (logits: invariance error; layers: out, out:gpool)",
     "eq_mean": "mean equivariance error over non-grid angles", "eq_worst": "max over non-grid angles",
     "eq_45": "error at 45°", "lee": "Lie derivative of the same output",
     "latency_ms": "eval latency (median, ms, base point)", "peak_memory_mb": "eval peak memory (MB, step)",
     "params_ratio": "params / reference's", "latency_ratio": "latency / reference's",
     "memory_ratio": "peak memory / reference's"})
JOBS = TableSpec(
    "jobs", "Jobs", "One row per planned job that has a record: its latest status and timing.",
    {"job": "protocol:model/dataset:seedN", "protocol": "protocol", "model": "model", "dataset": "dataset",
     "seed": "seed", "status": "ok | error | timeout | oom | nan | skipped", "elapsed_s": "run time (s)",
     "started": "start (epoch seconds)", "finished": "end (epoch seconds)", "depends_on": "prerequisite job ids",
     "job_id": "job id"})
RUN_STATUS = TableSpec("run_status", "Job statuses", "Number of jobs per latest status.",
                       {"status": "status", "jobs": "number of jobs"})
FAILURES = TableSpec(
    "failures", "Jobs that did not finish ok",
    "Latest record of every job whose status is not ok, and rows with their own non-ok status inside finished "
    "jobs (e.g. an out-of-memory sweep point).",
    {"job": "protocol:model/dataset:seedN", "protocol": "protocol", "model": "model", "what": "the measurement "
     "(empty: the whole job)", "status": "error | timeout | oom | nan | skipped", "message": "message",
     "job_id": "job id"})


def protocols_in(frame: pd.DataFrame) -> list[str]:
    names = [p for p in frame["protocol"].dropna().unique()] if "protocol" in frame.columns else []
    return protocol_order(sorted(names))


def build_tables(store: ResultsStore) -> dict[str, pd.DataFrame]:
    """{table name: DataFrame}: every protocol's tables, then `headline` and `failures`."""
    frame = store.frame()
    tables: dict[str, pd.DataFrame] = {}
    protocols = protocols_in(frame)
    for name in protocols:
        tables.update(get_protocol(name).summarize(frame[frame["protocol"] == name]))
    headline = headline_table(tables, protocols)
    if not headline.empty:
        tables[HEADLINE.name] = headline
    latest = list(store.latest().values())
    failures = failure_table(latest)
    if not failures.empty:
        tables[FAILURES.name] = failures
    if latest:
        tables[JOBS.name] = JOBS.frame([job_row(r) for r in latest])
        counts = pd.Series([r["status"] for r in latest]).value_counts().sort_index()
        tables[RUN_STATUS.name] = RUN_STATUS.frame({"status": counts.index, "jobs": counts.to_numpy()})
    return tables


def job_row(rec: Mapping[str, Any]) -> dict[str, Any]:
    job = rec.get("job") or {}
    return {"job": job_label(job), "protocol": job.get("protocol"), "model": job.get("model"),
            "dataset": job.get("dataset"), "seed": job.get("seed"), "status": rec.get("status"),
            "elapsed_s": rec.get("elapsed_s"), "started": rec.get("started"), "finished": rec.get("finished"),
            "depends_on": ",".join(job.get("depends_on") or []) or None, "job_id": rec.get("job_id")}


def headline_table(tables: Mapping[str, pd.DataFrame], protocols: Iterable[str]) -> pd.DataFrame:
    """Join each protocol's headline columns on the model (outer join: a model measured by one protocol only
    still gets a row)."""
    parts = [p for p in (get_protocol(name).headline(tables) for name in protocols) if p is not None]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return HEADLINE.frame()
    joined = pd.concat(parts, axis=1, join="outer", sort=True)
    joined.index.name = "model"
    joined = joined.reset_index()
    joined["family"] = joined["model"].map(model_family)
    joined["level"] = joined["model"].map(model_level)
    joined["reference"] = joined["model"].map(reference_model)
    joined = joined.sort_values(["level", "model"], key=lambda s: s.map(_level_order) if s.name == "level" else s,
                                kind="stable")
    return HEADLINE.frame(joined)


def _level_order(level: Any) -> int:
    return 0 if level == "network" else 1


def failure_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        job = rec.get("job") or {}
        label = job_label(job)
        if rec.get("status") != OK:
            rows.append({"job": label, "protocol": job.get("protocol"), "model": job.get("model"), "what": None,
                         "status": rec.get("status"), "message": rec.get("message") or "",
                         "job_id": rec.get("job_id")})
            continue
        for row in rec.get("rows") or []:
            if (row.get("status") or OK) == OK:
                continue
            bits = [str(row.get("metric", "?"))]
            for k in ("feature", "mode", "angle_deg", "batch", "resolution", "kernel_size", "channels"):
                if row.get(k) is not None:
                    bits.append(f"{k} {row[k]}")
            rows.append({"job": label, "protocol": job.get("protocol"), "model": job.get("model"),
                         "what": ", ".join(bits), "status": row.get("status"), "message": row.get("message") or "",
                         "job_id": rec.get("job_id")})
    rows.sort(key=lambda r: (r["job"], r["what"] or "", r["status"] or "", r["message"]))
    return FAILURES.frame(rows) if rows else FAILURES.frame()


def job_label(job: Mapping[str, Any]) -> str:
    """`protocol:model/dataset:seedN`, as `bench.jobs.Job.label` writes it."""
    ds = f"/{job['dataset']}" if job.get("dataset") else ""
    return f"{job.get('protocol', '?')}:{job.get('model', '?')}{ds}:seed{job.get('seed', '?')}"


def table_specs() -> dict[str, TableSpec]:
    """Every documented table: the protocols' and the cross-protocol ones."""
    from bench.protocols import list_protocols

    specs = {t.name: t for t in (HEADLINE, FAILURES, JOBS, RUN_STATUS)}
    for name in list_protocols():
        specs.update(get_protocol(name).tables)
    return specs


def write_tables(run_dir: Path, tables: Mapping[str, pd.DataFrame]) -> list[Path]:
    """``<run>/tables/<name>.csv`` for every table (stale tables of an earlier render are removed)."""
    folder = Path(run_dir) / TABLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, df in tables.items():
        path = folder / f"{name}.csv"
        write_csv(df, path)
        written.append(path)
    for old in folder.glob("*.csv"):
        if old not in written:
            old.unlink()
    return written


def read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The tables as written by `write_tables` (what the report formats)."""
    folder = Path(run_dir) / TABLES_DIR
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}
