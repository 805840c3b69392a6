"""The equivariance protocol on real zoo models: each model's claim is exact where it claims it, measured
through the same `run(job, ctx)` path the CLI uses."""

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
    for row in cnn:
        if row["stage"].endswith(":Conv2d"):
            assert row["value"] > 0.3, row
        else:
            assert row["value"] < 1e-6, row
    gmr = attribution_rows(create_model("gmr", 1, 10).eval(), x, 90.0, "bicubic")
    assert gmr and max(r["value"] for r in gmr) < 1e-5
    assert any(r["stage"].endswith(":GMRConv2d") for r in gmr)
    assert [r["stage_index"] for r in gmr] == list(range(len(gmr)))  # execution order


def test_trained_weights_without_their_checkpoint_fail_loudly(tmp_path):
    """A dependent job whose prerequisite left no checkpoint is an error, never a silent init-only result."""
    job = make_job("equivariance", "cnn", "rotdigits", 0, depends_on=("feedfacefeedface",), angles=[0.0],
                   num_images=1, lie_derivative=False, floor=False, per_layer=False, reflections=False)
    with pytest.raises(FileNotFoundError, match="feedfacefeedface"):
        run_job(job, RunContext(out_dir=tmp_path))
