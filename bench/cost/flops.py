"""FLOP counting. Unit "FLOPs": `torch.utils.flop_counter.FlopCounterMode` counts **2 FLOPs per
multiply-add** (a k×k conv producing one output value from C_in channels costs 2·C_in·k² FLOPs). Only the ops
the counter knows (convolutions, matmuls, attention, and their backward passes) are counted; elementwise
work (bias, activations, norm layers, the optimizer update) is not.

Every count goes through `count_flops`, which replaces torch's formula for
``aten.convolution_backward``: torch's weight-gradient term ignores ``groups`` (it counts a grouped conv's
weight gradient as if the conv were dense), so a depthwise conv's backward came out C_in times too high and a
two-stage GMR layer's train step ~38x its forward. `conv_backward_flops` counts each requested gradient
(input, weight) at exactly the forward's cost, which is what both are: the same multiply-adds, re-paired.

Also the analytic formulas the tests check the counter against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.cost.steps import make_step

UNIT = "FLOPs"


def conv_backward_flops(grad_out_shape: Sequence[int], x_shape: Sequence[int], w_shape: Sequence[int], _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                        _groups: int, output_mask: Sequence[bool], out_shape: Any = None, **_: Any) -> int:
    """FLOPs of ``aten.convolution_backward`` (same arguments, shapes instead of tensors).

    The input gradient is a (transposed) convolution of grad_out with the same weight, and the weight gradient
    a correlation of the input with grad_out: each pairs every weight entry with every position of the
    "small" side (the output of a conv, the input of a transposed conv), once per batch item, exactly like the
    forward. So each costs 2·N·positions·numel(weight), and numel(weight) = C_out·(C_in/groups)·k^d already
    carries the grouping that torch's own formula drops from its weight-gradient term."""
    positions = math.prod(x_shape[2:] if transposed else grad_out_shape[2:])
    forward = 2 * x_shape[0] * positions * math.prod(w_shape)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


#: Formulas that replace torch's defaults in every count of the suite.
CUSTOM_FORMULAS: dict[Any, Callable[..., int]] = {torch.ops.aten.convolution_backward: conv_backward_flops}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode with the suite's corrected formulas (`CUSTOM_FORMULAS`)."""
    return FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS)


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Total FLOPs (2 per multiply-add) of one call ``fn(*args, **kwargs)``."""
    with flop_counter() as counter:
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
