"""Efficiency protocol: parameters, FLOPs, latency, peak memory and build time, at a base point and in
one-factor-at-a-time scaling sweeps (kernel size, channels, resolution, batch size).

Rows (``protocol = efficiency``; the runner adds model, device, dtype, seed, job_id):

| metric | unit | mode | extra columns |
|---|---|---|---|
| ``params`` | count | — | trainable parameters |
| ``build_s`` | s | — | wall time of ``create_model`` (module already imported) |
| ``flops`` | FLOPs (2 per multiply-add) | eval, train, eval_exported | train = forward + backward |
| ``latency_ms`` | ms | eval, train, eval_exported | ``stat`` = median \\| iqr, ``runs`` |
| ``peak_memory_mb`` | MiB | eval, train | ``memory`` = step \\| peak \\| reserved, ``memory_method`` |

Every row also carries ``batch``, ``resolution``, ``kernel_size`` and ``channels`` (None = the model's
default), ``threads`` and ``sweep`` (``base`` or the swept axis: ``kernel_size``, ``channels``, ``resolution``,
``batch``); a point reached by two sweeps (or equal to the base point) is measured once and reported under
each. A point that runs out of memory gets rows with ``status = "oom"`` and no value, and the sweep goes on; a
sweep point whose model cannot be built (e.g. the factory rejects ``kernel_size=``) gets one ``build_s`` row
with ``status = "error"``; a model that cannot be built at the base point fails the job.

Settings: see ``DEFAULTS`` (``validate_settings`` names the valid keys). Base point ``batch``, ``resolution``,
``kernel_size``, ``layer_channels`` / ``in_channels``; sweeps ``kernel_sizes``, ``channels``, ``resolutions``,
``batch_sizes`` ([] = off; networks only get those in ``network_sweeps``); ``metrics`` / ``sweep_metrics`` /
``modes`` choose what is measured; ``threads``, ``warmup``, ``min_run_time``, ``min_runs`` (timing);
``memory_warmup``, ``memory_timeout_s``, ``max_memory_mb`` (memory); ``model_kwargs`` (extra factory keywords
per model name) and ``level`` (for plugins).

Definitions (details in docs/perf.md and ``bench.cost``):
- eval = ``model.eval()`` (cached escnn filters / GMR kernels) + no-grad forward; eval_exported = the same on
  ``model.export()`` when the model offers it; train = forward + loss + backward + SGD step (lr 0).
- latency: ``warmup`` untimed calls, then ``Timer.blocked_autorange(min_run_time)`` at ``threads`` torch threads
  (restored afterwards); median and IQR of per-call times.
- peak memory: CUDA allocator peak in-process; on CPU peak RSS of a fresh ``python -m bench.cost.memprobe``
  process; ``step`` = peak − baseline (just before the step), ``peak`` = absolute.
- layer models get ``kernel_size=`` and ``channels=`` from the sweeps and ``in_channels = channels``;
  networks get ``in_channels`` from the settings and, by default, only the resolution and batch sweeps.

Ratios to the plain references (``layer_conv2d`` / ``cnn``) measured in the same run: ``bench.cost.ratios.ratio_table``.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from bench import settings as st
from bench.aggregate import ok_rows
from bench.cost.flops import UNIT as FLOP_UNIT
from bench.cost.flops import steady_flops
from bench.cost.memory import UNIT as MEM_UNIT
from bench.cost.memory import MemoryResult, ProbeSpec, cuda_step_memory, probe_cpu_subprocess
from bench.cost.ratios import ratio_table
from bench.cost.steps import count_parameters, eval_step, exported, is_oom, make_input, make_step
from bench.cost.timing import fixed_threads, time_callable, time_once
from bench.errors import MissingDependencyError, UsageError
from bench.jobs import Job, RunContext
from bench.models import create_model
from bench.protocols import register_protocol
from bench.protocols.base import Protocol, TableSpec
from bench.schema import EfficiencyRow, model_level

if TYPE_CHECKING:
    from bench.profiles import Profile

METRICS = ("params", "build_s", "flops", "latency_ms", "peak_memory_mb")
MODES = ("eval", "train", "eval_exported")
# sweep setting -> the point field it varies
SWEEPS = {"kernel_sizes": "kernel_size", "channels": "channels", "resolutions": "resolution", "batch_sizes": "batch"}

_odd = st.integer(1, odd=True)
_pos = st.integer(1)
_POS_LIST = "a list of positive integers ([] = off)"


@dataclasses.dataclass(frozen=True)
class EfficiencySettings:
    """Base point, one-factor sweeps around it, what to measure and how to time it."""

    # base point
    batch: int = st.setting(8, _pos, "a positive integer")
    resolution: int = st.setting(32, _pos, "a positive integer")
    kernel_size: int | None = st.setting(None, st.optional(_odd), "a positive odd integer or 'auto'",
                                         "None / 'auto': the model's default")
    layer_channels: int | None = st.setting(16, st.optional(_pos), "a positive integer or 'auto'",
                                            "layer models: in = out channels at the base point")
    in_channels: int = st.setting(1, _pos, "a positive integer", "network models")
    num_classes: int = st.setting(10, _pos, "a positive integer")
    level: str | None = st.setting(None, st.optional(st.one_of("layer", "network")),
                                   "'layer', 'network' or 'auto'", "None: from the registry; set it for plugin layers")
    model_kwargs: dict = st.setting({}, st.table_of_tables, "a table {model name: {keyword: value}}")
    # one-factor-at-a-time sweeps around the base point ([] switches a sweep off)
    kernel_sizes: list = st.setting([3, 5, 7, 9, 11, 13], st.list_of(_odd, scalar_ok=False),
                                    "a list of positive odd integers ([] = off)")
    channels: list = st.setting([8, 16, 32, 64], st.list_of(_pos, scalar_ok=False), _POS_LIST)
    resolutions: list = st.setting([32, 64, 128, 224], st.list_of(_pos, scalar_ok=False), _POS_LIST)
    batch_sizes: list = st.setting([1, 8, 32], st.list_of(_pos, scalar_ok=False), _POS_LIST)
    network_sweeps: list = st.setting(["resolutions", "batch_sizes"], st.subset_of(*SWEEPS),
                                      f"a list drawn from {', '.join(SWEEPS)}", "the sweeps networks get")
    # what to measure
    metrics: list = st.setting(list(METRICS), st.subset_of(*METRICS), f"a list drawn from {', '.join(METRICS)}",
                               "at the base point")
    sweep_metrics: list = st.setting(["flops", "latency_ms", "peak_memory_mb"], st.subset_of(*METRICS),
                                     f"a list drawn from {', '.join(METRICS)}", "elsewhere (+ params, build_s)")
    modes: list = st.setting(list(MODES), st.subset_of(*MODES), f"a list drawn from {', '.join(MODES)}",
                             "eval_exported only where the model has export()")
    # timing
    threads: int | None = st.setting(None, st.optional(_pos), "a positive integer or 'auto'",
                                     "None: the run's threads")
    warmup: int = st.setting(3, st.integer(0), "an integer >= 0")
    min_run_time: float = st.setting(0.2, st.number(0, strict_min=True), "a positive number",
                                     "seconds of timed calls per (point, mode)")
    min_runs: int = st.setting(5, _pos, "a positive integer", "at least this many timed blocks")
    # memory
    memory_warmup: int = st.setting(1, st.integer(0), "an integer >= 0")
    memory_timeout_s: float = st.setting(600, st.number(0, strict_min=True), "a positive number")
    max_memory_mb: float | None = st.setting(None, st.optional(st.number(0, strict_min=True)),
                                             "a positive number or 'auto'",
                                             "CPU guard on the probe's absolute RSS; over it -> status oom")


# -- measurement points --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    batch: int
    resolution: int
    kernel_size: int | None
    channels: int | None

    def columns(self) -> dict[str, Any]:
        return {"batch": self.batch, "resolution": self.resolution, "kernel_size": self.kernel_size,
                "channels": self.channels}


def plan_points(settings: dict[str, Any], level: str) -> list[tuple[str, Point]]:
    """(sweep, point) pairs: the base point, then each sweep axis varied alone around it."""
    s = settings
    base = Point(s["batch"], s["resolution"], s["kernel_size"], s["layer_channels"] if level == "layer" else None)
    out = [("base", base)]
    for key, field_name in SWEEPS.items():
        if level != "layer" and key not in s["network_sweeps"]:
            continue
        for value in s[key]:
            out.append((field_name, replace(base, **{field_name: value})))
    return out


def _model_args(name: str, level: str, point: Point, settings: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(in_channels, factory kwargs) of a point."""
    kw: dict[str, Any] = dict(settings["model_kwargs"].get(name, {}))
    if point.kernel_size is not None:
        kw["kernel_size"] = point.kernel_size
    if level == "layer":
        if point.channels is not None:
            kw["channels"] = point.channels
            return point.channels, kw
        return DEFAULT_LAYER_CHANNELS, kw
    if point.channels is not None:
        kw["channels"] = point.channels
    return settings["in_channels"], kw


DEFAULT_LAYER_CHANNELS = 16  # input channels of a layer model whose width is left to its default


# -- the protocol --------------------------------------------------------------------------------------------
def _row(metric: str, value: Any, unit: str, mode: str | None = None, status: str = "ok", message: str = "",
         **extra: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "unit": unit, "mode": mode, "status": status, "message": message,
            **extra}


_UNITS = {"params": "count", "build_s": "s", "flops": FLOP_UNIT, "latency_ms": "ms", "peak_memory_mb": MEM_UNIT}


def _failed(metric: str, mode: str | None, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return _row(metric, None, _UNITS[metric], mode, status=status, message=message[:500], **extra)


class _Measurer:
    """Measures points of one model, reusing the built model across points with the same constructor args."""

    def __init__(self, job: Job, ctx: RunContext, settings: dict[str, Any], threads: int) -> None:
        self.job, self.ctx, self.s, self.threads = job, ctx, settings, threads
        self.name = job.model
        self.level = settings["level"] or model_level(job.model)
        self.device = torch.device(ctx.device)
        self.dtype = ctx.dtype
        self._built: tuple[tuple, Any, float] | None = None  # (key, model, build_s)

    # model build (cached for the last constructor args)
    def build(self, in_channels: int, kw: dict[str, Any]) -> tuple[torch.nn.Module, float]:
        key = (in_channels, tuple(sorted(kw.items())))
        if self._built is not None and self._built[0] == key:
            return self._built[1], self._built[2]
        self._built = None
        self.release()
        from bench.models import MODELS

        MODELS.get(self.name)  # import the implementing module first: build_s excludes import time
        torch.manual_seed(self.job.seed)
        with fixed_threads(self.threads):
            model, build_s = time_once(lambda: create_model(self.name, in_channels, self.s["num_classes"], **kw))
        model = model.to(device=self.device, dtype=self.dtype)
        self._built = (key, model, build_s)
        return model, build_s

    def measure(self, point: Point, metrics: list[str], strict: bool = False) -> list[dict[str, Any]]:
        """Rows of one point. `strict` (the base point): a failing build fails the job instead of becoming a row."""
        in_channels, kw = _model_args(self.name, self.level, point, self.s)
        try:
            model, build_s = self.build(in_channels, kw)
        except MissingDependencyError:
            raise
        except Exception as exc:  # noqa: BLE001
            if strict and not is_oom(exc):
                raise
            return self._build_failed(exc, kw)
        rows: list[dict[str, Any]] = []
        if "build_s" in metrics:
            rows.append(_row("build_s", build_s, "s"))
        if "params" in metrics:
            rows.append(_row("params", count_parameters(model), "count"))
        try:
            x = make_input(point.batch, in_channels, point.resolution, device=self.device, dtype=self.dtype,
                           seed=self.job.seed)
        except Exception as exc:  # noqa: BLE001
            status = "oom" if is_oom(exc) else "error"
            return rows + [_failed(m, None, status, f"input: {exc}") for m in ("flops", "latency_ms")]

        modes = [m for m in self.s["modes"] if m != "eval_exported"]
        skip: dict[str, tuple[str, str]] = {}  # mode -> (status, message): the memory probe ran out of memory/time
        if "peak_memory_mb" in metrics and modes:
            results = self.memory(model, x, point, in_channels, kw, modes)
            for mode in modes:
                res = results[mode]
                rows += self._memory_rows(res, mode)
                if res.status in ("oom", "timeout"):
                    what = "memory" if res.status == "oom" else "time"
                    skip[mode] = (res.status, f"skipped: the memory probe ran out of {what} ({res.message})")
        exp_model = None
        if "eval_exported" in self.s["modes"] and ({"flops", "latency_ms"} & set(metrics)):
            try:
                exp_model = exported(model)
            except Exception as exc:  # noqa: BLE001
                rows += [_failed(m, "eval_exported", "error", f"export() failed: {type(exc).__name__}: {exc}")
                         for m in ("flops", "latency_ms") if m in metrics]
            if exp_model is not None:
                modes.append("eval_exported")
                if "eval" in skip:
                    skip["eval_exported"] = skip["eval"]
        for mode in modes:
            target = exp_model if mode == "eval_exported" else model
            if mode in skip:
                rows += [_failed(m, mode, *skip[mode]) for m in ("flops", "latency_ms") if m in metrics]
                continue
            if "flops" in metrics:
                rows += self._guarded("flops", self.flops, target, x, mode)
            if "latency_ms" in metrics:
                rows += self._guarded("latency_ms", self.latency, target, x, mode)
        return rows

    def _build_failed(self, exc: BaseException, kw: dict[str, Any]) -> list[dict[str, Any]]:
        """One row for a sweep point whose model could not be built (the sweep goes on)."""
        if is_oom(exc):
            self.release(force=True)
            return [_failed("build_s", None, "oom", f"build: {exc}")]
        if isinstance(exc, (TypeError, UsageError)) and kw:
            return [_failed("build_s", None, "error",
                            f"{self.name} rejected {kw}: {type(exc).__name__}: {exc}; point skipped")]
        return [_failed("build_s", None, "error", f"build failed: {type(exc).__name__}: {exc}")]

    @staticmethod
    def _step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], Any]:
        return eval_step(model, x) if mode == "eval_exported" else make_step(model, x, mode)

    def flops(self, model: torch.nn.Module, x: torch.Tensor, mode: str) -> list[dict[str, Any]]:
        return [_row("flops", steady_flops(self._step(model, x, mode), warmup=1), FLOP_UNIT, mode)]

    def latency(self, model: torch.nn.Module, x: torch.Tensor, mode: str) -> list[dict[str, Any]]:
        step = self._step(model, x, mode)
        t = time_callable(step, warmup=self.s["warmup"], min_run_time=self.s["min_run_time"],
                          min_runs=self.s["min_runs"], threads=self.threads, device=self.device)
        return [_row("latency_ms", t.median_ms, "ms", mode, stat="median", runs=t.runs),
                _row("latency_ms", t.iqr_ms, "ms", mode, stat="iqr", runs=t.runs)]

    def memory(self, model: torch.nn.Module, x: torch.Tensor, point: Point, in_channels: int,
               kw: dict[str, Any], modes: list[str]) -> dict[str, MemoryResult]:
        if self.device.type == "cuda":
            out = {}
            for mode in modes:
                try:
                    step = make_step(model, x, mode)
                    out[mode] = cuda_step_memory(step, self.device, warmup=self.s["memory_warmup"], mode=mode)
                except Exception as exc:  # noqa: BLE001
                    out[mode] = MemoryResult(status="error", mode=mode, message=f"{type(exc).__name__}: {exc}"[:500])
                step = None
                self.release()
            return out
        if self.device.type != "cpu":
            return {m: MemoryResult(status="error", mode=m, message=f"no peak-memory probe for {self.device.type}")
                    for m in modes}
        spec = ProbeSpec(model=self.name, modes=list(modes), in_channels=in_channels, num_classes=self.s["num_classes"],
                         model_kwargs=kw, batch=point.batch, resolution=point.resolution,
                         dtype=str(self.dtype).replace("torch.", ""), threads=self.threads, seed=self.job.seed,
                         warmup=self.s["memory_warmup"], max_memory_mb=self.s["max_memory_mb"])
        return probe_cpu_subprocess(spec, timeout=self.s["memory_timeout_s"])

    @staticmethod
    def _memory_rows(res: MemoryResult, mode: str) -> list[dict[str, Any]]:
        if res.status != "ok":
            return [_failed("peak_memory_mb", mode, res.status, res.message or res.status, memory="step")]
        extra = {"memory_method": res.method}
        rows = [_row("peak_memory_mb", res.step_mb, MEM_UNIT, mode, memory="step", **extra),
                _row("peak_memory_mb", res.peak_mb, MEM_UNIT, mode, memory="peak", **extra)]
        if res.reserved_mb is not None:
            rows.append(_row("peak_memory_mb", res.reserved_mb, MEM_UNIT, mode, memory="reserved", **extra))
        return rows

    def _guarded(self, metric: str, fn: Callable[..., list[dict[str, Any]]], model: torch.nn.Module,
                 x: torch.Tensor, mode: str) -> list[dict[str, Any]]:
        """`fn(model, x, mode)`; an exception becomes one row with status oom|error (the sweep goes on)."""
        try:
            return fn(model, x, mode)
        except MissingDependencyError:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded as a row status, the sweep goes on
            oom = is_oom(exc)
            if oom:
                self.release(force=True)
            return [_failed(metric, mode, "oom" if oom else "error", f"{type(exc).__name__}: {exc}")]

    def release(self, force: bool = False) -> None:
        """Free what the last point left (tensors die by refcount; a full gc pass is slow, so only on CUDA,
        where the caching allocator must also hand memory back, or after an OOM)."""
        if force or self.device.type == "cuda":
            gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


# -- tables --------------------------------------------------------------------------------------------------
# wide base-point columns: (column, metric, mode, stat / memory kind)
BASE_COLUMNS = (
    ("params", "params", None, None),
    ("flops_eval", "flops", "eval", None),
    ("flops_train", "flops", "train", None),
    ("latency_eval_ms", "latency_ms", "eval", "median"),
    ("latency_eval_iqr_ms", "latency_ms", "eval", "iqr"),
    ("latency_train_ms", "latency_ms", "train", "median"),
    ("latency_eval_exported_ms", "latency_ms", "eval_exported", "median"),
    ("peak_memory_eval_mb", "peak_memory_mb", "eval", "step"),
    ("peak_memory_train_mb", "peak_memory_mb", "train", "step"),
    ("build_s", "build_s", None, None),
)
NO_RATIO = {"latency_eval_iqr_ms"}  # a spread, shown but not compared

POINTS = TableSpec(
    "efficiency_points", "Cost at every measured point",
    "Every measurement point of every model (median of repeats) with the plain reference's value at the same point "
    "and their ratio (bench.cost.ratios).",
    {"model": "model", "level": "layer | network", "reference": "plain baseline of the same level",
     "sweeps": "sweeps that reached the point (base, kernel_size, channels, resolution, batch)",
     "metric": "params | flops | latency_ms | peak_memory_mb | build_s", "unit": "unit",
     "mode": "eval | train | eval_exported", "stat": "latency: median | iqr",
     "memory": "peak memory: step (peak minus the baseline before the step) | peak | reserved",
     "batch": "batch size", "resolution": "input side", "kernel_size": "kernel size (empty: the model's default)",
     "channels": "channels (empty: the model's default)", "threads": "torch threads", "device": "device",
     "dtype": "dtype", "value": "value", "reference_value": "the reference's value at the same point",
     "ratio": "value / reference_value"})
BASE = TableSpec(
    "efficiency_base", "Cost at the base point",
    "One row per model at the efficiency protocol's base point; *_ratio = value / the plain reference's value at "
    "the same point. Latency: median per call; peak memory: kind 'step' (peak minus the baseline before the step).",
    {"model": "model", "level": "layer | network", "reference": "plain baseline", "batch": "batch size",
     "resolution": "input side", "kernel_size": "kernel size (empty: default)", "channels": "channels",
     **{c: f"{metric} {mode or ''} {stat or ''}".strip() for c, metric, mode, stat in BASE_COLUMNS},
     **{f"{c}_ratio": f"{c} / the reference's" for c, *_ in BASE_COLUMNS if c not in NO_RATIO}})


@register_protocol("efficiency")
class EfficiencyProtocol(Protocol):
    """Parameters, FLOPs, latency, peak memory and build time at a base point and along one-factor sweeps."""

    settings_type = EfficiencySettings
    row_type = EfficiencyRow
    description = "parameters, FLOPs, latency, peak memory, build time; ratios to the plain baseline"
    exclusive_device = True  # timings must not share a device
    tables = {t.name: t for t in (POINTS, BASE)}

    def plan(self, profile: Profile, device: str, settings: EfficiencySettings, planned: Sequence[Job]) -> list[Job]:
        # cost does not depend on the seed or the dataset: one job per model
        return [self.job(m, None, profile.seeds[0], device, settings) for m in profile.models_for(self.name)]

    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        """Measure `job.model` at the base point and along the sweeps (see the module docstring)."""
        s = dataclasses.asdict(self.settings_of(job))
        threads = s["threads"] or ctx.threads or torch.get_num_threads()
        m = _Measurer(job, ctx, s, int(threads))
        done: dict[Point, list[dict[str, Any]]] = {}
        out: list[dict[str, Any]] = []
        for sweep, point in plan_points(s, m.level):
            if point not in done:
                metrics = s["metrics"] if sweep == "base" else sorted(set(s["sweep_metrics"]) | {"params", "build_s"})
                done[point] = m.measure(point, metrics, strict=sweep == "base")
                m.release()
            for row in done[point]:
                out.append({**row, **point.columns(), "threads": int(threads), "sweep": sweep})
        m._built = None
        m.release()
        return out

    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        d = ok_rows(frame, self.name)
        if d.empty:
            return {}
        points = ratio_table(d)
        return {POINTS.name: POINTS.frame(points), BASE.name: BASE.frame(base_rows(points))}

    def headline(self, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        base = tables.get(BASE.name)
        if base is None or base.empty:
            return None
        cols = {"params": "params", "latency_eval_ms": "latency_ms", "peak_memory_eval_mb": "peak_memory_mb",
                "params_ratio": "params_ratio", "latency_eval_ms_ratio": "latency_ratio",
                "peak_memory_eval_mb_ratio": "memory_ratio"}
        return base.set_index("model")[list(cols)].rename(columns=cols)


def base_rows(points: pd.DataFrame) -> list[dict[str, Any]]:
    """One wide row per model from its base-point rows of the points table."""
    base = points[points["sweeps"].str.split(",").map(lambda s: "base" in s)]
    rows = []
    for model, m in base.groupby("model", sort=True):
        row: dict[str, Any] = {"model": model, "level": m["level"].iloc[0], "reference": m["reference"].iloc[0]}
        for col in ("batch", "resolution", "kernel_size", "channels"):
            values = m[col].dropna().unique()
            row[col] = values[0] if len(values) else None
        for col, metric, mode, stat in BASE_COLUMNS:
            hit = m[m["metric"] == metric]
            if mode is not None:
                hit = hit[hit["mode"] == mode]
            if stat is not None:
                hit = hit[(hit["stat"] == stat) | (hit["memory"] == stat)]
            if hit.empty:
                continue
            row[col] = hit["value"].iloc[0]
            if col not in NO_RATIO:
                row[f"{col}_ratio"] = hit["ratio"].iloc[0]
        rows.append(row)
    return rows
