"""Render ``report.html``: one self-contained, deterministic HTML file from a run directory's tables.

The report formats; it never aggregates. It reads the tables that `bench.tables` wrote to ``<run>/tables/``
(the protocols' `summarize` output, the headline, the failures), environment.json and the profile, and turns
each table into an HTML table or a figure. Every numeric cell carries the table and column it came from
(``data-table`` / ``data-col``), so a test can check that the HTML shows exactly the CSV's numbers. The same
tables give the same bytes: no clock is read, iteration is sorted, figures are PNGs without timestamps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from bench.schema import ENV_FILE, PROFILE_FILE, REPORT_FILE, reference_model
from bench.tables import read_tables, table_specs
from reports import format as fmt
from reports.plots import accuracy as acc_plots
from reports.plots import data_efficiency as de_plots
from reports.plots import efficiency as eff_plots
from reports.plots import equivariance as eq_plots
from reports.plots.common import Plot, Styles

ENV_FIRST = ("profile", "started_at", "equibench_revision", "device", "device_name", "cuda", "dtype", "threads",
             "cpu_count", "python", "platform", "command")
LEVEL_TITLE = {"network": "Networks", "layer": "Layers"}


@dataclass
class Cell:
    text: str
    sub: str = ""          # a second line (e.g. the ratio to the plain baseline)
    col: str = ""          # the CSV column the number came from (data-col)
    numeric: bool = False


@dataclass
class Table:
    """What the template's table macro needs."""

    columns: list[str]
    rows: list[list[Cell]]
    numeric: list[bool]
    source: str = ""                                           # CSV table name (data-table)
    row_keys: list[str] = field(default_factory=list)          # data-row: the row index in the CSV table
    groups: list[tuple[str, int]] = field(default_factory=list)  # optional header row above: (label, span)
    caption: str = ""
    title: str = ""
    id: str = ""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)  # {"kind": "table"|"plot"|"heading", ...}


# -- columns: (csv column, header, formatter, group) ------------------------------------------------------------
Format = Callable[[Mapping[str, Any], str], Cell]


def number(row: Mapping[str, Any], col: str) -> Cell:
    return Cell(fmt.sig(row.get(col)), col=col, numeric=True)


def count(row: Mapping[str, Any], col: str) -> Cell:
    return Cell(fmt.count(row.get(col)), col=col, numeric=True)


def text(row: Mapping[str, Any], col: str) -> Cell:
    return Cell(fmt.plain(row.get(col)), col=col)


def angle(row: Mapping[str, Any], col: str) -> Cell:
    return Cell(fmt.angle(row.get(col)), col=col, numeric=True)


def mean_std(std_col: str) -> Format:
    def f(row: Mapping[str, Any], col: str) -> Cell:
        return Cell(fmt.mean_std(row.get(col), row.get(std_col), row.get("n_seeds", 2)), col=col, numeric=True)
    return f


def with_ratio(ratio_col: str, base: Format = number) -> Format:
    def f(row: Mapping[str, Any], col: str) -> Cell:
        cell = base(row, col)
        r = row.get(ratio_col)
        cell.sub = "" if fmt.is_missing(r) else fmt.ratio(r)
        return cell
    return f


def build_table(df: pd.DataFrame, columns: Sequence[tuple[str, str, Format, str]], source: str, *,
                title: str = "", caption: str = "", id: str = "") -> Table | None:
    """An HTML table of `df`'s rows, one column per spec whose CSV column has a value somewhere."""
    if df is None or df.empty:
        return None
    shown = [c for c in columns if c[0] in df.columns and df[c[0]].notna().any()]
    records = df.to_dict("records")
    rows = [[f(rec, col) for col, _, f, _ in shown] for rec in records]
    groups: list[tuple[str, int]] = []
    if any(g for *_, g in shown):
        for *_, g in shown:
            if groups and groups[-1][0] == g:
                groups[-1] = (g, groups[-1][1] + 1)
            else:
                groups.append((g, 1))
    return Table(columns=[h for _, h, _, _ in shown], rows=rows, numeric=[r.numeric for r in rows[0]],
                 source=source, row_keys=[str(i) for i in df.index], groups=groups, caption=caption, title=title,
                 id=id)


HEADLINE_COLUMNS = [
    ("model", "model", text, ""),
    ("params", "params", count, ""),
    ("acc_upright_pct", "upright", mean_std("acc_upright_std"), "accuracy (%)"),
    ("acc_mean_pct", "rot. mean", mean_std("acc_mean_std"), "accuracy (%)"),
    ("acc_worst_pct", "rot. worst", mean_std("acc_worst_std"), "accuracy (%)"),
    ("de_examples", "examples / class", number, "data efficiency"),
    ("eq_mean", "mean", number, "equivariance error"),
    ("eq_worst", "max", number, "equivariance error"),
    ("eq_45", "@45°", number, "equivariance error"),
    ("lee", "LEE", number, "equivariance error"),
    ("latency_ms", "eval latency (ms)", with_ratio("latency_ratio"), "cost (× plain baseline)"),
    ("peak_memory_mb", "peak memory (MB)", with_ratio("memory_ratio"), "cost (× plain baseline)"),
    ("params_ratio", "params ×", number, "cost (× plain baseline)"),
]
CASE_COLUMNS = [("model", "model", text, ""), ("weights", "weights", text, ""), ("dataset", "dataset", text, ""),
                ("inputs", "inputs", text, ""), ("rotation", "rotation", text, "")]


# -- sections ----------------------------------------------------------------------------------------------------
def _plot(p: Plot | None) -> list[dict[str, Any]]:
    return [{"kind": "plot", "plot": p}] if p is not None else []


def _table(t: Table | None) -> list[dict[str, Any]]:
    return [{"kind": "table", "table": t}] if t is not None and t.rows else []


def _varying(df: pd.DataFrame, columns: Sequence[tuple[str, str, Format, str]]) -> list:
    """Drop case columns that take one value only (they go to the caption instead)."""
    return [c for c in columns if c[0] not in ("weights", "dataset", "inputs", "rotation")
            or (c[0] in df.columns and df[c[0]].nunique(dropna=False) > 1)]


def headline_section(t: Mapping[str, pd.DataFrame]) -> Section | None:
    head = t.get("headline")
    if head is None or head.empty:
        return None
    sec = Section("headline", "Headline comparison")
    for level in ("network", "layer"):
        rows = head[head["level"] == level]
        table = build_table(rows, HEADLINE_COLUMNS, "headline", title=LEVEL_TITLE[level], id=f"headline-{level}")
        if table is None:
            continue
        bits = []
        if rows["acc_dataset"].notna().any():
            bits.append(f"Accuracy on {', '.join(sorted(rows['acc_dataset'].dropna().unique()))}, trained "
                        "upright, mean ± std across seeds.")
        if rows["de_examples"].notna().any():
            bits.append(f"Data efficiency: training examples per class to reach {fmt.sig(rows['de_target_pct'].max())} % "
                        f"on {', '.join(sorted(rows['de_dataset'].dropna().unique()))} (the smallest size measured when "
                        "that already reaches it; — when no size measured reaches it; see Data efficiency).")
        if rows["eq_feature"].notna().any():
            feats = ", ".join(sorted(rows["eq_feature"].dropna().unique()))
            weights = ", ".join(sorted(rows["eq_weights"].dropna().unique()))
            bits.append(f"Equivariance error of the output ({feats}; {weights} weights): mean and max over the "
                        "measured angles that are not multiples of 90°, the value at 45°, and the Lie derivative.")
        if rows["latency_ms"].notna().any():
            bits.append(f"Cost at the efficiency base point; below each value its ratio to "
                        f"{rows['reference'].iloc[0]} measured in this run.")
        table.caption = " ".join(bits)
        sec.blocks += _table(table)
    return sec if sec.blocks else None


def equivariance_section(t: Mapping[str, pd.DataFrame], styles: Styles) -> Section | None:
    by_angle = t.get("equivariance_by_angle")
    if by_angle is None or by_angle.empty:
        return None
    sec = Section("equivariance", "Equivariance",
                  intro="Relative equivariance error ‖f(g·x) − ρ(g)·g·f(x)‖ / ‖g·f(x)‖ per exposed feature "
                        "(invariance error ‖f(g·x) − f(x)‖ / ‖f(x)‖ of vectors), inside the rotation-safe disk.")
    levels = {m: lv for m, lv in zip(t["headline"]["model"], t["headline"]["level"])} if "headline" in t else {}
    floor = t.get("equivariance_floor")
    for level in ("network", "layer"):
        models = sorted(m for m in by_angle["model"].unique() if levels.get(m, "network") == level)
        if not models:
            continue
        for weights in ("trained", "init"):
            sec.blocks += _plot(eq_plots.error_vs_angle(by_angle, floor, styles, level, weights, models))
        summary = t.get("equivariance_summary")
        if summary is not None:
            rows = summary[summary["model"].isin(models)]
            cols = [*CASE_COLUMNS, ("metric", "metric", text, ""), ("feature", "feature", text, ""),
                    ("reflect", "flip", text, ""), ("mean_non_grid", "mean (non-grid)", number, ""),
                    ("worst_non_grid", "worst (non-grid)", number, ""), ("at_10deg", "10°", number, ""),
                    ("at_22_5deg", "22.5°", number, ""), ("at_45deg", "45°", number, ""),
                    ("at_90deg", "90°", number, ""), ("floor_mean_non_grid", "mean (non-grid)", number, "floor"),
                    ("floor_at_45deg", "45°", number, "floor")]
            sec.blocks += _table(build_table(
                rows, _varying(rows, cols), "equivariance_summary", id=f"eq-summary-{level}",
                title=f"{LEVEL_TITLE[level]}: equivariance error summary",
                caption="Mean and worst over the measured angles that are not multiples of 90° (worst: max error, "
                        "min agreement), and the value at selected angles; flip h = the horizontal flip composed "
                        "with the rotation. Maps are compared inside their disk less the ring their padding "
                        "reaches; floor = the error an exactly equivariant operator producing a map of that size "
                        "gets in the same region under the same rotation (a map at its floor is as equivariant as "
                        "this measurement can tell)."))
    lee = t.get("lie_derivative")
    if lee is not None and not lee.empty:
        cols = [*CASE_COLUMNS, ("feature", "feature", text, ""), ("unit", "unit", text, ""),
                ("mean", "LEE", mean_std("std"), "")]
        sec.blocks += _table(build_table(lee, _varying(lee, cols), "lie_derivative", id="lee",
                                         title="Lie derivative (LEE)",
                                         caption="Derivative of the equivariance error at the identity; mean ± std "
                                                 "across seeds."))
    stages = t.get("equivariance_stages")
    sec.blocks += _plot(eq_plots.stage_attribution(stages, styles))
    if stages is not None and not stages.empty:
        shown = stages.groupby("model")["weights"].transform(lambda w: "trained" if (w == "trained").any()
                                                               else w.iloc[0])
        culprits = stages[(stages["excess"] > 0) & (stages["weights"] == shown)]
        cols = [("model", "model", text, ""), ("weights", "weights", text, ""), ("dataset", "dataset", text, ""),
                ("rotation", "rotation", text, ""), ("stage", "stage", text, ""), ("angle_deg", "angle", angle, ""),
                ("error", "error", mean_std("error_std"), ""), ("floor", "floor", number, ""),
                ("excess", "excess", number, "")]
        sec.blocks += _table(build_table(
            culprits, _varying(culprits, cols), "equivariance_stages", id="eq-stages",
            title="Stages that break equivariance",
            caption="Stages whose error exceeds their floor, trained weights where measured, in execution order "
                    "(pointwise stages never do: each is its own exactly equivariant version). Every stage and "
                    "both weights, with the floor kind: tables/equivariance_stages.csv."))
    return sec


def accuracy_section(t: Mapping[str, pd.DataFrame], styles: Styles) -> Section | None:
    summary = t.get("accuracy_summary")
    if summary is None or summary.empty:
        return None
    sec = Section("accuracy", "Accuracy under rotation")
    sec.blocks += _plot(acc_plots.accuracy_vs_angle(t.get("accuracy_by_angle"), styles))
    cols = [("dataset", "dataset", text, ""), ("condition", "trained", text, ""), ("model", "model", text, ""),
            *[(f"{s}_pct", s.replace("_", " "), mean_std(f"{s}_std"), "accuracy (%)")
              for s in ("upright", "mean", "worst", "flip_h", "flip_v")]]
    sec.blocks += _table(build_table(summary, cols, "accuracy_summary", id="accuracy-summary",
                                     title="Accuracy summary",
                                     caption="upright: the test set as is; mean / worst: over rotation angles; flip "
                                             "h / v: mirrored test set. Mean ± std across seeds."))
    ceiling = t.get("accuracy_ceiling")
    sec.blocks += _table(build_table(
        ceiling, [("dataset", "dataset", text, ""), ("group", "invariant to", text, ""),
                  ("ceiling_pct", "invariant classifier (%)", number, ""),
                  ("nearest_neighbour_pct", "not invariant (%)", number, "")],
        "accuracy_ceiling", id="accuracy-ceiling", title="What an exactly invariant classifier reaches",
        caption="Orbit nearest neighbour on the same test images: each test image turned by every multiple of 10° "
                "(SO2; also mirrored: O2) takes the label of the nearest training image, an exactly invariant "
                "rule; beside it the same rule on the upright image. A model with that invariance (SO2: C_N, "
                "SO(2); O2: GMR, D_N, O(2)) that scores below it is limited by its capacity or its training, "
                "not by its invariance."))
    return sec


def _needed(row: Mapping[str, Any], col: str) -> Cell:
    """Examples needed, with what the number means when the curve did not cross the target in between."""
    cell = number(row, col)
    cell.sub = {"at_smallest": "or fewer", "not_reached": "not reached"}.get(str(row.get("reached")), "")
    return cell


def data_efficiency_section(t: Mapping[str, pd.DataFrame], styles: Styles) -> Section | None:
    curve = t.get("data_efficiency_curve")
    if curve is None or curve.empty:
        return None
    needed = t.get("data_efficiency_needed")
    targets = sorted(needed["target_pct"].unique()) if needed is not None and not needed.empty else []
    free = " (rotshapes draws every image at a random angle)" if "rotshapes" in set(curve["dataset"]) else ""
    sec = Section("data-efficiency", "Data efficiency",
                  intro="Test accuracy against the number of training examples: what built-in invariance should "
                        f"buy when orientation carries no information{free}. Each size is a nested, class-balanced "
                        "subset of the training split, trained for the same number of optimizer steps.")
    sec.blocks += _plot(de_plots.accuracy_vs_size(curve, styles, targets))
    reference = needed["model"].map(reference_model).iloc[0] if needed is not None and not needed.empty else "cnn"
    sec.blocks += _table(build_table(
        needed, [("dataset", "dataset", text, ""), ("model", "model", text, ""),
                 ("target_pct", "target (%)", number, ""), ("examples_per_class", "examples / class", _needed, ""),
                 ("train_examples", "examples", number, ""), ("vs_reference", f"× {reference}", number, ""),
                 ("seeds_reached", "seeds reaching it", count, ""), ("n_seeds", "seeds", count, "")],
        "data_efficiency_needed", id="data-efficiency-needed", title="Examples needed to reach an accuracy",
        caption="Training examples per class at which the mean curve across seeds first reaches the target (linear "
                f"in log size between measured sizes); × {reference}: the ratio to the plain baseline's, below 1 "
                "means fewer examples. 'or fewer': the smallest size already reaches it."))
    sec.blocks += _table(build_table(
        curve, [("dataset", "dataset", text, ""), ("model", "model", text, ""), ("per_class", "per class", count, ""),
                ("train_examples", "examples", count, ""),
                ("upright_pct", "upright", mean_std("upright_std"), "accuracy (%)"),
                ("mean_pct", "rot. mean", mean_std("mean_std"), "accuracy (%)"), ("steps", "steps", count, "training"),
                ("train_time_s", "time (s)", number, "training")],
        "data_efficiency_curve", id="data-efficiency-curve", title="Accuracy vs training-set size",
        caption="upright: the test set as is; rot. mean: mean over the evaluated rotations (the curve above). "
                "Mean ± std across seeds."))
    return sec


def efficiency_section(t: Mapping[str, pd.DataFrame], styles: Styles) -> Section | None:
    base = t.get("efficiency_base")
    points = t.get("efficiency_points")
    if base is None or base.empty:
        return None
    sec = Section("efficiency", "Efficiency")
    cols = [("model", "model", text, ""), ("batch", "batch", text, "base point"),
            ("resolution", "resolution", text, "base point"), ("kernel_size", "kernel", text, "base point"),
            ("channels", "channels", text, "base point"), ("params", "params", with_ratio("params_ratio", count), ""),
            ("flops_eval", "FLOPs eval", with_ratio("flops_eval_ratio", count), ""),
            ("flops_train", "FLOPs train", with_ratio("flops_train_ratio", count), ""),
            ("latency_eval_ms", "eval", with_ratio("latency_eval_ms_ratio"), "latency (ms)"),
            ("latency_eval_iqr_ms", "eval IQR", number, "latency (ms)"),
            ("latency_train_ms", "train", with_ratio("latency_train_ms_ratio"), "latency (ms)"),
            ("latency_eval_exported_ms", "exported", with_ratio("latency_eval_exported_ms_ratio"), "latency (ms)"),
            ("peak_memory_eval_mb", "eval", with_ratio("peak_memory_eval_mb_ratio"), "peak memory (MB)"),
            ("peak_memory_train_mb", "train", with_ratio("peak_memory_train_mb_ratio"), "peak memory (MB)"),
            ("build_s", "build (s)", with_ratio("build_s_ratio"), "")]
    for level in ("network", "layer"):
        rows = base[base["level"] == level]
        sec.blocks += _table(build_table(
            rows, cols, "efficiency_base", id=f"efficiency-{level}", title=f"{LEVEL_TITLE[level]}: cost",
            caption=f"At the base point; below each value its ratio to {rows['reference'].iloc[0] if len(rows) else ''}"
                    " at the same point in this run. FLOPs count 2 per multiply-add; latency is the median per call; "
                    "peak memory is the peak minus the baseline before the step. An empty kernel / channels cell "
                    "means the model's default."))
    if points is not None and not points.empty:
        sec.blocks += _plot(eff_plots.latency_vs_kernel(points, styles))
        sec.blocks += _plot(eff_plots.memory_vs_batch(points, styles))
    sec.blocks += _plot(eff_plots.accuracy_vs_latency(t.get("headline"), styles))
    reference = t.get("efficiency_reference")
    if reference is not None and not reference.empty:
        sec.blocks += _plot(eff_plots.kernel_reference(points, reference, styles))
        ref_cols = [("series", "series", text, "published"), ("kernel_size", "kernel", text, "published"),
                    ("paper_value", "value", number, "published"),
                    ("paper_ratio", "× baseline", number, "published"), ("model", "model", text, "ours"),
                    ("mode", "mode", text, "ours"), ("memory", "memory", text, "ours"),
                    ("batch", "batch", text, "ours"), ("resolution", "resolution", text, "ours"),
                    ("channels", "channels", text, "ours"), ("device", "device", text, "ours"),
                    ("value", "value", number, "ours"), ("ratio", "× baseline", number, "ours")]
        for metric, what in (("latency_ms", "seconds per 1,000 calls (= ms per call)"),
                             ("peak_memory_mb", "training memory (MiB)")):
            rows = reference[reference["metric"] == metric]
            if rows.empty:
                continue
            sec.blocks += _table(build_table(
                rows, ref_cols, "efficiency_reference", id=f"efficiency-reference-{metric}",
                title=f"Published values vs ours: {what}",
                caption=f"Source: {'; '.join(sorted(rows['note'].dropna().unique()))}. '× baseline' divides by "
                        f"{', '.join(sorted(rows['baseline'].dropna().unique()))} (the publication's for its "
                        "values, ours at the same point for ours). An empty model: no counterpart in the zoo."))
    return sec


def failures_section(t: Mapping[str, pd.DataFrame]) -> Section | None:
    failures = t.get("failures")
    if failures is None or failures.empty:
        return None
    cols = [("job", "job", text, ""), ("what", "measurement", text, ""), ("status", "status", text, ""),
            ("message", "message", text, ""), ("job_id", "job id", text, "")]
    table = build_table(failures, cols, "failures", id="failed-table")
    return Section("failed", "Failed jobs", intro=f"{len(failures)} job(s) or measurement(s) did not finish ok; "
                   "only ok results enter the tables and figures above.", blocks=_table(table))


# -- run directory -----------------------------------------------------------------------------------------------
def read_environment(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / ENV_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"error": f"could not parse {ENV_FILE}"}


def environment_tables(env: dict[str, Any] | None) -> list[Table]:
    if not env:
        return []
    env = dict(env)
    packages = env.pop("packages", None)
    resumes = env.pop("resumes", None)
    keys = [k for k in ENV_FIRST if k in env] + sorted(k for k in env if k not in ENV_FIRST)
    rows = [[Cell(k.replace("_", " ")), Cell(_env_value(env[k]))] for k in keys]
    out = [Table(columns=["setting", "value"], rows=rows, numeric=[False, False], title="Run", id="env-run")]
    if isinstance(packages, dict) and packages:
        prow = [[Cell(str(k)), Cell("not installed" if v is None else str(v))] for k, v in sorted(packages.items())]
        out.append(Table(columns=["package", "version"], rows=prow, numeric=[False, False], title="Packages",
                         id="env-packages"))
    if isinstance(resumes, list) and resumes:
        rrows = [[Cell(str(i)), *(Cell(_env_value((r if isinstance(r, dict) else {}).get(k)))
                                  for k in ("started_at", "equibench_revision", "device", "command"))]
                 for i, r in enumerate(resumes, 1)]
        out.append(Table(columns=["resume", "started at", "revision", "device", "command"], rows=rrows,
                         numeric=[True, False, False, False, False], title="Resumed", id="env-resumes"))
    return out


def _env_value(v: Any) -> str:
    if v is None:
        return fmt.DASH
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


def styles_for(t: Mapping[str, pd.DataFrame]) -> Styles:
    """One style per model of the run, from the headline's family and level columns."""
    head = t.get("headline")
    if head is None or head.empty:
        return Styles([])
    return Styles(zip(head["model"], head["family"], head["level"]))


def build_context(run_dir: Path) -> dict[str, Any]:
    t = read_tables(run_dir)
    env = read_environment(run_dir)
    profile_path = run_dir / PROFILE_FILE
    profile_text = profile_path.read_text(encoding="utf-8") if profile_path.exists() else None
    profile_name = str(env.get("profile")) if env and env.get("profile") else None
    styles = styles_for(t)
    sections = [s for s in (headline_section(t), equivariance_section(t, styles), accuracy_section(t, styles),
                            data_efficiency_section(t, styles), efficiency_section(t, styles), failures_section(t))
                if s is not None]
    status = t.get("run_status")
    counts = [] if status is None else [(str(r["status"]), int(r["jobs"])) for r in status.to_dict("records")]
    specs = table_specs()
    return {
        "title": f"equibench report — {profile_name}" if profile_name else "equibench report",
        "run_name": run_dir.resolve().name,
        "profile_name": profile_name,
        "profile_text": profile_text,
        "env_tables": environment_tables(env),
        "sections": sections,
        "n_jobs": sum(n for _, n in counts),
        "status_counts": counts,
        "tables": sorted(name for name in t if name in specs),
        "models": 0 if t.get("headline") is None else len(t["headline"]),
        "protocols": sorted(t["jobs"]["protocol"].dropna().unique()) if "jobs" in t else [],
        "empty": not any(s.id in ("headline", "equivariance", "accuracy", "efficiency") for s in sections),
    }


def render_html(run_dir: str | os.PathLike[str]) -> str:
    return _environment().get_template("report.html.j2").render(**build_context(Path(run_dir)))


def render_report(run_dir: str | os.PathLike[str], output: str | os.PathLike[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` (or `output`) from the run's tables and return its path."""
    run_dir = Path(run_dir)
    out = Path(output) if output is not None else run_dir / REPORT_FILE
    html = render_html(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    return out
