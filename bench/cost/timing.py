"""Latency: explicit warm-up, then `torch.utils.benchmark.Timer.blocked_autorange` at a fixed thread count.

`blocked_autorange` picks a block size so one block takes ≥ ~min_run_time/1000 (amortising timer overhead),
then times blocks until `min_run_time` has elapsed; each measurement is the mean time of one call within a
block. We report the **median** and the **IQR** (75th − 25th percentile) of those per-call times. On CUDA
(any torch accelerator) the Timer synchronises the device around each block, so asynchronous kernels are
included. Warm-up calls (not timed) absorb one-time costs: lazy initialisation, kernel selection, allocator
growth, escnn/GMR filter caching.
"""

from __future__ import annotations

import contextlib
import timeit
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch.utils.benchmark import Measurement, Timer


@dataclass(frozen=True)
class TimingResult:
    median_s: float
    iqr_s: float
    mean_s: float
    runs: int            # number of measurements (blocks)
    number_per_run: int  # calls per block
    warmup: int
    threads: int

    @property
    def median_ms(self) -> float:
        return self.median_s * 1e3

    @property
    def iqr_ms(self) -> float:
        return self.iqr_s * 1e3

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[int]:
    """Set `torch.set_num_threads(threads)` for the block and restore the previous count afterwards."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def synchronize(device: torch.device | str | None) -> None:
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize(dev)


def warm_up(fn: Callable[[], Any], n: int, device: torch.device | str | None = None) -> None:
    for _ in range(max(0, int(n))):
        fn()
    synchronize(device)


def time_callable(fn: Callable[[], Any], *, warmup: int = 3, min_run_time: float = 0.2, min_runs: int = 5,
                  threads: int | None = None, device: torch.device | str | None = None,
                  timer: Callable[[], float] | None = None) -> TimingResult:
    """Median/IQR seconds per call of `fn()` after `warmup` untimed calls, at `threads` torch threads.

    When `blocked_autorange` ends with fewer than `min_runs` measurements (slow calls: one block can fill
    `min_run_time`), further blocks of the same size are timed until there are `min_runs`, so the IQR is
    never computed from one or two samples.

    `timer` (a clock, for tests) is passed to `torch.utils.benchmark.Timer`; leave it None to keep the Timer's
    own clock, which synchronises the accelerator (CUDA) before reading the time.
    """
    with fixed_threads(threads) as n_threads:
        warm_up(fn, warmup, device)
        extra = {} if timer is None else {"timer": timer}
        t = Timer(stmt="fn()", globals={"fn": fn}, num_threads=n_threads, **extra)
        m = t.blocked_autorange(min_run_time=min_run_time)
        raw = list(m.raw_times)
        while len(raw) < min_runs:
            raw.extend(t.timeit(number=m.number_per_run).raw_times)
        if len(raw) != len(m.raw_times):
            m = Measurement(number_per_run=m.number_per_run, raw_times=raw, task_spec=m.task_spec)
    return TimingResult(
        median_s=float(m.median), iqr_s=float(m.iqr), mean_s=float(m.mean), runs=len(m.times),
        number_per_run=int(m.number_per_run), warmup=int(warmup), threads=n_threads,
    )


def time_once(fn: Callable[[], Any], device: torch.device | str | None = None) -> tuple[Any, float]:
    """(result, seconds) of a single call (used for model build time)."""
    synchronize(device)
    t0 = timeit.default_timer()
    out = fn()
    synchronize(device)
    return out, timeit.default_timer() - t0
