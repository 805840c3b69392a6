"""The report of a real sweep: every number the HTML shows is the CSV's number; failures, figures, determinism.

The run (tests/conftest.py `e2e_run`) goes through the real protocols with tiny settings; nothing here
re-derives a number from raw rows: the HTML is parsed and compared with the tables in ``<run>/tables/``.
"""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from bench.results import ResultsStore
from bench.schema import RESULTS_CSV
from bench.tables import read_tables, table_specs


class CellParser(HTMLParser):
    """Collects every <td data-col> with its table (data-table), row (data-row) and text."""

    def __init__(self) -> None:
        super().__init__()
        self.table: str | None = None
        self.row: int | None = None
        self.col: str | None = None
        self.in_value = False
        self.cells: list[dict] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "table":
            self.table = a.get("data-table")
        elif tag == "tr":
            self.row = int(a["data-row"]) if "data-row" in a else None
        elif tag == "td" and "data-col" in a:
            self.col = a["data-col"]
            self.cells.append({"table": self.table, "row": self.row, "col": self.col, "text": ""})
        elif tag == "span" and a.get("class") == "v" and self.col is not None:
            self.in_value = True

    def handle_endtag(self, tag):
        if tag == "span":
            self.in_value = False
        elif tag == "td":
            self.col = None

    def handle_data(self, data):
        if self.in_value and self.cells:
            self.cells[-1]["text"] += data


def parse(html: str) -> CellParser:
    p = CellParser()
    p.feed(html)
    return p


SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def html_number(text: str) -> float | None:
    """The first number a cell shows ('98.1 ± 0.2' -> 98.1, '12.3k' -> 12300, '—' -> None)."""
    m = re.match(r"\s*(-?[\d,]*\.?\d+(?:e[-+]?\d+)?)([kMGT]?)", text)
    if not m:
        return None
    return float(m.group(1).replace(",", "")) * SUFFIX.get(m.group(2), 1.0)


def agrees(shown: float, value: float) -> bool:
    """`shown` is `value` rounded to the 3 significant digits the report prints."""
    if value == 0:
        return shown == 0
    step = 10 ** (math.floor(math.log10(abs(value))) - 2)
    return abs(shown - value) <= 0.5 * step * (1 + 1e-9) or abs(shown - value) <= 1e-12


@pytest.fixture(scope="module")
def run(e2e_run):
    out, res = e2e_run
    assert (out / "report.html").exists(), res.stderr[-3000:]
    return out, res, (out / "report.html").read_text(encoding="utf-8")


def test_a_failing_model_makes_the_run_exit_1_after_writing_everything(run):
    out, res, html = run
    assert res.returncode == 1, res.stderr[-2000:]
    assert "did not finish ok" in res.stderr
    results = pd.read_csv(out / RESULTS_CSV)
    broken = results[results["model"] == "plugin_models:broken"]
    assert len(broken) == 1 and broken["status"].item() == "error" and "always fails" in broken["message"].item()
    ok = results[results["status"] == "ok"]
    assert set(ok["model"]) == {"cnn", "gmr", "layer_conv2d", "layer_gmr"}
    assert set(ok["protocol"]) == {"accuracy", "equivariance", "efficiency", "data_efficiency"}
    assert "accuracy:plugin_models:broken/rotdigits:seed0" in html and "always fails" in html


def test_every_number_in_the_html_is_the_csv_number(run):
    out, _, html = run
    tables = read_tables(out)
    cells = [c for c in parse(html).cells if c["table"] is not None]
    checked = 0
    for cell in cells:
        table = tables[cell["table"]]
        value = table.loc[cell["row"], cell["col"]]
        shown = html_number(cell["text"])
        if isinstance(value, str) or shown is None and (value is None or pd.isna(value)):
            continue
        assert shown is not None, cell
        assert agrees(shown, float(value)), (cell, value)
        checked += 1
    headline_cells = [c for c in cells if c["table"] == "headline" and c["col"] != "model"]
    assert len(headline_cells) >= 4 * 8
    assert checked > 150


def test_headline_holds_every_protocol_for_every_model(run):
    out, _, _ = run
    head = read_tables(out)["headline"].set_index("model")
    assert list(head.index) == ["cnn", "gmr", "layer_conv2d", "layer_gmr"]
    nets, layers = head.loc[["cnn", "gmr"]], head.loc[["layer_conv2d", "layer_gmr"]]
    assert nets["acc_mean_pct"].notna().all() and layers["acc_mean_pct"].isna().all()
    assert (nets["eq_weights"] == "trained").all() and (layers["eq_weights"] == "init").all()
    assert (nets["eq_feature"] == "logits").all() and (layers["eq_feature"] == "out").all()
    assert head["latency_ms"].notna().all() and head["lee"].notna().all()
    assert head.loc["cnn", "latency_ratio"] == 1.0 and head.loc["layer_conv2d", "params_ratio"] == 1.0
    # an exactly equivariant layer beats a plain one by far away from the grid
    assert head.loc["layer_gmr", "eq_mean"] < 0.2 < head.loc["layer_conv2d", "eq_mean"]


def test_headline_equivariance_is_the_summary_over_non_grid_angles(run):
    """The headline quotes the equivariance table (one definition), whose mean excludes 0° and 90°."""
    out, _, _ = run
    t = read_tables(out)
    head = t["headline"].set_index("model")
    by_angle = t["equivariance_by_angle"]
    for model, feature, metric in (("cnn", "logits", "invariance_error"), ("layer_gmr", "out", "equivariance_error")):
        weights = head.loc[model, "eq_weights"]
        rows = by_angle[(by_angle["model"] == model) & (by_angle["feature"] == feature)
                        & (by_angle["metric"] == metric) & (by_angle["reflect"] == "none")
                        & (by_angle["weights"] == weights)]
        off_grid = rows[~rows["angle_deg"].isin([0.0, 90.0])]
        assert sorted(off_grid["angle_deg"]) == [22.5, 45.0, 67.5]
        assert head.loc[model, "eq_mean"] == pytest.approx(off_grid["mean"].mean(), rel=1e-12)
        assert head.loc[model, "eq_worst"] == pytest.approx(off_grid["mean"].max(), rel=1e-12)


def test_every_shown_table_is_a_documented_csv(run):
    out, _, html = run
    shown = {c["table"] for c in parse(html).cells if c["table"]}
    written = {p.stem for p in (out / "tables").glob("*.csv")}
    specs = table_specs()
    assert shown <= written <= set(specs)
    for name in written:
        assert list(pd.read_csv(out / "tables" / f"{name}.csv").columns) == list(specs[name].columns), name
    assert not list(out.glob("summary_*.csv"))


def test_sections_and_embedded_figures(run):
    from PIL import Image

    _, _, html = run
    ids = parse(html).ids
    for section in ("environment", "headline", "equivariance", "accuracy", "efficiency", "failed"):
        assert section in ids
    assert "<script" not in html and "http://" not in html and "https://" not in html
    pngs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) >= 6
    for data in pngs:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        assert img.format == "PNG" and img.size[0] > 400 and img.size[1] > 150


def test_rerender_is_byte_identical_and_the_cli_report_command_works(run, run_cli, tmp_path):
    import shutil

    out, _, html = run
    copy = tmp_path / out.name  # same folder name: the report shows it
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report.html", "tables", "*.lock"))
    res = run_cli("report", copy)
    assert res.returncode == 0, res.stderr
    assert (copy / "report.html").read_text(encoding="utf-8") == html
    for p in (out / "tables").glob("*.csv"):
        assert (copy / "tables" / p.name).read_bytes() == p.read_bytes()


def test_empty_run_page(tmp_path):
    from bench.tables import build_tables, write_tables
    from reports import render_report

    store = ResultsStore(tmp_path)
    store.append("j1", {"protocol": "equivariance", "model": "cnn", "seed": 0}, "error", [], "boom <b>x</b>")
    write_tables(tmp_path, build_tables(store))
    html = Path(render_report(tmp_path)).read_text(encoding="utf-8")
    assert "No results" in html and "boom &lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
