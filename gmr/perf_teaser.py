"""The GMR paper's teaser panel (b): time of 1,000 convolutions vs kernel size, per layer kind (a script).

    python -m gmr.perf teaser                              # k 3..11, the four kinds below, train and eval
    python -m gmr.perf teaser --device cuda --modes train  # the paper's setting is a GPU

Kinds (the zoo's single-layer models, :func:`bench.models.create_model`): ``conv2d`` (``nn.Conv2d``), ``e2cnn``
(escnn C8 regular -> regular ``R2Conv``, i.e. E(2)-CNN; it re-expands its filter basis in every training
forward), ``gmr`` (ours, ``impl="auto"``), ``gmr_official`` (GMR-Conv 1.0.3). Every layer maps C -> C channels
(C a multiple of 8, so the C8 layer has C/8 regular fields) with 'same' padding; "seconds per 1,000
convolutions" is 1,000 x the median time of one call (``train``: forward + backward; ``eval``: forward under
``no_grad`` with cached kernels), timed interleaved (:func:`gmr.perf_timing.interleaved_ms`).

The figure does not state its layer shape, so the comparison that carries over is the ratio to ``conv2d`` at
the same k; :data:`PAPER_SECONDS` holds the values read off the figure (approximate) as a reference series.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import torch

from .perf_timing import clock_name, default_clock, interleaved_ms, machine_note, markdown, step_fn

KERNEL_SIZES = (3, 5, 7, 9, 11)
MODELS = {"conv2d": ("layer_conv2d", {}), "e2cnn": ("layer_c8", {"in_type": "regular"}),
          "gmr": ("layer_gmr", {}), "gmr_official": ("layer_gmr_official", {})}
# read off the GMR paper's teaser figure, panel (b), seconds per 1,000 convolutions on its GPU
PAPER_SECONDS: dict[str, dict[int, float]] = {
    "conv2d": {3: 1.0, 9: 5.1, 11: 6.9},
    "e2cnn": {9: 205.0},
    "g_conv": {9: 230.0},
    "gmr": {3: 1.2, 9: 2.55, 11: 2.9},
}
# panel (a): GPU memory of a training run on rotated CIFAR-10 (GB as printed; batch and resolution not stated)
PAPER_TRAIN_MEMORY_GB: dict[str, float] = {"resnet18": 3.4, "gmr_resnet18": 6.2}
MIB_PER_GB = 1024.0  # the paper's "GB" read as GiB (what torch.cuda and nvidia-smi print); 1000 would move it 2.4 %
# the paper's label of each kind, and the zoo models a kind is compared with (empty: none in the zoo)
PAPER_LABELS = {"conv2d": "nn.Conv2d", "e2cnn": "E(2)-CNN", "g_conv": "G-Conv", "gmr": "GMR-Conv",
                "resnet18": "ResNet-18", "gmr_resnet18": "GMR-ResNet-18"}
PAPER_COUNTERPARTS: dict[str, tuple[str, ...]] = {
    "conv2d": ("layer_conv2d",), "e2cnn": ("layer_c8",), "g_conv": (), "gmr": ("layer_gmr", "layer_gmr_official"),
    "resnet18": ("resnet18",), "gmr_resnet18": ("gmr_resnet18",)}
PAPER_NOTE = "GMR paper (Du et al. 2025), teaser figure, read off the plot (approximate)"


def paper_reference() -> list[dict[str, Any]]:
    """The teaser's values as reference points for the efficiency protocol (``reference = "gmr_paper_teaser"``).

    One dict per value: ``panel`` ("a" | "b"), ``series`` (the paper's label), ``counterparts`` (zoo models),
    ``baseline`` (the zoo model the panel's ratios divide by: the plain model), ``metric``/``mode``/``unit`` in
    the efficiency protocol's terms (seconds per 1,000 calls = ms per call), ``kernel_size`` (panel b) and
    ``value``. Panel (b)'s layer shape and mode are not stated in the paper; panel (a)'s batch and resolution
    neither, so only ratios to the plain model carry over."""
    out = []
    for kind, by_k in PAPER_SECONDS.items():
        for k, seconds in sorted(by_k.items()):
            out.append({"panel": "b", "series": PAPER_LABELS[kind], "counterparts": PAPER_COUNTERPARTS[kind],
                        "baseline": "layer_conv2d", "metric": "latency_ms", "mode": None, "unit": "ms",
                        "kernel_size": k, "value": seconds, "note": f"{PAPER_NOTE}, panel (b), GPU"})
    for kind, gb in PAPER_TRAIN_MEMORY_GB.items():
        out.append({"panel": "a", "series": PAPER_LABELS[kind], "counterparts": PAPER_COUNTERPARTS[kind],
                    "baseline": "resnet18", "metric": "peak_memory_mb", "mode": "train", "unit": "MiB",
                    "kernel_size": None, "value": gb * MIB_PER_GB,
                    "note": f"{PAPER_NOTE}, panel (a): {gb} GB while training on rotated CIFAR-10, GPU"})
    return out


def teaser_row(kernel_size: int, mode: str, *, channels: int = 64, size: int = 64, batch: int = 16,
               device: str = "cpu", kinds: tuple[str, ...] = tuple(MODELS), rounds: int = 3,
               min_run_time: float = 0.2) -> dict[str, Any]:
    """Seconds per 1,000 calls of each kind at one kernel size."""
    from bench.models import create_model  # the zoo registry imports its families on demand

    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, device=device)
    steps = {}
    for kind in kinds:
        name, extra = MODELS[kind]
        layer = create_model(name, in_channels=channels, channels=channels, kernel_size=kernel_size, **extra)
        steps[kind] = step_fn(layer.to(device), x, mode)
    ms = interleaved_ms(steps, rounds=rounds, min_run_time=min_run_time, clock=default_clock(device))
    return {"k": kernel_size, "mode": mode, **ms}  # ms per call == seconds per 1,000 calls


def table(rows: list[dict[str, Any]], kinds: tuple[str, ...]) -> str:
    head = ["mode", "k", *(f"{k} s/1000" for k in kinds), *(f"{k} / conv2d" for k in kinds if k != "conv2d"),
            "paper gmr / conv2d"]
    body = []
    for r in rows:
        paper = PAPER_SECONDS["gmr"].get(r["k"]), PAPER_SECONDS["conv2d"].get(r["k"])
        body.append((r["mode"], r["k"], *(f"{r[k]:.2f}" for k in kinds),
                     *(f"{r[k] / r['conv2d']:.2f}" for k in kinds if k != "conv2d"),
                     f"{paper[0] / paper[1]:.2f}" if None not in paper else ""))
    return markdown(head, body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--modes", default="train,eval")
    ap.add_argument("--kernel-sizes", default=",".join(map(str, KERNEL_SIZES)))
    ap.add_argument("--kinds", default=",".join(MODELS))
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=0.2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kinds = tuple(args.kinds.split(","))
    rows = []
    for mode, k in itertools.product(args.modes.split(","), (int(v) for v in args.kernel_sizes.split(","))):
        rows.append(teaser_row(k, mode, channels=args.channels, size=args.size, batch=args.batch,
                               device=args.device, kinds=kinds, rounds=args.rounds, min_run_time=args.min_run_time))
        print(f"# {rows[-1]}", flush=True)
    print(f"\n{machine_note(args.device)}; C={args.channels}, {args.size}², batch {args.batch}; fastest of "
          f"{args.rounds} interleaved rounds, {clock_name(default_clock(args.device))}\n")
    print(table(rows, kinds))


if __name__ == "__main__":
    main()
