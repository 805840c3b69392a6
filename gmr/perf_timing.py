"""Shared timing helpers of the ``gmr.perf*`` measurement scripts (scripts, not tests).

Everything is timed with ``torch.utils.benchmark.Timer.blocked_autorange`` at the current torch thread count.
Candidates are timed *interleaved*: in each of ``rounds`` rounds every candidate gets one ``blocked_autorange``
(the order rotates between rounds). Two summaries: each candidate's fastest round (:func:`interleaved_ms`), and
the *paired ratio* of two candidates, the median over rounds of their back-to-back times' ratio
(:func:`paired_ratio`), which cancels load that drifts between rounds. Ratios are the figures to quote.

Clock (:func:`default_clock`): on a CPU at one thread, the calling thread's CPU time (``time.thread_time``): with
one thread torch computes on the calling thread, so that is the compute time, and other processes preempting it
(on a shared machine wall-clock samples of the same call scattered by up to 10x) do not count. Otherwise the
Timer's own wall clock, which synchronises CUDA.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Timer

Clock = Callable[[], float]


def default_clock(device: str) -> Clock | None:
    """``time.thread_time`` on a CPU at one torch thread, else None (the Timer's wall clock)."""
    return time.thread_time if device == "cpu" and torch.get_num_threads() == 1 else None


def clock_name(clock: Clock | None) -> str:
    return "thread CPU time" if clock is time.thread_time else "wall clock"


def time_ms(fn: Callable[[], Any], min_run_time: float, clock: Clock | None = None) -> float:
    """Median ms per call of ``fn`` over one ``blocked_autorange`` (no warm-up: see :func:`interleaved_ms`)."""
    extra = {} if clock is None else {"timer": clock}
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), **extra)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def interleaved_samples(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 3, min_run_time: float = 0.2,
                        warmup: int = 1, clock: Clock | None = None) -> dict[str, list[float]]:
    """ms per call of each callable in every round, timed round-robin after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_ms(fns[name], min_run_time, clock))
    return samples


def interleaved_ms(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 3, min_run_time: float = 0.2,
                   warmup: int = 1, clock: Clock | None = None) -> dict[str, float]:
    """Fastest-round median ms per call of each callable (see :func:`interleaved_samples`)."""
    samples = interleaved_samples(fns, rounds=rounds, min_run_time=min_run_time, warmup=warmup, clock=clock)
    return {name: min(values) for name, values in samples.items()}


def paired_ratio(samples: Mapping[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a``'s time / ``b``'s time in the same round."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def step_fn(layer: nn.Module, x: torch.Tensor, mode: str, *, input_grad: bool = True) -> Callable[[], Any]:
    """A zero-argument callable doing one eval forward (``torch.no_grad``, eval mode: cached kernels) or one
    train forward + backward (train mode; the input requires grad when ``input_grad``, as for a hidden layer;
    parameter grads reset every step)."""
    if mode == "eval":
        layer.eval()

        def run_eval() -> Any:
            with torch.no_grad():
                return layer(x)

        return run_eval
    if mode != "train":
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    layer.train()
    xg = x.detach().clone().requires_grad_(input_grad)
    params = [p for p in layer.parameters() if p.requires_grad]

    def run_train() -> Any:
        for p in (*params, xg):
            p.grad = None
        out = layer(xg)
        out.backward(torch.ones_like(out))
        return out

    return run_train


def geomean(values: Iterable[float]) -> float:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def markdown(head: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_note(device: str) -> str:
    """Date, device, torch version and thread count: the header line every table is printed with."""
    torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{torch.cuda.get_device_name()} ({torch_info})"
    else:
        where = f"{platform.processor() or platform.machine()} CPU ({torch_info}, {platform.platform()})"
    return f"measured {_dt.date.today().isoformat()} on {where}"
