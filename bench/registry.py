"""A small generic name -> factory registry with "did you mean" errors (timm / lm-eval style).

Factories are registered lazily by *module path*, so listing names never imports escnn, e2cnn or the
official GMR package; a factory's module is imported only when that entry is created.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from bench.errors import UsageError

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def unknown_name_error(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """A UsageError naming the valid choices and the closest match."""
    choices = sorted(choices)
    return UsageError(
        f"unknown {kind} {name!r}.{did_you_mean(name, choices)} Valid {kind}s: {', '.join(choices)}"
    )


def load_object(spec: str) -> Any:
    """Import 'package.module:attr' (the plugin syntax used for --models etc.)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"plugin spec {spec!r} must look like 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import plugin module {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(f"plugin module {module_name!r} has no attribute {attr!r}") from exc


@dataclass
class Entry(Generic[T]):
    """One registered item: its factory (or where to import it from), plus free-form metadata."""

    name: str
    factory: Callable[..., T] | None = None
    module: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> Callable[..., T]:
        if self.factory is None:
            assert self.module is not None
            importlib.import_module(self.module)  # importing registers the real factory
            if self.factory is None:
                raise RuntimeError(f"module {self.module} did not register {self.name!r}")
        return self.factory


class Registry(Generic[T]):
    """Name -> factory. `declare` reserves a lazy name; `register` (decorator) binds the factory."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def declare(self, name: str, module: str, **meta: Any) -> None:
        """Reserve `name`, implemented in `module` (imported on first use)."""
        entry = self._entries.setdefault(name, Entry(name=name))
        entry.module = module
        entry.meta.update(meta)

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            key = name or fn.__name__
            entry = self._entries.setdefault(key, Entry(name=key))
            entry.factory = fn
            entry.meta.update(meta)
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise unknown_name_error(self.kind, name, self._entries) from None

    def get(self, name: str) -> Callable[..., T]:
        """The factory for `name`; 'pkg.mod:fn' plugin specs are accepted too."""
        if ":" in name:
            return load_object(name)
        return self.entry(name).resolve()
