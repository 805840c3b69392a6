"""One colour and marker per model in every figure of a report; families share a hue; legends name what is drawn."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.colors import to_rgb

from bench.schema import model_family, model_level
from bench.tables import read_tables
from reports.plots import common
from reports.plots.common import FAMILY_PALETTES, Styles
from reports.render import build_context, styles_for

ZOO = ["cnn", "gmr", "gmr_radius", "c4", "c8", "d4", "so2", "layer_conv2d", "layer_gmr", "layer_gmr_radius",
       "layer_c8", "layer_d8", "layer_so2"]


def test_families_share_a_hue_and_models_of_a_level_never_share_a_colour():
    styles = Styles((m, model_family(m), model_level(m)) for m in ZOO)
    for m in ZOO:
        assert styles(m).color in FAMILY_PALETTES[model_family(m)], m
    for level in ("network", "layer"):
        models = [m for m in ZOO if model_level(m) == level]
        for a, b in itertools.combinations(models, 2):
            # clearly different colours, not merely different strings (c4 vs so2, layer_c8 vs layer_d8)
            distance = sum((x - y) ** 2 for x, y in zip(to_rgb(styles(a).color), to_rgb(styles(b).color))) ** 0.5
            assert distance > 0.1, (a, b)
    # the assignment depends on the set of models, not on the order they come in
    again = Styles((m, model_family(m), model_level(m)) for m in reversed(ZOO))
    assert all(again(m) == styles(m) for m in ZOO)


@pytest.fixture(scope="module")
def report_figures(e2e_run):
    """Every matplotlib figure the report of the e2e run draws (captured before it becomes a PNG)."""
    out, _ = e2e_run
    figures = []
    patch = pytest.MonkeyPatch()
    patch.setattr(common, "to_data_uri", lambda fig: figures.append(fig) or "data:image/png;base64,")
    try:
        context = build_context(out)
    finally:
        patch.undo()
    return out, context, figures


def test_every_figure_gives_a_model_the_same_colour_and_marker(report_figures):
    out, context, figures = report_figures
    styles = styles_for(read_tables(out))
    models = set(read_tables(out)["headline"]["model"])
    seen: dict[str, set] = {}
    for fig in figures:
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            drawn_lines = {ln.get_label() for ln in ax.get_lines()}
            drawn_colours = {tuple(c[:3]) for coll in ax.collections for c in coll.get_facecolor()}
            for handle, text in zip(legend.legend_handles, legend.get_texts()):
                label = text.get_text()
                if label not in models:
                    continue  # a line-style key (floor, target, train / eval)
                seen.setdefault(label, set()).add((to_rgb(handle.get_color()), handle.get_marker()))
                # the legend names only what this panel draws
                assert label in drawn_lines or to_rgb(styles(label).color) in drawn_colours, (label, ax.get_title())
    assert {"cnn", "gmr", "layer_conv2d", "layer_gmr"} <= set(seen)
    for model, looks in seen.items():
        assert looks == {(to_rgb(styles(model).color), styles(model).marker)}, model
    titles = [s.id for s in context["sections"]]
    assert titles.index("data-efficiency") == titles.index("accuracy") + 1


def test_the_data_efficiency_figure_and_tables_are_in_the_report(e2e_run):
    out, _ = e2e_run
    html = (out / "report.html").read_text(encoding="utf-8")
    for marker in ('id="data-efficiency"', 'data-table="data_efficiency_needed"',
                   'data-table="data_efficiency_curve"', 'data-table="accuracy_ceiling"',
                   "Accuracy vs training-set size"):
        assert marker in html
    tables = read_tables(out)
    assert set(tables["data_efficiency_curve"]["per_class"]) == {2, 4}
    assert list(tables["accuracy_ceiling"]["group"]) == ["SO2", "O2"]
