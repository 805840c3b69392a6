"""pytest-benchmark suite for the model zoo (regression tracking; see docs/perf.md).

- Files named ``bench_*.py`` in this folder are collected even when pyproject's ``python_files`` does not list
  that pattern (hook below; it stands aside once the pattern is configured, so nothing is collected twice).
- In the plain test run (``--benchmark-disable`` in addopts) every benchmark body runs once, as a correctness
  check; ``tox -e perf`` runs them for real (``--benchmark-only --benchmark-enable``).
- Environment knobs: ``EQUIBENCH_BENCH_DEVICE`` (cpu | cuda, default cpu), ``EQUIBENCH_BENCH_THREADS``
  (torch threads, default 1), ``EQUIBENCH_BENCH_MODELS`` ("all", or a comma list; default: every layer model and
  the small networks; see bench_zoo.py).
- ``machine_info`` of every saved run gets torch / CUDA / cuDNN versions, the device name and the thread count.
- Latency tracking (``perf_tracker.py``, docs/perf.md): benchmarks time their step interleaved with a reference
  through the ``track`` fixture; ``--perf-check`` (on in ``tox -e perf``) compares the run with the baseline that
  ``--benchmark-compare`` loaded, using the saved runs up to it as the run-to-run history, prints a short table
  and fails the session only on a real regression (``--perf-threshold``, ``--perf-alpha``;
  ``EQUIBENCH_BENCH_BUDGET_S`` = clock seconds per benchmark; ``EQUIBENCH_BENCH_FLOPS=1`` records FLOPs).
"""

from __future__ import annotations

import fnmatch
import os
import platform
from pathlib import Path
from typing import Any

import perf_tracker
import pytest
import torch

HERE = Path(__file__).resolve().parent


def bench_device() -> torch.device:
    dev = torch.device(os.environ.get("EQUIBENCH_BENCH_DEVICE", "cpu"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("EQUIBENCH_BENCH_DEVICE=cuda but torch.cuda.is_available() is False")
    return dev


def bench_threads() -> int:
    return max(1, int(os.environ.get("EQUIBENCH_BENCH_THREADS", "1")))


def bench_budget_s() -> float:
    return float(os.environ.get("EQUIBENCH_BENCH_BUDGET_S", perf_tracker.DEFAULT_BUDGET_S))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equibench latency tracking")
    group.addoption("--perf-check", action="store_true",
                    help="compare with the --benchmark-compare baseline using the interleaved-reference rule "
                         "(benchmarks/perf_tracker.py) and fail only on a regression")
    group.addoption("--perf-threshold", type=float, default=perf_tracker.DEFAULT_THRESHOLD,
                    help="relative rise of the time relative to the reference that can count as a regression "
                         "(default %(default)s)")
    group.addoption("--perf-alpha", type=float, default=perf_tracker.DEFAULT_ALPHA,
                    help="one-sided Mann-Whitney U level over the per-round ratios (default %(default)s)")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_") or file_path.parent != HERE:
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's python plugin collects it already
    if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None  # python_files already covers bench_*.py
    return pytest.Module.from_parent(parent, path=file_path)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    dev = bench_device()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    machine_info.update({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": torch.cuda.is_available(),
        "bench_device": str(dev),
        "device_name": _device_name(dev),
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "torch_threads": bench_threads(),
        "cpu_count": os.cpu_count(),
    })


@pytest.fixture(scope="session")
def device() -> torch.device:
    return bench_device()


@pytest.fixture(scope="session")
def threads() -> int:
    return bench_threads()


@pytest.fixture(scope="session")
def zoo_model():
    """`zoo_model(name, in_channels, **kw)`: a model built once per session (escnn builds are slow), on the
    benchmark device; a model whose optional library is missing is skipped."""
    from bench.errors import MissingDependencyError
    from bench.models import create_model

    cache: dict[tuple, Any] = {}
    dev = bench_device()

    def get(name: str, in_channels: int, num_classes: int = 10, **kw: Any) -> torch.nn.Module:
        key = (name, in_channels, num_classes, tuple(sorted(kw.items())))
        if key not in cache:
            torch.manual_seed(0)
            try:
                cache[key] = create_model(name, in_channels, num_classes, **kw).to(dev)
            except MissingDependencyError as exc:
                cache[key] = exc
        value = cache[key]
        if isinstance(value, Exception):
            pytest.skip(str(value))
        return value

    return get


@pytest.fixture
def track(request: pytest.FixtureRequest, device: torch.device):
    """`track(benchmark, step, reference, reference_name)`: time `step` with `benchmark`, each round preceded by
    one call of `reference` with the same clock (perf_tracker.interleaved). Both must be warmed up."""
    from pytest_benchmark.utils import load_timer

    from bench.cost.timing import synchronize

    timer_name = str(request.config.getoption("benchmark_timer"))
    timer = load_timer(timer_name).target  # the clock pytest-benchmark times the target with

    def run(benchmark: Any, step: Any, reference: Any, reference_name: str) -> Any:
        return perf_tracker.interleaved(benchmark, step, reference, reference_name, timer, timer_name,
                                        budget_s=bench_budget_s(), sync=lambda: synchronize(device))

    return run


def _benchmark_session(config: pytest.Config) -> Any:
    return getattr(config, "_benchmarksession", None)  # pytest-benchmark's session object


def saved_runs_until(bs: Any, baseline_path: Any) -> list[list[dict[str, Any]]]:
    """Benchmarks of the last HISTORY_RUNS saved runs of this machine up to and including the baseline, oldest
    first (the current run, saved already, comes after the baseline and is left out)."""
    runs: list[list[dict[str, Any]]] = []
    for path, data in bs.storage.load():
        runs.append(list(data.get("benchmarks") or []))
        if str(path) == str(baseline_path):
            return runs[-perf_tracker.HISTORY_RUNS:]
    return [list(bs.compared_mapping[baseline_path].values())]  # a baseline outside the storage: itself only


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """--perf-check: verdicts against the baseline; a regression turns a passing session into exit code 1."""
    config = session.config
    bs = _benchmark_session(config)
    if not config.getoption("perf_check") or bs is None or bs.disabled:
        return
    current = [b.as_dict(include_data=False) for b in bs.benchmarks if b and not b.has_error]
    if not bs.compared_mapping:
        config._perf_report = ("latency tracking: no baseline to compare with (first run?); this run is saved and "  # type: ignore[attr-defined]
                               "becomes the baseline when autosave/save is on")
        return
    path, mapping = sorted(bs.compared_mapping.items(), key=lambda kv: str(kv[0]))[-1]
    threshold, alpha = config.getoption("perf_threshold"), config.getoption("perf_alpha")
    baseline = list(mapping.values())
    history = saved_runs_until(bs, path)
    verdicts = perf_tracker.compare(baseline, current, threshold, alpha, history)
    config._perf_report = perf_tracker.format_table(  # type: ignore[attr-defined]
        verdicts, threshold, alpha, source=str(path), reference_change=perf_tracker.reference_change(baseline, current),
        history_runs=len(history))
    if perf_tracker.regressions(verdicts) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    report = getattr(terminalreporter.config, "_perf_report", None)
    if report:
        terminalreporter.write_sep("-", "latency tracking (benchmarks/perf_tracker.py)")
        terminalreporter.write_line(report)


def pytest_sessionstart(session: pytest.Session) -> None:
    """First run on a machine: ``--benchmark-compare-fail`` with nothing saved to compare against would end the
    run with a UsageError *after* the benchmarks ran and were saved. Drop the check for that run instead (with a
    warning), so ``tox -e perf`` works from an empty storage; from the second run on it compares and fails."""
    bs = getattr(session.config, "_benchmarksession", None)  # pytest-benchmark's session object
    if bs is None or not getattr(bs, "compare_fail", None) or getattr(bs, "compared_mapping", None):
        return
    import warnings

    warnings.warn(
        "pytest-benchmark: no saved run to compare against in "
        f"{getattr(bs, 'storage', '?')} (first run on this machine?): --benchmark-compare-fail is ignored "
        "for this run; this run is saved and becomes the baseline when autosave/save is on.",
        pytest.PytestWarning,
        stacklevel=1,
    )
    bs.compare_fail = None
