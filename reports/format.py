"""Number formatting shared by the HTML report and the terminal summary (pure Python, no pandas needed)."""

from __future__ import annotations

import math
from typing import Any

DASH = "—"


def is_missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return bool(math.isnan(x))
    except TypeError:
        return False


def sig(x: Any, digits: int = 3) -> str:
    """`digits` significant digits; scientific below 1e-2 (small errors), grouped integers from 1000."""
    if is_missing(x):
        return DASH
    x = float(x)
    if x == 0:
        return "0"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    ax = abs(x)
    if ax < 1e-2:
        return f"{x:.{digits - 1}e}"
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    s = f"{x:#.{digits}g}"
    return s.rstrip(".")


def count(x: Any) -> str:
    """Parameter / FLOP counts: 532, 12.3k, 1.23M, 4.56G."""
    if is_missing(x):
        return DASH
    x = float(x)
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return sig(x / factor) + suffix
    return f"{x:.0f}" if float(x).is_integer() else sig(x)


def ratio(x: Any) -> str:
    return DASH if is_missing(x) else sig(x) + "×"


def mean_std(mean: Any, std: Any = None, n: Any = 1) -> str:
    """'98.1 ± 0.21' when several seeds contributed, else just the mean."""
    if is_missing(mean):
        return DASH
    if is_missing(std) or is_missing(n) or int(n) < 2:
        return sig(mean)
    return f"{sig(mean)} ± {sig(std, 2)}"


def angle(a: Any) -> str:
    """45 -> '45°', 22.5 -> '22.5°'."""
    if is_missing(a):
        return DASH
    a = float(a)
    return f"{a:g}°"


def plain(x: Any) -> str:
    """Descriptive values (kernel sizes, batch sizes, names): integers without '.0'."""
    if is_missing(x):
        return DASH
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)
