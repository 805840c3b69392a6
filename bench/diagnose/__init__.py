"""`equibench check`: diagnose any model's equivariance under the pixel-grid symmetries and continuous rotations.

- `check(model, input_shape, ...) -> CheckResult`: exact symmetries, where exactness breaks, likely causes,
  exact input sizes, continuous angles and the Lie derivative (docs/check.md).
- `assert_equivariant(model, group="C4", input_shape=(1, 29, 29))`: the same as an assertion for model tests.

Modules: `grid` (elements, subgroups, tolerances), `compare` (how a tensor transforms), `subject` (the model's
private copy, input/output types), `trace` (the hooked, batched forward pass), `causes` (rules), `angles`
(continuous angles, Lie derivative), `check` (the diagnosis), `text` (the terminal table).
"""

from .check import CheckResult, assert_equivariant, check
from .grid import ELEMENT_NAMES, SUBGROUPS

__all__ = ["ELEMENT_NAMES", "SUBGROUPS", "CheckResult", "assert_equivariant", "check"]
