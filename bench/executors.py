"""Run jobs through submitit: one Slurm job (array element) per equibench job, results back into the store.

Workers return their rows to the submitting process, which appends them to the store as each finishes; each
worker also leaves its record under ``<out>/submitit/results/`` so a crashed or killed parent loses nothing:
`--resume` ingests those before deciding what is left to run. Efficiency jobs request a whole node
(``--exclusive``) and at most one GPU, so latency is never measured on a shared device. With
``slurm.cluster = "local"`` (what the tests use) submitit runs the jobs as local processes, one at a time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.jobs import Job, RunContext
from bench.results import ResultsStore

SLURM_KEYS = {"cluster", "partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism",
              "account", "qos", "constraint"}


def check_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--executor submitit needs the submitit package: pip install submitit") from None


def _results_dir(out_dir: Path) -> Path:
    return out_dir / "submitit" / "results"


def remote_job(job_dict: dict[str, Any], ctx_dict: dict[str, Any]) -> tuple[str, list[dict], str]:
    """Entry point inside the worker: run one job and leave its record next to the run."""
    import torch

    from bench.runner import execute_job

    job = Job(**job_dict)
    ctx = RunContext(**ctx_dict)
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    status, rows, message = execute_job(job, ctx, timeout_s=None)  # the scheduler enforces the time limit
    folder = _results_dir(ctx.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job.job_id}.tmp"
    tmp.write_text(json.dumps({"job_id": job.job_id, "job": job_dict, "status": status, "rows": rows,
                               "message": message}, default=str))
    os.replace(tmp, folder / f"{job.job_id}.json")
    return status, rows, message


def ingest_orphans(store: ResultsStore) -> int:
    """Append worker records that finished but never reached the store (parent killed); returns how many."""
    folder = _results_dir(store.dir)
    if not folder.exists():
        return 0
    done = store.finished_job_ids()
    added = 0
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if record["job_id"] not in done:
            store.append(record["job_id"], record["job"], record["status"], record["rows"], record["message"])
            added += 1
    return added


def _ctx_dict(ctx: RunContext) -> dict[str, Any]:
    d = asdict(ctx)
    d["progress"] = False
    return d


def _parameters(slurm: dict[str, Any], job: Job, timeout_s: float | None) -> dict[str, Any]:
    unknown = set(slurm) - SLURM_KEYS
    if unknown:
        raise UsageError(f"unknown slurm setting(s) {sorted(unknown)}; valid: {', '.join(sorted(SLURM_KEYS))}")
    params: dict[str, Any] = {"timeout_min": int(slurm.get("timeout_min", max(1, (timeout_s or 3600) // 60))),
                              "tasks_per_node": 1, "nodes": 1}
    if job.device.startswith("cuda"):
        params["gpus_per_node"] = min(int(slurm.get("gpus_per_node", 1)), 1) if job.protocol == "efficiency" \
            else int(slurm.get("gpus_per_node", 1))
    for key in ("cpus_per_task", "mem_gb"):
        if key in slurm:
            params[key] = slurm[key]
    for key in ("partition", "account", "qos", "constraint"):
        if key in slurm:
            params[f"slurm_{key}"] = slurm[key]
    if "array_parallelism" in slurm:
        params["slurm_array_parallelism"] = slurm["array_parallelism"]
    if job.protocol == "efficiency":
        params["slurm_additional_parameters"] = {"exclusive": True}
    return params


def run_submitit(jobs: list[Job], store: ResultsStore, ctx: RunContext, timeout_s: float | None,
                 slurm: dict[str, Any]) -> None:
    """Submit every job, then append results in completion order."""
    import submitit

    ingest_orphans(store)
    done = store.finished_job_ids()
    jobs = [j for j in jobs if j.job_id not in done]
    cluster = slurm.get("cluster")
    executor = submitit.AutoExecutor(folder=ctx.out_dir / "submitit" / "logs", cluster=cluster)
    local = executor.cluster in ("local", "debug")
    pending: list[tuple[Job, Any]] = []
    for job in jobs:
        params = _parameters(slurm, job, timeout_s)
        if local:  # local processes have no Slurm semantics: keep only what the local executor knows
            params = {"timeout_min": params["timeout_min"]}
        executor.update_parameters(**params)
        handle = executor.submit(remote_job, job.to_dict(), _ctx_dict(ctx))
        pending.append((job, handle))
        if local:  # one at a time, so no two jobs share the CPU/GPU
            _collect(store, pending, wait=True)
    while pending:
        _collect(store, pending, wait=False)
        if pending:
            time.sleep(2.0)


def _collect(store: ResultsStore, pending: list[tuple[Job, Any]], wait: bool) -> None:
    for item in list(pending):
        job, handle = item
        if not wait and not handle.done():
            continue
        try:
            status, rows, message = handle.result()
        except Exception as exc:  # noqa: BLE001 - the worker died (time limit, node failure, ...)
            text = str(exc)
            status = "timeout" if "timed-out" in text.lower() or "timeout" in text.lower() else "error"
            rows, message = [], text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
        if job.job_id not in store.finished_job_ids():
            store.append(job.job_id, job.to_dict(), status, rows, message)
        pending.remove(item)
