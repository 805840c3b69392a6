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
