"""Shared timing helpers of the ``gmr.perf*`` measurement scripts (scripts, not tests).

Everything is timed with ``torch.utils.benchmark.Timer.blocked_autorange`` (which synchronises CUDA) at the
current torch thread count. Candidates are timed *interleaved*: in each of ``rounds`` rounds every candidate
gets one ``blocked_autorange`` (the order rotates between rounds) and keeps its fastest round's median, so load
from other processes on a shared machine hits all candidates alike and inflates none permanently; ratios
measured in one such run are the figures to quote.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.benchmark import Timer


def time_ms(fn: Callable[[], Any], min_run_time: float) -> float:
    """Median ms per call of ``fn`` over one ``blocked_autorange`` (no warm-up: see :func:`interleaved_ms`)."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def interleaved_ms(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 3, min_run_time: float = 0.2,
                   warmup: int = 1) -> dict[str, float]:
    """Fastest-round median ms per call of each callable, timed round-robin after ``warmup`` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {name: math.inf for name in fns}
    names = list(fns)
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            best[name] = min(best[name], time_ms(fns[name], min_run_time))
    return best


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
