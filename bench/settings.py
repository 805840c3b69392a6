"""The one settings validator: every protocol's settings are a frozen dataclass checked by `validate`.

A field is declared with `setting(default, check, expects)`: `check(value)` returns the normalised value or
raises ValueError/TypeError; `expects` says in words what is valid ("an integer >= 1", "one of a, b"). Unknown
keys, wrong types and out-of-range values all become a `UsageError` that names the key, the valid values and the
closest known key, so a profile typo fails before anything runs (CLI exit 2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from bench.errors import UsageError
from bench.registry import did_you_mean

S = TypeVar("S")
Check = Callable[[Any], Any]


def setting(default: Any, check: Check | None = None, expects: str = "", doc: str = "") -> Any:
    """A dataclass field with its validation rule; list/dict defaults are copied per instance."""
    meta = {"check": check, "expects": expects, "doc": doc}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def validate(cls: type[S], table: Mapping[str, Any] | None, what: str) -> S:
    """`cls` built from its defaults overridden by `table`, every value checked and normalised.

    Raises UsageError on an unknown key (with "did you mean" and the list of valid keys) or a bad value."""
    table = dict(table or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(table) - set(fields))
    if unknown:
        hints = "".join(did_you_mean(k, fields) for k in unknown)
        raise UsageError(f"unknown {what} setting(s) {', '.join(map(repr, unknown))}.{hints} "
                         f"Valid settings: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in table:
            raw = table[name]
        elif f.default is not dataclasses.MISSING:
            raw = f.default
        else:
            raw = f.default_factory()  # type: ignore[misc]
        check = f.metadata.get("check")
        try:
            values[name] = check(raw) if check else raw
        except (ValueError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            raise UsageError(f"{what} setting {name!r} must be {f.metadata.get('expects') or 'valid'}, "
                             f"got {raw!r}{detail}") from None
    obj = cls(**values)
    post = getattr(obj, "check", None)
    if callable(post):
        post()
    return obj


def as_dict(settings: Any) -> dict[str, Any]:
    """JSON-ready dict of a settings dataclass (what a Job carries and its id hashes)."""
    return _copy(dataclasses.asdict(settings))




# -- checks (return the normalised value or raise ValueError) ----------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int | None = None, odd: bool = False) -> Check:
    def check(v: Any) -> int:
        if not _is_int(v) or (minimum is not None and v < minimum) or (odd and v % 2 == 0):
            raise ValueError
        return int(v)
    return check


def number(minimum: float | None = None, maximum: float | None = None, *, strict_min: bool = False,
           strict_max: bool = False) -> Check:
    def check(v: Any) -> float:
        if not _is_num(v):
            raise ValueError
        if minimum is not None and (v < minimum or (strict_min and v == minimum)):
            raise ValueError
        if maximum is not None and (v > maximum or (strict_max and v == maximum)):
            raise ValueError
        return float(v)
    return check


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError
    return v


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str:
        if v not in choices:
            raise ValueError
        return str(v)
    return check


def optional(inner: Check, none_words: Sequence[str] = ("auto",)) -> Check:
    """None (or one of `none_words`, e.g. 'auto') means "the default"; anything else goes through `inner`."""
    def check(v: Any) -> Any:
        if v is None or (isinstance(v, str) and v in none_words):
            return None
        return inner(v)
    return check


def list_of(inner: Check, *, nonempty: bool = False, unique: bool = False, scalar_ok: bool = True) -> Check:
    """A list whose items pass `inner` (a single scalar is taken as a one-item list when `scalar_ok`)."""
    def check(v: Any) -> list[Any]:
        if scalar_ok and not isinstance(v, (list, tuple, dict)):
            v = [v]
        if not isinstance(v, (list, tuple)):
            raise ValueError
        out = [inner(x) for x in v]
        if (nonempty and not out) or (unique and len(set(map(repr, out))) != len(out)):
            raise ValueError
        return out
    return check


def subset_of(*choices: str, nonempty: bool = False) -> Check:
    return list_of(one_of(*choices), nonempty=nonempty, unique=True)


def table(v: Any) -> dict[str, Any]:
    """A TOML table of keyword arguments."""
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise ValueError
    return _copy(v)


def table_of_tables(v: Any) -> dict[str, dict[str, Any]]:
    """{name: {keyword: value}} (e.g. per-model factory kwargs)."""
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, dict) for k, x in v.items()):
        raise ValueError
    return _copy(v)


def angles(v: Any) -> Any:
    """Angles as the user wrote them (validated by `bench.rotation.parse_angles`, expanded when used)."""
    from bench.rotation import parse_angles

    try:
        parse_angles(v)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    return _copy(v) if isinstance(v, (list, tuple)) else v


def rotation_method(v: Any) -> str:
    from bench.rotation import METHODS

    if v not in METHODS:
        raise ValueError(f"valid: {', '.join(METHODS)}")
    return str(v)
