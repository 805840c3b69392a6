"""Render ``report.html``: one self-contained, deterministic HTML file from a run directory.

Reads only the run directory (results.jsonl through `ResultsStore`, environment.json, profile.toml/json);
never imported by protocols. The same results give the same bytes: no clock is read, iteration is sorted and
figures are PNGs without timestamps.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import tomllib

from bench.results import ResultsStore
from reports import format as fmt
from reports import tables
from reports.plots import accuracy as acc_plots
from reports.plots import efficiency as eff_plots
from reports.plots import equivariance as eq_plots
from reports.plots.common import Colors, Plot

REPORT_FILE = "report.html"
ENV_FILE = "environment.json"
ENV_FIRST = ("profile", "started_at", "equibench_revision", "device", "device_name", "cuda", "dtype", "threads",
             "cpu_count", "python", "platform", "command")


@dataclass
class Table:
    """What the template's table macro needs: headers, rows of cell strings, which columns are numeric."""

    columns: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    key: list[bool] = field(default_factory=list)  # columns shown emphasised (the model name)
    groups: list[tuple[str, int]] = field(default_factory=list)  # optional header row above: (label, span)
    caption: str = ""
    title: str = ""
    id: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)  # {"kind": "table"|"plot"|"heading"|..., ...}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["sig"] = fmt.sig
    return env


def table_from_frame(df: pd.DataFrame, formatters: dict[str, Any] | None = None, default=fmt.sig,
                     text_columns: tuple[str, ...] = ("model", "feature", "metric", "dataset", "rotation",
                                                      "reflect", "condition", "weights", "layer"),
                     **kw: Any) -> Table:
    """Display table from a frame: text columns as is, numbers through `formatters` / `default`."""
    formatters = formatters or {}
    cols = list(df.columns)
    numeric = [c not in text_columns for c in cols]
    rows = []
    for rec in df.to_dict("records"):
        row = []
        for c, is_num in zip(cols, numeric):
            v = rec[c]
            if c in formatters:
                row.append(formatters[c](v))
            elif not is_num or isinstance(v, str):
                row.append(fmt.plain(v) if v != "" else fmt.DASH)
            else:
                row.append(default(v))
        rows.append(row)
    return Table(columns=[str(c) for c in cols], rows=rows, numeric=numeric, key=[c == "model" for c in cols],
                 **kw)


# -- run directory ---------------------------------------------------------------------------------------------
def read_environment(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ENV_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"error": f"could not parse {ENV_FILE}"}


def read_profile(run_dir: Path) -> tuple[str | None, str | None, str | None]:
    """(profile name, file name, file text) from profile.toml (or the runner's profile.json)."""
    for name in ("profile.toml", "profile.json"):
        path = run_dir / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if name.endswith(".toml") else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError):
            data = {}
        prof = data.get("name") or (data.get("profile") or {}).get("name") if isinstance(data, dict) else None
        return (str(prof) if prof else None), name, text
    return None, None, None


def environment_tables(env: dict[str, Any] | None) -> list[Table]:
    if not env:
        return []
    env = dict(env)
    packages = env.pop("packages", None)
    resumes = env.pop("resumes", None)
    keys = [k for k in ENV_FIRST if k in env] + sorted(k for k in env if k not in ENV_FIRST)
    rows = [[k.replace("_", " "), _env_value(env[k])] for k in keys]
    out = [Table(columns=["setting", "value"], rows=rows, numeric=[False, False], title="Run", id="env-run")]
    if isinstance(packages, dict) and packages:
        prow = [[str(k), "not installed" if v is None else str(v)] for k, v in sorted(packages.items())]
        out.append(Table(columns=["package", "version"], rows=prow, numeric=[False, False], title="Packages",
                         id="env-packages"))
    if isinstance(resumes, list) and resumes:
        rrows = []
        for i, r in enumerate(resumes, 1):
            r = r if isinstance(r, dict) else {"value": r}
            rrows.append([str(i), _env_value(r.get("started_at")), _env_value(r.get("equibench_revision")),
                          _env_value(r.get("device")), _env_value(r.get("command"))])
        out.append(Table(columns=["resume", "started at", "revision", "device", "command"], rows=rrows,
                         numeric=[True, False, False, False, False], title="Resumed", id="env-resumes"))
    return out


def _env_value(v: Any) -> str:
    if v is None:
        return fmt.DASH
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


# -- sections --------------------------------------------------------------------------------------------------
def _plot(p: Plot | None) -> list[dict[str, Any]]:
    return [{"kind": "plot", "plot": p}] if p is not None else []


def _table(t: Table | None) -> list[dict[str, Any]]:
    return [{"kind": "table", "table": t}] if t is not None and t.rows else []


def headline_section(d: pd.DataFrame) -> Section | None:
    numbers, notes = tables._headline(d)
    if numbers.empty or len(numbers.columns) <= 1:
        return None
    shown = tables.format_headline(numbers, notes.get("acc_unit"))
    keys = ["model"] + [k for k in tables.HEADLINE_LABELS if k in numbers.columns]
    spec = [("", "model")] + [tables.HEADLINE_GROUPS[k] for k in keys[1:]]
    unit = notes.get("acc_unit")
    spec = [(f"{g} ({unit})" if g == "accuracy" and unit else g, sub) for g, sub in spec]
    t = table_from_frame(shown, default=str, id="headline")
    t.columns = [sub for _, sub in spec]
    for g, _ in spec:
        if t.groups and t.groups[-1][0] == g:
            t.groups[-1] = (g, t.groups[-1][1] + 1)
        else:
            t.groups.append((g, 1))
    bits = []
    if notes.get("dataset"):
        cond = f", trained {notes['condition']}" if notes.get("condition") else ""
        bits.append(f"Accuracy on {notes['dataset']}{cond}, mean ± std across seeds.")
    if any(c.startswith("eq_") for c in numbers.columns):
        w = f"{notes['weights']} weights" if notes.get("weights") else "the model"
        r = f", {notes['rotation']} rotation" if notes.get("rotation") else ""
        bits.append(f"Equivariance error of the output of {w}{r} (networks: invariance error of the logits; "
                    "layers: the output map, group-pooled for regular fields), mean and max over angles that are "
                    "not multiples of 90°.")
    if "lee" in numbers.columns:
        bits.append("LEE: mean Lie derivative of the same output (local equivariance error).")
    if notes.get("config"):
        cfg = ", ".join(f"{k.replace('_', ' ')} {fmt.plain(v)}" for k, v in sorted(notes["config"].items()))
        if notes.get("base_point"):
            bits.append(f"Cost at the efficiency protocol's base point (most often {cfg}), eval mode.")
        else:
            bits.append(f"Cost at the run's most common configuration ({cfg}); a model never measured at one of "
                        "these values is shown at its own most common one.")
    if any(c.endswith("_ratio") for c in numbers.columns):
        bits.append("× plain baseline: ratio to the plain baseline measured in this run (cnn for networks, "
                    "layer_conv2d for layers).")
    t.caption = " ".join(bits)
    return Section("headline", "Headline comparison", blocks=_table(t))


def equivariance_section(d: pd.DataFrame, colors: Colors) -> Section | None:
    blocks_in = tables.equivariance_blocks(d)
    if not blocks_in:
        return None
    sec = Section("equivariance", "Equivariance",
                  intro="Relative equivariance error ‖f(g·x) − g·f(x)‖ / ‖f(x)‖ per feature, measured on "
                        "rotated (and optionally flipped) inputs.")
    several = len(blocks_in) > 1
    for weights, eq in blocks_in:
        if several:
            label = {"init": "At initialisation", "trained": "Trained weights"}.get(weights or "",
                                                                                  f"{weights} weights")
            sec.blocks.append({"kind": "heading", "text": label, "id": f"eq-{weights or 'unset'}"})
        sec.blocks += _plot(eq_plots.error_vs_angle(eq, colors, weights))
        angle_t = tables.equivariance_angle_table(eq)
        if not angle_t.empty:
            sec.blocks += _table(table_from_frame(
                angle_t, title="Equivariance error at selected angles",
                caption="Mean over seeds; mean and max over the measured angles that are not multiples of 90°."))
        inv = tables.metric_summary_table(eq)
        if not inv.empty:
            sec.blocks += _table(table_from_frame(
                inv, title="Invariance error and prediction agreement",
                caption="Mean and worst (max error / min agreement) over non-grid angles."))
        lee = tables.lie_derivative_table(eq)
        if not lee.empty:
            lee_show = lee.assign(LEE=[fmt.mean_std(m, s, n) for m, s, n in zip(lee["mean"], lee["std"],
                                                                                lee["n"])])
            lee_show = lee_show.drop(columns=["mean", "std"]).rename(columns={"n": "seeds"})
            lee_show = lee_show[[c for c in lee_show.columns if c != "seeds"] + ["seeds"]]
            if (lee_show["seeds"] <= 1).all():
                lee_show = lee_show.drop(columns="seeds")
            sec.blocks += _table(table_from_frame(
                lee_show, formatters={"LEE": str, "seeds": fmt.plain}, title="Lie derivative (LEE)",
                caption="Norm of the derivative of the equivariance error at the identity; mean ± std across "
                        "seeds."))
        sec.blocks += _plot(eq_plots.layer_attribution(eq, colors, weights))
    return sec if sec.blocks else None


def accuracy_section(d: pd.DataFrame, colors: Colors) -> Section | None:
    acc = tables.accuracy_rows(d)
    if acc.empty:
        return None
    sec = Section("accuracy", "Accuracy under rotation")
    sec.blocks += _plot(acc_plots.accuracy_vs_angle(acc, colors))
    summary = tables.accuracy_summary_table(acc)
    if not summary.empty:
        sec.blocks += _table(table_from_frame(
            summary, default=str, formatters={"seeds": fmt.plain}, title="Accuracy summary",
            caption="upright: test set as is; mean / worst: over rotation angles; flip h / v: mirrored test set. "
                    "Mean ± std across seeds."))
    return sec if sec.blocks else None


def efficiency_section(d: pd.DataFrame, colors: Colors) -> Section | None:
    eff = d[d["protocol"] == "efficiency"]
    if eff.empty:
        return None
    sec = Section("efficiency", "Efficiency")
    keys, labels, rows = tables.efficiency_wide(ratio_table(d))
    if rows:
        sec.blocks.append({"kind": "ratio_table", "keys": [k.replace("_", " ") for k in keys], "labels": labels,
                           "rows": rows, "title": "Cost and ratio to the plain baseline",
                           "caption": "Mean over seeds; latency is the median per pass. Below each value: the "
                                      "ratio to cnn (networks) or layer_conv2d (layers) at the same "
                                      "configuration in this run. — in a setting column: not set (the "
                                      "model's default)."})
    sec.blocks += _plot(eff_plots.latency_vs_kernel(eff, colors))
    sec.blocks += _plot(eff_plots.memory_vs_batch(eff, colors))
    sec.blocks += _plot(eff_plots.pareto(d, colors))
    return sec if sec.blocks else None


def ratio_table(d: pd.DataFrame) -> pd.DataFrame:
    """The efficiency ratio table (computed here; see docs/report.md)."""
    return tables.efficiency_ratio_table(d)


# -- entry point -----------------------------------------------------------------------------------------------
def build_context(run_dir: Path) -> dict[str, Any]:
    store = ResultsStore(run_dir)
    records = list(store.records())
    frame = store.frame()
    d = tables.prepare(frame)
    env = read_environment(run_dir)
    profile_name, profile_file, profile_text = read_profile(run_dir)
    if env and env.get("profile"):
        profile_name = str(env["profile"])
    colors = Colors(tables.distinct(d["model"]))
    sections = [s for s in (headline_section(d), equivariance_section(d, colors), accuracy_section(d, colors),
                            efficiency_section(d, colors)) if s is not None]
    failed = tables.failed_jobs(records)
    status_counts = {}
    for r in records:
        status_counts[str(r.get("status"))] = status_counts.get(str(r.get("status")), 0) + 1
    return {
        "title": f"equibench report — {profile_name}" if profile_name else "equibench report",
        "run_name": run_dir.resolve().name,
        "profile_name": profile_name,
        "profile_file": profile_file,
        "profile_text": profile_text,
        "env_tables": environment_tables(env),
        "has_env": env is not None,
        "sections": sections,
        "failed": failed,
        "failed_rows": tables.failed_rows(records),
        "n_jobs": len(records),
        "n_rows": int(len(frame)),
        "status_counts": sorted(status_counts.items()),
        "models": tables.distinct(d["model"]),
        "protocols": tables.distinct(d["protocol"]),
        "empty": d.empty,
    }


def render_html(run_dir: str | os.PathLike[str]) -> str:
    ctx = build_context(Path(run_dir))
    return _environment().get_template("report.html.j2").render(**ctx)


def render_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` (or `output`) and return its path."""
    run_dir = Path(run_dir)
    out = Path(output) if output is not None else run_dir / REPORT_FILE
    html = render_html(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
