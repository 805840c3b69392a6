"""A job is one (protocol, model, dataset, seed, settings) cell of a sweep, with a stable content hash id.

`depends_on` lists the ids of jobs that must finish ok before this one may start (e.g. the accuracy job whose
checkpoint an equivariance job measures). It is part of the id: a prerequisite run with other settings makes
a different dependent job, so a resumed sweep never mixes an old checkpoint with new settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.schema import CHECKPOINT_DIR


@dataclass(frozen=True)
class Job:
    """One unit of work. `settings` is the protocol's table from the profile (JSON-serialisable)."""

    protocol: str
    model: str
    dataset: str | None
    seed: int
    device: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "depends_on", tuple(self.depends_on))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["depends_on"] = list(self.depends_on)
        if not d["depends_on"]:
            del d["depends_on"]  # ids of jobs without prerequisites stay what they were
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(**{**d, "depends_on": tuple(d.get("depends_on") or ())})

    @property
    def job_id(self) -> str:
        """Stable id from the job's content: the same cell in a resumed sweep gets the same id."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        ds = f"/{self.dataset}" if self.dataset else ""
        return f"{self.protocol}:{self.model}{ds}:seed{self.seed}"


@dataclass
class RunContext:
    """What a protocol may use besides its job: where to write side files, the device, data location."""

    out_dir: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    data_dir: Path | None = None
    download: bool = False
    threads: int | None = None
    progress: bool = False

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def checkpoint_path(self, model: str, dataset: str, seed: int, condition: str, producer: str) -> Path:
        """Where the accuracy job `producer` (a job id) keeps a trained model; the id in the name keys the file by
        every setting that produced it, so the equivariance protocol reads back exactly the weights it depends on."""
        safe = model.replace(":", "_").replace("/", "_").replace(".", "_")
        return self.checkpoint_dir / f"{safe}__{dataset}__{condition}__seed{seed}__{producer}.pt"
