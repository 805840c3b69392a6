"""Sweep profiles: TOML files describing models x datasets x protocols x seeds x settings.

A profile looks like::

    name = "quick"
    description = "..."
    models = ["cnn", "gmr", "c8"]        # default model list for every protocol
    datasets = ["rotdigits"]
    protocols = ["accuracy", "equivariance", "efficiency"]
    seeds = [0]
    device = "auto"                     # auto | cpu | cuda
    dtype = "float32"                   # float32 | float64
    threads = 2                         # torch.set_num_threads for the whole run
    timeout_s = 1800                    # per job

    [equivariance]                      # settings passed to that protocol (validated by it)
    models = ["layer_gmr", "gmr"]       # optional per-protocol model list
    angles = "0:360:5"

Built-in profiles live in bench/profiles/*.toml; users pass a path to their own copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from bench.errors import UsageError
from bench.registry import did_you_mean, unknown_name_error

TOP_LEVEL_KEYS = {"name", "description", "models", "datasets", "protocols", "seeds", "device", "dtype",
                  "threads", "timeout_s", "executor", "slurm"}
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float64")


@dataclass
class Profile:
    name: str
    description: str = ""
    models: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    dtype: str = "float32"
    threads: int | None = None
    timeout_s: float | None = None
    executor: str = "local"
    slurm: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    def models_for(self, protocol: str) -> list[str]:
        """Per-protocol model list when the profile gives one, else the profile's models."""
        return list(self.settings.get(protocol, {}).get("models", self.models))

    def protocol_settings(self, protocol: str) -> dict[str, Any]:
        table = dict(self.settings.get(protocol, {}))
        table.pop("models", None)
        return table


def builtin_profiles() -> list[str]:
    folder = resources.files("bench") / "profiles"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def _read_toml(name_or_path: str) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UsageError(f"profile file {name_or_path!r} does not exist")
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        names = builtin_profiles()
        if name_or_path not in names:
            raise unknown_name_error("profile", name_or_path, names)
        res = resources.files("bench") / "profiles" / f"{name_or_path}.toml"
        text, source = res.read_text(encoding="utf-8"), f"builtin:{name_or_path}"
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"malformed profile {source}: {exc}") from exc


def _expect_list(data: dict[str, Any], key: str, item_type: type) -> None:
    value = data.get(key)
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, item_type) for v in value):
        raise UsageError(f"profile key {key!r} must be a list of {item_type.__name__}, got {value!r}")


def load_profile(name_or_path: str) -> Profile:
    """Load and structurally validate a profile (names are validated later, against the registries)."""
    from bench.protocols import PROTOCOLS

    data, source = _read_toml(name_or_path)
    raw = copy.deepcopy(data)
    tables = {k: v for k, v in raw.items() if isinstance(v, dict) and k != "slurm"}
    scalars = {k: v for k, v in raw.items() if k not in tables}
    for key in scalars:
        if key not in TOP_LEVEL_KEYS:
            raise UsageError(f"unknown profile key {key!r} in {source}.{did_you_mean(key, TOP_LEVEL_KEYS)} "
                             f"Valid keys: {', '.join(sorted(TOP_LEVEL_KEYS))}, plus one table per protocol")
    for key in tables:
        if key not in PROTOCOLS:
            raise unknown_name_error("protocol table", key, PROTOCOLS)
    for key in ("models", "datasets", "protocols"):
        _expect_list(scalars, key, str)
    _expect_list(scalars, "seeds", int)
    profile = Profile(
        name=str(scalars.get("name", Path(name_or_path).stem)),
        description=str(scalars.get("description", "")),
        models=list(scalars.get("models", [])),
        datasets=list(scalars.get("datasets", [])),
        protocols=list(scalars.get("protocols", [])),
        seeds=list(scalars.get("seeds", [0])),
        device=str(scalars.get("device", "auto")),
        dtype=str(scalars.get("dtype", "float32")),
        threads=scalars.get("threads"),
        timeout_s=scalars.get("timeout_s"),
        executor=str(scalars.get("executor", "local")),
        slurm=dict(raw.get("slurm", {})),
        settings=tables,
        source=source,
    )
    check_scalars(profile)
    return profile


def check_scalars(profile: Profile) -> None:
    """Settings that need no registry: device, dtype, threads, timeout."""
    if profile.device not in DEVICES:
        raise unknown_name_error("device", profile.device, DEVICES)
    if profile.dtype not in DTYPES:
        raise unknown_name_error("dtype", profile.dtype, DTYPES)
    if profile.threads is not None and (not isinstance(profile.threads, int) or profile.threads < 1):
        raise UsageError(f"threads must be a positive integer, got {profile.threads!r}")
    if profile.timeout_s is not None and (not isinstance(profile.timeout_s, int | float) or profile.timeout_s <= 0):
        raise UsageError(f"timeout_s must be a positive number, got {profile.timeout_s!r}")
    if not profile.seeds:
        raise UsageError("seeds must list at least one integer seed")
