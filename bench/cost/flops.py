"""FLOP counting. Unit "FLOPs": `torch.utils.flop_counter.FlopCounterMode` counts **2 FLOPs per
multiply-add** (a k×k conv producing one output value from C_in channels costs 2·C_in·k² FLOPs). Only the ops
the counter knows (convolutions, matmuls, attention, and their backward passes) are counted; elementwise
work (bias, activations, norm layers, the optimizer update) is not.

Also the analytic formulas the tests check the counter against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.cost.steps import make_step

UNIT = "FLOPs"


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Total FLOPs (2 per multiply-add) of one call ``fn(*args, **kwargs)``."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def steady_flops(step: Callable[[], Any], warmup: int = 1) -> int:
    """FLOPs of one call of `step` after `warmup` uncounted calls, so one-time work (a kernel cache built on
    the first eval forward, as GMRConv2d does) is not counted, like in the timed steady state."""
    for _ in range(warmup):
        step()
    return count_flops(step)


def model_flops(model: torch.nn.Module, x: torch.Tensor, mode: str, warmup: int = 1) -> int:
    """Steady-state FLOPs of one eval forward (mode 'eval') or one train step = forward + backward ('train')."""
    return steady_flops(make_step(model, x, mode), warmup)


# -- analytic formulas (per batch; stride 1, 'same' padding, output H×W = input H×W) -----------------------
def conv2d_flops(height: int, width: int, c_in: int, c_out: int, kernel_size: int, *, batch: int = 1,
                 groups: int = 1) -> int:
    """2·N·H·W·(C_in/groups)·C_out·k² (bias not counted, as FlopCounterMode does)."""
    return 2 * batch * height * width * (c_in // groups) * c_out * kernel_size * kernel_size


def gmr_dense_flops(height: int, width: int, c_in: int, c_out: int, kernel_size: int, *, batch: int = 1) -> int:
    """GMR dense path: one conv with the assembled k×k kernel (assembly itself, per batch, not included)."""
    return conv2d_flops(height, width, c_in, c_out, kernel_size, batch=batch)


def gmr_two_stage_flops(height: int, width: int, c_in: int, c_out: int, kernel_size: int, rings: int, *,
                        batch: int = 1) -> int:
    """GMR two-stage path: depthwise conv of every input channel with the R ring-basis kernels
    (2·HW·C_in·R·k²) plus the 1×1 mixing conv C_in·R → C_out (2·HW·C_in·R·C_out)."""
    hw = batch * height * width
    return 2 * hw * c_in * rings * kernel_size * kernel_size + 2 * hw * c_in * rings * c_out
