"""Peak memory of one eval forward / train step.

CUDA (in-process): warm-up step, ``reset_peak_memory_stats()``, baseline = ``memory_allocated()``, one step,
``synchronize()``, peak = ``max_memory_allocated()`` (tensors) and ``max_memory_reserved()`` (caching allocator).

CPU (fresh subprocess, ``python -m bench.cost.memprobe``): torch tensors are invisible to tracemalloc, so we
read the process's resident set size from /proc/self/status. In a fresh process: imports, model build, input,
optimizer; one warm-up step (creates optimizer state, lazy buffers); ``gc.collect()`` + ``malloc_trim(0)``;
reset the RSS high-water mark (write "5" to /proc/self/clear_refs, Linux ≥ 4.0); **baseline** = VmRSS; one step;
**peak** = VmHWM. Reported: ``step`` = peak − baseline (what the step itself needs on top of weights, optimizer
state and input) and ``peak`` = the absolute peak RSS of the probe process (includes the Python/torch runtime,
several hundred MiB). The child runs with glibc's malloc thresholds fixed (MALLOC_MMAP_THRESHOLD_,
MALLOC_TRIM_THRESHOLD_) so memory freed by the warm-up step is returned to the OS instead of being silently
reused by the measured step. Where clear_refs is not writable, a sampling thread (every ~1 ms) supplies the
peak instead (``method`` = "sampled"; short spikes may be missed).

The CPU guard `max_memory_mb` limits the probe process's absolute RSS: the sampling thread stops the child
as soon as it is exceeded and the point is recorded as "oom" (as is a child killed by the kernel OOM killer),
so an oversized point never runs in the parent process.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bench.cost.steps import is_oom

MIB = 2**20
UNIT = "MiB"
RESULT_MARKER = "MEMPROBE_RESULT "
_CHILD_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


@dataclass
class MemoryResult:
    status: str = "ok"              # ok | oom | error | timeout
    mode: str | None = None
    step_mb: float | None = None    # peak - baseline
    peak_mb: float | None = None    # absolute peak (CUDA: allocated tensors; CPU: process RSS)
    baseline_mb: float | None = None
    reserved_mb: float | None = None  # CUDA only: peak reserved by the caching allocator
    method: str = ""                # cuda_allocator | VmHWM | sampled
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- /proc helpers -------------------------------------------------------------------------------------------
def proc_status_mb(field_name: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MiB, or None where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024 / MIB
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def malloc_trim() -> None:
    """Return free heap memory to the OS (glibc); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssMonitor(threading.Thread):
    """Samples VmRSS every `interval` s, keeps the maximum, and calls `on_exceed(rss_mb)` once above `limit_mb`."""

    def __init__(self, interval: float = 0.001, limit_mb: float | None = None,
                 on_exceed: Callable[[float], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.limit_mb = limit_mb
        self.on_exceed = on_exceed
        self.max_mb = 0.0
        self._stop_event = threading.Event()

    def reset(self) -> None:
        self.max_mb = proc_status_mb("VmRSS") or 0.0

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = proc_status_mb("VmRSS") or 0.0
            self.max_mb = max(self.max_mb, rss)
            if self.limit_mb is not None and rss > self.limit_mb and self.on_exceed is not None:
                self.on_exceed(rss)
                return
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_event.set()


def warm_up(step: Callable[[], Any], n: int, device: torch.device | str | None = None) -> None:
    """`n` untimed calls (kept here so the probe child does not import torch.utils.benchmark)."""
    for _ in range(max(0, int(n))):
        step()
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# -- measurements --------------------------------------------------------------------------------------------
def cuda_step_memory(step: Callable[[], Any], device: torch.device | str, *, warmup: int = 1,
                     mode: str | None = None) -> MemoryResult:
    """Peak CUDA allocator memory of one `step()` after `warmup` steps (OOM -> status 'oom')."""
    dev = torch.device(device)
    try:
        warm_up(step, warmup, dev)
        gc.collect()
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = step()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        reserved = torch.cuda.max_memory_reserved(dev)
        del out
    except Exception as exc:  # noqa: BLE001 - classified below
        if not is_oom(exc):
            raise
        gc.collect()
        torch.cuda.empty_cache()
        return MemoryResult(status="oom", mode=mode, method="cuda_allocator", message=str(exc)[:500])
    return MemoryResult(status="ok", mode=mode, step_mb=(peak - base) / MIB, peak_mb=peak / MIB,
                        baseline_mb=base / MIB, reserved_mb=reserved / MIB, method="cuda_allocator")


def cpu_step_memory_in_process(step: Callable[[], Any], *, warmup: int = 1, mode: str | None = None,
                               monitor: RssMonitor | None = None) -> MemoryResult:
    """Peak RSS of one `step()` in *this* process (meant to run in a fresh memprobe child, see module doc)."""
    own_monitor = monitor is None
    monitor = monitor or RssMonitor()
    if own_monitor:
        monitor.start()
    try:
        warm_up(step, warmup)
        gc.collect()
        malloc_trim()
        hwm_ok = reset_peak_rss()
        baseline = proc_status_mb("VmRSS")
        monitor.reset()
        out = step()
        hwm = proc_status_mb("VmHWM") if hwm_ok else None
        del out
    except Exception as exc:  # noqa: BLE001 - classified below
        if is_oom(exc):
            return MemoryResult(status="oom", mode=mode, message=str(exc)[:500])
        raise
    finally:
        if own_monitor:
            monitor.stop()
    if hwm is not None:
        peak, method = hwm, "VmHWM"
    else:
        peak, method = max(monitor.max_mb, proc_status_mb("VmRSS") or 0.0), "sampled"
    if baseline is None:
        return MemoryResult(status="error", mode=mode, message="/proc/self/status not readable (not Linux?)")
    return MemoryResult(status="ok", mode=mode, step_mb=peak - baseline, peak_mb=peak, baseline_mb=baseline,
                        method=method)


@dataclass
class ProbeSpec:
    """What the memprobe child builds and measures (JSON-serialisable)."""

    model: str
    modes: list[str] = field(default_factory=lambda: ["eval", "train"])  # measured one after the other
    in_channels: int = 1
    num_classes: int = 10
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    batch: int = 1
    resolution: int = 32
    dtype: str = "float32"
    threads: int = 1
    seed: int = 0
    warmup: int = 1
    max_memory_mb: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(_CHILD_MALLOC_ENV)
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))
    return env


def probe_cpu_subprocess(spec: ProbeSpec, *, timeout: float = 600.0,
                         python: str | None = None) -> dict[str, MemoryResult]:
    """Run ``python -m bench.cost.memprobe`` in a fresh process; one `MemoryResult` per mode of `spec`.

    Modes are measured one after the other in that process (baseline and high-water mark are reset before each
    step). A mode the child did not report gets the child's failure: "timeout", "oom" (killed by SIGKILL, the
    kernel OOM killer's signal) or "error" with the tail of its stderr.
    """
    cmd = [python or sys.executable, "-m", "bench.cost.memprobe", "--spec", spec.to_json()]
    results: dict[str, MemoryResult] = {}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_child_env())
    except subprocess.TimeoutExpired:
        fail = MemoryResult(status="timeout", message=f"memory probe exceeded {timeout:.0f} s")
    else:
        for line in proc.stdout.splitlines():
            if line.startswith(RESULT_MARKER):
                res = MemoryResult(**json.loads(line[len(RESULT_MARKER):]))
                results[str(res.mode)] = res
        if proc.returncode in (-9, 137):
            fail = MemoryResult(status="oom", message="memory probe killed by SIGKILL (likely the kernel OOM killer)")
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            fail = MemoryResult(status="error",
                                message=f"memory probe exited {proc.returncode}: " + " | ".join(tail)[:800])
    for mode in spec.modes:
        if mode not in results:
            results[mode] = MemoryResult(status=fail.status, mode=mode, message=fail.message)
    return results
