"""The report: formats the tables a run wrote (``<run>/tables/*.csv``) as one HTML file and as terminal text.

It never aggregates (the protocols' `summarize` and `bench.tables` do) and protocols never import it.
`render_report` imports matplotlib and jinja2 lazily.
"""

from __future__ import annotations

import os
from pathlib import Path

from reports.terminal import terminal_headline

__all__ = ["render_report", "terminal_headline"]


def render_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` (one self-contained, deterministic file) and return its path."""
    from reports.render import render_report as _render

    return _render(run_dir, output)
