"""GMR measurement scripts (not tests). This module: the layer grid, ours vs the official GMR-Conv vs
``nn.Conv2d``; the other measurements are sub-commands:

    python -m gmr.perf                      # the layer grid: k 3..11, C 16/64, 32^2 and 64^2, batch 16
    python -m gmr.perf --quick              # a 4-point smoke grid
    python -m gmr.perf --calibrate          # also time ours with impl forced to dense / two_stage
    python -m gmr.perf overhead ...         # eval overhead over nn.Conv2d (gmr.perf_overhead)
    python -m gmr.perf autotune ...         # impl="auto" vs both paths, gmr_resnet18 layers and net (gmr.perf_autotune)
    python -m gmr.perf teaser ...           # seconds per 1,000 convolutions vs kernel size (gmr.perf_teaser)

Each cell is the median of ``torch.utils.benchmark.Timer.blocked_autorange`` (thread CPU time on a CPU at one
thread, else the wall clock, which synchronises CUDA: see :mod:`gmr.perf_timing`). ``eval``
is a forward under ``torch.no_grad`` in eval mode (cached kernels); ``train`` is forward + backward in train mode
with an input that requires grad (as for a hidden layer), parameter grads reset every step. The official layer
is built with keyword arguments (its positional ``dw_fwd`` bug) and always runs its "dw" two-stage path in 2D.
Prints a markdown table with the ratios official/ours (> 1: ours faster) and ours/conv2d, and geometric means.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from .conv import GMRConv2d
from .perf_timing import clock_name, default_clock, geomean, machine_note, step_fn, time_ms

__all__ = ["FULL_GRID", "QUICK_GRID", "make_layers", "markdown_table", "measure", "step_fn"]

FULL_GRID = {"kernel_size": (3, 5, 7, 9, 11), "channels": (16, 64), "size": (32, 64)}
QUICK_GRID = {"kernel_size": (5, 9), "channels": (16,), "size": (32, 64)}


def make_layers(kind: str, channels: int, kernel_size: int, device: str, impl: str = "auto") -> nn.Module:
    """One layer of the compared kind: ``ours``, ``official`` or ``conv2d`` (C -> C channels, 'same' padding)."""
    pad = kernel_size // 2
    if kind == "ours":
        return GMRConv2d(channels, channels, kernel_size, padding=pad, impl=impl).to(device)
    if kind == "official":
        from GMR_Conv.gmr_conv import GMR_Conv2d  # noqa: PLC0415 - optional reference package

        return GMR_Conv2d(in_channels=channels, out_channels=channels, kernel_size=kernel_size,
                          padding=pad).to(device)
    if kind == "conv2d":
        return nn.Conv2d(channels, channels, kernel_size, padding=pad).to(device)
    raise ValueError(f"unknown layer kind {kind!r}; valid: ours, official, conv2d")


def _impl_probe(layer: GMRConv2d, x: torch.Tensor, mode: str) -> Callable[[], str]:
    """What ``auto`` picked for the timed call (asked after the warm-up, in the timed call's grad mode)."""
    def probe() -> str:
        with torch.set_grad_enabled(mode == "train"):
            return layer.resolve_impl(x.detach().requires_grad_(mode == "train"))

    return probe


def measure(kernel_size: int, channels: int, size: int, mode: str, *, batch: int = 16, device: str = "cpu",
            min_run_time: float = 0.5, rounds: int = 1, kinds: Iterable[str] = ("official", "ours", "conv2d"),
            calibrate: bool = False, seed: int = 0) -> dict[str, Any]:
    """Times (ms) of each layer kind at one grid point; ``ours_impl`` is what ``auto`` chose.

    With ``rounds > 1`` the kinds are timed round-robin and each keeps its fastest round's median, so load
    from other processes on a shared machine hits all kinds alike and inflates none of them permanently."""
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, device=device)
    row: dict[str, Any] = {"k": kernel_size, "C": channels, "size": size, "mode": mode}
    steps: dict[str, Callable[[], Any]] = {}
    ours_impl: Callable[[], str] = str
    for kind in kinds:
        layer = make_layers(kind, channels, kernel_size, device)
        steps[kind] = step_fn(layer, x, mode)
        if kind == "ours":
            ours_impl = _impl_probe(layer, x, mode)
    if calibrate:
        for impl in ("dense", "two_stage"):
            steps[f"ours_{impl}"] = step_fn(make_layers("ours", channels, kernel_size, device, impl=impl), x, mode)
    names = list(steps)
    for step in steps.values():
        step()  # warm-up (also builds eval caches and lets "auto" measure)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time_ms(steps[name], min_run_time, default_clock(device))
            row[name] = min(row.get(name, math.inf), t)
    if "ours" in row:
        row["ours_impl"] = ours_impl()
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of a measured grid plus geometric-mean summary lines."""
    calib = any("ours_dense" in r for r in rows)
    head = ["mode", "k", "C", "size", "official ms", "ours ms", "ours impl", "conv2d ms", "official/ours",
            "ours/conv2d"]
    if calib:
        head += ["dense ms", "two_stage ms", "auto picked faster"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["mode"], r["k"], r["C"], f"{r['size']}²", f"{r['official']:.2f}", f"{r['ours']:.2f}",
                 r["ours_impl"], f"{r['conv2d']:.2f}", f"{r['official'] / r['ours']:.2f}",
                 f"{r['ours'] / r['conv2d']:.2f}"]
        if calib:
            best = "dense" if r["ours_dense"] <= r["ours_two_stage"] else "two_stage"
            cells += [f"{r['ours_dense']:.2f}", f"{r['ours_two_stage']:.2f}",
                      "yes" if best == r["ours_impl"] else "no"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    for mode in ("eval", "train"):
        sub = [r for r in rows if r["mode"] == mode]
        if not sub:
            continue
        g_off = geomean(r["official"] / r["ours"] for r in sub)
        g_conv = geomean(r["ours"] / r["conv2d"] for r in sub)
        worst = min(r["official"] / r["ours"] for r in sub)
        lines.append(f"- {mode}: geomean official/ours = {g_off:.2f}x (worst point {worst:.2f}x), "
                     f"geomean ours/conv2d = {g_conv:.2f}")
    return "\n".join(lines)


SUBCOMMANDS = ("overhead", "autotune", "teaser")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(f"gmr.perf_{argv[0]}")
        module.main(argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-run-time", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; keep each kind's fastest")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="4-point grid")
    ap.add_argument("--calibrate", action="store_true", help="also time impl=dense and impl=two_stage")
    ap.add_argument("--modes", default="eval,train")
    ap.add_argument("--kernel-sizes", default=None, help="comma list overriding the grid's kernel sizes")
    ap.add_argument("--channels", default=None, help="comma list overriding the grid's channels")
    ap.add_argument("--sizes", default=None, help="comma list overriding the grid's input sizes")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = dict(QUICK_GRID if args.quick else FULL_GRID)
    for key, opt in (("kernel_size", args.kernel_sizes), ("channels", args.channels), ("size", args.sizes)):
        if opt:
            grid[key] = tuple(int(v) for v in opt.split(","))
    rows = []
    for mode in args.modes.split(","):
        for k, c, s in itertools.product(grid["kernel_size"], grid["channels"], grid["size"]):
            row = measure(k, c, s, mode, batch=args.batch, device=args.device, min_run_time=args.min_run_time,
                          rounds=args.rounds, calibrate=args.calibrate)
            rows.append(row)
            print(f"# {row}", flush=True)
    print(f"\n{machine_note(args.device)}, batch {args.batch}, min_run_time {args.min_run_time}s, best of "
          f"{args.rounds} interleaved round(s), {clock_name(default_clock(args.device))}\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
