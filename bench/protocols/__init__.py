"""Protocol registry: the same lazy `Registry` as models and datasets, holding `Protocol` classes.

Built-in protocols are declared here with their module; the module registers its class with
`@register_protocol(name)` on import. `get_protocol(name)` returns the (shared) instance; `protocol_order()`
lists names so that every protocol comes after those in its `after` (accuracy before equivariance, whose
trained-weight jobs depend on accuracy jobs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from bench.protocols.base import Protocol, TableSpec
from bench.registry import Registry, unknown_name_error

PROTOCOLS: Registry[Protocol] = Registry("protocol")

_BUILTIN = {
    "accuracy": "bench.protocols.accuracy",
    "equivariance": "bench.protocols.equivariance",
    "efficiency": "bench.protocols.efficiency",
    "data_efficiency": "bench.protocols.data_efficiency",
}
for _name, _module in _BUILTIN.items():
    PROTOCOLS.declare(_name, _module)


def register_protocol(name: str) -> Callable[[type[Protocol]], type[Protocol]]:
    """Class decorator: register a Protocol subclass under `name` (sets `cls.name`)."""
    def deco(cls: type[Protocol]) -> type[Protocol]:
        cls.name = name
        PROTOCOLS.register(name)(cls)
        return cls
    return deco


@functools.cache
def get_protocol(name: str) -> Protocol:
    """The protocol object registered under `name` (UsageError naming the valid ones otherwise)."""
    if name not in PROTOCOLS:
        raise unknown_name_error("protocol", name, PROTOCOLS.names())
    return PROTOCOLS.get(name)()


def list_protocols() -> list[str]:
    return protocol_order(PROTOCOLS.names())


def protocol_order(names: Iterable[str]) -> list[str]:
    """`names` sorted so that each protocol follows the ones in its `after` (stable otherwise)."""
    names = list(dict.fromkeys(names))
    remaining = {n: {a for a in get_protocol(n).after if a in names} for n in names}
    ordered: list[str] = []
    while remaining:
        ready = [n for n in names if n in remaining and not remaining[n]]
        if not ready:
            raise RuntimeError(f"protocol dependencies form a cycle: {sorted(remaining)}")
        for n in ready:
            ordered.append(n)
            del remaining[n]
            for deps in remaining.values():
                deps.discard(n)
    return ordered


__all__ = ["PROTOCOLS", "Protocol", "TableSpec", "get_protocol", "list_protocols", "protocol_order",
           "register_protocol"]
