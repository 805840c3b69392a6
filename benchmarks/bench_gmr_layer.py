"""pytest-benchmark: one GMR layer, ours vs the official GMR-Conv vs nn.Conv2d, eval forward and train step.

In the plain test run (``--benchmark-disable``) each benchmark body runs once, as a correctness check. In the perf
environment run it with ``--benchmark-only``; the full issue grid with side-by-side ratios is
``python -m gmr.perf`` (see docs/gmr_perf.md). Set ``GMR_BENCH_GRID=full`` to parametrise over that grid here;
``EQUIBENCH_BENCH_DEVICE`` / ``EQUIBENCH_BENCH_THREADS`` (benchmarks/conftest.py) pick the device and threads.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

from bench.cost.timing import fixed_threads
from gmr.perf import FULL_GRID, make_layers, step_fn

if os.environ.get("GMR_BENCH_GRID") == "full":
    POINTS = list(itertools.product(FULL_GRID["kernel_size"], FULL_GRID["channels"], FULL_GRID["size"]))
    BATCH = 16
else:  # small default: fast enough for the plain test run
    POINTS = [(5, 8, 16), (9, 8, 16)]
    BATCH = 2


# "ours_dense": our layer forced to the dense path, i.e. the same F.conv2d call as nn.Conv2d plus our Python around
# it; its ratio to "conv2d" in one run is the per-call overhead (see also ``python -m gmr.perf overhead``).
KINDS = {"ours": ("ours", "auto"), "ours_dense": ("ours", "dense"), "official": ("official", "auto"),
         "conv2d": ("conv2d", "auto")}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("k,channels,size", POINTS)
def test_gmr_layer(benchmark, track, device, threads, kind, mode, k, channels, size):
    """``device``/``threads`` come from benchmarks/conftest.py (EQUIBENCH_BENCH_DEVICE / _THREADS); ``track``
    times the step interleaved with an nn.Conv2d of the same shape (the regression check's reference)."""
    torch.manual_seed(0)
    base, impl = KINDS[kind]
    layer = make_layers(base, channels, k, str(device), impl=impl)
    x = torch.randn(BATCH, channels, size, size, device=device)
    step = step_fn(layer, x, mode)
    reference = step_fn(make_layers("conv2d", channels, k, str(device)), x, mode)

    benchmark.group = f"{mode}-k{k}-C{channels}-{size}"
    benchmark.extra_info.update(kind=kind, mode=mode, kernel_size=k, channels=channels, size=size, batch=BATCH,
                                threads=threads, device=str(device))
    with fixed_threads(threads):
        step()  # warm-up (builds the eval-mode kernel cache)
        reference()
        out = track(benchmark, step, reference, f"nn.Conv2d({channels},{channels},{k}) {mode}")
    assert out.shape == (BATCH, channels, size, size)
    assert torch.isfinite(out).all()
    if mode == "train":
        assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_ours_matches_official_in_benchmark_setup(mode):
    """The benchmarked layers compute the same function (ours built from the official one)."""
    import gmr

    torch.manual_seed(0)
    ref = make_layers("official", 8, 9, "cpu")
    ours = gmr.from_official(ref)
    x = torch.randn(BATCH, 8, 16, 16)
    a, b = step_fn(ref, x, mode)(), step_fn(ours, x, mode)()
    assert (a - b).abs().max().item() <= 1e-5
