"""The callables whose cost is measured, shared by the protocol, the memory probe and the benchmarks.

- eval forward: ``model.eval()`` (escnn layers cache their expanded filter, GMR's dense path caches its
  kernel), then a forward pass under ``torch.no_grad()``.
- train step: ``model.train()``; forward, loss, backward, ``optimizer.step()``, ``zero_grad(set_to_none=True)``.
  The loss is cross-entropy against fixed random targets when the output is ``(N, C)`` logits and the mean
  square of the output map otherwise (layer models). The optimizer is SGD with momentum 0.9 and **lr = 0**:
  the update arithmetic is still done, but the weights never change, so every timed step does identical work
  (no drift towards denormals, no divergence over thousands of timed steps). Gradients are released at the end
  of each step, so between steps only weights, optimizer state and the input are alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

MODES = ("eval", "train")


def is_oom(exc: BaseException) -> bool:
    """Whether an exception means 'out of memory' (CUDA OOM, CPU allocator failure, MemoryError)."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def make_input(batch: int, in_channels: int, resolution: int, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """A reproducible standard-normal input batch ``(batch, in_channels, resolution, resolution)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, in_channels, resolution, resolution, generator=gen)
    return x.to(device=device, dtype=dtype)


def _loss(out: Any, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
    if out.ndim == 2:
        if "t" not in targets:
            gen = torch.Generator().manual_seed(1234)
            targets["t"] = torch.randint(0, out.shape[1], (out.shape[0],), generator=gen).to(out.device)
        return F.cross_entropy(out.float(), targets["t"])
    return out.float().square().mean()


def eval_step(model: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """Put `model` in eval mode (caches kernels) and return a no-grad forward on `x`."""
    model.eval()

    def step() -> Any:
        with torch.no_grad():
            return model(x)

    return step


def train_step(model: nn.Module, x: torch.Tensor, *, lr: float = 0.0, momentum: float = 0.9) -> Callable[[], None]:
    """Put `model` in train mode and return one SGD step (forward, loss, backward, update, release grads)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum) if params else None
    targets: dict[str, torch.Tensor] = {}

    def step() -> None:
        loss = _loss(model(x), targets)
        if loss.requires_grad:
            loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step


def make_step(model: nn.Module, x: torch.Tensor, mode: str) -> Callable[[], Any]:
    """`eval_step` or `train_step` by name ('eval' | 'train')."""
    if mode == "eval":
        return eval_step(model, x)
    if mode == "train":
        return train_step(model, x)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def exported(model: nn.Module) -> nn.Module | None:
    """The model's exported (plain torch) form when it offers ``export()`` (escnn ``R2Conv.export`` style)."""
    fn = getattr(model, "export", None)
    if not callable(fn):
        return None
    was_training = model.training
    model.eval()
    try:
        out = fn()
    finally:
        model.train(was_training)
    if not isinstance(out, nn.Module):
        raise TypeError(f"{type(model).__name__}.export() returned {type(out).__name__}, not an nn.Module")
    return out.eval()


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
