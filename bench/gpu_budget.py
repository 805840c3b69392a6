"""How long an efficiency sweep will take, from per-point costs: a planning aid for the `gpu` profile.

    python -m bench.gpu_budget --profile gpu                 # estimate on a GPU from FLOPs (counted here, on CPU)
    python -m bench.gpu_budget --check out/teaser-...        # the call-count model against a finished run

The efficiency protocol makes a known number of calls of each step (`bench.protocols.efficiency`,
`bench.cost.timing`), so a job's time is a sum over its points and modes of (calls x seconds per call):

- latency: ``warmup`` calls, then ``torch.utils.benchmark``'s block-size estimate (blocks of 1, 10, 100, ...
  calls until one lasts >= min_run_time / 1000 s with the timer's overhead <= 1e-4 of it, or > min_run_time),
  then ``max(ceil(min_run_time / block), min_runs)`` blocks;
- FLOPs: 2 calls (one warm-up, one counted) plus the counter's overhead; peak memory on CUDA: memory_warmup + 1
  calls (on CPU a fresh subprocess per point, see `bench.cost.memprobe`);
- per point a fixed cost (input, `gc.collect()` + `empty_cache()` between points on CUDA), per built model its
  build time, per job a fixed cost, and for GMR models `impl="auto"`'s first-call timing of both paths.

Seconds per call come either from a FLOP count and an assumed throughput with a per-call floor
(:func:`flops_call_seconds`; the floor stands for kernel launches and Python, which dominate small layers on a
GPU), or from a finished run's measured medians (:func:`check_run`, which compares the model with the job times
the run recorded). Only the first is an estimate of a GPU; its assumptions are the module constants below.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.jobs import Job
from bench.protocols.efficiency import Point, _model_args, job_settings, plan_points, point_metrics
from bench.schema import model_family, model_level

# torch.utils.benchmark's per-block overhead (`Timer._timeit(0)`): ~3 us measured on this CPU; on CUDA its clock
# synchronises the device twice per block (a guess: 20 us). A block must last >= 1e4 x this, so on a GPU every
# block of a fast step lasts ~0.2 s and `min_runs` blocks dominate a point's cost.
TIMER_OVERHEAD_S = {"cpu": 3e-6, "cuda": 2e-5}
FLOP_COUNTER_S = 0.05    # FlopCounterMode's Python overhead per counted call
POINT_S = {"cuda": 0.3, "cpu": 0.05}  # per point: input, gc.collect() (+ empty_cache on CUDA)
JOB_S = 2.0  # per job: lazy imports, first-call initialisation (oneDNN / cuDNN), the final release
AUTOTUNE_CALLS = 10  # GMR layers with impl="auto" time both paths once per new input signature (6-12 calls)
CPU_MEMORY_PROBE_S = 4.0  # a fresh `python -m bench.cost.memprobe` per point on CPU (imports torch and the zoo)
# Assumed GPU speed (an H200: fp32 SIMT peak ~67 TFLOP/s, TF32 tensor cores, which cuDNN convolutions use by
# default, several times that); 20 TFLOP/s effective is deliberately low.
GPU_FLOPS_PER_S = 20e12
# Per-call floor on a GPU (kernel launches, Python): (level, family kind, mode) -> seconds. escnn models re-expand
# their filter bases in every training forward. Guesses, not measurements (no GPU was available).
GPU_FLOOR_S = {("layer", "plain", "eval"): 5e-5, ("layer", "plain", "train"): 3e-4,
               ("layer", "gmr", "eval"): 1e-4, ("layer", "gmr", "train"): 8e-4,
               ("layer", "escnn", "eval"): 1e-4, ("layer", "escnn", "train"): 2e-3,
               ("network", "plain", "eval"): 3e-3, ("network", "plain", "train"): 1e-2,
               ("network", "gmr", "eval"): 5e-3, ("network", "gmr", "train"): 2e-2,
               ("network", "escnn", "eval"): 1e-2, ("network", "escnn", "train"): 6e-2}
COUNT_RESOLUTION = {"layer": 12, "network": 32}  # FLOPs are counted at batch 1 and this side, then scaled

CallSeconds = Callable[[Point, str], "float | None"]


def latency_calls(t: float, warmup: int, min_run_time: float, min_runs: int, device: str = "cuda") -> int:
    """Calls `bench.cost.timing.time_callable` makes for a step of `t` seconds."""
    t = max(t, 1e-9)
    calls, number = warmup, 1
    while True:  # torch.utils.benchmark.Timer._estimate_block_size
        calls += number
        taken = number * t
        if (TIMER_OVERHEAD_S[device] / taken <= 1e-4 and taken >= min_run_time / 1000) or taken > min_run_time:
            break
        number *= 10
    return calls + number * max(math.ceil(min_run_time / (number * t)), min_runs)


def point_seconds(t: float, metrics: list[str], s: dict[str, Any], device: str) -> float:
    """Seconds one mode of one point costs, for a step of `t` seconds."""
    total = 0.0
    if "latency_ms" in metrics:
        total += t * latency_calls(t, s["warmup"], s["min_run_time"], s["min_runs"], device)
    if "flops" in metrics:
        total += 2 * t + FLOP_COUNTER_S
    if "peak_memory_mb" in metrics:
        total += (s["memory_warmup"] + 1) * t if device == "cuda" else 0.0
    return total


def job_seconds(job: Job, call_seconds: CallSeconds, build_seconds: Callable[[Point], float] = lambda p: 0.0
                ) -> tuple[float, int]:
    """(seconds, points) of one efficiency job; a (point, mode) whose `call_seconds` is None costs nothing."""
    from bench.protocols import get_protocol

    s = job_settings(get_protocol("efficiency").settings_of(job), job.model)
    level = s["level"] or model_level(job.model)
    device = "cuda" if job.device.startswith("cuda") else "cpu"
    modes = [m for m in s["modes"] if m != "eval_exported"]
    done: set[Point] = set()
    total = JOB_S
    autotuned = model_family(job.model) == "gmr"
    for sweep, point in plan_points(s, level):
        if point in done:
            continue
        done.add(point)
        metrics = point_metrics(s, sweep)
        total += POINT_S[device] + build_seconds(point)
        if "peak_memory_mb" in metrics and device == "cpu":
            total += CPU_MEMORY_PROBE_S
        for mode in modes:
            t = call_seconds(point, mode)
            if t is not None:
                total += point_seconds(t, metrics, s, device) + (AUTOTUNE_CALLS * t if autotuned else 0.0)
    return total, len(done)


# -- seconds per call from FLOPs ------------------------------------------------------------------------------
def _kind(model: str) -> str:
    family = model_family(model)
    return family if family in ("plain", "gmr") else "escnn"


@dataclass
class FlopsCounter:
    """FLOPs of one call per (model, point, mode), counted on CPU at batch 1 and a small side, then scaled by
    batch x pixels (convolutions with 'same' padding scale exactly; strided networks approximately)."""

    job: Job
    s: dict[str, Any]
    per_pixel: dict[tuple, float]
    build_s: dict[tuple, float]

    @classmethod
    def for_job(cls, job: Job) -> FlopsCounter:
        from bench.protocols import get_protocol

        return cls(job, job_settings(get_protocol("efficiency").settings_of(job), job.model), {}, {})

    def _count(self, point: Point, mode: str) -> float:
        from bench.cost.flops import steady_flops
        from bench.cost.steps import make_input, make_step
        from bench.models import MODELS, create_model

        level = self.s["level"] or model_level(self.job.model)
        in_channels, kw = _model_args(self.job.model, level, point, self.s)
        key = (in_channels, tuple(sorted(kw.items())))
        if (key, mode) not in self.per_pixel:
            MODELS.get(self.job.model)
            t0 = time.perf_counter()
            model = create_model(self.job.model, in_channels, self.s["num_classes"], **kw)
            self.build_s.setdefault(key, time.perf_counter() - t0)
            side = COUNT_RESOLUTION[level]
            x = make_input(1, in_channels, side)
            self.per_pixel[(key, mode)] = steady_flops(make_step(model, x, mode), warmup=1) / side**2
        return self.per_pixel[(key, mode)] * point.batch * point.resolution**2

    def call_seconds(self, point: Point, mode: str, flops_per_s: float = GPU_FLOPS_PER_S) -> float:
        level = self.s["level"] or model_level(self.job.model)
        floor = GPU_FLOOR_S[(level, _kind(self.job.model), mode)]
        return max(self._count(point, mode) / flops_per_s, floor)

    def build_seconds(self, point: Point) -> float:
        level = self.s["level"] or model_level(self.job.model)
        in_channels, kw = _model_args(self.job.model, level, point, self.s)
        return self.build_s.get((in_channels, tuple(sorted(kw.items()))), 0.0)


def estimate(jobs: list[Job], flops_per_s: float = GPU_FLOPS_PER_S, slow_factor: float = 4.0) -> pd.DataFrame:
    """Per job: points and estimated seconds on a GPU of `flops_per_s`, and on one `slow_factor` times slower
    with per-call floors and timer overhead `slow_factor` times higher (FLOPs counted once, here, on CPU)."""
    rows = []
    for job in jobs:
        counter = FlopsCounter.for_job(job)
        row: dict[str, Any] = {"job": job.label}
        for col, factor in (("estimated_s", 1.0), (f"{slow_factor:g}x_slower_s", slow_factor)):
            with _scaled(factor):
                seconds, row["points"] = job_seconds(
                    job, lambda p, m, c=counter, f=factor: c.call_seconds(p, m, flops_per_s / f), counter.build_seconds)
            row[col] = seconds
        rows.append(row)
        print(f"# {job.label}: {row['points']} points, {row['estimated_s']:.1f} s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)[["job", "points", "estimated_s", f"{slow_factor:g}x_slower_s"]]


@contextlib.contextmanager
def _scaled(factor: float) -> Iterator[None]:
    """GPU_FLOOR_S and the CUDA timer overhead multiplied by `factor` for the block."""
    floors, overhead = dict(GPU_FLOOR_S), TIMER_OVERHEAD_S["cuda"]
    GPU_FLOOR_S.update({k: v * factor for k, v in floors.items()})
    TIMER_OVERHEAD_S["cuda"] = overhead * factor
    try:
        yield
    finally:
        GPU_FLOOR_S.update(floors)
        TIMER_OVERHEAD_S["cuda"] = overhead


# -- the call-count model against a finished run --------------------------------------------------------------
def check_run(run_dir: Path) -> pd.DataFrame:
    """Per job of a finished run: its recorded time next to the model's prediction from the run's own medians
    (build times from its build_s rows), i.e. a check of the call counts independent of the device's speed."""
    from bench.results import ResultsStore

    store = ResultsStore(run_dir)
    frame = store.frame()
    rows = []
    for rec in store.latest().values():
        job = Job.from_dict(rec["job"])
        if job.protocol != "efficiency":
            continue
        mine = frame[(frame["job_id"] == rec["job_id"]) & (frame["status"] == "ok")]
        lat = mine[(mine["metric"] == "latency_ms") & (mine["stat"] == "median")]
        med = {(_point(r), r["mode"]): r["value"] / 1e3 for r in lat.to_dict("records")}
        builds = {_point(r): r["value"] for r in mine[mine["metric"] == "build_s"].to_dict("records")}
        seconds, points = job_seconds(job, lambda p, m, med=med: med.get((p, m)),
                                      lambda p, builds=builds: builds.get(p, 0.0))
        rows.append({"job": job.label, "points": points, "recorded_s": rec.get("elapsed_s"),
                     "predicted_s": seconds})
    return pd.DataFrame(rows)


def _point(row: dict[str, Any]) -> Point:
    def num(v: Any) -> int | None:
        return None if v is None or pd.isna(v) else int(v)

    return Point(int(row["batch"]), int(row["resolution"]), num(row["kernel_size"]), num(row["channels"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="gpu", help="profile name or .toml path (its efficiency jobs)")
    ap.add_argument("--flops-per-s", type=float, default=GPU_FLOPS_PER_S, help="assumed GPU throughput")
    ap.add_argument("--check", type=Path, help="a finished run folder: compare the model with its job times")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 160)
    if args.check is not None:
        table = check_run(args.check)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
        print(f"total: recorded {table['recorded_s'].sum():.1f} s, predicted {table['predicted_s'].sum():.1f} s")
        return 0
    from bench.plan import plan_jobs
    from bench.profiles import load_profile

    profile = load_profile(args.profile)
    profile.protocols = ["efficiency"]
    jobs = plan_jobs(profile, "cuda")
    table = estimate(jobs, args.flops_per_s)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    slow = table.columns[-1]
    print(f"total: {table['estimated_s'].sum():.0f} s at {args.flops_per_s / 1e12:g} TFLOP/s effective with the "
          f"per-call floors of bench.gpu_budget.GPU_FLOOR_S; {table[slow].sum():.0f} s on a GPU 4x slower in "
          "every respect")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
