"""Errors the CLI turns into exit code 2 (bad user input), kept apart from genuine failures."""

from __future__ import annotations


class UsageError(ValueError):
    """Invalid user input: unknown name, malformed profile, impossible setting. CLI exit code 2."""


class MissingDependencyError(ImportError):
    """An optional library needed by a model/dataset is absent; the message names the pip package."""
