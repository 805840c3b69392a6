"""The data-efficiency protocol: settings, planning, rows of a real (tiny) training run, tables, headline, figure."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from protocol_helpers import make_job, run_job

from bench.data_efficiency import examples_to_reach
from bench.errors import UsageError
from bench.jobs import RunContext
from bench.profiles import Profile
from bench.protocols import get_protocol
from bench.protocols.data_efficiency import DataEfficiencySettings
from bench.results import rows_to_frame
from reports.plots import common
from reports.plots.common import Styles
from reports.plots.data_efficiency import accuracy_vs_size

DE = get_protocol("data_efficiency")
TINY = "plugin_models:slow_net"  # conv + pool + linear (a few ms per step); delay 0: no build wait
FAST = {"sizes": [2, 5, 500], "steps": 19, "batch_size": 64, "lr": 1e-2, "test_limit": 60, "angles": "0:360:90",
        "targets": [12, 20, 99], "model_kwargs": {"delay": 0}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the numbers then do not depend on the core count, and it is faster on busy cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -- settings and plan ---------------------------------------------------------------------------------------------
def test_settings():
    s = DE.settings({})
    assert s == DataEfficiencySettings() and s.sizes == [5, 16, 50, 158, 500] and s.targets == [60, 75, 90]
    assert s.steps is None and s.datasets is None
    assert DE.settings({"sizes": [50, 5, 16], "targets": [90, 60]}).sizes == [5, 16, 50]
    assert DE.settings({"targets": [90, 60]}).targets == [60.0, 90.0]
    with pytest.raises(UsageError) as err:
        DE.settings({"size": [5]})
    assert "Did you mean 'sizes'" in str(err.value)
    for key, bad, hint in [("sizes", [], "non-empty"), ("sizes", [0, 5], ">= 1"), ("sizes", [5, 5], "distinct"),
                           ("targets", [0.9], r"\(1, 100\]"), ("targets", [101], r"\(1, 100\]"),
                           ("steps", 0, ">= 1"), ("datasets", [], "dataset names"), ("angles", "0:360", "start"),
                           ("optimizer", "rmsprop", "adam, adamw, sgd")]:
        with pytest.raises(UsageError, match=hint):
            DE.settings({key: bad})


def test_plan_networks_datasets_seeds():
    profile = Profile(name="t", models=["cnn", "layer_gmr", "gmr"], datasets=["rotdigits"], seeds=[0, 1])
    jobs = DE.plan(profile, "cpu", DE.settings({}), [])
    assert [(j.model, j.dataset, j.seed) for j in jobs] == [
        ("cnn", "rotdigits", 0), ("cnn", "rotdigits", 1), ("gmr", "rotdigits", 0), ("gmr", "rotdigits", 1)]
    own = DE.plan(profile, "cpu", DE.settings({"datasets": ["rotshapes"]}), [])
    assert {j.dataset for j in own} == {"rotshapes"} and len(own) == 4
    with pytest.raises(UsageError, match="rotshapes"):
        DE.plan(profile, "cpu", DE.settings({"datasets": ["rotshape"]}), [])
    with pytest.raises(UsageError, match="needs at least one dataset"):
        DE.plan(Profile(name="t", models=["cnn"]), "cpu", DE.settings({}), [])


# -- rows of a real run ------------------------------------------------------------------------------------------
def run(tmp_path, seed=0, **settings):
    job = make_job("data_efficiency", TINY, "rotdigits", seed, **{**FAST, **settings})
    return run_job(job, RunContext(out_dir=tmp_path))


def by(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return run(tmp_path_factory.mktemp("de"))


def test_rows_are_keyed_by_size_and_train_the_same_steps(rows):
    # rotdigits has 126..132 training images per class: 500 per class becomes 126, the largest balanced subset
    sizes = sorted({r["per_class"] for r in rows if "per_class" in r})
    assert sizes == [2, 5, 126]
    for k in sizes:
        mine = by(rows, per_class=k)
        assert all(r["train_examples"] == 10 * k and r["rotation"] == "bilinear" and r["mask"] is False
                   for r in mine)
        angles = [r["angle_deg"] for r in by(mine, metric="accuracy") if "summary" not in r]
        assert angles == [0.0, 90.0, 180.0, 270.0, 360.0]
        summary = {r["summary"]: r["value"] for r in mine if "summary" in r}
        values = [r["value"] for r in by(mine, metric="accuracy") if "summary" not in r][:-1]
        assert summary == {"upright": values[0], "mean": pytest.approx(sum(values) / 4), "worst": min(values)}
        assert {r["metric"] for r in mine} == {"accuracy", "steps", "epochs", "train_time_s", "eval_time_s",
                                               "train_loss_final"}
    # 19 steps at every size: 20 and 50 images are one batch (one step per epoch), 1,260 are 19 batches of 64
    assert [by(rows, per_class=k, metric="steps")[0]["value"] for k in sizes] == [19, 19, 19]
    assert [by(rows, per_class=k, metric="epochs")[0]["value"] for k in sizes] == [19, 19, 1]


def test_examples_needed_rows_read_this_seeds_mean_curve(rows):
    curve = [by(rows, per_class=k, summary="mean")[0]["value"] for k in (2, 5, 126)]
    needed = by(rows, metric="examples_needed")
    assert [r["target_pct"] for r in needed] == [12, 20, 99]
    for r in needed:
        expected = examples_to_reach([2, 5, 126], curve, r["target_pct"] / 100)
        assert r["value"] == (pytest.approx(expected) if expected is not None else None)
        assert r["unit"] == "examples/class" and r["summary"] == "mean"
    assert needed[-1]["value"] is None and "not reached at the largest size (126 per class)" in needed[-1]["message"]


def test_deterministic_and_nested_by_seed(rows, tmp_path):
    def values(rs):
        return [(r["metric"], r.get("per_class"), r.get("summary"), r.get("angle_deg"), r["value"]) for r in rs
                if not r["metric"].endswith("_time_s")]

    assert values(run(tmp_path)) == values(rows)


def test_steps_default_to_epochs_of_the_largest_size(tmp_path):
    rows = run(tmp_path, sizes=[1, 3], steps=None, epochs=2, batch_size=8, angles=0)
    # largest size: 30 images, 3 steps of 8 per epoch, 2 epochs = 6 steps; 10 images: 1 step per epoch
    assert [r["value"] for r in by(rows, metric="steps")] == [6, 6]
    assert [r["value"] for r in by(rows, metric="epochs")] == [6, 2]


# -- tables and headline from known curves -----------------------------------------------------------------------------
CURVES = {  # model -> seed -> mean accuracy at 5, 50, 500 per class
    "cnn": {0: [0.1, 0.5, 0.8], 1: [0.3, 0.7, 1.0]},
    "c8": {0: [0.8, 0.95, 0.99], 1: [0.8, 0.95, 0.99]},
}


def known_frame() -> pd.DataFrame:
    rows = []
    for model, seeds in CURVES.items():
        for seed, curve in seeds.items():
            common_cols = {"model": model, "protocol": "data_efficiency", "dataset": "shapes", "seed": seed,
                           "status": "ok", "reflect": "none"}
            for k, acc in zip((5, 50, 500), curve):
                key = {**common_cols, "per_class": k, "train_examples": 10 * k}
                rows += [{**key, "metric": "accuracy", "summary": "mean", "value": acc, "unit": "fraction"},
                         {**key, "metric": "accuracy", "summary": "upright", "value": acc - 0.01, "unit": "fraction"},
                         {**key, "metric": "accuracy", "angle_deg": 0.0, "value": acc - 0.01, "unit": "fraction"},
                         {**key, "metric": "steps", "value": 100.0, "unit": "steps"},
                         {**key, "metric": "train_time_s", "value": 2.0 + seed, "unit": "s"}]
            for t in (60.0, 75.0, 95.0):
                own = examples_to_reach([5, 50, 500], curve, t / 100)
                rows.append({**common_cols, "metric": "examples_needed", "value": own, "unit": "examples/class",
                             "target_pct": t, "summary": "mean"})
    return rows_to_frame(rows)


def test_curve_and_needed_tables_from_known_curves():
    tables = DE.summarize(known_frame())
    curve = tables["data_efficiency_curve"].set_index(["model", "per_class"])
    assert list(tables["data_efficiency_curve"]["model"]) == ["c8"] * 3 + ["cnn"] * 3
    assert curve.loc[("cnn", 50), "mean_pct"] == pytest.approx(60.0)
    assert curve.loc[("cnn", 50), "mean_std"] == pytest.approx(100 * math.sqrt(0.02))  # sample std of 50 and 70
    assert curve.loc[("cnn", 500), "upright_pct"] == pytest.approx(89.0)
    assert curve.loc[("cnn", 5), "train_examples"] == 50 and curve.loc[("cnn", 5), "n_seeds"] == 2
    assert curve.loc[("cnn", 5), "steps"] == 100 and curve.loc[("cnn", 5), "train_time_s"] == pytest.approx(2.5)

    needed = tables["data_efficiency_needed"].set_index(["model", "target_pct"])
    # cnn's mean curve is 20, 60, 90 %: 60 % exactly at 50, 75 % halfway in log between 50 and 500, 95 % never
    assert needed.loc[("cnn", 60.0), "examples_per_class"] == pytest.approx(50)
    assert needed.loc[("cnn", 75.0), "examples_per_class"] == pytest.approx(math.sqrt(50 * 500))
    assert needed.loc[("cnn", 75.0), "train_examples"] == pytest.approx(10 * math.sqrt(50 * 500))
    assert pd.isna(needed.loc[("cnn", 95.0), "examples_per_class"])
    assert list(needed.loc["cnn", "reached"]) == ["interpolated", "interpolated", "not_reached"]
    # c8 is at 80 % from 5 per class: an upper bound, flagged; 95 % exactly at 50
    assert list(needed.loc["c8", "examples_per_class"]) == [5, 5, pytest.approx(50)]
    assert list(needed.loc["c8", "reached"]) == ["at_smallest", "at_smallest", "interpolated"]
    assert needed.loc[("c8", 60.0), "vs_reference"] == pytest.approx(0.1)
    assert needed.loc[("cnn", 60.0), "vs_reference"] == 1.0 and pd.isna(needed.loc[("c8", 95.0), "vs_reference"])
    # per-seed crossings: both cnn seeds reach 75 % (80 and 100 % at 500), only seed 1 reaches 95 %
    assert needed.loc[("cnn", 75.0), "seeds_reached"] == 2 and needed.loc[("cnn", 95.0), "seeds_reached"] == 1
    assert (needed["n_seeds"] == 2).all()

    head = DE.headline(tables)
    assert head.loc["cnn", "de_target_pct"] == 75.0 and head.loc["cnn", "de_dataset"] == "shapes"
    assert head.loc["cnn", "de_examples"] == pytest.approx(math.sqrt(50 * 500)) and head.loc["c8", "de_examples"] == 5


def test_summarize_without_rows():
    assert DE.summarize(rows_to_frame([])) == {}


# -- figure ------------------------------------------------------------------------------------------------------
def test_figure_draws_each_model_in_its_style(monkeypatch):
    figures = []
    monkeypatch.setattr(common, "to_data_uri", lambda fig: figures.append(fig) or "data:image/png;base64,")
    tables = DE.summarize(known_frame())
    curve = tables["data_efficiency_curve"]
    one_point = pd.DataFrame([{**curve.iloc[0].to_dict(), "model": "gmr"}])  # a single size: nothing to draw
    styles = Styles([("cnn", "plain", "network"), ("c8", "group", "network"), ("gmr", "gmr", "network")])
    plot = accuracy_vs_size(pd.concat([curve, one_point]), styles, [60.0, 75.0])
    assert plot is not None and plot.title == "Accuracy vs training-set size"
    (ax,) = [a for a in figures[0].axes if a.get_visible()]
    assert ax.get_xscale() == "log" and ax.get_title(loc="left") == "shapes"
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["cnn", "c8", "target accuracy"]  # only what the panel draws, in family order
    for handle, label in zip(legend.legend_handles, labels[:2]):
        assert (handle.get_color(), handle.get_marker()) == (styles(label).color, styles(label).marker)
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert list(lines["cnn"].get_ydata()) == pytest.approx([20, 60, 90])
    assert len(ax.collections) == 1  # the std band of cnn (c8's seeds agree: no band)
    assert accuracy_vs_size(curve.iloc[:0], styles) is None
