"""Run jobs through submitit: one Slurm job (array element) per equibench job, results back into the store.

Workers return their rows to the submitting process, which appends them to the store as each finishes; each
worker also leaves its record under ``<out>/submitit/results/`` so a crashed or killed parent loses nothing:
`--resume` ingests those before deciding what is left to run. Jobs of timing-sensitive protocols
(`Protocol.exclusive_device`, e.g. efficiency) request a whole node (``--exclusive``) and at most one GPU, so
latency is never measured on a shared device. With ``slurm.cluster = "local"`` (what the tests use) submitit runs
the jobs as local processes, ``array_parallelism`` at a time (default 1, so timings never share the CPU).

Dependencies are honoured by *releasing* jobs: a job is submitted only once every job it depends on has finished
ok (checked against the store); if a prerequisite ends other than ok, its dependents are recorded ``skipped``
without being submitted. This is Slurm's ``afterok`` without its failure mode (a dependent of a failed job
stays pending forever with DependencyNeverSatisfied), works the same on the local cluster, and submits every
independent job at once.
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
from bench.protocols import get_protocol
from bench.results import ResultsStore
from bench.runner import blocked_by, record_skipped
from bench.schema import OK, SUBMITIT_DIR

SLURM_KEYS = {"cluster", "partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism",
              "account", "qos", "constraint"}


def check_submitit() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--executor submitit needs the submitit package: pip install submitit") from None


def _results_dir(out_dir: Path) -> Path:
    return out_dir / SUBMITIT_DIR / "results"


def remote_job(job_dict: dict[str, Any], ctx_dict: dict[str, Any]) -> tuple[str, list[dict], str]:
    """Entry point inside the worker: run one job and leave its record next to the run."""
    import torch

    from bench.runner import execute_job

    job = Job.from_dict(job_dict)
    ctx = RunContext(**ctx_dict)
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    started = time.time()
    status, rows, message = execute_job(job, ctx, timeout_s=None)  # the scheduler enforces the time limit
    finished = time.time()
    folder = _results_dir(ctx.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job.job_id}.tmp"
    tmp.write_text(json.dumps({"job_id": job.job_id, "job": job_dict, "status": status, "rows": rows,
                               "message": message, "started": started, "finished": finished}, default=str))
    os.replace(tmp, folder / f"{job.job_id}.json")
    return status, rows, message, started, finished


def ingest_orphans(store: ResultsStore) -> int:
    """Append worker records that finished but never reached the store (parent killed); returns how many."""
    folder = _results_dir(store.dir)
    if not folder.exists():
        return 0
    done = store.recorded_job_ids()
    added = 0
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if record["job_id"] not in done:
            store.append(record["job_id"], record["job"], record["status"], record["rows"], record["message"],
                         started=record.get("started"), finished=record.get("finished"))
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
    exclusive = get_protocol(job.protocol).exclusive_device
    if job.device.startswith("cuda"):
        gpus = int(slurm.get("gpus_per_node", 1))
        params["gpus_per_node"] = min(gpus, 1) if exclusive else gpus
    for key in ("cpus_per_task", "mem_gb"):
        if key in slurm:
            params[key] = slurm[key]
    for key in ("partition", "account", "qos", "constraint"):
        if key in slurm:
            params[f"slurm_{key}"] = slurm[key]
    if "array_parallelism" in slurm:
        params["slurm_array_parallelism"] = slurm["array_parallelism"]
    if exclusive:
        params["slurm_additional_parameters"] = {"exclusive": True}
    return params


def run_submitit(jobs: list[Job], store: ResultsStore, ctx: RunContext, timeout_s: float | None,
                 slurm: dict[str, Any], poll_s: float = 1.0) -> None:
    """Submit every job whose prerequisites finished ok, collect results as they finish, release dependents."""
    import submitit

    ingest_orphans(store)
    done = store.finished_job_ids()
    waiting = [j for j in jobs if j.job_id not in done]
    labels = {j.job_id: j.label for j in jobs}
    executor = submitit.AutoExecutor(folder=ctx.out_dir / SUBMITIT_DIR / "logs", cluster=slurm.get("cluster"))
    local = executor.cluster in ("local", "debug")
    limit = int(slurm.get("array_parallelism", 1)) if local else len(jobs) or 1
    running: list[tuple[Job, Any]] = []
    while waiting or running:
        progressed = False
        statuses = store.statuses()
        for job in list(waiting):
            if len(running) >= limit:
                break
            try:
                reason = blocked_by(job, statuses, labels)
            except KeyError as exc:  # a prerequisite has no record yet: still running, or never planned
                if any(exc.args[0] == j.job_id for j in waiting) or any(exc.args[0] == j.job_id for j, _ in running):
                    continue
                reason = f"skipped: prerequisite job {exc.args[0]} was neither run nor found in {store.path}"
            waiting.remove(job)
            progressed = True
            if reason is not None:
                record_skipped(job, store, reason)
                continue
            params = _parameters(slurm, job, timeout_s)
            if local:  # local processes have no Slurm semantics: keep only what the local executor knows
                params = {"timeout_min": params["timeout_min"]}
            executor.update_parameters(**params)
            running.append((job, executor.submit(remote_job, job.to_dict(), _ctx_dict(ctx))))
        progressed |= _collect(store, running)
        if not progressed:
            time.sleep(poll_s)


def _collect(store: ResultsStore, running: list[tuple[Job, Any]]) -> bool:
    """Append the records of finished jobs; returns whether any finished."""
    any_done = False
    for item in list(running):
        job, handle = item
        if not handle.done():
            continue
        any_done = True
        try:
            status, rows, message, started, finished = handle.result()
        except Exception as exc:  # noqa: BLE001 - the worker died (time limit, node failure, ...)
            text = str(exc)
            status = "timeout" if "timed-out" in text.lower() or "timeout" in text.lower() else "error"
            rows, message = [], text.strip().splitlines()[-1] if text.strip() else type(exc).__name__
            started = finished = time.time()
        if store.statuses().get(job.job_id) != OK:
            store.append(job.job_id, job.to_dict(), status, rows, message, started=started, finished=finished)
        running.remove(item)
    return any_done
