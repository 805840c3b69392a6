"""pytest plugin for the tracker's measurement campaign (perf_campaign.py): inject a slowdown into
`gmr.GMRConv2d.forward` and record which benchmarks ran it. Never loaded by default.

    PYTHONPATH=benchmarks EQUIBENCH_PERF_INJECT_GMR=0.3 pytest -p perf_inject benchmarks ...

``EQUIBENCH_PERF_INJECT_GMR=f``: every forward on a batch ``(N, C, H, W)`` also runs the original forward on
its first ``max(1, round(f * H))`` rows (about f of the convolution's work, plus one more call's overhead; the
campaign measures the resulting slowdown of the forward). With
``EQUIBENCH_PERF_INJECT_REPORT=path`` the ids of the tests whose call phase ran the patched forward are written
there as JSON at the end of the session (the "benchmarks that use GMR").
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ENV_FRACTION = "EQUIBENCH_PERF_INJECT_GMR"
ENV_REPORT = "EQUIBENCH_PERF_INJECT_REPORT"

_calls = 0
_affected: list[str] = []


def slowed(forward: Callable[..., Any], fraction: float) -> Callable[..., Any]:
    """`forward` plus an extra forward on a `fraction` of the input rows (calls counted in `_calls`)."""
    def patched(self: Any, x: Any) -> Any:
        global _calls
        _calls += 1
        out = forward(self, x)
        if fraction > 0 and x.dim() == 4:
            forward(self, x[..., : max(1, round(fraction * x.shape[-2])), :])
        return out

    return patched


def pytest_configure(config: pytest.Config) -> None:
    fraction = float(os.environ.get(ENV_FRACTION, "0"))
    import gmr

    gmr.GMRConv2d.forward = slowed(gmr.GMRConv2d.forward, fraction)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    before = _calls
    yield
    if _calls > before:
        _affected.append(item.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(ENV_REPORT)
    if path:
        Path(path).write_text(json.dumps(sorted(_affected), indent=1))
