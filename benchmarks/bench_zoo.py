"""Zoo benchmarks: eval forward, train step and (where the layer has ``export()``) the exported eval forward of
every layer model, and eval / train of the small networks.

The callables are the efficiency protocol's (`bench.cost.steps`), warmed up with `bench.cost.timing.warm_up` at a
fixed thread count (`fixed_threads`); pytest-benchmark does the timing. On CUDA each timed call ends with a
device synchronisation.

Each benchmark is timed interleaved with a reference of the same mode (the `track` fixture, perf_tracker.py), so
the regression check compares times relative to a workload that suffered the same machine load: for layers an
``nn.Conv2d`` of the layers' shape; for networks `torch_backbone`, the small backbone's layer types and widths
built from torch modules only (conv, batch norm, ReLU, average pooling, linear head). A like-for-like reference
matters: measured on the development machine, cnn's time relative to a single conv drifted by 11-15 % between
processes, relative to the torch backbone by 5 % (docs/perf.md). Being torch only, the reference also keeps
regressions of the shared backbone code (baselines/common.py) visible in every network's ratio. Networks are
built at ``width=0.25`` (the quick profile's width, ~11k parameters): the same code paths at a sixteenth of the
cost, so enough interleaved rounds fit in the 5-minute budget of ``tox -e perf``.

Which models: every ``layer_*`` model, and the small networks (ResNet-18-scale ones only when named in
``EQUIBENCH_BENCH_MODELS``). In the plain test run (benchmarks disabled: each body runs once as a correctness
check) only a cheap representative subset of the networks runs; ``EQUIBENCH_BENCH_MODELS=all`` or a comma list
overrides both choices.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from bench.cost.flops import count_flops
from bench.cost.steps import count_parameters, eval_step, exported, make_input, make_step
from bench.cost.timing import fixed_threads, warm_up
from bench.models import list_models

LAYER_INPUT = {"batch": 8, "in_channels": 16, "resolution": 32}    # 16 -> 16 channels, kernel 7 (zoo default)
LAYER_KERNEL = 7
NETWORK_INPUT = {"batch": 8, "in_channels": 1, "resolution": 32}
NETWORK_KWARGS = {"width": 0.25}
SMOKE_NETWORKS = ("cnn", "gmr", "c8")  # plain run: plain, GMR, escnn group conv
NOT_EXPORTABLE = ("layer_gmr_official",)  # the official GMR package has no plain-conv export
WARMUP = 2


def _benchmarks_enabled(config: pytest.Config) -> bool:
    opt = config.getoption
    try:
        return bool(opt("benchmark_enable") or opt("benchmark_only")) or not opt("benchmark_disable")
    except ValueError:  # pytest-benchmark not installed
        return False


def selected_models(level: str, enabled: bool) -> list[str]:
    names = list_models(level=level)
    if level == "network":
        names = [n for n in names if "resnet18" not in n]
    env = os.environ.get("EQUIBENCH_BENCH_MODELS", "").strip()
    if env == "all":
        return list_models(level=level)
    if env:
        wanted = [n.strip() for n in env.split(",") if n.strip()]
        return [n for n in list_models(level=level) if n in wanted]
    if level == "network" and not enabled:
        names = [n for n in names if n in SMOKE_NETWORKS]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    enabled = _benchmarks_enabled(metafunc.config)
    for fixture, level in (("layer_name", "layer"), ("network_name", "network"), ("exportable_name", "layer")):
        if fixture in metafunc.fixturenames:
            names = selected_models(level, enabled)
            if fixture == "exportable_name":
                names = [n for n in names if n not in NOT_EXPORTABLE]
            metafunc.parametrize(fixture, names)


def _layer_input(device: torch.device) -> torch.Tensor:
    return make_input(LAYER_INPUT["batch"], LAYER_INPUT["in_channels"], LAYER_INPUT["resolution"], device=device)


def _network_input(device: torch.device) -> torch.Tensor:
    return make_input(NETWORK_INPUT["batch"], NETWORK_INPUT["in_channels"], NETWORK_INPUT["resolution"], device=device)


def conv_reference(device: torch.device, mode: str) -> tuple[object, str]:
    """(step, name) of the layers' reference: a plain nn.Conv2d of the zoo layers' shape, in `mode`."""
    c = LAYER_INPUT["in_channels"]
    torch.manual_seed(0)
    conv = nn.Conv2d(c, c, LAYER_KERNEL, padding=LAYER_KERNEL // 2).to(device)
    ref_mode = "train" if mode == "train" else "eval"
    return make_step(conv, _layer_input(device), ref_mode), f"nn.Conv2d({c},{c},{LAYER_KERNEL}) {ref_mode}"


def torch_backbone(in_channels: int, num_classes: int = 10, width: float = NETWORK_KWARGS["width"]) -> nn.Sequential:
    """The networks' reference workload: the small backbone's convolutions (kernels, base widths x `width`),
    each followed by batch norm and ReLU, 5x5 stride-2 average pooling where the backbone pools, a global mean
    and a linear head; plain torch modules, none of the suite's code."""
    from baselines.common import BASE_WIDTHS, KERNELS, POOL_AFTER

    layers: list[nn.Module] = []
    c = in_channels
    for i, (base, k) in enumerate(zip(BASE_WIDTHS, KERNELS)):
        w = max(1, round(base * width))
        layers += [nn.Conv2d(c, w, k, padding=k // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i in POOL_AFTER:
            layers.append(nn.AvgPool2d(5, stride=2, padding=2))
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def network_reference(device: torch.device, mode: str) -> tuple[object, str]:
    torch.manual_seed(0)
    model = torch_backbone(NETWORK_INPUT["in_channels"]).to(device)
    return make_step(model, _network_input(device), mode), f"torch_backbone(width={NETWORK_KWARGS['width']}) {mode}"


def _bench(benchmark, track, model: torch.nn.Module, x: torch.Tensor, mode: str, device: torch.device,
           threads: int, group: str, reference: tuple[object, str]) -> None:
    step = eval_step(model, x) if mode == "eval_exported" else make_step(model, x, mode)
    benchmark.group = group
    benchmark.extra_info.update({"mode": mode, "batch": x.shape[0], "in_channels": x.shape[1],
                                 "resolution": x.shape[-1], "threads": threads, "device": str(device),
                                 "params": count_parameters(model)})
    ref_step, ref_name = reference
    with fixed_threads(threads):
        if mode != "train":  # correctness check: finite output of the right batch size (and a warm-up call)
            out = step()
            assert out.shape[0] == x.shape[0] and torch.isfinite(out).all()
        if benchmark.disabled:
            benchmark(step)  # runs once
            return
        warm_up(step, WARMUP if mode == "train" else WARMUP - 1, device)
        warm_up(ref_step, WARMUP, device)
        if os.environ.get("EQUIBENCH_BENCH_FLOPS") == "1":  # deterministic and slow for escnn: opt-in
            benchmark.extra_info["flops"] = count_flops(step)
        track(benchmark, step, ref_step, ref_name)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_layer(benchmark, track, zoo_model, device, threads, layer_name, mode):
    model = zoo_model(layer_name, LAYER_INPUT["in_channels"])
    _bench(benchmark, track, model, _layer_input(device), mode, device, threads, group=f"layer-{mode}",
           reference=conv_reference(device, mode))


def test_layer_exported(benchmark, track, zoo_model, device, threads, exportable_name):
    """The exported (plain Conv2d) form computes the same outputs and is timed as eval_exported."""
    model = zoo_model(exportable_name, LAYER_INPUT["in_channels"]).eval()
    plain = exported(model)
    x = _layer_input(device)
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-4, rtol=1e-4)
    _bench(benchmark, track, plain, x, "eval_exported", device, threads, group="layer-eval_exported",
           reference=conv_reference(device, "eval"))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_network(benchmark, track, zoo_model, device, threads, network_name, mode):
    model = zoo_model(network_name, NETWORK_INPUT["in_channels"], **NETWORK_KWARGS)
    _bench(benchmark, track, model, _network_input(device), mode, device, threads, group=f"network-{mode}",
           reference=network_reference(device, mode))
