"""The whole GPU check in one call (a script; it installs nothing, it runs with the interpreter that runs it):

    .venv/bin/python -m bench.gpu_check                      # on a machine with a CUDA GPU, <= 10 minutes
    python -m bench.gpu_check --device cpu --profile tiny.toml --results-dir /tmp/x   # rehearsal without a GPU

Steps (each timed; a failing step does not stop the later ones):

1. environment: torch, CUDA and cuDNN versions, the GPU's name and memory, the TF32 switches; with
   ``--device cuda`` and no CUDA device it stops at once (exit 2);
2. correctness on the device: ``pytest -m cuda tests/test_cuda.py`` with EQUIBENCH_REQUIRE_CUDA=1, so a missing
   device fails instead of skipping (``--device cpu``: EQUIBENCH_TEST_DEVICE=cpu runs them on the CPU);
3. the sweep: ``equibench run --profile gpu --device cuda`` under a wall-clock limit (``--run-limit-s``, at most
   what is left of ``--budget-s``); past it the run is stopped and the tables and report are rebuilt from the
   jobs that finished (every finished job is already in results.jsonl);
4. results: tables/*.csv, results.csv, report.html, environment.json and profile.json of the run, plus
   check.json and summary.md (this check's steps, the paper comparisons), copied into
   ``docs/results/gpu-<date>/`` (``--results-dir``); the summary is printed.

Exit code: 0 every step ok; 1 a step failed or the run did not finish every job (see summary.md); 2 bad usage or
no CUDA device.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.schema import ENV_FILE, PROFILE_FILE, REPORT_FILE, RESULTS_CSV, TABLES_DIR

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = "tests/test_cuda.py"
REPORT_RESERVE_S = 60  # kept back from the budget for rebuilding the report and copying


@dataclass
class Step:
    name: str
    status: str = "skipped"  # ok | failed | timeout | skipped
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Check:
    started: str
    device: str
    profile: str
    steps: list[Step] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    run_dir: str = ""
    results_dir: str = ""


def environment(device: str) -> dict[str, Any]:
    """What the numbers depend on: versions, the GPU, TF32 (cuDNN convolutions use it by default)."""
    import torch

    env: dict[str, Any] = {"python": sys.executable, "torch": torch.__version__, "cuda_build": torch.version.cuda,
                           "cuda_available": torch.cuda.is_available(), "device": device,
                           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   gpu_count=torch.cuda.device_count(), capability=f"{props.major}.{props.minor}")
    return env


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra)
    return env


def run_limited(cmd: list[str], limit_s: float, log: Path, extra_env: dict[str, str] | None = None
                ) -> tuple[int | None, float]:
    """Run `cmd` (output to `log` and echoed) in its own process group; past `limit_s` the group is stopped.
    Returns (exit code or None when stopped, seconds)."""
    t0 = time.monotonic()
    with log.open("w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(extra_env or {}), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # let it write what it has
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
    return code, time.monotonic() - t0


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


def results_folder(base: Path | None, date: str) -> Path:
    """docs/results/gpu-<date>, with -2, -3, ... when that exists already."""
    if base is not None:
        return base
    root = ROOT / "docs" / "results"
    out, n = root / f"gpu-{date}", 2
    while out.exists():
        out, n = root / f"gpu-{date}-{n}", n + 1
    return out


def copy_results(run_dir: Path, dest: Path) -> list[str]:
    """The run's tables, results.csv, report and environment into `dest`; returns what was copied."""
    copied = []
    (dest / TABLES_DIR).mkdir(parents=True, exist_ok=True)
    for csv in sorted((run_dir / TABLES_DIR).glob("*.csv")):
        shutil.copy2(csv, dest / TABLES_DIR / csv.name)
        copied.append(f"{TABLES_DIR}/{csv.name}")
    for name in (RESULTS_CSV, REPORT_FILE, ENV_FILE, PROFILE_FILE):
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, dest / name)
            copied.append(name)
    return copied


# -- the summary --------------------------------------------------------------------------------------------
def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else (  # noqa: E731
        f"{v:.3g}" if isinstance(v, float) else str(v))
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)])


def paper_comparison(tables_dir: Path) -> str:
    """The teaser's two panels next to ours, from the efficiency_reference table (nothing recomputed)."""
    path = tables_dir / "efficiency_reference.csv"
    if not path.exists():
        return "No efficiency_reference table (the run has no reference rows).\n"
    ref = pd.read_csv(path)
    out = []
    lat = ref[(ref["metric"] == "latency_ms") & ref["value"].notna()]
    if not lat.empty:
        wide = lat.pivot_table(index=["series", "model", "kernel_size", "paper_value", "paper_ratio"],
                               columns="mode", values=["value", "ratio"], aggfunc="first")
        wide.columns = [f"{'ms' if a == 'value' else '× conv2d'} {b}" for a, b in wide.columns]
        wide = wide.reset_index().rename(columns={"paper_value": "paper s/1000", "paper_ratio": "paper × conv2d"})
        out += ["Teaser (b): seconds per 1,000 convolutions (= ms per call), ours on "
                f"{', '.join(sorted(lat['device'].astype(str).unique()))}:", "", _md(wide), ""]
    mem = ref[(ref["metric"] == "peak_memory_mb") & ref["value"].notna()]
    if not mem.empty:
        keep = mem[["series", "model", "paper_value", "paper_ratio", "memory", "batch", "resolution", "value",
                    "ratio"]].rename(columns={"paper_value": "paper MiB", "paper_ratio": "paper × resnet18",
                                              "value": "ours MiB", "ratio": "ours × resnet18"})
        out += ["Teaser (a): training memory (paper: GB read as GiB), ours per point:", "", _md(keep), ""]
    return "\n".join(out) + "\n"


def summary_text(check: Check, planned: int | None, finished_ok: int | None, tables_dir: Path | None) -> str:
    lines = [f"# GPU check {check.started}", "", f"device {check.device}, profile {check.profile}", ""]
    env = check.environment
    lines += [", ".join(f"{k} {env[k]}" for k in ("gpu", "gpu_memory_gib", "torch", "cuda_build", "cudnn",
                                                   "cudnn_allow_tf32", "matmul_allow_tf32") if k in env), ""]
    lines += [_md(pd.DataFrame([asdict(s) for s in check.steps])), ""]
    if planned is not None:
        lines += [f"jobs finished ok: {finished_ok} of {planned} planned", ""]
    if tables_dir is not None and tables_dir.exists():
        lines += [paper_comparison(tables_dir)]
        base = tables_dir / "efficiency_base.csv"
        if base.exists():
            b = pd.read_csv(base)
            cols = [c for c in ("model", "batch", "resolution", "kernel_size", "channels", "latency_eval_ms",
                                "latency_train_ms", "peak_memory_eval_mb", "peak_memory_train_mb") if c in b]
            lines += ["Base points (efficiency_base):", "", _md(b[cols]), ""]
    return "\n".join(lines)


# -- the check ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--profile", default="gpu", help="profile name or .toml path (default: gpu)")
    ap.add_argument("--results-dir", type=Path, help="where the results land (default docs/results/gpu-<date>)")
    ap.add_argument("--run-dir", type=Path, help="the equibench run folder (default out/gpu-check-<stamp>)")
    ap.add_argument("--budget-s", type=float, default=570, help="wall-clock budget of the whole check")
    ap.add_argument("--run-limit-s", type=float, default=480, help="limit of the sweep (the profile's 8 minutes)")
    ap.add_argument("--skip-tests", action="store_true", help="skip step 2")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    now = dt.datetime.now(dt.timezone.utc)
    check = Check(started=now.isoformat(timespec="seconds"), device=args.device, profile=args.profile)
    dest = results_folder(args.results_dir, now.strftime("%Y-%m-%d"))
    run_dir = (args.run_dir or ROOT / "out" / f"gpu-check-{now.strftime('%Y%m%d-%H%M%S')}").resolve()
    dest.mkdir(parents=True, exist_ok=True)
    check.run_dir, check.results_dir = str(run_dir), str(dest)

    step = Step("environment")
    t0 = time.monotonic()
    check.environment = environment(args.device)
    step.seconds, step.status = time.monotonic() - t0, "ok"
    step.detail = check.environment.get("gpu", "no CUDA device")
    check.steps.append(step)
    print(json.dumps(check.environment, indent=1), flush=True)
    if args.device == "cuda" and not check.environment["cuda_available"]:
        print("gpu_check: error: --device cuda but no CUDA device is available; rehearse with --device cpu",
              file=sys.stderr)
        return 2

    step = Step("cuda tests")
    if not args.skip_tests:
        extra = {"EQUIBENCH_REQUIRE_CUDA": "1"} if args.device == "cuda" else {"EQUIBENCH_TEST_DEVICE": "cpu"}
        limit = args.budget_s - (time.monotonic() - t_start) - REPORT_RESERVE_S - 60
        code, step.seconds = run_limited([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                                          "cuda", CUDA_TESTS], limit, dest / "cuda_tests.log", extra)
        step.status = "timeout" if code is None else "ok" if code == 0 else "failed"
        step.detail = _tail(dest / "cuda_tests.log", 1)
    check.steps.append(step)
    print(f"[{step.name}] {step.status} in {step.seconds:.0f} s: {step.detail}", flush=True)

    step = Step("sweep")
    limit = min(args.run_limit_s, args.budget_s - (time.monotonic() - t_start) - REPORT_RESERVE_S)
    code, step.seconds = run_limited([sys.executable, "-m", "bench", "run", "--profile", args.profile, "--device",
                                      args.device, "--out", str(run_dir)], limit, dest / "sweep.log")
    step.status = "timeout" if code is None else "ok" if code == 0 else "failed"
    step.detail = f"exit {code}" if code is not None else f"stopped after {limit:.0f} s"
    if code is None or not (run_dir / TABLES_DIR).exists():
        rc, _ = run_limited([sys.executable, "-m", "bench", "report", str(run_dir)], REPORT_RESERVE_S,
                            dest / "report.log")
        step.detail += f"; report rebuilt from the finished jobs (exit {rc})"
    check.steps.append(step)
    print(f"[{step.name}] {step.status} in {step.seconds:.0f} s: {step.detail}", flush=True)

    step = Step("results")
    t0 = time.monotonic()
    planned = finished = None
    try:
        copied = copy_results(run_dir, dest)
        planned, finished = _job_counts(args.profile, args.device, run_dir)
        step.status, step.detail = "ok", f"{len(copied)} files -> {dest}"
    except Exception as exc:  # noqa: BLE001 - the summary is still written
        step.status, step.detail = "failed", f"{type(exc).__name__}: {exc}"
    step.seconds = time.monotonic() - t0
    check.steps.append(step)
    (dest / "check.json").write_text(json.dumps(asdict(check), indent=1, default=str), encoding="utf-8")
    text = summary_text(check, planned, finished, dest / TABLES_DIR)
    (dest / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    failed = any(s.status not in ("ok", "skipped") for s in check.steps) or planned != finished
    return 1 if failed else 0


def _job_counts(profile: str, device: str, run_dir: Path) -> tuple[int, int]:
    """(planned jobs, jobs whose latest record is ok)."""
    from bench.plan import plan_jobs
    from bench.profiles import load_profile
    from bench.results import ResultsStore
    from bench.schema import OK

    jobs = plan_jobs(load_profile(profile), device)
    statuses = ResultsStore(run_dir).statuses()
    return len(jobs), sum(statuses.get(j.job_id) == OK for j in jobs)


if __name__ == "__main__":
    raise SystemExit(main())
