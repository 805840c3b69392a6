"""impl="auto": the measured winner per signature is cached process-wide and used; measuring off is deterministic.

Timing itself is replaced by a fake (``autotune.time_paths``) wherever a test needs a known winner, so these
tests check the bookkeeping, never the machine's speed (speed goals are measured in ``gmr.perf``)."""

from __future__ import annotations

import math
import pickle
import time

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import gmr
from bench.errors import UsageError
from gmr import autotune
from gmr.cost_model import worth_measuring


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    """Every test starts with measuring on (as by default) and no recorded winners; the process's state is
    restored afterwards."""
    monkeypatch.setattr(autotune, "STATE", autotune.AutotuneState(enabled=True))
    monkeypatch.delenv(autotune.ENV_VAR, raising=False)


class FakeTimer:
    """Stands in for ``autotune.time_paths``: fixed samples per path (three rounds), and a log of the calls."""

    def __init__(self, dense: float, two_stage: float) -> None:
        self.times = {"dense": dense, "two_stage": two_stage}
        self.calls: list[dict] = []

    def __call__(self, runs, **kwargs):
        assert set(runs) == {"dense", "two_stage"}
        self.calls.append(runs)
        return {k: [v] * 3 for k, v in self.times.items()}


def _layer(**kw):
    torch.manual_seed(0)
    return gmr.GMRConv2d(4, 6, 5, padding=2, **kw)


def _path_spy(layer, monkeypatch):
    used: list[str] = []
    original = layer._forward_impl

    def spy(x, pad, impl):
        used.append(impl)
        return original(x, pad, impl)

    monkeypatch.setattr(layer, "_forward_impl", spy)
    return used


@pytest.mark.parametrize("winner", ["dense", "two_stage"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_measured_winner_is_used(monkeypatch, winner, mode):
    fake = FakeTimer(dense=1.0 if winner == "dense" else 2.0, two_stage=1.0 if winner == "two_stage" else 2.0)
    monkeypatch.setattr(autotune, "time_paths", fake)
    layer = _layer().train(mode == "train")
    used = _path_spy(layer, monkeypatch)
    x = torch.randn(2, 4, 8, 8)
    with torch.set_grad_enabled(mode == "train"):
        for _ in range(3):
            layer(x)
        assert layer.resolve_impl(x) == winner
    assert used == [winner] * 3
    assert len(fake.calls) == 1  # measured once, on the first call
    (result,) = gmr.autotune_results().values()
    assert result == {"impl": winner, "dense_s": fake.times["dense"], "two_stage_s": fake.times["two_stage"]}


def test_measurement_overrides_the_cost_model(monkeypatch):
    layer = _layer()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        modelled = layer.eval()._model_impl(x, needs_grad=False)
        other = "two_stage" if modelled == "dense" else "dense"
        monkeypatch.setattr(autotune, "time_paths", FakeTimer(**{modelled: 2.0, other: 1.0}))
        assert layer.resolve_impl(x) == other


def test_cache_key_shares_equal_signatures_and_separates_different_ones(monkeypatch):
    fake = FakeTimer(dense=1.0, two_stage=2.0)
    monkeypatch.setattr(autotune, "time_paths", fake)
    a, b = _layer().eval(), _layer().eval()  # same configuration, separate objects
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        a(x)
        b(x)  # same layer signature and input signature: the process-wide winner, no new measurement
        assert len(fake.calls) == 1
        different_inputs = [
            torch.randn(3, 4, 8, 8),  # batch
            torch.randn(2, 4, 9, 8),  # spatial size
            x.to(torch.bfloat16),  # dtype
            x.contiguous(memory_format=torch.channels_last),  # memory layout
        ]
        for i, y in enumerate(different_inputs, start=2):
            a.to(y.dtype)(y)
            assert len(fake.calls) == i
        a.float()
        _layer(dilation=2).eval()(x)  # another layer configuration, same input
        assert len(fake.calls) == 6
    a.train()
    a(x)  # train mode with autograd: a different mode
    assert len(fake.calls) == 7
    a(x.requires_grad_(True))  # input gradient too (a hidden layer): another backward cost
    assert len(fake.calls) == 8
    keys = list(gmr.autotune_results())
    assert len(keys) == len(set(keys)) == 8


def test_measuring_runs_the_real_paths_without_touching_gradients():
    """Unfaked: both paths are timed with forward + backward in train mode, and the caller sees exactly the
    gradients of an ordinary step (torch.autograd.grad accumulates nothing into .grad)."""
    layer = _layer()
    reference = _layer(impl="dense")
    x = torch.randn(2, 4, 8, 8)
    out = layer(x)
    (result,) = gmr.autotune_results().values()
    assert result["impl"] in ("dense", "two_stage")
    assert math.isfinite(result["dense_s"]) and result["dense_s"] > 0
    assert math.isfinite(result["two_stage_s"]) and result["two_stage_s"] > 0
    assert all(p.grad is None for p in layer.parameters())
    out.square().sum().backward()
    reference(x).square().sum().backward()
    for p, q in zip(layer.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5)


def test_time_paths_gives_no_samples_to_a_failing_path():
    def fails():
        raise RuntimeError("out of memory")

    samples = autotune.time_paths({"dense": lambda: torch.ones(3).sum(), "two_stage": fails}, rounds=2)
    assert len(samples["dense"]) == 2 and all(math.isfinite(t) and t > 0 for t in samples["dense"])
    assert samples["two_stage"] == []
    assert autotune.record("sig", samples) == "dense"
    assert gmr.autotune_results()["sig"]["two_stage_s"] == math.inf
    assert autotune.record("sig2", {"dense": [], "two_stage": []}) is None
    assert "sig2" not in gmr.autotune_results()


def test_decision_uses_paired_ratios_not_minima():
    """Round 1 ran while the machine was idle for dense only; in the other rounds, taken back to back under
    the same load, two_stage is twice as fast. Comparing minima (1 < 2) would pick dense."""
    samples = {"dense": [1.0, 10.0, 10.0], "two_stage": [2.0, 5.0, 5.0]}
    assert autotune.decide(samples) == "two_stage"
    assert autotune.decide({"dense": [1.0, 2.0], "two_stage": [1.0, 2.0]}) == "dense"  # ties go to dense
    assert autotune.decide({"dense": [3.0], "two_stage": []}) == "dense"


def _never_measure(monkeypatch):
    def forbidden(runs, **kwargs):
        raise AssertionError("measured although measuring is off")

    monkeypatch.setattr(autotune, "time_paths", forbidden)


def _choices_and_outputs(x):
    """(impl chosen, output) for a fresh layer in eval and in train mode."""
    results = []
    for mode in ("eval", "train"):
        layer = _layer().train(mode == "train")
        with torch.set_grad_enabled(mode == "train"):
            results.append((layer.resolve_impl(x), layer(x).detach()))
    return results


@pytest.mark.parametrize("switch", ["set_autotune", "env", "deterministic"])
def test_measuring_off_is_the_deterministic_cost_model(monkeypatch, switch):
    _never_measure(monkeypatch)
    if switch == "set_autotune":
        gmr.set_autotune(False)
        assert not gmr.autotune_enabled()
    elif switch == "env":
        monkeypatch.setattr(autotune, "STATE", autotune.AutotuneState(enabled=None))
        monkeypatch.setenv(autotune.ENV_VAR, "0")
        assert not gmr.autotune_enabled()
    else:
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    x = torch.randn(2, 4, 8, 8)
    first, second = _choices_and_outputs(x), _choices_and_outputs(x)
    for (impl_a, out_a), (impl_b, out_b), training in zip(first, second, (False, True)):
        assert impl_a == impl_b == gmr.choose_impl(4, 6, 5, 3, training=training)
        assert torch.equal(out_a, out_b)
    assert not gmr.autotune_results()


def test_set_autotune_forgets_earlier_choices(monkeypatch):
    x = torch.randn(2, 4, 8, 8)
    layer = _layer().eval()
    with torch.no_grad():
        modelled = layer._model_impl(x, needs_grad=False)
        other = "two_stage" if modelled == "dense" else "dense"
        monkeypatch.setattr(autotune, "time_paths", FakeTimer(**{modelled: 2.0, other: 1.0}))
        assert layer.resolve_impl(x) == other
        gmr.set_autotune(False)
        assert layer.resolve_impl(x) == modelled
        gmr.set_autotune(True)
        assert layer.resolve_impl(x) == other  # the process-wide winner is still known
        gmr.clear_autotune_cache()
        monkeypatch.setattr(autotune, "time_paths", FakeTimer(**{modelled: 1.0, other: 2.0}))
        assert layer.resolve_impl(x) == modelled  # measured again


def test_bad_switch_values_are_usage_errors(monkeypatch):
    with pytest.raises(UsageError, match="True or False"):
        gmr.set_autotune("yes")
    monkeypatch.setattr(autotune, "STATE", autotune.AutotuneState(enabled=None))
    monkeypatch.setenv(autotune.ENV_VAR, "sometimes")
    with pytest.raises(UsageError, match="GMR_AUTOTUNE must be one of .*off.*on"):
        gmr.autotune_enabled()


def test_no_measuring_under_a_dispatch_mode_but_known_winners_are_used(monkeypatch):
    """FlopCounterMode (a TorchDispatchMode) must count the layer's own FLOPs, not the timing calls."""
    x = torch.randn(2, 4, 8, 8)
    layer = _layer(impl="auto").eval()
    _never_measure(monkeypatch)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        layer(x)
    modelled = layer._model_impl(x, needs_grad=False)
    dense = _layer(impl=modelled).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as reference:
        dense(x)
    assert counter.get_total_flops() == reference.get_total_flops()
    assert not layer._impl_memo  # a fallback answer is not memoised: a later ordinary call still measures
    other = "two_stage" if modelled == "dense" else "dense"
    monkeypatch.setattr(autotune, "time_paths", FakeTimer(**{modelled: 2.0, other: 1.0}))
    with torch.no_grad():
        layer(x)  # measures: the other path wins
        with FlopCounterMode(display=False) as counted:
            layer(x)
    fixed = _layer(impl=other).eval()
    with torch.no_grad():
        fixed(x)  # builds its kernel cache, as the measurement did for `layer`
        with FlopCounterMode(display=False) as expected:
            fixed(x)
    assert counted.get_total_flops() == expected.get_total_flops() != reference.get_total_flops()


def test_can_measure_refuses_meta_subclasses_and_transforms():
    assert autotune.can_measure(torch.randn(2))
    assert not autotune.can_measure(torch.randn(2, device="meta"))
    assert not autotune.can_measure(torch.nn.Parameter(torch.randn(2)))
    seen = []
    torch.func.vmap(lambda t: seen.append(autotune.can_measure(t)) or t)(torch.randn(3, 2))
    assert seen == [False]


def test_pickles_carry_no_kernels_or_choices_and_pickles_without_the_memo_load(monkeypatch):
    monkeypatch.setattr(autotune, "time_paths", FakeTimer(dense=1.0, two_stage=2.0))
    layer = _layer().eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        want = layer(x)
    assert layer._kernel_cache and layer._impl_memo
    clone = pickle.loads(pickle.dumps(layer))
    assert not clone._kernel_cache and not clone._impl_memo
    state = layer.__getstate__()
    for name in ("_impl_memo", "_impl_memo_generation", "_kernel_cache"):  # as pickled by an older version
        del state[name]
    old = gmr.GMRConv2d.__new__(gmr.GMRConv2d)
    old.__setstate__(state)
    with torch.no_grad():
        assert torch.equal(old(x), want) and torch.equal(clone(x), want)


def _counting(cost_s: float, counter: dict, name: str):
    """A call that burns exactly ``cost_s`` of this thread's CPU time (immune to preemption)."""
    def run():
        counter[name] = counter.get(name, 0) + 1
        end = time.thread_time() + cost_s
        while time.thread_time() < end:
            pass

    return run


def test_time_paths_stops_early_only_when_one_path_is_clearly_ahead():
    calls: dict[str, int] = {}
    clear = autotune.time_paths({"dense": _counting(0.004, calls, "dense"),
                                 "two_stage": _counting(0.0005, calls, "two_stage")}, block_s=0.0, rounds=5,
                                timer=time.thread_time)
    assert len(clear["dense"]) == len(clear["two_stage"]) == autotune.MIN_ROUNDS
    assert calls == {"dense": 1 + autotune.MIN_ROUNDS, "two_stage": 1 + autotune.MIN_ROUNDS}  # + warm-up
    assert autotune.decide(clear) == "two_stage"
    close = autotune.time_paths({"dense": _counting(0.001, {}, "d"), "two_stage": _counting(0.001, {}, "t")},
                                block_s=0.0, rounds=5, timer=time.thread_time)
    assert len(close["dense"]) == 5  # a near tie gets every round


def test_float64_on_cpu_is_decided_by_the_model_without_timing(monkeypatch):
    """The two-stage path in float64 on a CPU falls back to one call per group: never worth timing."""
    _never_measure(monkeypatch)
    layer = _layer().double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    layer(x)
    with torch.no_grad():
        assert layer.eval().resolve_impl(x) == "dense"
    assert not worth_measuring("cpu", torch.float64)
    assert worth_measuring("cpu", torch.float32) and worth_measuring("cuda", torch.float64)
