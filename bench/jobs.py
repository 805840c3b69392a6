"""A job is one (protocol, model, dataset, seed, settings) cell of a sweep, with a stable content hash id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class Job:
    """One unit of work. `settings` is the protocol's table from the profile (JSON-serialisable)."""

    protocol: str
    model: str
    dataset: str | None
    seed: int
    device: str = "cpu"
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        return self.out_dir / "checkpoints"

    def checkpoint_path(self, model: str, dataset: str, seed: int, condition: str = "upright") -> Path:
        """Where the accuracy protocol keeps a trained model (the equivariance protocol reads it back)."""
        safe = model.replace(":", "_").replace("/", "_").replace(".", "_")
        return self.checkpoint_dir / f"{safe}__{dataset}__{condition}__seed{seed}.pt"
