"""The equivariance protocol on real zoo models: each model's claim is exact where it claims it, measured
through the same `run(job, ctx)` path the CLI uses."""

import pandas as pd
import pytest
import torch
from protocol_helpers import make_job, run_job

from bench.jobs import RunContext

GRID = [0.0, 90.0, 180.0, 270.0]


def measure(model, tmp_path, angles=(0, 45, 90, 180, 270), rotation="bicubic", **extra):
    settings = {"angles": list(angles), "rotation": rotation, "num_images": 4, "lie_derivative": False,
                "floor": False, "per_layer": False, "weights": ["init"], **extra}
    return run_job(make_job("equivariance", model, None, 0, **settings), RunContext(out_dir=tmp_path))


def err(rows, angle, reflect="none", feature=None, metric=None):
    vals = [r["value"] for r in rows if r["angle_deg"] == angle and r["reflect"] == reflect
            and r["metric"] in ((metric,) if metric else ("equivariance_error", "invariance_error"))
            and (feature is None or r["feature"] == feature)]
    assert vals, (angle, reflect, feature)
    return max(vals)


def test_gmr_layer_exact_on_grid_and_flips(tmp_path):
    rows = measure("layer_gmr", tmp_path)
    for a in GRID:
        assert err(rows, a) <= 1e-6
        assert err(rows, a, "h") <= 1e-6
    assert 1e-4 < err(rows, 45) < 0.2


def test_plain_conv_layer_fails(tmp_path):
    rows = measure("layer_conv2d", tmp_path)
    assert err(rows, 45) > 0.3 and err(rows, 90) > 0.3 and err(rows, 0, "h") > 0.3


@pytest.mark.parametrize("model", ["c4", "c8"])
def test_cyclic_models_exact_on_grid_but_not_under_flips(model, tmp_path):
    rows = measure(model, tmp_path)
    for a in GRID:
        assert err(rows, a) <= 1e-6, (model, a)
    assert err(rows, 0, "h", feature="logits") > 1e-3  # C_N claims no reflections
    claimed = {(r["angle_deg"], r["reflect"]): r["claimed"] for r in rows if r["metric"] == "invariance_error"}
    assert claimed[(90, "none")] and not claimed[(0, "h")]


def test_dihedral_model_exact_on_grid_and_flips(tmp_path):
    rows = measure("d4", tmp_path)
    for a in GRID:
        assert err(rows, a) <= 1e-6 and err(rows, a, "h") <= 1e-6


def test_regular_fields_use_rho_at_group_elements_and_group_pooling_elsewhere(tmp_path):
    rows = measure("layer_c8", tmp_path, angles=[45.0, 30.0])
    feats = {(r["angle_deg"], r["feature"]) for r in rows if r["metric"] == "equivariance_error"}
    assert (45.0, "out") in feats and (45.0, "out:gpool") in feats
    assert (30.0, "out:gpool") in feats and (30.0, "out") not in feats


def test_so2_layer_small_everywhere_and_shrinking_with_better_interpolation(tmp_path):
    angles = [10.0, 22.5, 45.0, 77.0]
    bilinear = [err(measure("layer_so2", tmp_path, angles, "bilinear"), a) for a in angles]
    fourier = [err(measure("layer_so2", tmp_path, angles, "fourier"), a) for a in angles]
    smooth = [err(measure("layer_so2", tmp_path, angles, "fourier", cutoff=0.05), a) for a in angles]
    assert max(bilinear) < 0.2
    assert all(f < b for f, b in zip(fourier, bilinear))
    assert max(smooth) < max(fourier)


@pytest.mark.parametrize("name", ["cnn", "c8"])
def test_trained_checkpoint_is_measured_too(tmp_path, name):
    ctx = RunContext(out_dir=tmp_path)
    torch.manual_seed(0)
    from bench.models import create_model

    model = create_model(name, in_channels=1, num_classes=10)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # differs from the init the protocol builds
    producer = "0123456789abcdef"  # the id of the accuracy job this one depends on
    path = ctx.checkpoint_path(name, "rotdigits", 0, "upright", producer)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict()}, path)
    settings = {"angles": [0.0, 45.0], "num_images": 2, "lie_derivative": False, "floor": False,
                "per_layer": False, "reflections": False}
    rows = run_job(make_job("equivariance", name, "rotdigits", 0, depends_on=(producer,), **settings), ctx)
    assert {r["weights"] for r in rows} == {"init", "trained"}
    assert {r["checkpoint"] for r in rows if r["weights"] == "trained"} == {path.name}
    at45 = {r["weights"]: r["value"] for r in rows if r["metric"] == "invariance_error" and r["angle_deg"] == 45
            and r["feature"] == "logits"}
    assert at45["init"] != at45["trained"]


@pytest.mark.parametrize("name", ["so2", "d4"])
def test_accuracy_checkpoint_round_trip_into_equivariance(tmp_path, name):
    """A checkpoint written by the accuracy protocol's saver loads for the equivariance protocol (escnn's
    derived basis buffers are rebuilt, not copied)."""
    from bench.models import create_model
    from bench.training import load_trained, save_checkpoint

    torch.manual_seed(1)
    model = create_model(name, in_channels=1, num_classes=10, width=0.25)
    path = save_checkpoint(tmp_path / "m.pt", model, model=name, model_kwargs={"width": 0.25}, in_channels=1,
                           num_classes=10)
    loaded = load_trained(name, path, 1, 10)
    x = torch.randn(2, 1, 29, 29)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)


def stage_values(rows, metric):
    return {r["stage"]: r["value"] for r in rows if r["metric"] == metric and r.get("stage")}


def test_per_stage_attribution_blames_exactly_the_plain_convolutions():
    """At 90 deg (an exact permutation) pointwise stages and symmetric pooling add nothing; only cnn's
    Conv2d stages add error, and every GMR stage stays exact."""
    from bench.models import create_model
    from bench.protocols.equivariance import attribution_rows
    from bench.rotation import bandlimited_images

    x = bandlimited_images(4, 1, 29, seed=0)
    torch.manual_seed(0)
    cnn = attribution_rows(create_model("cnn", 1, 10).eval(), x, 90.0, "bicubic")
    assert cnn, "cnn exposes a sequential body"
    for stage, value in stage_values(cnn, "equivariance_error").items():
        assert (value > 0.3) if stage.endswith(":Conv2d") else (value < 1e-6), (stage, value)
    gmr = attribution_rows(create_model("gmr", 1, 10).eval(), x, 90.0, "bicubic")
    errors = stage_values(gmr, "equivariance_error")
    assert errors and max(errors.values()) < 1e-5
    assert any(stage.endswith(":GMRConv2d") for stage in errors)
    indices = [r["stage_index"] for r in gmr if r["metric"] == "equivariance_error"]
    assert indices == list(range(len(indices)))  # execution order


def test_pointwise_stages_come_out_at_their_floor_and_convolutions_stand_out():
    """At 45 deg every ReLU of cnn and gmr 'added' ~1e-2..1e-1 (interpolating its kinks); against its own floor
    (pointwise: itself) its excess is exactly 0, while cnn's convolutions keep an excess >> their floor and
    GMR's stay an order of magnitude below cnn's."""
    from bench.models import create_model
    from bench.protocols.equivariance import attribution_rows
    from bench.rotation import bandlimited_images

    x = bandlimited_images(4, 1, 29, seed=0)
    rows = {}
    for name in ("cnn", "gmr"):
        torch.manual_seed(0)
        rows[name] = attribution_rows(create_model(name, 1, 10, width=0.25).eval(), x, 45.0, "bspline")
        error, floor = stage_values(rows[name], "equivariance_error"), stage_values(rows[name], "interpolation_floor")
        excess = stage_values(rows[name], "excess_error")
        kinds = {r["stage"]: r["floor_kind"] for r in rows[name] if r["metric"] == "interpolation_floor"}
        assert set(error) == set(floor) == set(excess) == set(kinds)
        for stage in error:
            if stage.endswith((":ReLU", ":BatchNorm2d")):
                assert kinds[stage] == "pointwise" and excess[stage] == 0.0 and floor[stage] == error[stage]
            else:
                assert kinds[stage] == "blur"
                assert excess[stage] == pytest.approx(max(error[stage] - floor[stage], 0.0), abs=1e-12)
        assert max(error[s] for s in error if s.endswith(":ReLU")) > 5e-3  # what the old attribution blamed
    cnn_conv = [v for s, v in stage_values(rows["cnn"], "excess_error").items() if s.endswith(":Conv2d")]
    gmr_conv = [v for s, v in stage_values(rows["gmr"], "excess_error").items() if s.endswith(":GMRConv2d")]
    cnn_floor = [v for s, v in stage_values(rows["cnn"], "interpolation_floor").items() if s.endswith(":Conv2d")]
    assert min(cnn_conv) > 0.3 and min(cnn_conv) > 20 * max(cnn_floor)  # floors 3e-4 (29 px) .. 1.7e-2 (7 px)
    assert max(gmr_conv) < 0.1 * min(cnn_conv)


def test_stage_table_lists_stages_in_execution_order_with_error_floor_and_excess(tmp_path):
    from bench.protocols import get_protocol

    rows = measure("cnn", tmp_path, angles=[0.0, 45.0], per_layer=True, reflections=False, num_images=2,
                   model_kwargs={"width": 0.25})
    frame = pd.DataFrame([{**r, "model": "cnn", "protocol": "equivariance", "dataset": None, "seed": 0,
                           "status": "ok"} for r in rows])
    table = get_protocol("equivariance").summarize(frame)["equivariance_stages"]
    assert table["stage_index"].tolist() == list(range(20))  # 10 after 9, not after 1
    assert table["stage"].iloc[10] == "10:Conv2d"
    got = table.set_index("stage")
    for metric, col in (("equivariance_error", "error"), ("interpolation_floor", "floor"), ("excess_error", "excess")):
        for stage, value in stage_values(rows, metric).items():
            assert got.loc[stage, col] == pytest.approx(value, rel=1e-12)
    assert set(got["floor_kind"]) == {"pointwise", "blur"}


def test_regular_fields_and_their_group_pooled_maps_get_the_scalar_floor_of_their_size(tmp_path):
    """A ':gpool' row compares pooled maps on both sides: a scalar map of the field's size in the same region,
    so its floor is that map's blur floor, computed for it (it used to copy the raw field's round trip)."""
    rows = measure("layer_c8", tmp_path, angles=[30.0, 45.0], floor=True, reflections=False)
    floors = {(r["feature"], r["angle_deg"], r["floor_kind"]): r["value"] for r in rows
              if r["metric"] == "interpolation_floor"}
    assert {(f, k) for f, _, k in floors} == {("out", "blur"), ("out:gpool", "blur"), ("input", "blur"),
                                              ("input", "roundtrip")}
    for a in (30.0, 45.0):
        assert floors[("out:gpool", a, "blur")] == floors[("out", a, "blur")] > 0


@pytest.mark.parametrize("name", ["e2cnn_so2"])
def test_e2cnn_models_measure_in_float64(tmp_path, name):
    """e2cnn expands its filters with the default dtype, so `.to(float64).eval()` raised; the protocol builds
    and runs every model under the job's default dtype."""
    pytest.importorskip("e2cnn")
    ctx = RunContext(out_dir=tmp_path, dtype=torch.float64)
    rows = run_job(make_job("equivariance", name, None, 0, angles=[0.0, 90.0], num_images=1, lie_derivative=False,
                            floor=False, per_layer=False, reflections=False, weights=["init"],
                            model_kwargs={"width": 0.25}), ctx)
    logits = {r["angle_deg"]: r["value"] for r in rows if r["metric"] == "invariance_error" and r["feature"] == "logits"}
    assert logits[0.0] < 1e-12 and logits[90.0] < 1e-10  # float64 round-off, not float32's 1e-7


def test_trained_weights_without_their_checkpoint_fail_loudly(tmp_path):
    """A dependent job whose prerequisite left no checkpoint is an error, never a silent init-only result."""
    job = make_job("equivariance", "cnn", "rotdigits", 0, depends_on=("feedfacefeedface",), angles=[0.0],
                   num_images=1, lie_derivative=False, floor=False, per_layer=False, reflections=False)
    with pytest.raises(FileNotFoundError, match="feedfacefeedface"):
        run_job(job, RunContext(out_dir=tmp_path))


def test_trained_networks_are_measured_on_the_images_they_were_trained_on(tmp_path, monkeypatch):
    """The accuracy checkpoint records its dataset keywords (e.g. CIFAR-10 kept at 32x32); the equivariance job
    measuring it uses them unless told otherwise, so a 32x32-trained network is not measured at 33x33."""
    from test_datasets import write_mnist

    import bench.protocols.equivariance as eq
    from bench.models import create_model
    from bench.training import save_checkpoint

    write_mnist(tmp_path, compress=False)
    ctx = RunContext(out_dir=tmp_path / "run", data_dir=tmp_path)
    producer = "0123456789abcdef"
    torch.manual_seed(0)
    save_checkpoint(ctx.checkpoint_path("cnn", "mnist", 0, "upright", producer),
                    create_model("cnn", 1, 10, width=0.25), model="cnn", model_kwargs={"width": 0.25},
                    in_channels=1, num_classes=10, dataset_kwargs={"pad_to_odd": False})
    seen = []
    real = eq.make_inputs

    def make_inputs(job, ctx, s, channels, size, dataset_kwargs=None):
        seen.append((size, dataset_kwargs))
        return real(job, ctx, s, channels, size, dataset_kwargs)

    monkeypatch.setattr(eq, "make_inputs", make_inputs)
    settings = {"angles": [0.0, 90.0], "num_images": 2, "lie_derivative": False, "floor": False, "per_layer": False,
                "reflections": False, "inputs": "dataset"}
    rows = run_job(make_job("equivariance", "cnn", "mnist", 0, depends_on=(producer,), **settings), ctx)
    assert seen == [(28, {"pad_to_odd": False})]  # the dataset's native size, as trained
    assert {r["weights"] for r in rows} == {"init", "trained"}
    job = make_job("equivariance", "cnn", "mnist", 0, weights=["init"], **settings)
    assert eq.geometry(job, eq.EquivarianceProtocol().settings_of(job), ctx) == (1, 10, 29)
    assert eq.geometry(job, eq.EquivarianceProtocol().settings_of(job), ctx, {"pad_to_odd": False}) == (1, 10, 28)


def test_gmr_paths_are_not_chosen_by_timing_during_a_measurement(tmp_path, monkeypatch):
    """impl="auto" may time its paths (gmr.autotune); inside the protocol it must use the deterministic cost
    model, so the measured error cannot depend on machine load. Autotuning is switched back on afterwards."""
    from gmr import autotune

    monkeypatch.setattr(autotune, "STATE", autotune.AutotuneState(enabled=True))

    def no_timing(*args, **kwargs):
        raise AssertionError("gmr.autotune timed its paths inside the equivariance protocol")

    monkeypatch.setattr(autotune, "time_paths", no_timing)
    rows = measure("gmr", tmp_path, angles=(0, 45))
    assert err(rows, 45) > 0 and autotune.autotune_enabled()
