"""Run a list of jobs into a results store: never stops on a failing job, never loses a finished one."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.errors import MissingDependencyError
from bench.jobs import Job, RunContext
from bench.protocols import get_protocol
from bench.results import ResultsStore

ENV_FILE = "environment.json"


class JobTimeout(Exception):
    """A job ran past its profile's timeout_s."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """SIGALRM-based limit in the main thread (elsewhere, e.g. submitit workers, the scheduler enforces it)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise JobTimeout(f"job exceeded timeout_s={seconds}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def classify(exc: BaseException) -> str:
    """Map an exception to a row status."""
    if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom"
    if isinstance(exc, FloatingPointError):
        return "nan"
    if isinstance(exc, JobTimeout):
        return "timeout"
    return "error"


def _finalize_rows(job: Job, ctx: RunContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the columns every row carries; a row may keep its own status (e.g. an 'oom' sweep point)."""
    common = {"model": job.model, "protocol": job.protocol, "dataset": job.dataset, "seed": job.seed,
              "device": str(ctx.device), "dtype": str(ctx.dtype).replace("torch.", "")}
    out = []
    for row in rows:
        full = {**common, **row}
        full.setdefault("status", "ok")
        full.setdefault("reflect", "none")
        out.append(full)
    return out


def execute_job(job: Job, ctx: RunContext, timeout_s: float | None = None) -> tuple[str, list[dict], str]:
    """Run one job; returns (status, rows, message). Exceptions become a status, never propagate."""
    try:
        with time_limit(timeout_s):
            rows = get_protocol(job.protocol)(job, ctx)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MissingDependencyError as exc:
        return "error", [], str(exc)
    except BaseException as exc:  # noqa: BLE001 - a failing job must not stop the sweep
        status = classify(exc)
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return status, [], tb
    rows = _finalize_rows(job, ctx, rows)
    values = [r.get("value") for r in rows if r.get("status") == "ok"]
    if any(isinstance(v, float) and math.isnan(v) for v in values):
        return "nan", rows, "a metric came out NaN (diverged?)"
    return "ok", rows, ""


def write_environment(out_dir: Path, env: dict[str, Any]) -> None:
    """environment.json: kept from the first run; each resume appends its own record under 'resumes'."""
    path = out_dir / ENV_FILE
    if path.exists():
        first = json.loads(path.read_text())
        first.setdefault("resumes", []).append(env)
        env = first
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(env, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def pending_jobs(jobs: Iterable[Job], store: ResultsStore, resume: bool) -> list[Job]:
    done = store.finished_job_ids() if resume else set()
    seen: set[str] = set()
    out = []
    for job in jobs:
        if job.job_id in done or job.job_id in seen:
            continue
        seen.add(job.job_id)
        out.append(job)
    return out


def run_local(jobs: list[Job], store: ResultsStore, ctx: RunContext, timeout_s: float | None) -> None:
    """Run jobs one after another in this process (so latency jobs never share a device)."""
    bar = tqdm(jobs, desc="sweep", unit="job", disable=not ctx.progress, file=sys.stderr)
    for job in bar:
        bar.set_postfix_str(job.label)
        started = time.perf_counter()
        status, rows, message = execute_job(job, ctx, timeout_s)
        store.append(job.job_id, job.to_dict(), status, rows, message,
                     elapsed_s=round(time.perf_counter() - started, 3))
        if status != "ok":
            tqdm.write(f"[{status}] {job.label}: {message}", file=sys.stderr)
