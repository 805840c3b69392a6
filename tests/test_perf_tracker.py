"""The latency tracker's rule (benchmarks/perf_tracker.py) on crafted samples, and its pytest hook end to end
with a doctored baseline (the rule's inputs are fixed; no assertion depends on how fast anything ran)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import perf_tracker as pt  # noqa: E402


def info(ratios, timer="time.process_time", reference="ref"):
    return {"version": 1, "reference": reference, "timer": timer, "ratios": list(map(float, ratios)),
            "reference_median_s": 1e-3}


def samples(center: float, n: int = 40, jitter: float = 0.02, seed: int = 0) -> np.ndarray:
    return center * (1 + jitter * np.random.default_rng(seed).standard_normal(n))


def steady(center: float) -> list[float]:
    """Relative times of a benchmark in earlier runs of a machine where it hardly drifts (limit = threshold)."""
    return [center * f for f in (1.0, 1.002, 0.998, 1.001, 0.999, 1.0)]


def test_plan_rounds():
    assert pt.plan_rounds(0.01, budget_s=0.3) == 30
    assert pt.plan_rounds(1.0, budget_s=0.3) == pt.MIN_ROUNDS
    assert pt.plan_rounds(1e-6, budget_s=0.3) == pt.MAX_ROUNDS
    assert pt.plan_rounds(0.0) == pt.MAX_ROUNDS


def test_round_ratios_pair_rounds():
    assert pt.round_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError):
        pt.round_ratios([1.0], [1.0, 1.0])


def test_unchanged_and_small_changes_are_ok():
    base = samples(1.5)
    assert pt.judge("b", info(base), info(base)).verdict == pt.OK
    v = pt.judge("b", info(base), info(samples(1.5 * 1.10, seed=1)))
    assert v.verdict == pt.OK and v.change == pytest.approx(1.10, abs=0.02)
    assert v.p_slower < 1e-6  # significant, but below the threshold: not a regression


def test_rise_beyond_threshold_and_spread_is_a_regression():
    v = pt.judge("b", info(samples(1.5)), info(samples(1.5 * 1.3, seed=1)), history=steady(1.5))
    assert v.verdict == pt.REGRESSION and v.change == pytest.approx(1.3, abs=0.02)
    assert v.baseline == pytest.approx(1.5, abs=0.02) and v.p_slower < pt.DEFAULT_ALPHA
    # a stricter threshold lets it pass; a looser one catches smaller rises
    assert pt.judge("b", info(samples(1.5)), info(samples(1.95, seed=1)), threshold=0.5).verdict == pt.OK
    assert pt.judge("b", info(samples(1.5)), info(samples(1.5 * 1.10, seed=1)), threshold=0.05,
                    history=steady(1.5)).verdict == pt.REGRESSION


def test_rise_within_the_rounds_spread_is_not_a_regression():
    """Medians 1.5 -> 2.0 (+33 %), but the rounds overlap so much that the rank test cannot tell them apart."""
    base = [1.0] * 5 + [2.0] * 5
    now = [1.0] * 4 + [2.0] * 6
    v = pt.judge("b", info(base), info(now), history=steady(1.5))
    assert v.change == pytest.approx(4 / 3) and v.limit == pytest.approx(1 + pt.DEFAULT_THRESHOLD)
    assert v.p_slower > 0.1 and v.verdict == pt.OK and "rounds' spread" in v.note


def test_run_to_run_spread_raises_the_limit_of_a_noisy_benchmark():
    assert pt.spread_bounds([1.0, 1.1]) is None  # too few runs: threshold and rank test alone
    # logs 0, ln 1.1 alternating: mean 0.04766, sd 0.05220 (n 6), t(0.999, 5) = 5.8934, sqrt(1 + 1/6) = 1.0801
    # -> bounds exp(0.04766 -+ 5.8934 * 0.05220 * 1.0801) = exp(-0.2847), exp(0.3800) = 0.752, 1.462
    noisy = [1.0, 1.1, 1.0, 1.1, 1.0, 1.1]
    lower, upper = pt.spread_bounds(noisy)
    assert upper == pytest.approx(1.4623, abs=2e-3) and lower == pytest.approx(0.7523, abs=2e-3)
    base = samples(1.0)
    v = pt.judge("b", info(base), info(samples(1.40, seed=1)), history=noisy)
    assert v.limit == pytest.approx(upper, rel=0.03) and v.verdict == pt.OK and "run-to-run spread" in v.note
    # no history (a new machine): the spread is unknown, +40 % is unconfirmed, only +50 % and more fail
    v = pt.judge("b", info(base), info(samples(1.40, seed=1)))
    assert v.verdict == pt.UNCONFIRMED and v.limit == pytest.approx(1 + pt.COLD_THRESHOLD)
    assert pt.judge("b", info(base), info(samples(1.60, seed=1))).verdict == pt.REGRESSION
    assert pt.judge("b", info(base), info(samples(1.60, seed=2)), history=noisy).verdict == pt.REGRESSION
    quiet = [1.0, 1.01, 0.995, 1.005, 1.0]  # a steady benchmark keeps the threshold as its limit
    v = pt.judge("b", info(base), info(samples(1.25, seed=1)), history=quiet)
    assert v.limit == pytest.approx(1 + pt.DEFAULT_THRESHOLD) and v.verdict == pt.REGRESSION


def test_history_values_match_reference_and_clock():
    def run(value, timer="time.process_time"):
        return [{"fullname": "t", "extra_info": {pt.TRACKER_KEY: info([value] * 3, timer=timer)}}]

    now = info([1.0])
    assert pt.history_values([run(1.0), run(1.3, timer="time.perf_counter"), run(1.1), []], "t", now) == [1.0, 1.1]
    def bench(center, seed):
        return [{"fullname": "t", "extra_info": {pt.TRACKER_KEY: info(samples(center, seed=seed))}}]

    noisy = [run(v) for v in (1.0, 1.1, 1.0, 1.1, 1.0, 1.1)]
    verdicts = pt.compare(bench(1.0, 0), bench(1.4, 1), history=noisy)
    assert verdicts[0].limit == pytest.approx(pt.spread_bounds([1.0, 1.1] * 3)[1] / verdicts[0].baseline)
    assert verdicts[0].verdict == pt.OK
    # 2 saved runs are too few to measure the spread
    assert pt.compare(bench(1.0, 0), bench(1.4, 1), history=noisy[-2:])[0].verdict == pt.UNCONFIRMED


def test_faster_is_improved_and_missing_data_is_reported():
    assert pt.judge("b", info(samples(1.5)), info(samples(1.0, seed=1)), history=steady(1.5)).verdict == pt.IMPROVED
    assert pt.judge("b", None, info(samples(1.0))).verdict == pt.NEW
    assert pt.judge("b", info(samples(1.0)), None).verdict == pt.UNTRACKED
    v = pt.judge("b", info(samples(1.0), timer="time.perf_counter"), info(samples(1.0)))
    assert v.verdict == pt.UNTRACKED and "timer" in v.note


def test_compare_matches_fullnames_and_formats_a_table():
    def bench(name, ratios):
        return {"fullname": f"benchmarks/bench_zoo.py::{name}", "extra_info": {pt.TRACKER_KEY: info(ratios)}}

    base = [bench("test_a", samples(1.0)), bench("test_b", samples(2.0))]
    now = [bench("test_a", samples(1.0, seed=1)), bench("test_b", samples(3.0, seed=1)),
           {"fullname": "benchmarks/x.py::test_plain", "extra_info": {}}]
    verdicts = pt.compare(base, now, history=[base, base, base])
    assert [v.verdict for v in verdicts] == [pt.OK, pt.REGRESSION, pt.UNTRACKED]
    assert [v.name for v in pt.regressions(verdicts)] == ["benchmarks/bench_zoo.py::test_b"]
    text = pt.format_table(verdicts, source="0001.json", reference_change=1.8)
    lines = text.splitlines()
    assert "baseline 0001.json" in lines[0] and "1.80x" in lines[1]
    assert lines[2].split() == ["benchmark", "baseline", "now", "ratio", "limit", "p", "verdict"]
    assert lines[3].startswith("bench_zoo::test_b") and lines[3].endswith("REGRESSION")  # regressions first
    assert lines[-1] == "1 regression(s) in 3 benchmark(s)"


# -- the pytest hook, end to end ----------------------------------------------------------------------------
TINY_BENCH = '''
def work():
    s = 0
    for i in range(3000):
        s += i * i
    return s


def test_tiny(benchmark, track):
    work()
    track(benchmark, work, work, "work")
'''


def run_pytest(folder: Path, storage: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BENCHMARKS.parent), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", str(folder), "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "--benchmark-enable", "--benchmark-only", "--benchmark-autosave", f"--benchmark-storage=file://{storage}",
           "--benchmark-compare", "--benchmark-timer=time.process_time", "--perf-check", *extra]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def doctor_latest(storage: Path, factor: float) -> None:
    """Scale the per-round ratios of the latest saved run (as if the baseline had been `factor` x as slow)."""
    path = sorted(storage.glob("*/*.json"))[-1]
    data = json.loads(path.read_text())
    for bench in data["benchmarks"]:
        tracker = bench["extra_info"][pt.TRACKER_KEY]
        tracker["ratios"] = [r * factor for r in tracker["ratios"]]
    path.write_text(json.dumps(data))


def test_perf_check_fails_the_session_only_on_a_regression(tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    shutil.copy(BENCHMARKS / "conftest.py", folder / "conftest.py")
    shutil.copy(BENCHMARKS / "perf_tracker.py", folder / "perf_tracker.py")
    (folder / "bench_tiny.py").write_text(TINY_BENCH)
    storage = tmp_path / "storage"

    first = run_pytest(folder, storage)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "no baseline to compare with" in first.stdout
    saved = json.loads(sorted(storage.glob("*/*.json"))[-1].read_text())["benchmarks"][0]["extra_info"]
    assert saved[pt.TRACKER_KEY]["timer"] == "time.process_time" and saved[pt.TRACKER_KEY]["rounds"] >= pt.MIN_ROUNDS

    doctor_latest(storage, 0.5)  # the baseline was twice as fast as now: beyond even the 50 % of a new machine
    slower = run_pytest(folder, storage)
    assert slower.returncode == 1, slower.stdout + slower.stderr
    row = next(line for line in slower.stdout.splitlines() if line.startswith("bench_tiny::test_tiny"))
    assert row.split()[-1] == "REGRESSION"
    assert "1 regression(s) in 1 benchmark(s)" in slower.stdout

    doctor_latest(storage, 3.0)  # the baseline was three times slower: an improvement passes
    faster = run_pytest(folder, storage)
    assert faster.returncode == 0, faster.stdout + faster.stderr
    assert "improved" in faster.stdout and "0 regression(s)" in faster.stdout
