"""The latency tracker's measurement campaign (figures in docs/perf.md). Not a test: it takes ~30-60 minutes.

    PYTHONPATH=$PWD python benchmarks/perf_campaign.py --out .benchmarks/campaign

What it does, each run being exactly the pytest command of tox.ini's ``[testenv:perf]`` (read from tox.ini, run
with this interpreter, i.e. the same environment, storage redirected into ``--out``):

1. ``--history`` (3) runs that give the tracker its run-to-run ranges (the first has nothing to compare with;
   a new machine starts like this: below 3 saved runs the threshold alone decides);
2. ``--clean`` (5) consecutive runs of the unchanged code, each compared with the previous one as ``tox -e perf``
   does; the runs in ``--loaded`` (2nd and 4th) run while two ``python -c 'while 1: pass'`` keep both cores busy.
   Goal: 0 regressions flagged;
3. the slowdown that `perf_inject` causes in ``GMRConv2d.forward`` alone, measured interleaved in one process;
4. ``--injected`` (5) runs with that slowdown (``-p perf_inject``), each on its own copy of the storage as the
   clean runs left it (so each is compared with the last clean run and none sees another injected run), the ones
   in ``--loaded`` again under two busy loops. Goal: every run fails, and only benchmarks that ran
   ``GMRConv2d.forward`` are flagged.

Every run's wall time (goal: < 5 min), exit code, load average before and after, and its verdicts (recomputed
from the saved JSON files with perf_tracker.compare and the same history, the hook's function) go to
``<out>/campaign.json``; a summary in markdown is printed and written to ``<out>/summary.md``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import perf_tracker  # noqa: E402


def tox_perf_command(tox_ini: Path = ROOT / "tox.ini") -> list[str]:
    """The ``[testenv:perf]`` command of tox.ini as an argv list ({toxinidir} filled in, {posargs} dropped)."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(tox_ini)
    text = cfg["testenv:perf"]["commands"].replace("\\\n", " ").replace("{toxinidir}", str(ROOT))
    argv = shlex.split(text.replace("{posargs}", ""))
    if argv[0] != "pytest":
        raise SystemExit(f"unexpected [testenv:perf] command in {tox_ini}: {text!r}")
    return [sys.executable, "-m", "pytest", *argv[1:]]


def tox_env() -> dict[str, str]:
    """The environment tox sets (tox.ini [testenv] set_env) plus the worktree on the path."""
    env = dict(os.environ)
    env.update({"MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")])})
    return env


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_perf(out: Path, label: str, storage: Path, loaded: bool, inject: float | None) -> dict[str, Any]:
    """One `tox -e perf` pytest run on `storage`; returns its record (stdout+stderr in <out>/<label>.log)."""
    cmd = tox_perf_command() + [f"--benchmark-storage=file://{storage}"]
    env = tox_env()
    if inject is not None:
        cmd += ["-p", "perf_inject"]
        env["EQUIBENCH_PERF_INJECT_GMR"] = str(inject)
        env["EQUIBENCH_PERF_INJECT_REPORT"] = str(out / f"{label}.affected.json")
    hogs = busy_loops(2) if loaded else []
    load_before = os.getloadavg()
    t0 = time.monotonic()
    try:
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    wall = time.monotonic() - t0
    (out / f"{label}.log").write_text(res.stdout + res.stderr)
    record = {"label": label, "loaded": loaded, "inject": inject, "exit_code": res.returncode, "wall_s": wall,
              "load_before": load_before, "load_after": os.getloadavg(), "storage": str(storage)}
    record["verdicts"] = last_run_verdicts(storage)
    print(f"{label}: exit {res.returncode}, {wall:.0f} s, load {load_before[0]:.1f} -> {record['load_after'][0]:.1f}"
          f"{' (2 busy loops)' if loaded else ''}", flush=True)
    return record


def saved_runs(storage: Path) -> list[Path]:
    return sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json"), key=lambda p: p.name)


def last_run_verdicts(storage: Path) -> list[perf_tracker.Verdict]:
    """The tracker's verdicts for the newest saved run against the one before, with the hook's history."""
    files = saved_runs(storage)
    if len(files) < 2:
        return []
    history = [perf_tracker.load_benchmarks(f) for f in files[:-1]]
    return perf_tracker.compare(history[-1], perf_tracker.load_benchmarks(files[-1]), history=history)


def injected_slowdown(fraction: float, rounds: int = 200) -> dict[str, float]:
    """CPU-time ratio patched / original GMRConv2d forward at the zoo layer's shape (eval), interleaved."""
    import torch
    from perf_inject import slowed

    import gmr

    torch.set_num_threads(1)
    torch.manual_seed(0)
    layer = gmr.GMRConv2d(16, 16, 7, padding=3).eval()
    x = torch.randn(8, 16, 32, 32)
    original = gmr.GMRConv2d.forward
    patched = slowed(original, fraction)
    ratios = []
    with torch.no_grad():
        for fn in (original, patched):
            fn(layer, x)
        for _ in range(rounds):
            times = []
            for fn in (original, patched):
                t0 = time.process_time()
                fn(layer, x)
                times.append(time.process_time() - t0)
            if times[0] > 0:
                ratios.append(times[1] / times[0])
    return {"fraction": fraction, "median_ratio": statistics.median(ratios), "rounds": len(ratios)}


def summarize(records: list[dict[str, Any]], slowdown: dict[str, float] | None, up: tuple[str, str]) -> str:
    lines = ["| run | busy loops | exit | wall (s) | load 1 min before → after | flagged | flagged, not GMR |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['label']} | {'2' if r['loaded'] else '–'} | {r['exit_code']} | {r['wall_s']:.0f} | "
                     f"{r['load_before'][0]:.1f} → {r['load_after'][0]:.1f} | {len(r['flagged'])} | "
                     f"{len(r['flagged_not_gmr'])} |")
    clean = [r for r in records if r["label"].startswith("clean")]
    injected = [r for r in records if r["inject"] is not None]
    out = [f"before: `{up[0]}`", f"after: `{up[1]}`", "", *lines, ""]
    out.append(f"- unchanged code: {sum(len(r['flagged']) for r in clean)} false regressions in {len(clean)} runs "
               f"({sum(r['exit_code'] != 0 for r in clean)} failing runs)")
    if slowdown:
        out.append(f"- injected: extra forward on {slowdown['fraction']:g} of the rows = GMRConv2d.forward "
                   f"x{slowdown['median_ratio']:.2f} (CPU time, {slowdown['rounds']} interleaved rounds)")
    if injected:
        out.append(f"- injected runs flagged (exit 1): {sum(r['exit_code'] == 1 for r in injected)} of {len(injected)}; "
                   f"flagged benchmarks that do not run GMRConv2d.forward: "
                   f"{sum(len(r['flagged_not_gmr']) for r in injected)}")
        per_bench: dict[str, list[str]] = {}
        for r in injected:
            for name, change, limit, verdict in r["gmr_changes"]:
                mark = "*" if verdict == perf_tracker.REGRESSION else ""
                per_bench.setdefault(name, []).append(f"{change:.2f}{mark} (limit {limit:.2f})")
        out.append("- ratio now/baseline of the benchmarks that ran GMRConv2d.forward, per injected run "
                   "(* = flagged):")
        out += [f"  - {perf_tracker.short_name(n)}: {', '.join(v)}" for n, v in sorted(per_bench.items())]
    out.append(f"- wall time per run: max {max(r['wall_s'] for r in records):.0f} s "
               f"(without busy loops: max {max(r['wall_s'] for r in records if not r['loaded']):.0f} s)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".benchmarks" / "campaign")
    parser.add_argument("--history", type=int, default=3, help="runs before the clean series (the first: baseline)")
    parser.add_argument("--clean", type=int, default=5)
    parser.add_argument("--injected", type=int, default=5)
    parser.add_argument("--loaded", default="2,4", help="1-based run numbers (of each series) run under 2 busy loops")
    parser.add_argument("--fraction", type=float, default=0.2, help="injected extra forward, fraction of the input rows")
    args = parser.parse_args(argv)
    out: Path = args.out
    storage = out / "storage"
    if storage.exists() and saved_runs(storage):
        raise SystemExit(f"{storage} already holds saved runs; choose an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    loaded = {int(x) for x in args.loaded.split(",") if x.strip()}
    print("command:", shlex.join(tox_perf_command()), flush=True)
    up_before = uptime()
    records = [run_perf(out, f"history{i}", storage, False, None) for i in range(1, args.history + 1)]
    records += [run_perf(out, f"clean{i}", storage, i in loaded, None) for i in range(1, args.clean + 1)]
    slowdown = injected_slowdown(args.fraction) if args.injected else None
    for i in range(1, args.injected + 1):
        own = out / f"storage_injected{i}"
        shutil.copytree(storage, own)
        rec = run_perf(out, f"injected{i}", own, i in loaded, args.fraction)
        rec["affected"] = json.loads((out / f"injected{i}.affected.json").read_text())
        records.append(rec)
    up_after = uptime()
    for rec in records:
        vs = rec.pop("verdicts")
        affected = set(rec.get("affected", []))
        rec["flagged"] = [v.name for v in vs if v.verdict == perf_tracker.REGRESSION]
        rec["flagged_not_gmr"] = [n for n in rec["flagged"] if n not in affected]
        rec["gmr_changes"] = [(v.name, v.change, v.limit, v.verdict) for v in vs if v.name in affected and v.change]
        rec["verdicts"] = {v.name: {"verdict": v.verdict, "baseline": v.baseline, "now": v.now, "change": v.change,
                                    "limit": v.limit, "p_slower": v.p_slower} for v in vs}
    summary = summarize(records, slowdown, (up_before, up_after))
    (out / "campaign.json").write_text(json.dumps({"command": tox_perf_command(), "uptime": [up_before, up_after],
                                                   "slowdown": slowdown, "runs": records}, indent=1))
    (out / "summary.md").write_text(summary + "\n")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
