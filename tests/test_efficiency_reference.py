"""The efficiency protocol's published reference (the GMR paper's teaser) and its per-level network settings:
known answers from the paper's numbers, the rows each job emits, the efficiency_reference table, validation."""

from __future__ import annotations

import pandas as pd
import pytest
from protocol_helpers import make_job, run_job

from bench.errors import UsageError
from bench.jobs import RunContext
from bench.protocols import efficiency as eff
from bench.protocols import get_protocol
from gmr import perf_teaser

EFF = get_protocol("efficiency")
FAST = {"warmup": 1, "min_run_time": 0.005, "min_runs": 3, "kernel_sizes": [], "channels": [], "resolutions": [],
        "batch_sizes": [], "threads": 1}


# -- settings --------------------------------------------------------------------------------------------------
def test_reference_setting_names_the_valid_references():
    assert EFF.settings({"reference": "gmr_paper_teaser"}).reference == "gmr_paper_teaser"
    assert EFF.settings({"reference": "none"}).reference is None
    with pytest.raises(UsageError, match="gmr_paper_teaser"):
        EFF.settings({"reference": "gmr_paper"})


def test_network_settings_are_checked_with_the_rule_of_the_setting_they_override():
    s = EFF.settings({"network_settings": {"batch": 128, "batch_sizes": [1, 512], "min_runs": 3}})
    assert s.network_settings == {"batch": 128, "batch_sizes": [1, 512], "min_runs": 3}
    with pytest.raises(UsageError, match="valid: batch, resolution"):
        EFF.settings({"network_settings": {"level": "layer"}})
    with pytest.raises(UsageError, match="'kernel_size' must be a positive odd integer"):
        EFF.settings({"network_settings": {"kernel_size": 4}})
    with pytest.raises(UsageError, match="network_settings"):
        EFF.settings({"network_settings": [1]})


def test_networks_run_at_their_own_base_point_and_layers_at_the_shared_one(tmp_path):
    settings = {**FAST, "batch": 3, "resolution": 16, "metrics": ["params"], "network_settings": {"batch": 2,
                "resolution": 32, "batch_sizes": [5], "in_channels": 3}, "network_sweeps": ["batch_sizes"],
                "model_kwargs": {"cnn": {"width": 0.25}}, "batch_sizes": [4]}
    net = run_job(make_job("efficiency", "cnn", **settings), RunContext(out_dir=tmp_path))
    layer = run_job(make_job("efficiency", "layer_conv2d", **settings), RunContext(out_dir=tmp_path))
    assert {(r["sweep"], r["batch"], r["resolution"]) for r in net} == {("base", 2, 32), ("batch", 5, 32)}
    assert {(r["sweep"], r["batch"], r["resolution"]) for r in layer} == {("base", 3, 16), ("batch", 4, 16)}


# -- reference rows -------------------------------------------------------------------------------------------
def test_each_panel_is_emitted_once_by_the_job_of_its_baseline():
    b = eff.reference_rows("gmr_paper_teaser", "layer_conv2d")
    a = eff.reference_rows("gmr_paper_teaser", "resnet18")
    assert eff.reference_rows("gmr_paper_teaser", "layer_gmr") == [] and eff.reference_rows(None, "resnet18") == []
    got_b = {(r["series"], r["kernel_size"]): r["value"] for r in b}
    assert got_b == {("nn.Conv2d", 3): 1.0, ("nn.Conv2d", 9): 5.1, ("nn.Conv2d", 11): 6.9, ("E(2)-CNN", 9): 205.0,
                     ("G-Conv", 9): 230.0, ("GMR-Conv", 3): 1.2, ("GMR-Conv", 9): 2.55, ("GMR-Conv", 11): 2.9}
    assert {r["metric"] for r in b} == {"paper_latency_ms"} and {r["unit"] for r in b} == {"ms"}
    assert {(r["series"], r["value"], r["mode"]) for r in a} == {("ResNet-18", 3.4 * 1024, "train"),
                                                                 ("GMR-ResNet-18", 6.2 * 1024, "train")}
    by_series = {r["series"]: r["counterparts"] for r in b}
    assert by_series == {"nn.Conv2d": "layer_conv2d", "E(2)-CNN": "layer_c8", "G-Conv": "",
                         "GMR-Conv": "layer_gmr,layer_gmr_official"}


def test_a_job_of_the_baseline_appends_the_reference_rows_to_its_measurements(tmp_path):
    rows = run_job(make_job("efficiency", "layer_conv2d", **FAST, metrics=["params"], reference="gmr_paper_teaser"),
                   RunContext(out_dir=tmp_path))
    assert sum(r["metric"] == "params" for r in rows) == 1
    assert sum(r["metric"] == "paper_latency_ms" for r in rows) == 8
    assert all(r["sweep"] == "reference" and r["source"] == "gmr_paper_teaser" for r in rows if "series" in r)
    eff.EfficiencyRowWithReference  # noqa: B018 - the row type the runner checks these rows against
    from bench.schema import check_rows

    check_rows(EFF.row_type, rows)


# -- the table --------------------------------------------------------------------------------------------------
def _measured(model, k, mode, value, device="cpu", batch=16, resolution=64, channels=64):
    return {"protocol": "efficiency", "model": model, "metric": "latency_ms", "stat": "median", "mode": mode,
            "value": value, "unit": "ms", "batch": batch, "resolution": resolution, "kernel_size": k,
            "channels": channels, "threads": 1, "device": device, "dtype": "float32", "sweep": "kernel_size",
            "status": "ok"}


def _memory(model, batch, value, kind="step"):
    return {"protocol": "efficiency", "model": model, "metric": "peak_memory_mb", "memory": kind, "mode": "train",
            "value": value, "unit": "MiB", "batch": batch, "resolution": 32, "kernel_size": None,
            "channels": None, "threads": 1, "device": "cuda", "dtype": "float32", "sweep": "batch", "status": "ok"}


def _paper_rows(baseline):
    return [{**r, "protocol": "efficiency", "model": baseline, "status": "ok", "device": "cpu", "dtype": "float32"}
            for r in eff.reference_rows("gmr_paper_teaser", baseline)]


def test_reference_table_pairs_published_ratios_with_ours_at_the_same_kernel_size():
    measured = [_measured("layer_conv2d", 9, "eval", 4.0), _measured("layer_gmr", 9, "eval", 2.0),
                _measured("layer_gmr", 9, "train", 6.0), _measured("layer_conv2d", 9, "train", 3.0),
                _measured("layer_gmr", 5, "eval", 1.0), _measured("layer_conv2d", 5, "eval", 1.0),
                {**_measured("layer_gmr", 9, "eval", 99.0), "channels": 16, "sweep": "channels"}]  # off the line
    frame = pd.DataFrame(measured + _paper_rows("layer_conv2d"))
    tables = EFF.summarize(frame)
    ref = tables["efficiency_reference"]
    assert list(ref.columns) == list(eff.REFERENCE.columns)
    gmr9 = ref[(ref["series"] == "GMR-Conv") & (ref["kernel_size"] == 9) & (ref["model"] == "layer_gmr")]
    assert gmr9["paper_value"].tolist() == [2.55, 2.55]
    assert gmr9["paper_ratio"].tolist() == pytest.approx([0.5, 0.5])            # 2.55 / 5.1
    assert dict(zip(gmr9["mode"], gmr9["ratio"])) == pytest.approx({"eval": 0.5, "train": 2.0})
    assert dict(zip(gmr9["mode"], gmr9["value"])) == {"eval": 2.0, "train": 6.0}  # not the channels-sweep point
    e2 = ref[ref["series"] == "E(2)-CNN"]
    assert e2["paper_ratio"].tolist() == pytest.approx([205 / 5.1]) and e2["value"].isna().all()
    gconv = ref[ref["series"] == "G-Conv"]
    assert len(gconv) == 1 and gconv["model"].isna().all() and gconv["paper_ratio"].item() == pytest.approx(230 / 5.1)
    k3 = ref[(ref["series"] == "GMR-Conv") & (ref["kernel_size"] == 3)]
    assert k3["paper_ratio"].tolist() == pytest.approx([1.2, 1.2])  # official and ours, neither measured at k = 3
    assert set(k3["model"]) == {"layer_gmr", "layer_gmr_official"} and k3["value"].isna().all()


def test_reference_table_training_memory_pairs_every_batch_with_the_same_batch_of_resnet18():
    frame = pd.DataFrame([_memory("resnet18", 32, 100.0), _memory("resnet18", 128, 400.0),
                          _memory("gmr_resnet18", 32, 150.0), _memory("gmr_resnet18", 128, 700.0),
                          _memory("gmr_resnet18", 128, 900.0, kind="peak"), *_paper_rows("resnet18")])
    ref = EFF.summarize(frame)["efficiency_reference"]
    g = ref[ref["model"] == "gmr_resnet18"]
    assert g["paper_ratio"].unique().tolist() == pytest.approx([6.2 / 3.4])
    got = {(r.memory, r.batch): (r.value, r.ratio) for r in g.itertuples()}
    assert got[("step", 32)] == pytest.approx((150.0, 1.5)) and got[("step", 128)] == pytest.approx((700.0, 1.75))
    assert got[("peak", 128)][0] == 900.0 and pd.isna(got[("peak", 128)][1])  # resnet18 has no 'peak' row there


def test_no_reference_rows_no_reference_table():
    tables = EFF.summarize(pd.DataFrame([_measured("layer_conv2d", 9, "eval", 4.0)]))
    assert "efficiency_reference" not in tables and "efficiency_points" in tables


def test_paper_values_are_the_ones_read_off_the_figure():
    assert perf_teaser.PAPER_SECONDS == {"conv2d": {3: 1.0, 9: 5.1, 11: 6.9}, "e2cnn": {9: 205.0},
                                         "g_conv": {9: 230.0}, "gmr": {3: 1.2, 9: 2.55, 11: 2.9}}
    assert perf_teaser.PAPER_TRAIN_MEMORY_GB == {"resnet18": 3.4, "gmr_resnet18": 6.2}
