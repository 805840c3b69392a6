"""The report renderer: headline numbers, sections, embedded figures, failures, determinism, empty runs."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bench.results import ResultsStore

ANGLES = [float(a) for a in range(0, 361, 45)]
NON_GRID = [45.0, 135.0, 225.0, 315.0]
LATENCY = {"cnn": 2.0, "c8": 5.0, "gmr": 3.0, "layer_conv2d": 0.4, "layer_c8": 1.0}
PARAMS = {"cnn": 400_000, "c8": 450_000, "gmr": 120_000, "layer_conv2d": 2304, "layer_c8": 2304}
MEMORY = {"cnn": 40.0, "c8": 90.0, "gmr": 30.0, "layer_conv2d": 8.0, "layer_c8": 12.0}
SEEDS = (0, 1)


def eq_error(model: str, angle: float, seed: int) -> float:
    """Synthetic equivariance error of the logits / layer output."""
    if angle % 360 == 0:
        return 0.0
    base = {"cnn": 0.4, "c8": 0.01, "gmr": 0.005, "layer_conv2d": 0.3, "layer_c8": 0.008}[model]
    return base * (1.0 + 0.1 * math.sin(math.radians(angle))) * (1.0 + 0.01 * seed)


def accuracy(model: str, angle: float, seed: int) -> float:
    top = {"cnn": 98.0, "c8": 98.5, "gmr": 97.0}[model]
    drop = {"cnn": 60.0, "c8": 2.0, "gmr": 1.0}[model]
    return top - drop * abs(math.sin(math.radians(angle))) + 0.2 * seed


def job(protocol: str, model: str, seed: int = 0, dataset: str | None = None, **settings) -> dict:
    return {"protocol": protocol, "model": model, "dataset": dataset, "seed": seed, "device": "cpu",
            "settings": settings}


def base(j: dict) -> dict:
    return {"model": j["model"], "protocol": j["protocol"], "dataset": j["dataset"], "seed": j["seed"],
            "device": "cpu", "dtype": "float32", "status": "ok", "reflect": "none"}


def write_equivariance(store: ResultsStore, models=("c8", "cnn", "gmr", "layer_c8", "layer_conv2d")) -> None:
    for model in models:
        feature = "out" if model.startswith("layer_") else "logits"
        for seed in SEEDS:
            j = job("equivariance", model, seed)
            c = {**base(j), "weights": "init", "rotation": "bilinear"}
            rows = []
            for a in ANGLES:
                rows.append({**c, "metric": "equivariance_error", "value": eq_error(model, a, seed),
                             "unit": "rel", "angle_deg": a, "feature": feature})
                rows.append({**c, "metric": "equivariance_error", "value": 2 * eq_error(model, a + 1, seed),
                             "unit": "rel", "angle_deg": a, "feature": feature, "reflect": "h"})
                for kind, scale in (("roundtrip", 2e-3), ("blur", 1e-3)):  # as the protocol writes them
                    v = 0.0 if a % 90 == 0 else scale
                    rows.append({**c, "metric": "interpolation_floor", "value": v, "unit": "relative",
                                 "angle_deg": a, "floor_kind": kind, "feature": "input", "weights": "none"})
            rows.append({**c, "metric": "lie_derivative", "value": 0.1 * LATENCY[model], "unit": "rel",
                         "feature": feature})
            if not model.startswith("layer_"):
                for a in ANGLES:
                    rows.append({**c, "metric": "invariance_error", "value": eq_error(model, a, seed) / 2,
                                 "unit": "rel", "angle_deg": a, "feature": "pooled"})
                    rows.append({**c, "metric": "prediction_agreement", "value": 1 - eq_error(model, a, seed),
                                 "unit": "fraction", "angle_deg": a})
                for i, layer in enumerate(("conv1", "conv2", "head")):
                    rows.append({**c, "metric": "equivariance_error", "value": (i + 1) * 0.01, "unit": "rel",
                                 "angle_deg": 45.0, "feature": "features", "layer": layer})
            store.append(f"eq-{model}-{seed}", j, "ok", rows)


def write_accuracy(store: ResultsStore, models=("c8", "cnn", "gmr")) -> None:
    for model in models:
        for seed in SEEDS:
            j = job("accuracy", model, seed, dataset="rotdigits")
            c = {**base(j), "condition": "upright"}
            rows = [{**c, "metric": "accuracy", "value": accuracy(model, a, seed), "unit": "%", "angle_deg": a}
                    for a in ANGLES]
            rows += [{**c, "metric": "accuracy", "value": accuracy(model, a, seed) - 5, "unit": "%",
                      "angle_deg": a, "reflect": "h"} for a in ANGLES]
            vals = [accuracy(model, a, seed) for a in ANGLES[:-1]]
            for name, v in (("upright", accuracy(model, 0, seed)), ("mean", sum(vals) / len(vals)),
                            ("worst", min(vals)), ("flip_h", accuracy(model, 0, seed) - 5),
                            ("flip_v", accuracy(model, 0, seed) - 6)):
                rows.append({**c, "metric": "accuracy", "value": v, "unit": "%", "summary": name})
            store.append(f"acc-{model}-{seed}", j, "ok", rows)


def write_efficiency(store: ResultsStore, models=("c8", "cnn", "gmr", "layer_c8", "layer_conv2d"),
                     iqr_column: bool = False) -> None:
    for model in models:
        j = job("efficiency", model)
        c = base(j)
        rows = [{**c, "metric": "params", "value": PARAMS[model], "unit": "count"}]
        for batch in (1, 8):
            cfg = {"batch": batch, "resolution": 28}
            lat = LATENCY[model] * (1 if batch == 1 else 3)
            if iqr_column:
                rows.append({**c, **cfg, "metric": "latency_ms", "value": lat, "unit": "ms", "mode": "eval",
                             "iqr_ms": lat / 10})
            else:
                rows.append({**c, **cfg, "metric": "latency_ms", "value": lat, "unit": "ms", "mode": "eval",
                             "stat": "median"})
                rows.append({**c, **cfg, "metric": "latency_ms", "value": lat / 10, "unit": "ms",
                             "mode": "eval", "stat": "iqr"})
            rows.append({**c, **cfg, "metric": "latency_ms", "value": 3 * lat, "unit": "ms", "mode": "train",
                         "stat": "median"})
            rows.append({**c, **cfg, "metric": "peak_memory_mb", "value": MEMORY[model] * batch, "unit": "MB",
                         "mode": "eval"})
        store.append(f"eff-{model}", j, "ok", rows)


def write_full_run(path: Path) -> Path:
    store = ResultsStore(path)
    write_equivariance(store)
    write_accuracy(store)
    write_efficiency(store)
    store.append("acc-e2-0", job("accuracy", "e2_wrn", 0, dataset="rotdigits"), "oom", [],
                 "CUDA out of memory. Tried to allocate 2.00 GiB <script>alert(1)</script>")
    (path / "environment.json").write_text(json.dumps({
        "equibench_revision": "abc123def", "device": "cpu", "threads": 2, "dtype": "float32",
        "command": "equibench run --profile quick", "started_at": "2025-01-01T00:00:00+00:00",
        "profile": "quick", "packages": {"torch": "2.4.1", "escnn": None}}, sort_keys=True))
    (path / "profile.toml").write_text('name = "quick"\nmodels = ["cnn", "c8", "gmr"]\n')
    return path


class TableParser(HTMLParser):
    """Collects every <table> as {"id": enclosing block id, "rows": [[cell text, ...], ...]}."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._ids: list[str | None] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div":
            self._ids.append(a.get("id"))
        elif tag == "table":
            owner = next((i for i in reversed(self._ids) if i), None)
            self.tables.append({"id": owner, "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._span = int(a.get("colspan") or 1)

    def handle_endtag(self, tag):
        if tag == "div" and self._ids:
            self._ids.pop()
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.extend([" ".join("".join(self._cell).split())] * self._span)
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse_tables(html: str) -> list[dict]:
    p = TableParser()
    p.feed(html)
    return p.tables


def headline(html: str) -> dict[str, dict[str, str]]:
    """The headline table as {model: {"group column": cell}} (two header rows: groups, then columns)."""
    table = next(t for t in parse_tables(html) if t["id"] == "headline")
    header = [f"{g} {c}".strip() for g, c in zip(table["rows"][0], table["rows"][1])]
    return {row[0]: dict(zip(header, row)) for row in table["rows"][2:]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, str]:
    from reports import render_report

    run = write_full_run(tmp_path_factory.mktemp("run"))
    out = render_report(run)
    return run, out.read_text(encoding="utf-8")


def test_render_writes_report_html(full_run):
    run, html = full_run
    assert (run / "report.html").is_file()
    assert html.startswith("<!DOCTYPE html>")
    for section in ("environment", "headline", "equivariance", "accuracy", "efficiency", "failed"):
        assert f'id="{section}"' in html
    # floors (weights "none") belong to every block, not to a block of their own; only init weights here
    assert "none weights" not in html and "At initialisation" not in html
    assert "interpolation floor" in html


def test_headline_models_and_ratios(full_run):
    _, html = full_run
    rows = headline(html)
    assert sorted(rows) == ["c8", "cnn", "gmr", "layer_c8", "layer_conv2d"]
    # latency / memory at the most common config: batch 1 and 8 appear equally often -> batch 1
    for model in rows:
        ref = "layer_conv2d" if model.startswith("layer_") else "cnn"
        assert rows[model]["× plain baseline latency"] == _sig3(LATENCY[model] / LATENCY[ref]) + "×"
        assert rows[model]["× plain baseline memory"] == _sig3(MEMORY[model] / MEMORY[ref]) + "×"
        assert rows[model]["× plain baseline params"] == _sig3(PARAMS[model] / PARAMS[ref]) + "×"
    assert [rows[m]["params"] for m in sorted(rows)] == ["450k", "400k", "120k", "2.30k", "2.30k"]
    assert rows["c8"]["× plain baseline latency"] == "2.50×"
    assert rows["gmr"]["× plain baseline memory"] == "0.750×"
    assert rows["layer_c8"]["× plain baseline latency"] == "2.50×"
    assert rows["c8"]["cost eval latency (ms)"] == "5.00"


def _sig3(x: float) -> str:
    s = f"{x:#.3g}"
    return s.rstrip(".")


def test_headline_equivariance_and_accuracy_values(full_run):
    _, html = full_run
    rows = headline(html)
    for model in ("c8", "cnn", "gmr", "layer_c8", "layer_conv2d"):
        per_angle = [sum(eq_error(model, a, s) for s in SEEDS) / len(SEEDS) for a in NON_GRID]
        mean, worst = sum(per_angle) / len(per_angle), max(per_angle)
        fmt = (lambda v: f"{v:.2e}") if mean < 1e-2 else _sig3
        assert rows[model]["equivariance error mean"] == fmt(mean)
        assert rows[model]["equivariance error max"] == ((lambda v: f"{v:.2e}") if worst < 1e-2 else _sig3)(worst)
    # upright accuracy of cnn: 98.0 and 98.2 over two seeds -> 98.1 ± 0.14
    assert rows["cnn"]["accuracy (%) upright"] == "98.1 ± 0.14"
    assert rows["layer_c8"]["accuracy (%) upright"] == "—"


def test_headline_table_api_is_pure_and_numeric(full_run):
    run, _ = full_run
    code = ("import sys, reports; from bench.results import ResultsStore; "
            f"t = reports.headline_table(ResultsStore({str(run)!r}).frame()); "
            "n = reports.headline_table(ResultsStore(" + repr(str(run)) + ").frame(), formatted=False); "
            "assert 'matplotlib' not in sys.modules, 'headline_table imported matplotlib'; "
            "print(t.to_string(index=False)); print(n.set_index('model')['latency_ratio'].to_dict())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "latency ×ref" in res.stdout and "2.50×" in res.stdout
    ratios = eval(res.stdout.strip().splitlines()[-1])  # noqa: S307 - our own dict repr
    assert ratios["c8"] == pytest.approx(2.5) and ratios["cnn"] == pytest.approx(1.0)


def test_figures_are_embedded_pngs(full_run):
    from PIL import Image

    _, html = full_run
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # equivariance error vs angle, per-layer bars, accuracy vs angle, memory vs batch, Pareto
    assert len(uris) == 5
    for data in uris:
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        assert img.format == "PNG" and img.width > 300 and img.height > 150
    for title in ("Equivariance error vs angle", "Per-layer equivariance error", "Accuracy vs rotation angle",
                  "Peak memory vs batch size", "Accuracy vs latency"):
        assert title in html


def test_self_contained_and_escaped(full_run):
    _, html = full_run
    assert "<script" not in html  # the failed job's message is escaped, and the report needs no JS
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<link" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_failed_jobs_listed(full_run):
    _, html = full_run
    failed = next(t for t in parse_tables(html) if t["rows"] and t["rows"][0][:3] == ["job", "status", "message"])
    assert len(failed["rows"]) == 2
    label, status, message, job_id = failed["rows"][1]
    assert (label, status, job_id) == ("accuracy:e2_wrn/rotdigits:seed0", "oom", "acc-e2-0")
    assert message.startswith("CUDA out of memory")


def test_section_tables(full_run):
    _, html = full_run
    tables = parse_tables(html)
    flat = [" | ".join(r) for t in tables for r in t["rows"]]
    # equivariance at selected angles: only 45° and 90° were measured (step 45)
    angle_header = next(r for t in tables for r in t["rows"][:1] if "45°" in r and "mean (non-grid)" in r)
    assert "10°" not in angle_header and "22.5°" not in angle_header and "90°" in angle_header
    assert any(r.startswith("cnn | logits | none | ") for r in flat)
    assert any(r.startswith("cnn | prediction agreement") for r in flat)
    # accuracy summary: one row per model with flip columns
    acc = next(t for t in tables if t["rows"] and t["rows"][0][:4] == ["model", "upright", "mean", "worst"])
    assert [r[0] for r in acc["rows"][1:]] == ["c8", "cnn", "gmr"]
    assert acc["rows"][0][4:6] == ["flip h", "flip v"]
    # efficiency ratio table carries value and ratio in a cell
    eff = next(t for t in tables if t["id"] == "efficiency-ratios")
    c8_b1 = next(r for r in eff["rows"] if r[0] == "c8" and r[1] == "1")
    assert "5.00 2.50×" in c8_b1 and "450k 1.12×" in c8_b1 and "0.500" in c8_b1  # median, ratio; IQR
    # environment
    assert "abc123def" in html and "not installed" in html and "quick" in html


def test_deterministic_bytes(full_run, tmp_path):
    from reports import render_report

    run, html = full_run
    again = render_report(run, tmp_path / "again.html").read_bytes()
    assert again == html.encode("utf-8")


def test_empty_run_page(tmp_path):
    from reports import render_report

    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert "No results" in html
    assert 'id="headline"' not in html and "<img" not in html
    # only a failed job: still the no-results page, with the failure listed
    ResultsStore(tmp_path).append("x", job("equivariance", "c8"), "error", [], "boom")
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert "No results" in html and "equivariance:c8:seed0" in html and "boom" in html


def test_subset_of_protocols_and_iqr_column(tmp_path):
    from reports import headline_table, render_report

    store = ResultsStore(tmp_path)
    write_efficiency(store, models=("cnn", "c8"), iqr_column=True)
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert 'id="efficiency"' in html
    for absent in ('id="equivariance"', 'id="accuracy"', 'id="failed"', "No results"):
        assert absent not in html
    rows = headline(html)
    assert list(rows["c8"]) == ["model", "params", "cost eval latency (ms)", "cost peak memory (MB)",
                                "× plain baseline params", "× plain baseline latency", "× plain baseline memory"]
    assert rows["c8"]["× plain baseline latency"] == "2.50×"
    table = headline_table(store.frame())
    assert list(table.columns) == ["model", "params", "eval latency (ms)", "peak memory (MB)", "params ×ref",
                                   "latency ×ref", "memory ×ref"]
    # the IQR comes from the iqr_ms column here (stat rows elsewhere) and is shown next to the median
    eff = next(t for t in parse_tables(html) if t["id"] == "efficiency-ratios")
    header = eff["rows"][0]
    c8_b1 = dict(zip(header, next(r for r in eff["rows"] if r[0] == "c8" and r[1] == "1")))
    assert c8_b1["eval latency (ms)"] == "5.00 2.50×" and c8_b1["eval IQR (ms)"] == "0.500"


def test_accuracy_only_run(tmp_path):
    from reports import headline_table, render_report

    store = ResultsStore(tmp_path)
    write_accuracy(store, models=("cnn",))
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert 'id="accuracy"' in html and 'id="efficiency"' not in html and 'id="equivariance"' not in html
    table = headline_table(store.frame(), formatted=False)
    assert table.loc[0, "acc_upright"] == pytest.approx(98.1)
    assert not any(c.endswith("_ratio") for c in table.columns)


def efficiency_protocol_rows(model: str, scale: float) -> list[dict]:
    """Rows shaped like bench.protocols.efficiency writes them: base point + batch sweep, memory kinds,
    flops per mode, stat median/iqr."""
    j = job("efficiency", model)
    rows = []
    for sweep, batch in (("base", 8), ("batch", 1), ("batch", 8), ("batch", 32)):
        c = {**base(j), "batch": batch, "resolution": 32, "kernel_size": None, "channels": None,
             "threads": 2, "sweep": sweep}
        rows += [{**c, "metric": "params", "value": 1000 * scale, "unit": "count", "mode": None},
                 {**c, "metric": "flops", "value": 1e6 * scale * batch, "unit": "FLOPs", "mode": "eval"},
                 {**c, "metric": "flops", "value": 3e6 * scale * batch, "unit": "FLOPs", "mode": "train"}]
        for mode, f in (("eval", 1.0), ("train", 3.0)):
            lat = scale * f * batch
            rows += [{**c, "metric": "latency_ms", "value": lat, "unit": "ms", "mode": mode, "stat": "median"},
                     {**c, "metric": "latency_ms", "value": lat / 10, "unit": "ms", "mode": mode, "stat": "iqr"},
                     {**c, "metric": "peak_memory_mb", "value": scale * batch * f, "unit": "MiB", "mode": mode,
                      "memory": "step"},
                     {**c, "metric": "peak_memory_mb", "value": 300 + scale * batch * f, "unit": "MiB",
                      "mode": mode, "memory": "peak"}]
    return j, rows


def test_efficiency_protocol_row_shapes(tmp_path):
    """Base point, memory kinds and per-mode FLOPs are told apart (not averaged together)."""
    from reports import headline_table, tables

    store = ResultsStore(tmp_path)
    for model, scale in (("cnn", 2.0), ("c8", 5.0)):
        j, rows = efficiency_protocol_rows(model, scale)
        store.append(f"eff-{model}", j, "ok", rows)
    n = headline_table(store.frame(), formatted=False).set_index("model")
    assert n.loc["c8", "latency_ms"] == pytest.approx(40.0)      # base point: batch 8, eval median
    assert n.loc["c8", "peak_memory_mb"] == pytest.approx(40.0)  # memory kind "step", eval
    assert n.loc["c8", "latency_ratio"] == pytest.approx(2.5)
    long = tables.efficiency_ratio_table(store.frame())
    flops = long[(long["column"] == "FLOPs") & (long["model"] == "c8") & (long["batch"] == 32)]
    assert flops["value"].tolist() == [pytest.approx(5e6 * 32)] and flops["ratio"].tolist() == [pytest.approx(2.5)]
    mem = long[long["column"].str.startswith("peak memory") & (long["model"] == "c8") & (long["batch"] == 1)]
    assert sorted(mem["value"]) == [pytest.approx(5.0), pytest.approx(15.0)]  # step kind, eval and train


def test_ratio_fallback_without_bench_cost(tmp_path, monkeypatch):
    """Same ratios when bench.cost.ratios is missing (computed in reports.tables)."""
    from reports import tables

    store = ResultsStore(tmp_path)
    write_efficiency(store)
    with_external = tables.efficiency_ratio_table(store.frame())
    monkeypatch.setitem(sys.modules, "bench.cost.ratios", None)  # import now raises ImportError
    fallback = tables.efficiency_ratio_table(store.frame())
    assert tables._external_ratios(tables.prepare(store.frame()), []) is None
    assert with_external["ratio"].tolist() == pytest.approx(fallback["ratio"].tolist(), nan_ok=True)
    c8 = fallback[(fallback["model"] == "c8") & (fallback["column"] == "eval latency (ms)")]
    assert c8["ratio"].tolist() == pytest.approx([2.5, 2.5])
