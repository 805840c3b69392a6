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

# settings a profile may set apart for network models (`network_settings`)
NETWORK_KEYS = ("batch", "resolution", "kernel_size", "in_channels", "resolutions", "batch_sizes", "kernel_sizes",
                "channels", "metrics", "sweep_metrics", "modes", "warmup", "min_run_time", "min_runs",
                "memory_warmup", "max_memory_mb")
# published reference values (name -> loader of its points, see `reference_rows`)
REFERENCES: dict[str, str] = {"gmr_paper_teaser": "gmr.perf_teaser:paper_reference"}
PAPER_PREFIX = "paper_"  # metric of a reference row: paper_<metric it compares with>

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
    # networks at their own base point / sweeps / timing (e.g. ResNet-18 at 32², batch 128, next to layers)
    network_settings: dict = st.setting({}, lambda v: _network_settings(v),
                                        f"a table of settings for network models, keys drawn from "
                                        f"{', '.join(NETWORK_KEYS)}", "None of them: the settings above")
    # published values to compare with (a table `efficiency_reference`)
    reference: str | None = st.setting(None, st.optional(st.one_of(*REFERENCES), ("none",)),
                                       f"one of {', '.join(REFERENCES)} or 'none'",
                                       "rows emitted by the job of each panel's plain baseline model")


def _network_settings(value: Any) -> dict[str, Any]:
    """`network_settings` checked key by key with the rule of the setting it overrides."""
    table = st.table(value)
    fields = {f.name: f for f in dataclasses.fields(EfficiencySettings)}
    out = {}
    for key, raw in table.items():
        if key not in NETWORK_KEYS:
            raise ValueError(f"unknown key {key!r}; valid: {', '.join(NETWORK_KEYS)}")
        f = fields[key]
        try:
            out[key] = f.metadata["check"](raw)
        except (TypeError, ValueError):
            raise ValueError(f"{key!r} must be {f.metadata['expects']}, got {raw!r}") from None
    return out


class EfficiencyRowWithReference(EfficiencyRow, total=False):
    """An efficiency row, or a published reference value (metric ``paper_<metric>``, see `reference_rows`)."""

    series: str        # the publication's label of the series (e.g. "GMR-Conv")
    counterparts: str  # comma-separated zoo models compared with it (empty: none in the zoo)
    source: str        # the `reference` setting that named it


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


def job_settings(settings: EfficiencySettings, model: str) -> dict[str, Any]:
    """The settings a job of `model` runs with: a network's `network_settings` replace the ones they name."""
    s = dataclasses.asdict(settings)
    if (s["level"] or model_level(model)) == "network":
        s.update(s["network_settings"])
    return s


def point_metrics(settings: dict[str, Any], sweep: str) -> list[str]:
    """What is measured at a point: `metrics` at the base point, `sweep_metrics` (+ params, build_s) elsewhere."""
    if sweep == "base":
        return list(settings["metrics"])
    return sorted(set(settings["sweep_metrics"]) | {"params", "build_s"})


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

REFERENCE = TableSpec(
    "efficiency_reference", "Published values next to ours",
    "Each published value of the `reference` setting (e.g. the GMR paper's teaser) with its ratio to the same "
    "publication's plain baseline, next to our counterpart model's value at each matching point of this run and "
    "its ratio to our plain baseline at the same point. Matching: the same metric; for a value at a kernel size, "
    "our kernel-size sweep at that size (eval and train, median latency); for a training-memory value, every "
    "point of ours (peak-memory kinds step and peak). Seconds per 1,000 calls = ms per call.",
    {"source": "the reference setting", "series": "the publication's label", "model": "our counterpart (empty: "
     "none in the zoo)", "baseline": "plain model both ratios divide by", "metric": "latency_ms | peak_memory_mb",
     "unit": "ms | MiB", "kernel_size": "kernel size of the published value", "paper_value": "published value",
     "paper_ratio": "published value / the publication's baseline at the same kernel size",
     "mode": "our mode (eval | train)", "memory": "our peak-memory kind (step | peak)", "batch": "our batch",
     "resolution": "our input side", "channels": "our channels", "device": "our device", "value": "our value",
     "baseline_value": "our baseline's value at the same point", "ratio": "value / baseline_value",
     "note": "where the published value comes from"})
MEMORY_KINDS = ("step", "peak")


def reference_points(name: str) -> list[dict[str, Any]]:
    """The published points of reference `name` (loaded from `REFERENCES`)."""
    from bench.registry import load_object

    return list(load_object(REFERENCES[name])())


def reference_rows(name: str | None, model: str) -> list[dict[str, Any]]:
    """Rows of the published values whose baseline is `model`: each panel is emitted once, by the job of the
    plain model its ratios divide by (so a run without that model has no reference for the panel)."""
    if name is None:
        return []
    return [_row(PAPER_PREFIX + p["metric"], float(p["value"]), p["unit"], p["mode"], message=p["note"],
                 kernel_size=p["kernel_size"], series=p["series"], counterparts=",".join(p["counterparts"]),
                 source=name, sweep="reference")
            for p in reference_points(name) if p["baseline"] == model]


_MATCH = ("mode", "stat", "memory", "batch", "resolution", "kernel_size", "channels", "threads", "device", "dtype")


def _ours(points: pd.DataFrame, model: str, metric: str, mode: str | None, k: int | None) -> pd.DataFrame:
    """Points of `model` comparable with a published value (see the REFERENCE table's description)."""
    p = points[(points["model"] == model) & (points["metric"] == metric)]
    p = p[p["stat"] == "median"] if metric == "latency_ms" else p[p["memory"].isin(MEMORY_KINDS)]
    p = p[p["mode"] == mode] if mode else p[p["mode"].isin(("eval", "train"))]
    if k is not None:
        on_line = p["sweeps"].fillna("").str.split(",").map(lambda s: "kernel_size" in s or "base" in s)
        p = p[on_line & (pd.to_numeric(p["kernel_size"], errors="coerce") == k)]
    return p


def _match_keys(d: pd.DataFrame) -> list[tuple[str, ...]]:
    """The point of each row as a hashable key (missing values as '')."""
    cols = d[list(_MATCH)].astype(object)
    return [tuple(r) for r in cols.where(cols.notna(), "").astype(str).to_numpy()]


def _paper_ratio(paper: pd.DataFrame, rec: dict[str, Any], k: int | None) -> float | None:
    """A published value over the same publication's baseline series at the same kernel size."""
    same = paper[(paper["metric"] == rec["metric"]) & (paper["source"] == rec["source"])
                 & (paper["model"] == rec["model"]) & ((paper["k"] == k) if k is not None else paper["k"].isna())]
    is_base = same["counterparts"].fillna("").str.split(",").map(lambda c: rec["model"] in c)
    base = same.loc[is_base, "value"]
    return rec["value"] / base.iloc[0] if len(base) and base.iloc[0] else None


def reference_table(rows: pd.DataFrame, points: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of the `efficiency_reference` table from the paper_* rows (emitted by each panel's baseline job, so
    a row's model is the baseline) and the points table."""
    if "source" not in rows.columns:
        return []
    paper = rows[rows["metric"].astype(str).str.startswith(PAPER_PREFIX)].copy()
    if paper.empty:
        return []
    paper["k"] = pd.to_numeric(paper["kernel_size"], errors="coerce")
    out = []
    for rec in paper.to_dict("records"):
        metric, baseline = rec["metric"][len(PAPER_PREFIX):], rec["model"]
        k = None if pd.isna(rec["k"]) else int(rec["k"])
        mode = rec["mode"] if isinstance(rec["mode"], str) else None
        head = {"source": rec["source"], "series": rec["series"], "baseline": baseline, "metric": metric,
                "unit": rec["unit"], "kernel_size": k, "paper_value": rec["value"],
                "paper_ratio": _paper_ratio(paper, rec, k), "note": rec["message"]}
        theirs = _ours(points, baseline, metric, mode, k)
        lookup = dict(zip(_match_keys(theirs), theirs["value"]))
        for model in [c for c in str(rec["counterparts"] or "").split(",") if c] or [None]:
            ours = _ours(points, model, metric, mode, k) if model else points.iloc[0:0]
            if ours.empty:
                out.append({**head, "model": model})
            for r, key in zip(ours.to_dict("records"), _match_keys(ours)):
                bv = lookup.get(key)
                out.append({**head, "model": model, "mode": r["mode"], "memory": r["memory"], "batch": r["batch"],
                            "resolution": r["resolution"], "channels": r["channels"], "device": r["device"],
                            "value": r["value"], "baseline_value": bv, "ratio": r["value"] / bv if bv else None})
    order = ["metric", "source", "kernel_size", "series", "model", "mode", "memory", "batch", "resolution", "channels"]
    return sorted(out, key=lambda r: tuple(_sort_key(r.get(c)) for c in order))


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return (0, "")
    return (1, v) if isinstance(v, (int, float)) else (2, str(v))


@register_protocol("efficiency")
class EfficiencyProtocol(Protocol):
    """Parameters, FLOPs, latency, peak memory and build time at a base point and along one-factor sweeps."""

    settings_type = EfficiencySettings
    row_type = EfficiencyRowWithReference
    description = "parameters, FLOPs, latency, peak memory, build time; ratios to the plain baseline"
    exclusive_device = True  # timings must not share a device
    tables = {t.name: t for t in (POINTS, BASE, REFERENCE)}

    def plan(self, profile: Profile, device: str, settings: EfficiencySettings, planned: Sequence[Job]) -> list[Job]:
        # cost does not depend on the seed or the dataset: one job per model
        return [self.job(m, None, profile.seeds[0], device, settings) for m in profile.models_for(self.name)]

    def run(self, job: Job, ctx: RunContext) -> list[dict[str, Any]]:
        """Measure `job.model` at the base point and along the sweeps (see the module docstring)."""
        s = job_settings(self.settings_of(job), job.model)
        threads = s["threads"] or ctx.threads or torch.get_num_threads()
        m = _Measurer(job, ctx, s, int(threads))
        done: dict[Point, list[dict[str, Any]]] = {}
        out: list[dict[str, Any]] = []
        for sweep, point in plan_points(s, m.level):
            if point not in done:
                done[point] = m.measure(point, point_metrics(s, sweep), strict=sweep == "base")
                m.release()
            for row in done[point]:
                out.append({**row, **point.columns(), "threads": int(threads), "sweep": sweep})
        m._built = None
        m.release()
        return out + reference_rows(s["reference"], job.model)

    def summarize(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        d = ok_rows(frame, self.name)
        if d.empty:
            return {}
        points = ratio_table(d)
        tables = {POINTS.name: POINTS.frame(points), BASE.name: BASE.frame(base_rows(points))}
        reference = reference_table(d, points)
        if reference:
            tables[REFERENCE.name] = REFERENCE.frame(reference)
        return tables

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
