"""Latency regression tracking that holds on a shared, loaded machine (design and measurements: docs/perf.md).

pytest-benchmark stays the runner and the store; this module adds what its raw-median comparison lacks.

Measurement (`interleaved`): every round times one call of a *reference* workload (an ``nn.Conv2d`` of the same
shape for layers, the plain ``cnn`` for networks; see bench_zoo.py) and then one call of the benchmarked step,
with the same clock. The tracked quantity is the per-round ratio ``target / reference``; its median over the
rounds is the benchmark's *relative time*. Load that slows both calls of a round cancels out of the ratio. With
the CPU-time clock (``--benchmark-timer=time.process_time``, the default of ``tox -e perf`` on CPU) time spent
preempted by other processes is not counted at all. The per-round ratios are stored in the saved JSON under
``extra_info["tracker"]``, next to pytest-benchmark's own statistics of the target.

Decision (`judge`): a benchmark has regressed when its relative time (median per-round ratio) rose above the
baseline's by more than ``threshold`` (default 15 %), **and** lies outside the run-to-run spread measured for
that benchmark, **and** outside the spread of its rounds:

- run-to-run spread: the saved runs of this machine up to the baseline (the last ``HISTORY_RUNS``, at least
  ``MIN_HISTORY``) give the mean m and standard deviation s of the log relative time; the current value must
  exceed the one-sided ``1 - alpha`` prediction bound ``exp(m + t(1 - alpha, n - 1) * s * sqrt(1 + 1/n))``, the
  level a new run of unchanged code stays below with probability 1 - alpha (a control chart on the log ratio,
  Student's t for the few runs). Measured on the 2-core development machine, a ratio drifts by 1-10 % between
  processes for most benchmarks but by up to 35 % for a few (sub-millisecond layers, escnn train steps): no
  within-run statistic sees that, and no single threshold fits both;
- rounds: a one-sided Mann-Whitney U test of the current per-round ratios against the baseline's gives
  ``p < alpha`` (default 0.001), so a median that the rounds' own scatter explains does not count.

With fewer than ``MIN_HISTORY`` saved runs (a new machine) the benchmark's spread is unknown: a rise beyond the
threshold is listed as ``unconfirmed`` and does not fail the run unless it exceeds ``COLD_THRESHOLD`` (50 %,
above the largest drift of unchanged code measured, 35 %).

Offline: ``python benchmarks/perf_tracker.py BASELINE.json CURRENT.json [--history EARLIER.json ...]`` prints the
table and exits 1 on a regression (the files pytest-benchmark saved under ``.benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKER_KEY = "tracker"        # extra_info key of the tracker's data
VERSION = 1
DEFAULT_THRESHOLD = 0.15       # relative rise of the relative time that counts (docs/perf.md: measured drift)
DEFAULT_ALPHA = 1e-3           # one-sided Mann-Whitney U level
HISTORY_RUNS = 10              # saved runs (up to the baseline) that measure a benchmark's run-to-run spread
MIN_HISTORY = 3                # fewer saved runs: the spread is unknown and COLD_THRESHOLD applies
COLD_THRESHOLD = 0.5           # rise that fails without a measured spread (drift of unchanged code: up to 35 %)
MIN_ROUNDS, MAX_ROUNDS = 10, 200
DEFAULT_BUDGET_S = 0.25        # clock seconds per benchmark (target + reference), spread over the rounds

REGRESSION, IMPROVED, UNCONFIRMED, OK, NEW, UNTRACKED = (
    "REGRESSION", "improved", "unconfirmed", "ok", "new", "untracked")


# -- measurement --------------------------------------------------------------------------------------------
def plan_rounds(seconds_per_round: float, budget_s: float = DEFAULT_BUDGET_S, min_rounds: int = MIN_ROUNDS,
                max_rounds: int = MAX_ROUNDS) -> int:
    """Rounds that fit `budget_s` when one round (target + reference) takes `seconds_per_round`, clamped."""
    if seconds_per_round <= 0 or not math.isfinite(seconds_per_round):
        return max_rounds
    return int(min(max_rounds, max(min_rounds, math.ceil(budget_s / seconds_per_round))))


def round_ratios(target_times: Sequence[float], reference_times: Sequence[float]) -> list[float]:
    """Per-round ratios target / reference (rounds are paired: reference first, then target)."""
    if len(target_times) != len(reference_times):
        raise ValueError(f"{len(target_times)} target rounds but {len(reference_times)} reference rounds")
    return [t / r for t, r in zip(target_times, reference_times) if r > 0]


def tracker_info(ratios: Sequence[float], reference_times: Sequence[float], reference: str, timer: str
                 ) -> dict[str, Any]:
    """What goes into ``extra_info["tracker"]`` of one benchmark."""
    return {"version": VERSION, "reference": reference, "timer": timer, "rounds": len(ratios),
            "relative": statistics.median(ratios) if ratios else None,
            "reference_median_s": statistics.median(reference_times) if reference_times else None,
            "ratios": [float(r) for r in ratios]}


def interleaved(benchmark: Any, target: Callable[[], Any], reference: Callable[[], Any], reference_name: str,
                timer: Callable[[], float], timer_name: str, budget_s: float = DEFAULT_BUDGET_S,
                sync: Callable[[], None] = lambda: None) -> Any:
    """Time `target` with pytest-benchmark, one call per round, each round preceded by one timed call of
    `reference` (pytest-benchmark's untimed `setup` hook); store the per-round ratios in extra_info.

    Both callables must already be warmed up. Returns the target's last result. With benchmarks disabled (the
    plain test run) the target runs once, as pytest-benchmark does."""
    if benchmark.disabled:
        return benchmark(target)

    def once(fn: Callable[[], Any]) -> float:
        t0 = timer()
        fn()
        sync()
        return timer() - t0

    probe = once(reference) + once(target)
    rounds = plan_rounds(probe, budget_s)
    ref_times: list[float] = []

    def setup() -> None:
        ref_times.append(once(reference))

    def timed() -> Any:
        out = target()
        sync()
        return out

    result = benchmark.pedantic(timed, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    target_times = list(benchmark.stats.stats.data)
    benchmark.extra_info[TRACKER_KEY] = tracker_info(round_ratios(target_times, ref_times), ref_times,
                                                     reference_name, timer_name)
    return result


# -- decision -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    name: str
    verdict: str                  # REGRESSION | improved | unconfirmed | ok | new | untracked
    baseline: float | None        # relative time (median per-round ratio to the reference)
    now: float | None
    change: float | None          # now / baseline
    p_slower: float | None        # one-sided Mann-Whitney U p-value, now > baseline
    note: str = ""
    limit: float | None = None    # ratio above which it is slower: max(1 + threshold, spread bound / baseline)


def spread_bounds(history: Sequence[float], alpha: float = DEFAULT_ALPHA) -> tuple[float, float] | None:
    """(lower, upper) one-sided 1 - alpha prediction bounds of a benchmark's relative time in a new run, from
    its relative times in earlier runs (log-normal, Student's t); None below MIN_HISTORY runs."""
    from scipy.stats import t

    logs = [math.log(v) for v in history if v and v > 0]
    n = len(logs)
    if n < MIN_HISTORY:
        return None
    m, s = statistics.fmean(logs), statistics.stdev(logs)
    half = float(t.ppf(1 - alpha, n - 1)) * s * math.sqrt(1 + 1 / n)
    return math.exp(m - half), math.exp(m + half)


def _info(bench: Mapping[str, Any]) -> Mapping[str, Any] | None:
    info = (bench.get("extra_info") or {}).get(TRACKER_KEY)
    return info if isinstance(info, Mapping) and info.get("ratios") else None


def judge(name: str, baseline: Mapping[str, Any] | None, now: Mapping[str, Any] | None,
          threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA, history: Sequence[float] = ()
          ) -> Verdict:
    """Verdict of one benchmark from the tracker data (``extra_info["tracker"]``) of the baseline and now;
    `history`: its relative times in the saved runs up to the baseline (the baseline's included)."""
    if now is None:
        return Verdict(name, UNTRACKED, None, None, None, None, "no tracker data in this run")
    now_rel = float(statistics.median(now["ratios"]))
    if baseline is None:
        return Verdict(name, NEW, None, now_rel, None, None, "not in the baseline (or saved without tracker data)")
    for key in ("reference", "timer"):
        if baseline.get(key) != now.get(key):
            return Verdict(name, UNTRACKED, None, now_rel, None, None,
                           f"{key} differs: baseline {baseline.get(key)!r}, now {now.get(key)!r}")
    from scipy.stats import mannwhitneyu

    base_rel = float(statistics.median(baseline["ratios"]))
    change = now_rel / base_rel
    bounds = spread_bounds(history, alpha)
    if bounds:
        limit, floor = max(1 + threshold, bounds[1] / base_rel), min(1 / (1 + threshold), bounds[0] / base_rel)
    else:
        limit = 1 + max(threshold, COLD_THRESHOLD)
        floor = 1 / limit
    p_slower = float(mannwhitneyu(now["ratios"], baseline["ratios"], alternative="greater").pvalue)
    p_faster = float(mannwhitneyu(now["ratios"], baseline["ratios"], alternative="less").pvalue)
    if change > limit and p_slower < alpha:
        verdict, note = REGRESSION, ""
    elif change < floor and p_faster < alpha:
        verdict, note = IMPROVED, ""
    elif change > limit or change < floor:
        verdict, note = OK, "beyond the limit but within the rounds' spread"
    elif change > 1 + threshold and not bounds and p_slower < alpha:
        verdict = UNCONFIRMED
        note = f"beyond the threshold; the run-to-run spread needs {MIN_HISTORY} saved runs"
    elif change > 1 + threshold:
        verdict, note = OK, "beyond the threshold but within the run-to-run spread"
    else:
        verdict, note = OK, ""
    return Verdict(name, verdict, base_rel, now_rel, change, p_slower, note, limit)


def history_values(runs: Sequence[Iterable[Mapping[str, Any]]], fullname: str, like: Mapping[str, Any] | None
                   ) -> list[float]:
    """The benchmark's relative time in each of `runs` (lists of benchmark dicts) measured like `like`
    (same reference and clock); runs without it are skipped."""
    out = []
    for run in runs:
        for bench in run:
            info = _info(bench) if bench.get("fullname") == fullname else None
            if info and like and all(info.get(k) == like.get(k) for k in ("reference", "timer")):
                out.append(float(statistics.median(info["ratios"])))
    return out


def compare(baseline: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]],
            threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
            history: Sequence[Iterable[Mapping[str, Any]]] = ()) -> list[Verdict]:
    """Verdicts for every current benchmark (pytest-benchmark benchmark dicts, matched on ``fullname``);
    `history`: the saved runs up to the baseline, oldest first (the last HISTORY_RUNS are used)."""
    base = {b["fullname"]: b for b in baseline}
    runs = [list(r) for r in history][-HISTORY_RUNS:]
    out = []
    for bench in current:
        old = base.get(bench["fullname"])
        now = _info(bench)
        hist = history_values(runs, bench["fullname"], now)
        out.append(judge(bench["fullname"], _info(old) if old else None, now, threshold, alpha, hist))
    return out


def regressions(verdicts: Iterable[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.verdict == REGRESSION]


# -- report -------------------------------------------------------------------------------------------------
def short_name(fullname: str) -> str:
    """``benchmarks/bench_zoo.py::test_layer[layer_gmr-eval]`` -> ``bench_zoo::test_layer[layer_gmr-eval]``."""
    path, _, test = fullname.partition("::")
    return f"{Path(path).stem}::{test}" if test else fullname


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def format_table(verdicts: Sequence[Verdict], threshold: float = DEFAULT_THRESHOLD, alpha: float = DEFAULT_ALPHA,
                 source: str = "", reference_change: float | None = None, history_runs: int | None = None) -> str:
    """The short table: benchmark, baseline and now (time relative to the reference), ratio, its limit, p,
    verdict."""
    rows = [("benchmark", "baseline", "now", "ratio", "limit", "p", "verdict")]
    order = {REGRESSION: 0, UNCONFIRMED: 1, IMPROVED: 2, NEW: 3, UNTRACKED: 4, OK: 5}
    for v in sorted(verdicts, key=lambda v: (order[v.verdict], v.name)):
        verdict = v.verdict + (f" ({v.note})" if v.note else "")
        rows.append((short_name(v.name), _fmt(v.baseline, ".3f"), _fmt(v.now, ".3f"), _fmt(v.change, ".2f"),
                     _fmt(v.limit, ".2f"), _fmt(v.p_slower, ".1e"), verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r[:-1], widths)))
             + "  " + r[-1] for r in rows]
    n_reg = len(regressions(verdicts))
    head = [f"latency tracking: time relative to an interleaved reference, median over rounds; regression = ratio "
            f"> limit = max(1 + {threshold:g}, run-to-run bound) and Mann-Whitney p < {alpha:g}"
            + (f"; baseline {source}" if source else "")]
    if history_runs is not None:
        head.append(f"run-to-run spread: {history_runs} saved run(s) up to the baseline"
                    + ("" if history_runs >= MIN_HISTORY else
                       f" (below {MIN_HISTORY}: the spread is unknown; rises beyond {threshold:.0%} are 'unconfirmed' "
                       f"and only rises beyond {max(threshold, COLD_THRESHOLD):.0%} fail)"))
    if reference_change is not None:
        head.append(f"reference workloads now / baseline (machine speed and load, cancelled by the ratios): "
                    f"median {reference_change:.2f}x")
    tail = [f"{n_reg} regression(s) in {len(verdicts)} benchmark(s)"]
    return "\n".join(head + lines + tail)


def reference_change(baseline: Iterable[Mapping[str, Any]], current: Iterable[Mapping[str, Any]]) -> float | None:
    """Median over benchmarks of (reference time now / in the baseline): how much slower the machine was."""
    base = {b["fullname"]: _info(b) for b in baseline}
    ratios = []
    for bench in current:
        now, old = _info(bench), base.get(bench["fullname"])
        if now and old and now.get("reference_median_s") and old.get("reference_median_s"):
            ratios.append(now["reference_median_s"] / old["reference_median_s"])
    return statistics.median(ratios) if ratios else None


# -- offline check ------------------------------------------------------------------------------------------
def load_benchmarks(path: Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise SystemExit(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' key)")
    return list(data["benchmarks"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare two pytest-benchmark JSON files with the tracker's rule.")
    parser.add_argument("baseline", type=Path)
    parser.add_argument("current", type=Path)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="relative rise, e.g. 0.15")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="Mann-Whitney U level")
    parser.add_argument("--history", type=Path, nargs="*", default=[],
                        help="earlier saved runs, oldest first (the baseline is appended as the last one)")
    args = parser.parse_args(argv)
    base, now = load_benchmarks(args.baseline), load_benchmarks(args.current)
    history = [load_benchmarks(p) for p in args.history] + [base]
    verdicts = compare(base, now, args.threshold, args.alpha, history)
    print(format_table(verdicts, args.threshold, args.alpha, str(args.baseline), reference_change(base, now),
                       min(len(history), HISTORY_RUNS)))
    return 1 if regressions(verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
