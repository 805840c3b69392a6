"""Protocol registry. A protocol module defines ``run(job: Job, ctx: RunContext) -> list[dict]``.

Each returned row needs ``metric``, ``value``, ``unit`` and may set ``angle_deg``, ``reflect``, ``mode`` and any
extra descriptive column (``feature``, ``rotation``, ``weights``, ``batch``, ...). The runner adds model,
protocol, dataset, seed, device, dtype, status and job_id. A protocol never imports the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from bench.jobs import Job, RunContext
from bench.registry import unknown_name_error

# name -> (module, needs a dataset)
PROTOCOLS: dict[str, tuple[str, bool]] = {
    "accuracy": ("bench.protocols.accuracy", True),
    "equivariance": ("bench.protocols.equivariance", False),
    "efficiency": ("bench.protocols.efficiency", False),
}
# accuracy first: it leaves trained checkpoints the equivariance protocol can measure too
ORDER = ["accuracy", "equivariance", "efficiency"]

ProtocolFn = Callable[[Job, RunContext], list[dict]]


def protocol_module(name: str) -> ModuleType:
    if name not in PROTOCOLS:
        raise unknown_name_error("protocol", name, PROTOCOLS)
    return importlib.import_module(PROTOCOLS[name][0])


def needs_dataset(name: str) -> bool:
    if name not in PROTOCOLS:
        raise unknown_name_error("protocol", name, PROTOCOLS)
    return PROTOCOLS[name][1]


def get_protocol(name: str) -> ProtocolFn:
    return protocol_module(name).run
