"""Zoo benchmarks: eval forward, train step and (where the layer has ``export()``) the exported eval forward of
every layer model, and eval / train of the small networks.

The callables are the efficiency protocol's (`bench.cost.steps`), warmed up with `bench.cost.timing.warm_up` at a
fixed thread count (`fixed_threads`); pytest-benchmark does the timing. On CUDA each timed call ends with a
device synchronisation.

Which models: every ``layer_*`` model, and the small networks (ResNet-18-scale ones only when named in
``EQUIBENCH_BENCH_MODELS``). In the plain test run (benchmarks disabled: each body runs once as a correctness
check) only a cheap representative subset of the networks runs; ``EQUIBENCH_BENCH_MODELS=all`` or a comma list
overrides both choices.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.cost.flops import count_flops
from bench.cost.steps import count_parameters, eval_step, exported, make_input, make_step
from bench.cost.timing import fixed_threads, synchronize, warm_up
from bench.models import list_models

LAYER_INPUT = {"batch": 8, "in_channels": 16, "resolution": 32}    # 16 -> 16 channels, kernel 7 (zoo default)
NETWORK_INPUT = {"batch": 8, "in_channels": 1, "resolution": 32}
SMOKE_NETWORKS = ("cnn", "gmr", "c8")  # plain run: plain, GMR, escnn group conv
NOT_EXPORTABLE = ("layer_gmr_official",)  # the official GMR package has no plain-conv export
WARMUP = 3


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


def _bench(benchmark, model: torch.nn.Module, x: torch.Tensor, mode: str, device: torch.device, threads: int,
           group: str) -> None:
    step = eval_step(model, x) if mode == "eval_exported" else make_step(model, x, mode)
    benchmark.group = group
    benchmark.extra_info.update({"mode": mode, "batch": x.shape[0], "in_channels": x.shape[1],
                                 "resolution": x.shape[-1], "threads": threads, "device": str(device),
                                 "params": count_parameters(model)})
    with fixed_threads(threads):
        if mode != "train":  # correctness check: finite output of the right batch size
            out = step()
            assert out.shape[0] == x.shape[0] and torch.isfinite(out).all()
        if benchmark.disabled:
            benchmark(step)  # runs once
            return
        warm_up(step, WARMUP, device)
        benchmark.extra_info["flops"] = count_flops(step)

        def timed() -> None:
            step()
            synchronize(device)

        benchmark(timed)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_layer(benchmark, zoo_model, device, threads, layer_name, mode):
    model = zoo_model(layer_name, LAYER_INPUT["in_channels"])
    x = make_input(LAYER_INPUT["batch"], LAYER_INPUT["in_channels"], LAYER_INPUT["resolution"], device=device)
    _bench(benchmark, model, x, mode, device, threads, group=f"layer-{mode}")


def test_layer_exported(benchmark, zoo_model, device, threads, exportable_name):
    """The exported (plain Conv2d) form computes the same outputs and is timed as eval_exported."""
    model = zoo_model(exportable_name, LAYER_INPUT["in_channels"]).eval()
    plain = exported(model)
    x = make_input(LAYER_INPUT["batch"], LAYER_INPUT["in_channels"], LAYER_INPUT["resolution"], device=device)
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-4, rtol=1e-4)
    _bench(benchmark, plain, x, "eval_exported", device, threads, group="layer-eval_exported")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_network(benchmark, zoo_model, device, threads, network_name, mode):
    model = zoo_model(network_name, NETWORK_INPUT["in_channels"])
    x = make_input(NETWORK_INPUT["batch"], NETWORK_INPUT["in_channels"], NETWORK_INPUT["resolution"], device=device)
    _bench(benchmark, model, x, mode, device, threads, group=f"network-{mode}")
