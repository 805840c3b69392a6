"""Build and run single protocol jobs in tests, exactly as a sweep would (validated settings, real job ids)."""

from __future__ import annotations

from typing import Any

from bench.jobs import Job, RunContext
from bench.protocols import get_protocol


def make_job(protocol: str, model: str, dataset: str | None = None, seed: int = 0, device: str = "cpu",
             depends_on: tuple[str, ...] = (), **settings: Any) -> Job:
    """A job whose settings went through the protocol's validator (as `bench.plan` does)."""
    p = get_protocol(protocol)
    return p.job(model, dataset, seed, device, p.settings(settings), depends_on)


def run_job(job: Job, ctx: RunContext) -> list[dict[str, Any]]:
    return get_protocol(job.protocol).run(job, ctx)
