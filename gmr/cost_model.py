"""The deterministic dense/two-stage cost model: what ``impl="auto"`` uses when measuring is off.

``impl="auto"`` normally *measures* both forward paths on the first call for each input signature
(:mod:`gmr.autotune`). This FLOP model is the fallback when measuring is off (``gmr.set_autotune(False)``,
``GMR_AUTOTUNE=0``, ``torch.use_deterministic_algorithms(True)``) or impossible (tracing, ``torch.compile``,
dispatch modes such as ``FlopCounterMode``, meta tensors): it depends only on the layer's configuration, the
device type, the dtype and whether gradients are needed, so it picks the same path in every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CostModel:
    """Relative cost of the two forward paths, in units of one multiply-add of a dense convolution.

    Per output position and batch item (both paths produce their output at the strided resolution, so stride
    scales them equally and cancels out of the comparison):

    - dense:      ``C_in * (C_out / groups) * k^d``                      (x ``dense_train`` when training)
    - two_stage:  ``C_in * R * depthwise_penalty * (depthwise_overhead + k^d)``   (x ``depthwise_train``)
                  ``+ C_in * R * (C_out / groups)``                      (x ``dense_train`` when training)

    ``depthwise_penalty`` / ``depthwise_overhead`` express that a depthwise convolution runs far below the
    FLOP rate of a dense one (it is memory bound: every one of its C_in*R outputs is written and read back by
    the 1x1 mix); ``depthwise_train`` that its backward pass (input and basis gradients) is relatively slower
    still. The CPU numbers were fitted by hand to oneDNN timings of the layer grid on a shared AMD EPYC
    (docs/gmr_perf.md). The CUDA numbers are an unmeasured estimate; measuring (the default) replaces them.
    """

    depthwise_penalty: float
    depthwise_overhead: float
    depthwise_train: float
    dense_train: float = 3.0
    measure: bool = True  # False: the model's answer is final, "auto" never times the paths (see cpu-float64)


COST_MODELS: dict[str, CostModel] = {
    # oneDNN (float32/bfloat16/float16 on CPU); two-stage runs channels-last
    "cpu": CostModel(depthwise_penalty=3.0, depthwise_overhead=78.0, depthwise_train=9.0),
    # float64 on CPU has no oneDNN kernels; the grouped (depthwise) conv falls back to one small call per
    # group, thousands per network, each an OpenMP region that stalls whenever another process holds a core
    # (a GMR-ResNet-18 forward went from 0.3 s to 27 s on a busy 2-core machine): always dense, and not worth
    # timing (one timed call of the two-stage path can cost a minute)
    "cpu-float64": CostModel(depthwise_penalty=1e9, depthwise_overhead=0.0, depthwise_train=1.0, measure=False),
    "cuda": CostModel(depthwise_penalty=4.0, depthwise_overhead=16.0, depthwise_train=3.0),
}
ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def cost_model_key(device_type: str, dtype: torch.dtype | None = None) -> str:
    """Which :data:`COST_MODELS` entry applies: ``cpu``, ``cpu-float64`` (non-oneDNN dtypes) or ``cuda``."""
    if device_type == "cpu":
        return "cpu" if dtype is None or dtype in ONEDNN_DTYPES else "cpu-float64"
    return "cuda"


def worth_measuring(device_type: str, dtype: torch.dtype | None = None) -> bool:
    """Whether ``impl="auto"`` should time the paths on this device type and dtype (else the model decides)."""
    return COST_MODELS[cost_model_key(device_type, dtype)].measure


def impl_costs(in_channels: int, out_channels: int, kernel_size: int, num_rings: int, *, groups: int = 1,
               ndim: int = 2, device_type: str = "cpu", dtype: torch.dtype | None = None,
               training: bool = False) -> dict[str, float]:
    """Modelled cost of each implementation per output position (see :class:`CostModel`)."""
    model = COST_MODELS[cost_model_key(device_type, dtype)]
    taps = kernel_size**ndim
    dense_mult = model.dense_train if training else 1.0
    dw_mult = model.depthwise_train if training else 1.0
    dense = in_channels * (out_channels / groups) * taps * dense_mult
    stage1 = in_channels * num_rings * model.depthwise_penalty * (model.depthwise_overhead + taps) * dw_mult
    mix = in_channels * num_rings * (out_channels / groups) * dense_mult
    return {"dense": dense, "two_stage": stage1 + mix}


def choose_impl(in_channels: int, out_channels: int, kernel_size: int, num_rings: int, *, groups: int = 1,
                ndim: int = 2, device_type: str = "cpu", dtype: torch.dtype | None = None,
                training: bool = False) -> str:
    """The cheaper implementation under the cost model; ties go to ``dense`` (one kernel launch)."""
    costs = impl_costs(in_channels, out_channels, kernel_size, num_rings, groups=groups, ndim=ndim,
                       device_type=device_type, dtype=dtype, training=training)
    return "two_stage" if costs["two_stage"] < costs["dense"] else "dense"
