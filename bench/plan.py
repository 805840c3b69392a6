"""Turn a profile (plus CLI overrides) into the ordered list of jobs. Validates every name up front, so a bad
sweep fails before anything is written."""

from __future__ import annotations

from typing import Any

from bench.errors import UsageError
from bench.jobs import Job
from bench.models import MODELS, model_info
from bench.profiles import Profile
from bench.protocols import ORDER, PROTOCOLS, protocol_module
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


def validated_settings(protocol: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Protocol defaults merged with the profile's table, checked by the protocol's own validator."""
    module = protocol_module(protocol)
    validate = getattr(module, "validate_settings", None)
    return validate(settings) if validate else dict(settings)


def plan_jobs(profile: Profile, device: str) -> list[Job]:
    """Expand models x datasets x protocols x seeds, protocols in dependency order (accuracy first)."""
    for p in profile.protocols:
        if p not in PROTOCOLS:
            raise unknown_name_error("protocol", p, PROTOCOLS)
    if not profile.protocols:
        raise UsageError(f"no protocols selected; valid: {', '.join(ORDER)}")
    _check_datasets(profile.datasets)
    jobs: list[Job] = []
    for protocol in [p for p in ORDER if p in profile.protocols]:
        models = profile.models_for(protocol)
        if not models:
            raise UsageError(f"no models selected for protocol {protocol!r}")
        _check_models(models)
        settings = validated_settings(protocol, profile.protocol_settings(protocol))
        for model in models:
            level = model_info(model).get("level", "network")
            if protocol == "accuracy":
                if level == "layer":
                    continue  # a single layer has no logits to classify with
                if not profile.datasets:
                    raise UsageError("the accuracy protocol needs at least one dataset (e.g. rotdigits)")
                datasets: list[str | None] = list(profile.datasets)
            elif protocol == "equivariance" and level != "layer" and profile.datasets:
                datasets = list(profile.datasets)  # the dataset fixes input geometry and trained weights
            else:
                datasets = [None]
            # cost does not depend on the seed: one efficiency job per model
            seeds = profile.seeds[:1] if protocol == "efficiency" else profile.seeds
            for dataset in datasets:
                for seed in seeds:
                    jobs.append(Job(protocol=protocol, model=model, dataset=dataset, seed=seed,
                                    device=device, settings=settings))
    if not jobs:
        raise UsageError("the selection produced no jobs (accuracy runs network-level models only)")
    return jobs


def check_data_available(jobs: list[Job], data_dir: Any = None, download: bool = False) -> None:
    """Open every split the jobs will read, so missing data fails (exit 2, naming the files) before any write."""
    from bench.datasets import create_dataset

    needed: set[tuple[str, str]] = set()
    for job in jobs:
        if job.dataset is None:
            continue
        if job.protocol == "accuracy":
            needed |= {(job.dataset, "train"), (job.dataset, "test")}
        elif job.settings.get("inputs") == "dataset":
            needed.add((job.dataset, "test"))
    for name, split in sorted(needed):
        create_dataset(name, split, data_dir=data_dir, download=download)
