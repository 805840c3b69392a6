"""Does ``impl="auto"`` pick the faster path? Measured on every GMR layer shape of ``gmr_resnet18`` and on the
whole network (a script, not a test).

    python -m gmr.perf autotune                          # layers + network at 32² and 224², eval and train
    python -m gmr.perf autotune --part net --sizes 32    # one part / size

Per layer shape (the shapes a forward of ``gmr.gmr_resnet18()`` — the paper's model, widths 64..512, kernels
9/9/5/5 — feeds its GMR convolutions): a layer forced to ``dense``, one forced to ``two_stage`` and one with
``impl="auto"`` (which measures both on its first call, during the warm-up) are timed interleaved; the goal is
``auto / min(dense, two_stage) <= 1.10``. The network: all-dense, all-two-stage, auto and cost-model (each layer
on what :func:`gmr.choose_impl` picks, i.e. auto with measuring off) builds of the same net, one eval forward
(``torch.no_grad``) or one train step (forward + backward of a sum) each, same goal. A fresh
process-wide autotune cache is used (:func:`gmr.clear_autotune_cache`) so every "auto" decision is made here.
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections.abc import Callable
from typing import Any

import torch

from .autotune import clear_autotune_cache, clock
from .conv import GMRConv2d
from .cost_model import choose_impl
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
from .resnet import gmr_resnet18

IMPLS = ("dense", "two_stage", "auto")
NET_IMPLS = (*IMPLS, "model")
BATCH = {("eval", 32): 8, ("train", 32): 16, ("eval", 224): 1, ("train", 224): 1}


def layer_shapes(size: int) -> list[dict[str, Any]]:
    """The distinct (configuration, input shape) pairs of gmr_resnet18's GMR convs at ``size``², in order."""
    model = gmr_resnet18(impl="dense").eval()
    seen: dict[tuple, dict[str, Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: GMRConv2d, args: tuple, _out: Any) -> None:
            cfg = (module.in_channels, module.out_channels, module.kernel_size[0], tuple(args[0].shape[1:]))
            entry = seen.setdefault(cfg, {"C_in": cfg[0], "C_out": cfg[1], "k": cfg[2], "in_shape": cfg[3],
                                          "layers": []})
            entry["layers"].append(name)
        return record

    for name, m in model.named_modules():
        if isinstance(m, GMRConv2d):
            m.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    return list(seen.values())


def _layer_step(shape: dict[str, Any], impl: str, mode: str, batch: int,
                device: str) -> tuple[GMRConv2d, Callable[[], Any]]:
    torch.manual_seed(0)
    layer = GMRConv2d(shape["C_in"], shape["C_out"], shape["k"], padding=shape["k"] // 2, bias=False,
                      impl=impl).to(device)
    x = torch.randn(batch, *shape["in_shape"], device=device)
    return layer, step_fn(layer, x, mode, input_grad=shape["C_in"] != 3)  # the image (stem input): no grad


def layer_rows(sizes: list[int], modes: list[str], device: str, rounds: int, min_run_time: float,
               batch: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    rows = []
    for size, mode in itertools.product(sizes, modes):
        b = batch[(mode, size)]
        for shape in layer_shapes(size):
            built = {impl: _layer_step(shape, impl, mode, b, device) for impl in IMPLS}
            samples = interleaved_samples({impl: step for impl, (_, step) in built.items()}, rounds=rounds,
                                          min_run_time=min_run_time, clock=default_clock(device))
            picked = "/".join(sorted(set(built["auto"][0]._impl_memo.values())))  # decided in the warm-up
            rows.append({"size": size, "mode": mode, "batch": b, **shape, **_summary(samples, picked)})
            print(f"# {rows[-1]}", flush=True)
    return rows


def _net_step(impl: str, mode: str, batch: int, size: int, device: str) -> Callable[[], Any]:
    """One eval forward or train step of gmr_resnet18 with every GMR layer on ``impl``; "model": each layer on
    what the cost model picks (what "auto" does with measuring off)."""
    torch.manual_seed(0)
    model = gmr_resnet18(impl="dense" if impl == "model" else impl).to(device)
    if impl == "model":
        for m in model.modules():
            if isinstance(m, GMRConv2d):
                m.impl = choose_impl(m.in_channels, m.out_channels, m.kernel_size[0], m.num_rings, groups=m.groups,
                                     device_type=torch.device(device).type, training=mode == "train")
    x = torch.randn(batch, 3, size, size, device=device)
    if mode == "eval":
        return step_fn(model, x, "eval")
    model.train()
    params = list(model.parameters())

    def train_step() -> None:
        for p in params:
            p.grad = None
        model(x).sum().backward()

    return train_step


def net_rows(sizes: list[int], modes: list[str], device: str, rounds: int, min_run_time: float,
             batch: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    rows = []
    for size, mode in itertools.product(sizes, modes):
        b = batch[(mode, size)]
        clear_autotune_cache()  # so that auto's first call pays its measurements (the layer part shares them)
        steps = {impl: _net_step(impl, mode, b, size, device) for impl in NET_IMPLS}
        timer = default_clock(device) or clock
        first = {f"first_{impl}": _seconds(step, timer) for impl, step in steps.items()}  # auto measures now
        samples = interleaved_samples(steps, rounds=rounds, min_run_time=min_run_time, warmup=0,
                                      clock=default_clock(device))
        rows.append({"size": size, "mode": mode, "batch": b, **_summary(samples, None), **first})
        print(f"# {rows[-1]}", flush=True)
    return rows


def _seconds(fn: Callable[[], Any], timer: Callable[[], float]) -> float:
    start = timer()
    fn()
    return timer() - start


def _summary(samples: dict[str, list[float]], picked: str | None) -> dict[str, Any]:
    """Fastest round of each build, which fixed path is faster (paired ratio), auto / faster (paired) and, for
    layers, the picked fixed path / faster (1.0 when the pick was right; auto / faster differs from it only by
    timing noise, since auto runs the picked path's code)."""
    faster = "dense" if paired_ratio(samples, "dense", "two_stage") <= 1.0 else "two_stage"
    out: dict[str, Any] = {name: min(values) for name, values in samples.items()}
    out.update(faster=faster, auto_faster=paired_ratio(samples, "auto", faster))
    if "model" in samples:
        out["model_faster"] = paired_ratio(samples, "model", faster)
    if picked is not None:
        out["picked"] = picked
        out["picked_faster"] = (1.0 if picked == faster else paired_ratio(samples, picked, faster)
                                if picked in ("dense", "two_stage") else math.nan)
    return out


def layer_table(rows: list[dict[str, Any]]) -> str:
    head = ["size", "mode", "batch", "layers", "C_in→C_out", "k", "input", "dense ms", "two_stage ms", "auto ms",
            "auto picked", "faster", "picked / faster", "auto / faster"]
    body = [(f"{r['size']}²", r["mode"], r["batch"], _short(r["layers"]), f"{r['C_in']}→{r['C_out']}", r["k"],
             "×".join(map(str, r["in_shape"][1:])), f"{r['dense']:.2f}", f"{r['two_stage']:.2f}",
             f"{r['auto']:.2f}", r["picked"], r["faster"], f"{r['picked_faster']:.2f}", f"{r['auto_faster']:.2f}")
            for r in rows]
    ratios = [r["auto_faster"] for r in rows]
    picked = [r["picked_faster"] for r in rows]
    return (markdown(head, body) + f"\n\n- auto / faster path: geomean {geomean(ratios):.3f}, worst {max(ratios):.3f}"
            f"; cells within 10 %: {sum(v <= 1.10 for v in ratios)} of {len(ratios)}\n- picked path / faster path "
            f"(both from the fixed-path columns): worst {max(picked):.3f}; faster path picked in "
            f"{sum(v == 1.0 for v in picked)} of {len(picked)} cells")


def net_table(rows: list[dict[str, Any]]) -> str:
    head = ["size", "mode", "batch", "all dense ms", "all two_stage ms", "auto ms", "auto / faster of the two",
            "cost model ms", "cost model / faster", "first call s: dense / two_stage / auto"]
    body = [(f"{r['size']}²", r["mode"], r["batch"], f"{r['dense']:.1f}", f"{r['two_stage']:.1f}",
             f"{r['auto']:.1f}", f"{r['auto_faster']:.3f}", f"{r['model']:.1f}", f"{r['model_faster']:.3f}",
             f"{r['first_dense']:.2f} / {r['first_two_stage']:.2f} / {r['first_auto']:.2f}") for r in rows]
    return markdown(head, body)


def _short(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--part", choices=("layers", "net", "both"), default="both")
    ap.add_argument("--sizes", default="32,224")
    ap.add_argument("--modes", default="eval,train")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    ap.add_argument("--batch", default=None,
                    help="override batches, e.g. 'eval32=8,train32=16,eval224=1,train224=1' (these are the defaults)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = dict(BATCH)
    for item in (args.batch.split(",") if args.batch else []):
        key, value = item.split("=")
        mode = key.rstrip("0123456789")
        batch[(mode, int(key[len(mode):]))] = int(value)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    clear_autotune_cache()
    note = (f"{machine_note(args.device)}; {args.rounds} interleaved rounds of blocked_autorange("
            f"{args.min_run_time} s), {clock_name(default_clock(args.device))}; ms: fastest round; ratios: paired "
            "medians")
    if args.part in ("layers", "both"):
        rows = layer_rows(sizes, modes, args.device, args.rounds, args.min_run_time, batch)
        print(f"\nPer layer shape of gmr_resnet18, {note}\n\n{layer_table(rows)}\n", flush=True)
    if args.part in ("net", "both"):
        rows = net_rows(sizes, modes, args.device, args.rounds, args.min_run_time, batch)
        print(f"\nWhole gmr_resnet18, {note}\n\n{net_table(rows)}\n", flush=True)


if __name__ == "__main__":
    main()
