"""Known answers for the cost helpers in bench.cost: FLOPs, warm-up-aware timing, the CPU peak-memory probe.

No test asserts a measured time: the timing test drives the Timer with a fake clock.
"""

import importlib.util
import shutil

import pytest
import torch
from torch import nn

from bench.cost.flops import (
    conv2d_flops,
    count_flops,
    gmr_dense_flops,
    gmr_two_stage_flops,
    model_flops,
)
from bench.cost.memory import ProbeSpec, cpu_step_memory_in_process, probe_cpu_subprocess
from bench.cost.steps import eval_step, is_oom, train_step
from bench.cost.timing import fixed_threads, time_callable

HAS_GMR = importlib.util.find_spec("gmr") is not None and importlib.util.find_spec("gmr.conv") is not None


# -- FLOPs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,c_in,c_out,k,bias", [(8, 8, 3, 5, 3, False), (12, 7, 4, 6, 5, True),
                                                   (9, 9, 1, 2, 9, False)])
def test_conv2d_forward_flops_are_2_hw_cin_cout_k2(h, w, c_in, c_out, k, bias):
    conv = nn.Conv2d(c_in, c_out, k, padding="same", bias=bias)
    x = torch.randn(2, c_in, h, w)
    expected = 2 * h * w * c_in * c_out * k * k * 2  # per image x batch 2
    assert conv2d_flops(h, w, c_in, c_out, k, batch=2) == expected
    assert count_flops(eval_step(conv, x)) == expected
    assert model_flops(conv, x, "eval") == expected


def test_conv2d_train_step_flops_are_forward_plus_weight_gradient():
    # the input needs no gradient, so backward computes only the weight gradient: one more forward's worth
    conv = nn.Conv2d(4, 6, 3, padding="same", bias=False)
    x = torch.randn(1, 4, 10, 10)
    assert model_flops(conv, x, "train") == 2 * conv2d_flops(10, 10, 4, 6, 3)


def test_two_conv_train_step_adds_the_input_gradient_of_the_second_layer():
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding="same", bias=False), nn.Conv2d(3, 4, 5, padding="same", bias=False))
    x = torch.randn(1, 2, 6, 6)
    f1, f2 = conv2d_flops(6, 6, 2, 3, 3), conv2d_flops(6, 6, 3, 4, 5)
    assert model_flops(net, x, "eval") == f1 + f2
    assert model_flops(net, x, "train") == 2 * f1 + 3 * f2


@pytest.mark.skipif(not HAS_GMR, reason="gmr package not available")
@pytest.mark.parametrize("k,c_in,c_out", [(5, 4, 6), (9, 8, 12)])
def test_gmr_dense_and_two_stage_flops_follow_the_cost_formula(k, c_in, c_out):
    from gmr.conv import GMRConv2d

    x = torch.randn(2, c_in, 11, 11)
    dense = GMRConv2d(c_in, c_out, k, padding="same", impl="dense")
    two = GMRConv2d(c_in, c_out, k, padding="same", impl="two_stage")
    R = dense.num_rings
    # steady state: the eval kernel cache is built by the (uncounted) warm-up call
    assert model_flops(dense, x, "eval") == gmr_dense_flops(11, 11, c_in, c_out, k, batch=2)
    assert model_flops(two, x, "eval") == gmr_two_stage_flops(11, 11, c_in, c_out, k, R, batch=2)
    assert gmr_two_stage_flops(11, 11, c_in, c_out, k, R) == 2 * 121 * c_in * R * (k * k + c_out)
    # the first eval call also assembles the kernel: that one-time work is what the warm-up keeps out
    fresh = GMRConv2d(c_in, c_out, k, padding="same", impl="dense")
    assert count_flops(eval_step(fresh, x)) > gmr_dense_flops(11, 11, c_in, c_out, k, batch=2)


# -- training FLOPs of grouped convolutions (torch's convolution_backward formula drops `groups`) -----------
def fwd_bwd(module: nn.Module, x: torch.Tensor):
    """One forward + backward with the input gradient requested too: fwd + input-grad + weight-grad."""
    leaf = x.detach().clone().requires_grad_()

    def step():
        module(leaf).square().sum().backward()

    return step


@pytest.mark.parametrize("c_in,c_out,groups", [(8, 12, 1), (8, 12, 4), (16, 16, 16), (6, 18, 6)])
def test_training_flops_of_dense_grouped_and_depthwise_convs_are_three_forwards(c_in, c_out, groups):
    conv = nn.Conv2d(c_in, c_out, 5, padding="same", groups=groups, bias=False)
    x = torch.randn(2, c_in, 9, 7)
    fwd = conv2d_flops(9, 7, c_in, c_out, 5, batch=2, groups=groups)
    assert fwd == 2 * 2 * 9 * 7 * (c_in // groups) * c_out * 25
    assert count_flops(eval_step(conv, x)) == fwd
    assert count_flops(fwd_bwd(conv, x)) == 3 * fwd  # torch alone: 2 * fwd + groups * fwd
    assert model_flops(conv, x, "train") == 2 * fwd  # train step: the input needs no gradient


def test_strided_and_transposed_grouped_convs_count_backward_at_forward_cost():
    down = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False)
    x = torch.randn(1, 8, 10, 10)  # output 5x5
    fwd = 2 * 25 * 8 * 1 * 9
    assert count_flops(eval_step(down, x)) == fwd and count_flops(fwd_bwd(down, x)) == 3 * fwd
    up = nn.ConvTranspose2d(8, 12, 3, stride=2, groups=4, bias=False)
    x = torch.randn(1, 8, 5, 5)  # a transposed conv pairs each weight entry with each *input* position
    fwd = 2 * 25 * 8 * (12 // 4) * 9
    assert count_flops(eval_step(up, x)) == fwd and count_flops(fwd_bwd(up, x)) == 3 * fwd


@pytest.mark.skipif(not HAS_GMR, reason="gmr package not available")
def test_gmr_layer_train_step_costs_two_to_three_forwards_on_both_paths():
    """64 channels, k = 9, 32x32, batch 1 (the audit's case: two-stage came out at 38x with torch's formula)."""
    from gmr.conv import GMRConv2d

    x = torch.randn(1, 64, 32, 32)
    c, k, hw = 64, 9, 32 * 32
    for impl in ("dense", "two_stage"):
        layer = GMRConv2d(c, c, k, padding="same", impl=impl)
        R = layer.num_rings
        eval_flops, train_flops = model_flops(layer, x, "eval"), model_flops(layer, x, "train")
        if impl == "dense":
            # conv forward + weight gradient, and the kernel assembly K = W . basis with its two gradients
            expected = 2 * gmr_dense_flops(32, 32, c, c, k) + 3 * (2 * c * c * R * k * k)
            assert eval_flops == gmr_dense_flops(32, 32, c, c, k)
        else:
            # depthwise stage: forward + basis gradient; 1x1 mix: forward + weight gradient + input gradient
            expected = 2 * (2 * hw * c * R * k * k) + 3 * (2 * hw * c * R * c)
            assert eval_flops == gmr_two_stage_flops(32, 32, c, c, k, R)
        # the rest is the R-ring basis (R x R mixing of R x k^2 masks): < 0.01 %
        assert train_flops == pytest.approx(expected, rel=1e-4)
        assert 2.0 <= train_flops / eval_flops <= 3.0


def resnet18_stages(side: int, width: int, kernels: tuple[int, ...], stem_side: int, first_stage_side: int):
    """Conv layers of a ResNet-18 (basic blocks 2-2-2-2, widths width * 2^i) as (positions, c_in, c_out, k):
    stage i runs at first_stage_side / 2^i; the shortcut of a downsampling block is a 1x1 conv."""
    layers = [(stem_side * stem_side, -1, width, -1)]  # the stem, filled in by the caller
    c_prev = width
    for i, k in enumerate(kernels):
        c, p = width * 2**i, (first_stage_side // 2**i) ** 2
        layers += [(p, c_prev, c, k), (p, c, c, k), (p, c, c, k), (p, c, c, k)]
        if c_prev != c:
            layers.append((p, c_prev, c, 1))
        c_prev = c
    return layers


def test_gmr_resnet18_trains_for_a_fraction_of_resnet18s_flops():
    """Analytic train-step FLOPs (batch 1, 32x32x3, 10 classes) of both registry networks.

    Every layer costs its forward plus the weight gradient plus (except where it reads the input image) the
    input gradient. resnet18: CIFAR stem 3x3 at 32^2, stages 64..512 at 32, 16, 8, 4 px. gmr_resnet18
    (match='params': base width w = 107, two-stage GMR layers): stem 5x5 at 32^2 then AvgPool, stages w..8w
    with k = 9, 9, 5, 5 (R = k//2 + 1 rings) at 16, 8, 4, 2 px; a GMR layer is a depthwise stage
    (2 P C_in R k^2) and a 1x1 mix (2 P C_in R C_out). Elementwise work (BN, ReLU, pools) is not counted."""
    from bench.models import create_model

    x = torch.randn(1, 3, 32, 32)
    plain = create_model("resnet18", 3, 10)
    gmr_net = create_model("gmr_resnet18", 3, 10, impl="two_stage")
    w = gmr_net.conv1.out_channels
    assert w == 107

    plain_total = 2 * (2 * 1024 * 3 * 64 * 9) + 3 * (2 * 512 * 10)  # stem (no input grad) + fc
    for p, ci, co, k in resnet18_stages(32, 64, (3, 3, 3, 3), 32, 32)[1:]:
        plain_total += 3 * 2 * p * ci * co * k * k
    gmr_total = 2 * (2 * 1024 * 3 * 3 * 25) + 3 * (2 * 1024 * 3 * 3 * w) + 3 * (2 * 8 * w * 10)  # stem, fc
    for p, ci, co, k in resnet18_stages(32, w, (9, 9, 5, 5), 32, 16)[1:]:
        if k == 1:
            gmr_total += 3 * 2 * p * ci * co
        else:
            rings = k // 2 + 1
            gmr_total += 3 * (2 * p * ci * rings * k * k) + 3 * (2 * p * ci * rings * co)
    measured_plain = model_flops(plain, x, "train")
    measured_gmr = model_flops(gmr_net, x, "train")
    assert measured_plain == plain_total
    assert measured_gmr == pytest.approx(gmr_total, rel=1e-3)  # + the ring bases and kernel repeats
    assert measured_gmr / measured_plain == pytest.approx(gmr_total / plain_total, rel=1e-3)
    assert 0.4 < gmr_total / plain_total < 0.5  # ~0.45 at 32^2 (the audit's 0.36 was at CIFAR's padded 33^2)


# -- timing --------------------------------------------------------------------------------------------------
class FakeClock:
    """A clock that only the measured callable advances: slow (10 ms) for its first `slow_calls` calls."""

    def __init__(self, slow_calls: int) -> None:
        self.now = 0.0
        self.calls = 0
        self.slow_calls = slow_calls

    def __call__(self) -> float:
        return self.now

    def fn(self) -> None:
        self.calls += 1
        self.now += 0.010 if self.calls <= self.slow_calls else 0.0001


def test_timing_median_reflects_steady_state_after_warmup():
    clock = FakeClock(slow_calls=5)
    res = time_callable(clock.fn, warmup=5, min_run_time=0.03, min_runs=5, timer=clock)
    assert res.median_ms == pytest.approx(0.1)
    assert res.iqr_ms == pytest.approx(0.0, abs=1e-9)
    assert res.runs >= 5 and res.warmup == 5


def test_timing_without_warmup_sees_the_slow_first_calls():
    clock = FakeClock(slow_calls=5)
    res = time_callable(clock.fn, warmup=0, min_run_time=0.03, min_runs=5, timer=clock)
    assert res.median_ms == pytest.approx(10.0)


def test_timing_tops_up_to_min_runs():
    clock = FakeClock(slow_calls=0)
    res = time_callable(clock.fn, warmup=0, min_run_time=1e-4, min_runs=7, timer=clock)
    assert res.runs >= 7


def test_fixed_threads_sets_and_restores():
    before = torch.get_num_threads()
    with fixed_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
        res = time_callable(lambda: None, warmup=0, min_run_time=1e-3, threads=1)
        assert res.threads == 1
    assert torch.get_num_threads() == before


# -- steps ---------------------------------------------------------------------------------------------------
def test_train_step_keeps_weights_and_releases_grads():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(4, 1, 6, 6)
    net(x)
    w0 = [p.detach().clone() for p in net.parameters()]
    step = train_step(net, x)
    step()
    step()
    assert all(torch.equal(a, b) for a, b in zip(w0, net.parameters()))  # lr = 0
    assert all(p.grad is None for p in net.parameters())


def test_is_oom_classification():
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ... out of memory"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))


# -- CPU peak memory ------------------------------------------------------------------------------------------
# (the subprocess probe's known-allocation and guard tests run through the protocol in test_efficiency.py)
def test_in_process_cpu_measurement_classifies_oom():
    def step():
        raise torch.OutOfMemoryError("simulated")

    assert cpu_step_memory_in_process(step, warmup=0, mode="eval").status == "oom"


def test_in_process_cpu_measurement_of_a_known_allocation():
    # in this (long-lived, busy) process glibc may reuse freed heap, so only a loose lower bound here; the
    # accurate 10 % check runs in the fresh probe process
    def step():
        return torch.ones(25 * 2**20)  # 100 MiB, kept alive until measured

    res = cpu_step_memory_in_process(step, warmup=0, mode="eval")
    assert res.status == "ok" and res.method in ("VmHWM", "sampled")
    assert res.step_mb > 50


def test_probe_reports_a_child_that_died_without_a_result_as_error():
    spec = ProbeSpec(model="whatever", modes=["eval", "train"])
    res = probe_cpu_subprocess(spec, timeout=60, python=shutil.which("false") or "/bin/false")
    assert {r.status for r in res.values()} == {"error"} and "exited 1" in res["eval"].message
