"""The efficiency protocol: settings validation, row schema, known FLOPs, OOM points, export rows, ratios.

Plugin models used here live in this module (tests/ is on sys.path, see conftest) or in bench.cost.calibration
(importable from the memory probe's subprocess too). Timing values are never asserted.
"""

import dataclasses
import importlib.util

import pandas as pd
import pytest
import torch
from protocol_helpers import make_job, run_job
from torch import nn

from bench.contract import SCALAR, SymmetryContract
from bench.cost.flops import conv2d_flops
from bench.cost.ratios import ratio_table
from bench.errors import UsageError
from bench.jobs import RunContext
from bench.protocols import efficiency as eff
from bench.protocols import get_protocol
from bench.runner import execute_job

EFF = get_protocol("efficiency")

FAST = {"warmup": 1, "min_run_time": 0.005, "min_runs": 3, "kernel_sizes": [], "channels": [], "resolutions": [],
        "batch_sizes": [], "threads": 1}
NO_MEMORY = ["params", "build_s", "flops", "latency_ms"]


def run(model, tmp_path, **settings):
    return run_job(make_job("efficiency", model, None, 0, **{**FAST, **settings}), RunContext(out_dir=tmp_path))


def frame(rows):
    return pd.DataFrame(rows)


# -- plugin models -------------------------------------------------------------------------------------------
class ExportableLayer(nn.Module):
    """A layer with an `export()` returning a plain conv (like escnn's R2Conv.export)."""

    def __init__(self, c, k):
        super().__init__()
        self.conv = nn.Conv2d(c, c, k, padding="same", bias=False)
        self.symmetry = SymmetryContract("trivial", {"out": SCALAR})

    def forward(self, x):
        return self.conv(x) * 1.0

    def export(self):
        out = nn.Conv2d(self.conv.in_channels, self.conv.out_channels, self.conv.kernel_size, padding="same",
                        bias=False)
        out.weight.data.copy_(self.conv.weight.data)
        return out


def exportable_layer(in_channels, num_classes, kernel_size=3, channels=None):
    return ExportableLayer(in_channels, kernel_size)


def broken_layer(in_channels, num_classes, kernel_size=3, channels=None):
    if kernel_size != 3:
        raise RuntimeError("cannot build this one")
    return ExportableLayer(in_channels, kernel_size)


# -- settings ------------------------------------------------------------------------------------------------
def test_validate_settings_merges_defaults():
    s = EFF.settings({"batch": 4})
    assert s.batch == 4 and s.resolution == eff.EfficiencySettings().resolution
    assert EFF.settings(None) == EFF.settings({}) == eff.EfficiencySettings()


def test_validate_settings_rejects_unknown_keys_naming_the_valid_ones():
    with pytest.raises(UsageError) as err:
        EFF.settings({"kernel_size_sweep": [3]})
    msg = str(err.value)
    assert "kernel_size_sweep" in msg and "Valid settings" in msg and "kernel_sizes" in msg


@pytest.mark.parametrize("bad", [{"kernel_sizes": [3, 4]}, {"batch": 0}, {"modes": ["eval", "fast"]},
                                 {"metrics": ["flops", "watts"]}, {"resolutions": 32}, {"min_run_time": -1},
                                 {"threads": 0}, {"max_memory_mb": "lots"}, {"network_sweeps": ["depth"]},
                                 {"level": "block"}, {"batch": True}, {"warmup": -1}])
def test_validate_settings_rejects_bad_values(bad):
    key = next(iter(bad))
    with pytest.raises(UsageError, match=key):
        EFF.settings(bad)


def test_plan_points_one_factor_at_a_time():
    s = dataclasses.asdict(EFF.settings({"kernel_sizes": [3, 5], "channels": [8], "resolutions": [96],
                                         "batch_sizes": [2]}))
    layer = eff.plan_points(s, "layer")
    assert [sw for sw, _ in layer] == ["base", "kernel_size", "kernel_size", "channels", "resolution", "batch"]
    base = layer[0][1]
    assert all(sum(getattr(p, f) != getattr(base, f) for f in ("batch", "resolution", "kernel_size", "channels")) <= 1
               for _, p in layer)
    net = eff.plan_points(s, "network")
    assert [sw for sw, _ in net] == ["base", "resolution", "batch"]


# -- rows ----------------------------------------------------------------------------------------------------
def test_rows_schema_and_known_flops(tmp_path):
    rows = run("bench.cost.calibration:conv_layer", tmp_path, level="layer", metrics=NO_MEMORY, batch=2,
               resolution=12, layer_channels=4, kernel_size=5, kernel_sizes=[3], resolutions=[16],
               sweep_metrics=["flops"])
    df = frame(rows)
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"]["message"].tolist()
    assert set(df["metric"]) == {"params", "build_s", "flops", "latency_ms"}
    for col in ("batch", "resolution", "kernel_size", "channels", "threads", "sweep"):
        assert col in df.columns
    base = df[df["sweep"] == "base"]
    flops = base[base["metric"] == "flops"].set_index("mode")["value"]
    f = conv2d_flops(12, 12, 4, 4, 5, batch=2)
    assert flops["eval"] == f and flops["train"] == 2 * f
    assert (base[base["metric"] == "flops"]["unit"] == "FLOPs").all()
    lat = base[base["metric"] == "latency_ms"]
    assert set(zip(lat["mode"], lat["stat"])) == {("eval", "median"), ("eval", "iqr"), ("train", "median"),
                                                 ("train", "iqr")}
    assert (lat["value"] >= 0).all() and (lat["unit"] == "ms").all()
    assert base[base["metric"] == "params"]["value"].item() == 4 * 4 * 5 * 5
    # sweep points: kernel 3 and resolution 16, each with its own FLOPs
    ks = df[(df["sweep"] == "kernel_size") & (df["metric"] == "flops") & (df["mode"] == "eval")]
    assert ks["value"].item() == conv2d_flops(12, 12, 4, 4, 3, batch=2) and ks["kernel_size"].item() == 3
    rs = df[(df["sweep"] == "resolution") & (df["metric"] == "flops") & (df["mode"] == "eval")]
    assert rs["value"].item() == conv2d_flops(16, 16, 4, 4, 5, batch=2)
    assert "latency_ms" not in set(df[df["sweep"] != "base"]["metric"])  # sweep_metrics respected


def test_eval_exported_rows_when_the_model_has_export(tmp_path):
    df = frame(run("test_efficiency:exportable_layer", tmp_path, level="layer", metrics=["flops", "latency_ms"],
                   resolution=8, batch=1, layer_channels=2))
    exp = df[df["mode"] == "eval_exported"]
    assert set(exp["metric"]) == {"flops", "latency_ms"} and (exp["status"] == "ok").all()
    fl = df[df["metric"] == "flops"].set_index("mode")["value"]
    assert fl["eval_exported"] == fl["eval"]
    # a model without export() gets no such rows
    df2 = frame(run("bench.cost.calibration:conv_layer", tmp_path, level="layer", metrics=["flops"]))
    assert "eval_exported" not in set(df2["mode"])


def test_threads_fixed_during_measurement_and_restored(tmp_path):
    before = torch.get_num_threads()
    df = frame(run("bench.cost.calibration:conv_layer", tmp_path, level="layer", metrics=["latency_ms"],
                   threads=1, resolution=8))
    assert (df["threads"] == 1).all()
    assert torch.get_num_threads() == before


def test_oom_points_are_recorded_and_the_sweep_continues(tmp_path):
    # the model raises torch.OutOfMemoryError for inputs wider than 64 px (its default max_side); 96 sits between two good points
    rows = run("bench.cost.calibration:oom_model", tmp_path, level="layer", metrics=NO_MEMORY,
               sweep_metrics=["flops", "latency_ms"], resolution=8, resolutions=[16, 96, 20], layer_channels=2)
    df = frame(rows)
    bad = df[df["resolution"] == 96]
    assert set(bad[bad["metric"].isin(["flops", "latency_ms"])]["status"]) == {"oom"}
    assert set(bad[bad["metric"].isin(["flops", "latency_ms"])]["mode"]) == {"eval", "train"}
    assert bad[bad["status"] == "oom"]["value"].isna().all()
    assert (bad[bad["metric"] == "params"]["status"] == "ok").all()  # the build itself was fine
    for res in (8, 16, 20):  # before and after the OOM point
        good = df[(df["resolution"] == res) & df["metric"].isin(["flops", "latency_ms"])]
        assert len(good) and (good["status"] == "ok").all()


def test_memory_rows_see_a_known_allocation_and_the_guard_skips_the_point(tmp_path):
    # the CPU probe (a fresh process per point) through the whole protocol: alloc_model's forward materialises
    # exactly 200 MiB, in eval and in train
    common = dict(level="network", in_channels=2, batch=2, resolution=8, metrics=["peak_memory_mb", "flops"],
                  modes=["eval", "train"])
    df = frame(run("bench.cost.calibration:alloc_model", tmp_path, **common))
    assert (df["status"] == "ok").all(), df["message"].tolist()
    mem = df[df["metric"] == "peak_memory_mb"].set_index(["mode", "memory"])["value"]
    assert set(mem.index) == {("eval", "step"), ("eval", "peak"), ("train", "step"), ("train", "peak")}
    assert mem[("eval", "step")] == pytest.approx(200.0, rel=0.10)
    assert mem[("train", "step")] == pytest.approx(200.0, rel=0.10)
    assert (df[df["metric"] == "peak_memory_mb"]["unit"] == "MiB").all()
    # guard: an absolute-RSS budget between the baseline and the peak -> oom rows; FLOPs/latency of the point
    # are skipped (never run in this process), also with status oom
    budget = mem[("eval", "peak")] - 100.0
    guarded = frame(run("bench.cost.calibration:alloc_model", tmp_path, **common, max_memory_mb=budget))
    mem_rows = guarded[guarded["metric"] == "peak_memory_mb"]
    assert set(mem_rows["status"]) == {"oom"} and mem_rows["message"].str.contains("max_memory_mb").all()
    skipped = guarded[guarded["metric"] == "flops"]
    assert set(skipped["status"]) == {"oom"} and skipped["message"].str.contains("memory probe").all()
    assert (guarded[guarded["metric"] == "params"]["status"] == "ok").all()


def test_model_rejecting_a_swept_keyword_gets_an_error_row_not_a_crash(tmp_path):
    # alloc_model takes no kernel_size: the kernel-size points degrade, the base point is measured
    df = frame(run("bench.cost.calibration:alloc_model", tmp_path, level="network", metrics=["params"],
                   sweep_metrics=["params"], kernel_sizes=[3, 5], network_sweeps=["kernel_sizes"]))
    assert (df[df["sweep"] == "base"]["status"] == "ok").all()
    ks = df[df["sweep"] == "kernel_size"]
    assert len(ks) == 2 and set(ks["status"]) == {"error"} and set(ks["metric"]) == {"build_s"}
    assert ks["message"].str.contains("kernel_size").all()


def test_build_failure_fails_the_job_at_the_base_point_but_not_at_a_sweep_point(tmp_path):
    df = frame(run("test_efficiency:broken_layer", tmp_path, level="layer", metrics=["params"],
                   sweep_metrics=["params"], kernel_size=3, kernel_sizes=[5]))
    assert set(df[df["sweep"] == "kernel_size"]["status"]) == {"error"}
    job = make_job("efficiency", "test_efficiency:broken_layer", None, 0,
                   **{**FAST, "level": "layer", "metrics": ["params"], "kernel_size": 5})
    status, rows, message = execute_job(job, RunContext(out_dir=tmp_path))
    assert status == "error" and "cannot build" in message and rows == []


def test_runner_keeps_row_statuses(tmp_path):
    job = make_job("efficiency", "bench.cost.calibration:oom_model", None, 0,
                   **{**FAST, "level": "layer", "metrics": ["flops"], "sweep_metrics": ["flops"], "resolution": 8,
                      "resolutions": [96], "layer_channels": 2})
    status, rows, _ = execute_job(job, RunContext(out_dir=tmp_path))
    assert status == "ok"
    assert {r["status"] for r in rows} == {"ok", "oom"}
    assert all(r["protocol"] == "efficiency" and r["device"] == "cpu" for r in rows)


# -- ratios --------------------------------------------------------------------------------------------------
def _row(model, metric, value, mode=None, stat=None, resolution=32, status="ok", protocol="efficiency"):
    return {"model": model, "protocol": protocol, "metric": metric, "value": value, "unit": "x", "mode": mode,
            "stat": stat, "batch": 8, "resolution": resolution, "kernel_size": None, "channels": 16, "threads": 1,
            "device": "cpu", "dtype": "float32", "status": status}


def test_ratio_table_against_the_references_of_the_same_run():
    rows = [
        _row("layer_conv2d", "flops", 100.0, "eval"), _row("layer_gmr", "flops", 50.0, "eval"),
        _row("layer_conv2d", "flops", 100.0, "eval", resolution=64), _row("layer_gmr", "flops", 400.0, "eval", resolution=64),
        _row("layer_conv2d", "latency_ms", 2.0, "train", "median"), _row("layer_gmr", "latency_ms", 3.0, "train", "median"),
        _row("layer_conv2d", "latency_ms", 0.1, "train", "iqr"), _row("layer_gmr", "latency_ms", 0.5, "train", "iqr"),
        _row("cnn", "params", 1000, None), _row("gmr", "params", 400, None),
        _row("layer_gmr", "peak_memory_mb", None, "train", status="oom"),
        _row("layer_conv2d", "peak_memory_mb", 10.0, "train"),
        _row("gmr", "flops", 7.0, "eval"),  # no cnn flops in this run: left out
        _row("gmr", "equivariance_error", 0.1, protocol="equivariance"),
    ]
    out = ratio_table(pd.DataFrame(rows))
    assert (out[out["model"] == out["reference"]]["ratio"] == 1.0).all()  # the references themselves
    lone = out[(out["model"] == "gmr") & (out["metric"] == "flops")]
    assert len(lone) == 1 and lone["ratio"].isna().all()  # no cnn flops in this run: no ratio
    assert not ((out["metric"] == "peak_memory_mb") & (out["model"] == "layer_gmr")).any()  # oom: no value
    out = out[(out["model"] != out["reference"]) & out["ratio"].notna()]
    got = {(r.model, r.metric, r.mode, r.resolution): (r.reference, r.ratio) for r in out.itertuples()}
    assert got == {
        ("layer_gmr", "flops", "eval", 32): ("layer_conv2d", 0.5),
        ("layer_gmr", "flops", "eval", 64): ("layer_conv2d", 4.0),
        ("layer_gmr", "latency_ms", "train", 32): ("layer_conv2d", 1.5),
        ("gmr", "params", None, 32): ("cnn", 0.4),
    }
    assert ratio_table(pd.DataFrame()).empty


def test_ratio_table_on_real_protocol_rows(tmp_path):
    a = run("bench.cost.calibration:conv_layer", tmp_path, level="layer", metrics=["flops", "params"],
            layer_channels=4, kernel_size=3)
    b = run("bench.cost.calibration:conv_layer", tmp_path, level="layer", metrics=["flops", "params"],
            layer_channels=4, kernel_size=9)
    # kernel_size differs, so point by point nothing matches; compare on equal points by relabelling
    df = pd.DataFrame([{**r, "model": "layer_conv2d", "protocol": "efficiency"} for r in a]
                      + [{**r, "model": "layer_gmr", "kernel_size": 3, "protocol": "efficiency"} for r in b])
    out = ratio_table(df)
    ratios = out[out["model"] == "layer_gmr"].set_index(["metric", "mode"])["ratio"]
    assert ratios[("flops", "eval")] == pytest.approx(9.0)
    assert ratios[("flops", "train")] == pytest.approx(9.0)


# -- the real zoo, when it is there -----------------------------------------------------------------------------
HAS_LAYERS = importlib.util.find_spec("baselines.layers") is not None


@pytest.mark.skipif(not HAS_LAYERS, reason="baselines.layers not written yet")
def test_layer_conv2d_flops_from_the_zoo(tmp_path):
    df = frame(run("layer_conv2d", tmp_path, metrics=["flops", "params"], kernel_size=5, layer_channels=8,
                   resolution=16, batch=1))
    assert (df["status"] == "ok").all(), df["message"].tolist()
    fl = df[(df["metric"] == "flops") & (df["mode"] == "eval")]["value"].item()
    assert fl == conv2d_flops(16, 16, 8, 8, 5)
