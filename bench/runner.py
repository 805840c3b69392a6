"""Run a list of jobs into a results store: never stops on a failing job, never loses a finished one.

Dependencies: a job runs only after every job in its `depends_on` finished ok; otherwise it is recorded with
status ``skipped`` and a message naming the prerequisite and how it ended (rows never vanish silently)."""

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
from bench.schema import ENV_FILE, OK, SKIPPED, check_rows


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
        protocol = get_protocol(job.protocol)
        with time_limit(timeout_s):
            rows = protocol.run(job, ctx)
        check_rows(protocol.row_type, rows, f"{job.protocol}: ")
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
    """Jobs still to run: all of them, or with `resume` those whose latest record is not ok (failed, timed-out
    and skipped jobs run again; finished ones never do)."""
    done = store.finished_job_ids() if resume else set()
    seen: set[str] = set()
    out = []
    for job in jobs:
        if job.job_id in done or job.job_id in seen:
            continue
        seen.add(job.job_id)
        out.append(job)
    return out


def blocked_by(job: Job, statuses: dict[str, str], labels: dict[str, str]) -> str | None:
    """Why `job` may not run (a prerequisite that ended other than ok), or None when all are ok.

    Raises KeyError when a prerequisite has no record yet (the caller must wait for it or never planned it)."""
    for dep in job.depends_on:
        status = statuses[dep]
        if status != OK:
            return f"skipped: prerequisite {labels.get(dep, dep)} (job {dep}) ended {status}"
    return None


def record_skipped(job: Job, store: ResultsStore, reason: str) -> None:
    store.append(job.job_id, job.to_dict(), SKIPPED, [], reason, elapsed_s=0.0)
    tqdm.write(f"[{SKIPPED}] {job.label}: {reason}", file=sys.stderr)


def run_local(jobs: list[Job], store: ResultsStore, ctx: RunContext, timeout_s: float | None,
              labels: dict[str, str] | None = None) -> None:
    """Run jobs one after another in this process (so latency jobs never share a device), in plan order, which
    puts every prerequisite before its dependents."""
    labels = {**{j.job_id: j.label for j in jobs}, **(labels or {})}
    bar = tqdm(jobs, desc="sweep", unit="job", disable=not ctx.progress, file=sys.stderr)
    for job in bar:
        bar.set_postfix_str(job.label)
        statuses = store.statuses()
        try:
            reason = blocked_by(job, statuses, labels)
        except KeyError as exc:
            reason = f"skipped: prerequisite job {exc.args[0]} was neither run nor found in {store.path}"
        if reason is not None:
            record_skipped(job, store, reason)
            continue
        started = time.time()
        status, rows, message = execute_job(job, ctx, timeout_s)
        finished = time.time()
        store.append(job.job_id, job.to_dict(), status, rows, message, elapsed_s=round(finished - started, 3),
                     started=started, finished=finished)
        if status != OK:
            tqdm.write(f"[{status}] {job.label}: {message}", file=sys.stderr)
