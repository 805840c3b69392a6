"""The report renderer: reads a run directory (results store, environment.json, profile) and writes report.html.

`headline_table` is pure pandas (the CLI prints it); `render_report` imports matplotlib and jinja2 lazily.
Protocols never import this package.
"""

from __future__ import annotations

import os
from pathlib import Path

from reports.tables import headline_numbers, headline_table

__all__ = ["headline_numbers", "headline_table", "render_report"]


def render_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` (one self-contained, deterministic file) and return its path."""
    from reports.render import render_report as _render

    return _render(run_dir, output)
