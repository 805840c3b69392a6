"""The `equibench` command: list registries, run sweeps, re-render reports.

Exit codes: 0 every job finished ok; 1 at least one job failed, timed out, diverged or was skipped (after
writing every other job's rows, the CSVs and the report with its failure list), or the report could not be
rendered; 2 bad input, nothing written."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import environment
from bench.errors import UsageError
from bench.jobs import Job, RunContext
from bench.profiles import Profile, builtin_profiles, check_scalars, load_profile
from bench.protocols import PROTOCOLS, get_protocol
from bench.results import ResultsStore
from bench.schema import OK, PROFILE_FILE

DEFAULT_OUT = Path("out")
# sub-commands implemented in their own modules: each has add_parser(subparsers) and run(args) -> exit code
COMMAND_MODULES = {"check": "bench.check_cli", "compare": "bench.compare_cli"}
LISTABLE = ("models", "datasets", "profiles", "protocols")


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in _csv(text) or []]
    except ValueError:
        raise UsageError(f"--seeds must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equibench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list registered models, datasets, profiles or protocols")
    p_list.add_argument("what", choices=LISTABLE)

    p_run = sub.add_parser("run", help="run a sweep")
    p_run.add_argument("--profile", default="quick", help="built-in profile name or path to a .toml file")
    p_run.add_argument("--models", help="comma-separated model names or pkg.module:callable plugins")
    p_run.add_argument("--datasets", help="comma-separated dataset names")
    p_run.add_argument("--protocols", help="comma-separated: accuracy, equivariance, efficiency")
    p_run.add_argument("--seeds", help="comma-separated integer seeds")
    p_run.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p_run.add_argument("--dtype", choices=("float32", "float64"))
    p_run.add_argument("--threads", type=int)
    p_run.add_argument("--out", type=Path, help="run directory (default: out/<profile>-<timestamp>)")
    p_run.add_argument("--resume", action="store_true", help="skip jobs already finished in --out")
    p_run.add_argument("--executor", choices=("local", "submitit"))
    p_run.add_argument("--dry-run", action="store_true", help="print the job list and write nothing")
    p_run.add_argument("--data-dir", type=Path, help="folder holding (or receiving) real datasets")
    p_run.add_argument("--download", action="store_true", help="download missing datasets where possible")
    p_run.add_argument("--angles", help="angles of every protocol that measures some, 'start:stop:step' or a "
                                        "comma list (degrees)")
    p_run.add_argument("--rotation", help="rotation method of every protocol that rotates: "
                                          "nearest|bilinear|bicubic|fourier")
    p_run.add_argument("--slurm-partition", help="Slurm partition for --executor submitit")
    p_run.add_argument("--slurm-gpus", type=int, help="GPUs per Slurm job (latency jobs never share one)")
    p_run.add_argument("--slurm-time", type=int, help="Slurm time limit per job, minutes")
    p_run.add_argument("--no-report", action="store_true", help="skip rendering report.html")

    p_report = sub.add_parser("report", help="re-render report.html and CSVs from a run directory")
    p_report.add_argument("run_dir", type=Path)
    for module in COMMAND_MODULES.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def apply_overrides(profile: Profile, args: argparse.Namespace) -> Profile:
    """CLI flags override the profile; --models replaces every protocol's model list."""
    if args.models is not None:
        profile.models = _csv(args.models) or []
        for table in profile.settings.values():
            table.pop("models", None)
    for key in ("datasets", "protocols"):
        value = _csv(getattr(args, key))
        if value is not None:
            setattr(profile, key, value)
    seeds = _seeds(args.seeds)
    if seeds is not None:
        profile.seeds = seeds
    for key in ("device", "dtype", "threads", "executor"):
        if getattr(args, key) is not None:
            setattr(profile, key, getattr(args, key))
    for key in ("angles", "rotation"):  # settings shared by name: set on every protocol that has the setting
        value = getattr(args, key)
        if value is None:
            continue
        for name in profile.protocols:
            if name in PROTOCOLS and key in {f.name for f in fields(get_protocol(name).settings_type)}:
                profile.settings.setdefault(name, {})[key] = value
    for flag, key in (("slurm_partition", "partition"), ("slurm_gpus", "gpus_per_node"), ("slurm_time", "timeout_min")):
        if getattr(args, flag) is not None:
            profile.slurm[key] = getattr(args, flag)
    check_scalars(profile)
    return profile


def resolve_device(name: str, planning: bool = False) -> torch.device:
    """The run's device; `planning` (--dry-run) accepts cuda without a GPU, since planning never touches it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available() and not planning:
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(f"device cuda requested but no CUDA device is available (torch {torch.__version__}, "
                         f"{built}); use --device auto or cpu, or --dry-run to plan the jobs without running them")
    return torch.device(name)


def cmd_list(what: str) -> int:
    if what == "models":
        from bench.models import list_models, missing_requirements, model_info

        for name in list_models():
            info = model_info(name)
            missing = missing_requirements(name)
            note = f"  (needs {', '.join(missing)})" if missing else ""
            print(f"{name:22s} {info['level']:8s} {info['family']}{note}")
    elif what == "datasets":
        from bench.datasets import list_datasets

        print("\n".join(list_datasets()))
    elif what == "profiles":
        for name in builtin_profiles():
            print(f"{name:8s} {load_profile(name).description}")
    else:
        from bench.protocols import list_protocols

        for name in list_protocols():
            print(f"{name:14s} {get_protocol(name).description}")
    return 0


def prepare_run(args: argparse.Namespace) -> tuple[Profile, list[Job], torch.device, Path]:
    """Everything that can fail on bad input, done before a single file is written."""
    from bench.plan import check_data_available, plan_jobs

    profile = apply_overrides(load_profile(args.profile), args)
    device = resolve_device(profile.device, planning=args.dry_run)
    jobs = plan_jobs(profile, str(device))
    if not args.dry_run:
        check_data_available(jobs, args.data_dir, args.download)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or DEFAULT_OUT / f"{profile.name}-{stamp}"
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file, not a folder; choose a folder for the run")
    store = ResultsStore(out)
    if store.path.exists() and not args.resume and not args.dry_run:
        raise UsageError(f"{out} already holds results; pass --resume to continue it or choose another --out")
    if profile.executor == "submitit":
        from bench.executors import check_submitit

        check_submitit()
    return profile, jobs, device, out


def cmd_run(args: argparse.Namespace) -> int:
    profile, jobs, device, out = prepare_run(args)
    store = ResultsStore(out)
    if args.dry_run:
        done = store.finished_job_ids() if args.resume else set()
        for job in jobs:
            mark = "done" if job.job_id in done else "todo"
            deps = f"  (after {', '.join(job.depends_on)})" if job.depends_on else ""
            print(f"{mark}  {job.job_id}  {job.label}{deps}")
        print(f"{len(jobs)} jobs ({sum(j.job_id in done for j in jobs)} already done); nothing written")
        if device.type == "cuda" and not torch.cuda.is_available():
            print("planned for cuda; no CUDA device is available here, so a run without --dry-run stops (exit 2)")
        return 0

    from bench.lock import run_lock

    with run_lock(out):
        return _run_locked(args, profile, jobs, device, out)


def _run_locked(args: argparse.Namespace, profile: Profile, jobs: list[Job], device: torch.device,
                out: Path) -> int:
    from bench.runner import pending_jobs, run_local, write_environment

    store = ResultsStore(out)
    if store.path.exists() and not args.resume:  # checked again under the lock: another run may have begun
        raise UsageError(f"{out} already holds results; pass --resume to continue it or choose another --out")
    dtype = getattr(torch, profile.dtype)
    threads = profile.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    store.repair()
    env = environment.capture(device, dtype, threads)
    env["started_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    env["profile"] = profile.name
    write_environment(out, env)
    (out / PROFILE_FILE).write_text(json.dumps(asdict(profile), indent=2, sort_keys=True))
    ctx = RunContext(out_dir=out, device=device, dtype=dtype, data_dir=args.data_dir, download=args.download,
                     threads=threads, progress=sys.stderr.isatty())
    if args.resume:
        from bench.executors import ingest_orphans

        ingest_orphans(store)  # records of submitit workers whose parent died
    todo = pending_jobs(jobs, store, args.resume)
    print(f"{len(todo)} of {len(jobs)} jobs to run -> {out}", file=sys.stderr)
    if profile.executor == "submitit":
        from bench.executors import run_submitit

        run_submitit(todo, store, ctx, profile.timeout_s, profile.slurm)
    else:
        run_local(todo, store, ctx, profile.timeout_s, labels={j.job_id: j.label for j in jobs})
    code = finish(out, render=not args.no_report)
    statuses = store.statuses()
    unfinished = [j for j in jobs if statuses.get(j.job_id) != OK]
    if unfinished:
        print(f"{len(unfinished)} of {len(jobs)} job(s) did not finish ok (see results.csv and the report's "
              "failure list)", file=sys.stderr)
        return 1
    return code


def finish(out: Path, render: bool = True) -> int:
    """Export results.csv and every table, render the report, print the headline; 1 if the report failed."""
    from bench.tables import build_tables, write_tables

    store = ResultsStore(out)
    print(f"results: {store.export_csv()}")
    tables = build_tables(store)
    write_tables(out, tables)
    if not render:
        return 0
    try:
        from reports import render_report, terminal_headline
    except ImportError as exc:
        print(f"equibench: error: the report renderer cannot be imported ({exc}); results and tables are "
              f"written, re-render with `equibench report {out}` once it is fixed", file=sys.stderr)
        return 1
    path = render_report(out)
    text = terminal_headline(out)
    if text:
        print(text)
    print(f"report: {path}")
    return 0


def cmd_report(run_dir: Path) -> int:
    if not ResultsStore(run_dir).path.exists():
        raise UsageError(f"{run_dir} holds no results.jsonl; pass the --out folder of an equibench run")
    return finish(run_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.what)
        if args.command == "run":
            return cmd_run(args)
        if args.command in COMMAND_MODULES:
            return int(importlib.import_module(COMMAND_MODULES[args.command]).run(args))
        return cmd_report(args.run_dir)
    except UsageError as exc:
        print(f"equibench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
