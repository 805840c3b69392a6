"""Turn a profile (plus CLI overrides) into the ordered list of jobs, with their dependencies.

Validates every name and setting up front, so a bad sweep fails before anything is written. Knows nothing about
individual protocols: each protocol object plans its own jobs (`Protocol.plan`), in an order where every
protocol sees the jobs of the protocols it comes after (`Protocol.after`), so it can depend on them.
"""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError
from bench.jobs import Job
from bench.models import MODELS
from bench.profiles import Profile
from bench.protocols import PROTOCOLS, get_protocol, list_protocols, protocol_order
from bench.registry import load_object, unknown_name_error


def _check_models(names: list[str]) -> None:
    for name in names:
        if ":" in name:
            if not callable(load_object(name)):
                raise UsageError(f"plugin {name!r} is not callable; it must be a model factory")
        elif name not in MODELS:
            raise unknown_name_error("model", name, MODELS.names())


def _check_datasets(names: list[str]) -> None:
    from bench.datasets import list_datasets

    valid = list_datasets()
    for name in names:
        if name not in valid:
            raise unknown_name_error("dataset", name, valid)


def plan_jobs(profile: Profile, device: str) -> list[Job]:
    """Every protocol's jobs, protocols in dependency order; each job's prerequisites come before it."""
    if not profile.protocols:
        raise UsageError(f"no protocols selected; valid: {', '.join(list_protocols())}")
    for p in profile.protocols:
        if p not in PROTOCOLS:
            raise unknown_name_error("protocol", p, PROTOCOLS.names())
    _check_datasets(profile.datasets)
    jobs: list[Job] = []
    for name in protocol_order(profile.protocols):
        protocol = get_protocol(name)
        models = profile.models_for(name)
        if not models:
            raise UsageError(f"no models selected for protocol {name!r}")
        _check_models(models)
        settings = protocol.settings(profile.protocol_settings(name))
        jobs += protocol.plan(profile, device, settings, tuple(jobs))
    if not jobs:
        raise UsageError("the selection produced no jobs (accuracy runs network-level models only)")
    check_dependencies(jobs)
    return jobs


def check_dependencies(jobs: list[Job]) -> None:
    """Every prerequisite is planned, and before its dependents (a bug in a protocol's `plan` otherwise)."""
    seen: set[str] = set()
    for job in jobs:
        missing = [d for d in job.depends_on if d not in seen]
        if missing:
            raise RuntimeError(f"{job.label} depends on {missing}, which are not planned before it")
        seen.add(job.job_id)


def check_data_available(jobs: list[Job], data_dir: Any = None, download: bool = False) -> None:
    """Open every split the jobs will read, so missing data fails (exit 2, naming the files) before any write."""
    from bench.datasets import create_dataset

    needed: set[tuple[str, str]] = set()
    for job in jobs:
        needed |= get_protocol(job.protocol).data_needed(job)
    for name, split in sorted(needed):
        create_dataset(name, split, data_dir=data_dir, download=download)
