"""CUDA correctness: the GMR layer on the GPU against the same layer in float64 on the CPU, `impl="auto"`
measuring on CUDA, exact grid equivariance of GMR and C8 networks on CUDA, and the efficiency protocol's CUDA
memory and timing path.

Marker `cuda`: skipped without a CUDA device, unless EQUIBENCH_REQUIRE_CUDA=1 (set by ``python -m
bench.gpu_check``), where a missing device is a failure. EQUIBENCH_TEST_DEVICE=cpu runs them on the CPU instead:
a rehearsal of the GPU check on a machine without one (the comparisons then hold trivially, the code paths run).

TF32 is switched off inside each test (cuDNN uses it for float32 convolutions by default on Ampere and later,
which changes results at the 1e-3 level): these tests check the float32 arithmetic; the efficiency numbers of a
GPU run use torch's defaults, recorded in environment.json.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

import gmr
from bench.jobs import RunContext

pytestmark = pytest.mark.cuda

GRID_OPS = {
    "rot90": lambda t: torch.rot90(t, 1, (-2, -1)),
    "rot180": lambda t: torch.rot90(t, 2, (-2, -1)),
    "flip_h": lambda t: torch.flip(t, (-1,)),
    "transpose": lambda t: t.transpose(-2, -1),
}


@pytest.fixture(scope="module")
def device() -> torch.device:
    """The device under test: CUDA, or EQUIBENCH_TEST_DEVICE; a skip (or a failure when required) without."""
    override = os.environ.get("EQUIBENCH_TEST_DEVICE")
    if override:
        return torch.device(override)
    if not torch.cuda.is_available():
        msg = f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda})"
        if os.environ.get("EQUIBENCH_REQUIRE_CUDA") == "1":
            pytest.fail(msg + " -- required because EQUIBENCH_REQUIRE_CUDA=1")
        pytest.skip(msg)
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture
def autotune_on():
    was = gmr.autotune_enabled()
    gmr.set_autotune(True)
    gmr.clear_autotune_cache()
    yield
    gmr.clear_autotune_cache()
    gmr.set_autotune(was)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b|, in float64 on the CPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("impl", ["dense", "two_stage", "auto"])
@pytest.mark.parametrize("smoothing", ["ring", "radius"])
def test_gmr_layer_on_device_matches_float64_cpu(device, impl, smoothing, autotune_on):
    torch.manual_seed(0)
    ref = gmr.GMRConv2d(8, 16, 9, padding=4, stride=1, smoothing=smoothing, impl=impl).double()
    with torch.no_grad():
        ref.log_sigmas.add_(0.3 * torch.randn_like(ref.log_sigmas))
    layer = copy.deepcopy(ref).float().to(device)
    x = torch.randn(4, 8, 33, 33, dtype=torch.float64)
    xd = x.float().to(device).requires_grad_(True)
    x.requires_grad_(True)
    for training in (True, False):
        ref.train(training)
        layer.train(training)
        assert _rel(layer(xd), ref(x)) <= 1e-5, (impl, training)
    ref.train()
    layer.train()
    ref(x).square().sum().backward()
    layer(xd).square().sum().backward()
    for (name, p_ref), p in zip(ref.named_parameters(), layer.parameters()):
        assert _rel(p.grad, p_ref.grad) <= 1e-4, name
    assert _rel(xd.grad, x.grad) <= 1e-4


def test_auto_measures_on_the_device_and_uses_the_winner(device, autotune_on):
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(16, 16, 9, padding=4, impl="auto").to(device)
    x = torch.randn(8, 16, 32, 32, device=device)
    with torch.no_grad():
        y = layer.eval()(x)
    layer.train()
    layer(x.clone().requires_grad_(True)).sum().backward()
    results = gmr.autotune_results()
    measured = [v for k, v in results.items() if k[1][2].type == device.type]
    assert len(measured) == 2, results  # one eval and one training signature, both timed on the device
    for r in measured:
        assert r["impl"] in ("dense", "two_stage") and 0 < r["dense_s"] < 1 and 0 < r["two_stage_s"] < 1, r
    eval_winner = next(v["impl"] for k, v in results.items() if k[1][5] is False)
    forced = copy.deepcopy(layer)
    forced.impl = eval_winner
    with torch.no_grad():
        assert _rel(y, forced.eval()(x)) <= 1e-6


@pytest.mark.parametrize(("name", "ops"), [("gmr_resnet18", tuple(GRID_OPS)), ("c8", ("rot90", "rot180"))])
def test_network_logits_exactly_invariant_on_the_grid(device, name, ops):
    from bench.models import create_model

    torch.manual_seed(0)
    kw = {"width": 0.25} if name == "c8" else {}
    model = create_model(name, 3, 10, **kw).to(device)
    side = 32 if name == "gmr_resnet18" else 29  # gmr: divisible by 16; escnn strided pooling: odd sides
    with torch.no_grad():
        model.train()(torch.randn(4, 3, side, side, device=device))  # BN statistics that are not the identity
        model.eval()
        x = torch.randn(1, 3, side, side, device=device)
        logits = model(torch.cat([x] + [GRID_OPS[op](x) for op in ops]))  # C8 has no reflections
    assert _rel(logits[1:], logits[:1].expand_as(logits[1:])) <= 1e-4


def test_plain_network_fails_the_same_check(device):
    from bench.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", 3, 10).to(device).eval()
    x = torch.randn(1, 3, 32, 32, device=device)
    with torch.no_grad():
        logits = model(torch.cat([x, GRID_OPS["rot90"](x)]))
    assert _rel(logits[1:], logits[:1]) > 1e-2


def test_efficiency_job_measures_memory_and_latency_on_the_device(device, tmp_path):
    """The GPU profile's code path: in-process CUDA peak memory (CPU: the probe subprocess), timing, rows."""
    from protocol_helpers import make_job, run_job

    job = make_job("efficiency", "layer_gmr", device=str(device), batch=2, resolution=16, layer_channels=8,
                   kernel_size=5, kernel_sizes=[], channels=[], resolutions=[], batch_sizes=[1],
                   metrics=["params", "latency_ms", "peak_memory_mb"], sweep_metrics=["peak_memory_mb"],
                   modes=["eval", "train"], warmup=1, min_run_time=0.01, min_runs=3, threads=1)
    rows = run_job(job, RunContext(out_dir=tmp_path, device=device))
    bad = [r for r in rows if r["status"] != "ok"]
    assert not bad, bad
    step = {(r["mode"], r["batch"]): r["value"] for r in rows
            if r["metric"] == "peak_memory_mb" and r["memory"] == "step"}
    assert set(step) == {("eval", 2), ("train", 2), ("eval", 1), ("train", 1)}
    if device.type == "cuda":  # the allocator's peak: training holds more than eval, batch 2 more than batch 1
        assert step[("train", 2)] > step[("eval", 2)] > 0 and step[("train", 2)] > step[("train", 1)]
        assert {r["memory_method"] for r in rows if r["metric"] == "peak_memory_mb"} == {"cuda_allocator"}
