"""Per-call overhead of a GMR layer over ``nn.Conv2d`` of the same shape, eval mode, cached kernel (a script).

    python -m gmr.perf overhead                       # layer grid (k 3..11, C 16/64, 32²/64²) x batch 1, 8, 16
    python -m gmr.perf overhead --quick               # the small shapes where a fixed cost shows most

A GMR layer with ``impl="dense"`` in eval mode runs exactly one ``F.conv2d`` with its cached kernel, the same call
``nn.Conv2d`` makes, so ``dense / conv2d`` is the price of the Python around it (input checks, the cache check).
``auto`` is the layer as built by default (the measured choice, which may be the faster two-stage path). A second,
identical ``nn.Conv2d`` (``conv2d_b``) is the control: ``conv2d_b / conv2d`` shows the measurement's own scatter.
All four are timed interleaved in one run; ratios are paired medians (:mod:`gmr.perf_timing`).
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import torch
from torch import nn

from .conv import GMRConv2d
from .perf_timing import (
    clock_name,
    default_clock,
    geomean,
    interleaved_samples,
    machine_note,
    markdown,
    paired_ratio,
    step_fn,
)

GRID = {"kernel_size": (3, 5, 7, 9, 11), "channels": (16, 64), "size": (32, 64), "batch": (1, 8, 16)}
QUICK_GRID = {"kernel_size": (3, 7), "channels": (16,), "size": (32,), "batch": (1, 8)}


def overhead_row(kernel_size: int, channels: int, size: int, batch: int, *, device: str = "cpu",
                 rounds: int = 3, min_run_time: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """ms per eval call (fastest round) of nn.Conv2d (twice), GMR dense and GMR auto at one shape (C -> C,
    'same' padding), and the paired ratios to the first nn.Conv2d."""
    torch.manual_seed(seed)
    x = torch.randn(batch, channels, size, size, device=device)
    pad = kernel_size // 2
    layers: dict[str, nn.Module] = {
        "conv2d": nn.Conv2d(channels, channels, kernel_size, padding=pad),
        "dense": GMRConv2d(channels, channels, kernel_size, padding=pad, impl="dense"),
        "auto": GMRConv2d(channels, channels, kernel_size, padding=pad),
        "conv2d_b": nn.Conv2d(channels, channels, kernel_size, padding=pad),
    }
    steps = {name: step_fn(layer.to(device), x, "eval") for name, layer in layers.items()}
    samples = interleaved_samples(steps, rounds=rounds, min_run_time=min_run_time, clock=default_clock(device))
    with torch.no_grad():
        picked = layers["auto"].resolve_impl(x)
    ratios = {f"{name}/conv2d": paired_ratio(samples, name, "conv2d") for name in ("dense", "auto", "conv2d_b")}
    best = {name: min(values) for name, values in samples.items()}
    return {"k": kernel_size, "C": channels, "size": size, "batch": batch, **best, **ratios, "auto_impl": picked}


def table(rows: list[dict[str, Any]]) -> str:
    head = ["k", "C", "size", "batch", "conv2d ms", "GMR dense ms", "dense / conv2d", "GMR auto ms", "auto picked",
            "auto / conv2d", "control: conv2d_b / conv2d"]
    body = [(r["k"], r["C"], f"{r['size']}²", r["batch"], f"{r['conv2d']:.3f}", f"{r['dense']:.3f}",
             f"{r['dense/conv2d']:.3f}", f"{r['auto']:.3f}", r["auto_impl"], f"{r['auto/conv2d']:.3f}",
             f"{r['conv2d_b/conv2d']:.3f}") for r in rows]
    lines = []
    for name in ("dense", "auto", "conv2d_b"):
        ratios = [r[f"{name}/conv2d"] for r in rows]
        worst = max(rows, key=lambda r: r[f"{name}/conv2d"])
        lines.append(f"- {name} / conv2d: geomean {geomean(ratios):.3f}, max {max(ratios):.3f} (k={worst['k']}, "
                     f"C={worst['C']}, {worst['size']}², batch {worst['batch']}), above 1.05 at "
                     f"{sum(v > 1.05 for v in ratios)} of {len(ratios)} points")
    return markdown(head, body) + "\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = QUICK_GRID if args.quick else GRID
    rows = []
    for b, k, c, s in itertools.product(grid["batch"], grid["kernel_size"], grid["channels"], grid["size"]):
        rows.append(overhead_row(k, c, s, b, device=args.device, rounds=args.rounds,
                                 min_run_time=args.min_run_time))
        print(f"# {rows[-1]}", flush=True)
    print(f"\n{machine_note(args.device)}; eval, torch.no_grad; {args.rounds} interleaved rounds of "
          f"blocked_autorange({args.min_run_time} s), {clock_name(default_clock(args.device))}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
