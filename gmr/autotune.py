"""Measured choice between the two GMR forward paths, cached process-wide (like ``torch.backends.cudnn.benchmark``).

With ``impl="auto"`` a GMR layer times both paths (``dense`` and ``two_stage``) the first time it meets a new
*signature* -- its own configuration plus the input's shape, dtype, device, memory layout, the thread count,
autocast, and the mode (gradients needed or not, training flag) -- and every layer with that signature then uses
the faster one for the rest of the process. The first call for a signature costs a few extra calls of the
layer (one warm-up call of each path, then 2 to ``ROUNDS`` interleaved timed blocks of each, each block at least
``BLOCK_S`` long, fewer when one path is clearly ahead; the winner is the median of the rounds' paired time ratios, see :func:`decide`; on a CPU at
one thread the clock is the thread's CPU time, see :func:`clock_for`); later calls cost one dictionary lookup.
In training mode the timed calls are forward + backward through ``torch.autograd.grad``, so nothing accumulates
into ``.grad``; a layer's kernel cache keeps only the winner's kernel.

Measuring is **on by default**, because the winner depends on the machine (CPU model, threads, GPU) far more
than a fixed cost model can capture. Both paths compute the same function up to float rounding (tests bound the
difference by 1e-5), so the choice only moves results at the rounding level; where bit-for-bit reproducible
runs matter, switch measuring off and ``auto`` falls back to the deterministic cost model of
:mod:`gmr.cost_model`:

- ``gmr.set_autotune(False)`` (``True`` switches it back on; each call forgets the layers' earlier choices),
- the environment variable ``GMR_AUTOTUNE=0`` (read on first use; ``1``/``0``, ``true``/``false``, ``on``/``off``),
- ``torch.use_deterministic_algorithms(True)`` (honoured like cuDNN honours it for its benchmark mode).

Set these before the first forward: a layer remembers its choices per input signature (``set_autotune`` and
:func:`clear_autotune_cache` make every layer forget them; toggling torch's deterministic flag later does not).

For float64 on a CPU the cost model decides without measuring (dense: oneDNN has no float64 kernels and the
two-stage path's grouped convolution falls back to one small call per group, so timing it once can take a
minute). Measuring is also skipped (a winner measured earlier is still used, else the cost model) while it could not be
done faithfully or would disturb the caller: under ``torch.jit`` tracing, ``torch.compile``, functorch transforms,
CUDA graph capture, any ``TorchDispatchMode``/``TorchFunctionMode`` (e.g. ``FlopCounterMode``, which would
otherwise count the timing calls), and for tensor subclasses or meta tensors.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.benchmark.utils.timer import timer as clock  # benchmark's clock: syncs accelerators

from bench.errors import UsageError

ENV_VAR = "GMR_AUTOTUNE"
_ENV_VALUES = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False,
               "no": False}
IMPLS = ("dense", "two_stage")
ROUNDS = 5  # at most this many interleaved timing rounds (the decision: median of the rounds' paired ratios)
MIN_ROUNDS = 2  # ... and at least this many; fewer than ROUNDS when every paired ratio so far is beyond CLEAR
CLEAR = 1.25  # a paired ratio dense/two_stage above CLEAR (or below 1/CLEAR) is a clear win
BLOCK_S = 2e-3  # each timed block repeats the call until it lasts about this long (tiny layers)


@dataclass
class AutotuneState:
    """Process-wide switch and results. ``generation`` changes whenever earlier choices become invalid, so that
    layers drop their per-layer memo of choices (a cheap integer comparison per forward)."""

    enabled: bool | None = None  # None: not decided yet, read ENV_VAR on first use
    generation: int = 0
    results: dict[Hashable, dict[str, Any]] = field(default_factory=dict)


STATE = AutotuneState()


def _parse_env(value: str) -> bool:
    key = value.strip().lower()
    if key not in _ENV_VALUES:
        raise UsageError(f"{ENV_VAR} must be one of {', '.join(sorted(_ENV_VALUES))}; got {value!r}")
    return _ENV_VALUES[key]


def autotune_enabled() -> bool:
    """Whether ``impl="auto"`` measures (the switch; per-call exceptions are in :func:`can_measure`)."""
    if STATE.enabled is None:
        raw = os.environ.get(ENV_VAR)
        STATE.enabled = True if raw is None or raw.strip() == "" else _parse_env(raw)
    return STATE.enabled


def set_autotune(enabled: bool) -> None:
    """Switch measuring on or off for the whole process; layers re-decide on their next call."""
    if not isinstance(enabled, bool):
        raise UsageError(f"set_autotune takes True or False, got {enabled!r}")
    STATE.enabled = enabled
    STATE.generation += 1


def clear_autotune_cache() -> None:
    """Forget every measured winner (e.g. after the machine's load changed); the next calls measure again."""
    STATE.results.clear()
    STATE.generation += 1


def autotune_results() -> dict[Hashable, dict[str, Any]]:
    """A copy of the measured results: signature -> {"impl": winner, "dense_s": ..., "two_stage_s": ...}."""
    return {k: dict(v) for k, v in STATE.results.items()}


def winner(signature: Hashable) -> str | None:
    """The measured winner for ``signature``, or None if it was never measured."""
    hit = STATE.results.get(signature)
    return None if hit is None else hit["impl"]


def _inside_transform_or_capture(x: torch.Tensor) -> bool:
    functorch = getattr(torch._C, "_functorch", None)
    if functorch is not None and functorch.peek_interpreter_stack() is not None:
        return True
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def can_measure(x: Any) -> bool:
    """Whether timing both paths on ``x`` right now is enabled, faithful and harmless (module docstring)."""
    if not autotune_enabled() or torch.are_deterministic_algorithms_enabled():
        return False
    if type(x) is not torch.Tensor or x.device.type == "meta":
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return False
    if torch._C._len_torch_dispatch_stack() or torch._C._len_torch_function_stack():
        return False
    return not _inside_transform_or_capture(x)


def clock_for(x: torch.Tensor) -> Callable[[], float]:
    """The clock to time a layer on ``x`` with: on a CPU at one torch thread, the calling thread's CPU time
    (torch computes on the calling thread, so this is the compute time, and other processes preempting it do
    not count: on a shared machine wall-clock samples scatter by several times); otherwise
    ``torch.utils.benchmark``'s wall clock, which synchronises the accelerator."""
    return time.thread_time if x.device.type == "cpu" and torch.get_num_threads() == 1 else clock


def _seconds_per_call(run: Callable[[], Any], number: int, timer: Callable[[], float]) -> float:
    start = timer()
    for _ in range(number):
        run()
    return (timer() - start) / number


def time_paths(runs: Mapping[str, Callable[[], Any]], *, rounds: int = ROUNDS, block_s: float = BLOCK_S,
               timer: Callable[[], float] = clock) -> dict[str, list[float]]:
    """Seconds per call of each zero-argument callable, one sample per round: one warm-up call each, then
    up to ``rounds`` interleaved blocks of ``ceil(block_s / warm-up time)`` calls (the order alternates between
    rounds; after ``MIN_ROUNDS`` it stops early once one path is clearly ahead in every round), read with
    ``timer`` (see :func:`clock_for`).

    A path that raises ``RuntimeError`` (e.g. out of memory) gets no samples."""
    numbers: dict[str, int] = {}
    for name, run in runs.items():
        try:
            first = _seconds_per_call(run, 1, timer)
        except RuntimeError:
            continue
        numbers[name] = max(1, math.ceil(block_s / max(first, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    order = list(numbers)
    for r in range(rounds):
        shift = r % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            samples[name].append(_seconds_per_call(runs[name], numbers[name], timer))
        if r + 1 >= MIN_ROUNDS and _clear(samples):
            break
    return samples


def _clear(samples: Mapping[str, list[float]]) -> bool:
    """Whether every round so far has the same path ahead by more than ``CLEAR`` (more rounds would not
    change the decision; this halves the first-call cost for most layers)."""
    ratios = [d / t for d, t in zip(samples.get("dense", []), samples.get("two_stage", []))]
    return bool(ratios) and (all(q > CLEAR for q in ratios) or all(q < 1 / CLEAR for q in ratios))


def decide(samples: Mapping[str, list[float]]) -> str | None:
    """The faster path from interleaved samples: the median over rounds of the *paired* ratio
    dense / two_stage (each round's two samples are taken back to back, so load from other processes, which
    drifts over seconds, largely cancels in the ratio; comparing each path's minimum does not cancel it).
    Ties go to ``dense``; a path without samples loses; None if neither has any."""
    dense, two_stage = samples.get("dense", []), samples.get("two_stage", [])
    if not dense or not two_stage:
        return "dense" if dense else "two_stage" if two_stage else None
    return "two_stage" if statistics.median(d / t for d, t in zip(dense, two_stage)) > 1.0 else "dense"


def record(signature: Hashable, samples: Mapping[str, list[float]]) -> str | None:
    """Decide (:func:`decide`) and store the winner for ``signature`` with each path's fastest sample."""
    impl = decide(samples)
    if impl is not None:
        STATE.results[signature] = {"impl": impl, **{f"{k}_s": min(v, default=math.inf) for k, v in samples.items()}}
    return impl
