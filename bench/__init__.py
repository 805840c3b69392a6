"""equibench: one harness to measure equivariance, accuracy under rotation, and cost of equivariant CNNs.

`bench.check(model, input_shape)` and `bench.assert_equivariant(model, group, input_shape)` (bench.diagnose) are
imported on first use, so `import bench` stays cheap (no torch).
"""

__version__ = "0.1.0"

_LAZY = {"check": "bench.diagnose", "assert_equivariant": "bench.diagnose", "CheckResult": "bench.diagnose"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
