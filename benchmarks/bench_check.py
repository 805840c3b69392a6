"""Speed of `bench.check` (the goal: a ResNet-18-sized model at 32x32 diagnosed in under 30 s on 2 CPU cores).

The diagnosed model is the zoo's `resnet18` (torchvision ResNet-18 with the small-input stem, 11.2M parameters) on
3x32x32 inputs: the 7 grid elements in one traced pass (every module's error, op geometry, causes), 36 angles
(0:350:10, the default rotation) with floors, and the Lie derivative, in float64 (the default), 2 images, 2 threads. In the
plain test run (benchmarks disabled) the body runs once on a tiny input as a correctness check. Measured figures
are in docs/check.md.
"""

from __future__ import annotations

import pytest
import torch

from bench.cost.timing import fixed_threads
from bench.diagnose import check
from bench.models import create_model

THREADS = 2  # the goal is stated for 2 CPU cores
SIDE = 32


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet18", 3, 10)


def test_check_resnet18(benchmark, resnet18):
    side, angles = (SIDE, "0:350:10") if not benchmark.disabled else (8, "0:90:45")
    benchmark.group = "check"
    benchmark.extra_info.update({"model": "resnet18", "input": f"3x{side}x{side}", "angles": angles,
                                 "dtype": "float64", "threads": THREADS})

    def diagnose():
        return check(resnet18, (3, side, side), angles=angles, target="resnet18")

    with fixed_threads(THREADS):
        result = benchmark.pedantic(diagnose, rounds=1 if benchmark.disabled else 3, iterations=1)
    assert result.exact_group == "trivial" and result.first_breaking_module == "net.conv1"
    assert len(result.angles) == (36 if not benchmark.disabled else 3)
    assert result.lie_derivative is not None
