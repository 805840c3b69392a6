"""Invariant ceiling: orbit nearest neighbour is invariant, and it cannot tell apart classes that are rotated
(or mirrored) copies of each other, while plain nearest neighbour can."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import UsageError
from bench.invariant_ceiling import (
    invariant_ceiling,
    nearest_neighbour,
    orbit_angles,
    orbit_nearest_neighbour,
)

SIZE = 21


def blobs(centres: list[tuple[float, float]], sigmas: list[float], n: int, gen: torch.Generator) -> torch.Tensor:
    """n images (n, 1, SIZE, SIZE) of Gaussian blobs at jittered centres (x right, y up) plus pixel noise."""
    c = (SIZE - 1) / 2
    y = c - torch.arange(SIZE, dtype=torch.float64)[:, None]
    x = torch.arange(SIZE, dtype=torch.float64)[None, :] - c
    img = torch.zeros(n, SIZE, SIZE, dtype=torch.float64)
    for (cx, cy), s in zip(centres, sigmas):
        jitter = 0.7 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        dx = x[None] - (cx + jitter[:, 0, None, None])
        dy = y[None] - (cy + jitter[:, 1, None, None])
        img += torch.exp(-(dx**2 + dy**2) / (2 * s**2))
    img += 0.1 * torch.randn(img.shape, generator=gen, dtype=torch.float64)
    return img.float().unsqueeze(1)


def classes(spec: list[tuple[list[tuple[float, float]], list[float]]], n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.cat([blobs(c, s, n, gen) for c, s in spec])
    return x, torch.arange(len(spec)).repeat_interleave(n)


# class 1 is class 0 turned half way; class 2 is different from both under any rotation
HALF_TURN = [([(0, 5)], [2.0]), ([(0, -5)], [2.0]), ([(0, 5), (0, -5)], [2.0, 2.0])]
# class 1 is class 0 mirrored left-right (a chiral pair: no rotation maps one onto the other)
MIRROR = [([(0, 5), (4, 0)], [2.0, 1.2]), ([(0, 5), (-4, 0)], [2.0, 1.2]), ([(0, 0)], [3.0])]


def accuracy(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred == y).double().mean())


def test_twins_under_a_half_turn_are_confused_only_by_the_invariant_rule():
    tx, ty = classes(HALF_TURN, 60, seed=0)
    vx, vy = classes(HALF_TURN, 100, seed=1)
    assert accuracy(nearest_neighbour(tx, ty, vx), vy) > 0.97
    pred = orbit_nearest_neighbour(tx, ty, vx, step_deg=30)
    assert accuracy(pred[vy == 2], vy[vy == 2]) > 0.97  # the distinct class stays right
    twins = accuracy(pred[vy < 2], vy[vy < 2])
    assert 0.35 < twins < 0.65  # a coin flip between the twins: overall about 2/3
    assert accuracy(pred, vy) == pytest.approx(2 / 3, abs=0.1)


def test_mirror_twins_need_reflection_invariance_to_be_confused():
    tx, ty = classes(MIRROR, 60, seed=2)
    vx, vy = classes(MIRROR, 100, seed=3)
    assert accuracy(orbit_nearest_neighbour(tx, ty, vx, step_deg=30), vy) > 0.97  # rotations keep chirality
    pred = orbit_nearest_neighbour(tx, ty, vx, step_deg=30, reflections=True)
    assert 0.35 < accuracy(pred[vy < 2], vy[vy < 2]) < 0.65


def test_predictions_are_exactly_invariant_under_the_grid_group():
    tx, ty = classes(MIRROR, 20, seed=4)
    vx, _ = classes(MIRROR, 20, seed=5)
    for reflections in (False, True):
        base = orbit_nearest_neighbour(tx, ty, vx, step_deg=15, reflections=reflections)
        for k in (1, 2, 3):
            turned = orbit_nearest_neighbour(tx, ty, torch.rot90(vx, k, (-2, -1)), step_deg=15,
                                             reflections=reflections)
            assert torch.equal(turned, base)
        if reflections:
            assert torch.equal(orbit_nearest_neighbour(tx, ty, torch.flip(vx, (-1,)), step_deg=15,
                                                       reflections=True), base)
    # a plain nearest neighbour is not invariant on this chiral data
    assert not torch.equal(nearest_neighbour(tx, ty, torch.rot90(vx, 1, (-2, -1))), nearest_neighbour(tx, ty, vx))


def test_orbit_angles():
    assert orbit_angles(90) == [0, 90, 180, 270]
    assert len(orbit_angles(10)) == 36
    for bad in (0, 7, 400):
        with pytest.raises(UsageError):
            orbit_angles(bad)


def test_rotdigits_invariance_costs_little():
    """On rotdigits an invariant classifier is about as good as a plain one (6s and 9s differ beyond a half
    turn); adding reflections costs more (2 and 5 are mirror images of each other)."""
    so2 = invariant_ceiling("rotdigits", test_limit=300)
    o2 = invariant_ceiling("rotdigits", test_limit=300, reflections=True)
    assert so2.n_test == 300 and so2.group == "SO2" and o2.group == "O2"
    assert so2.accuracy > 0.97 and so2.accuracy >= so2.plain_accuracy - 0.01
    assert o2.accuracy < so2.accuracy
    assert any({a, b} == {2, 5} for a, b, _ in o2.confusions)
    assert sum(c for *_, c in so2.confusions) == round((1 - so2.accuracy) * 300)
    assert math.isclose(so2.plain_accuracy, o2.plain_accuracy)


# -- the accuracy protocol's `ceiling` setting ---------------------------------------------------------------------
def test_accuracy_protocol_reports_the_ceiling_of_its_own_test_images(tmp_path):
    from protocol_helpers import make_job, run_job

    from bench.jobs import RunContext
    from bench.protocols import get_protocol
    from bench.results import rows_to_frame

    settings = {"epochs": 1, "batch_size": 64, "train_limit": 64, "test_limit": 50, "angles": 0, "flips": False,
                "save_checkpoint": False, "model_kwargs": {"delay": 0}}
    ctx = RunContext(out_dir=tmp_path)
    plain = run_job(make_job("accuracy", "plugin_models:slow_net", "rotdigits", **settings), ctx)
    assert {r["metric"] for r in plain} == {"accuracy", "train_loss_final", "train_time_s", "eval_time_s"}
    rows = run_job(make_job("accuracy", "plugin_models:slow_net", "rotdigits", ceiling=True, **settings), ctx)
    so2 = invariant_ceiling("rotdigits", test_limit=50)
    o2 = invariant_ceiling("rotdigits", test_limit=50, reflections=True)
    assert so2.n_test == 50
    got = [(r["metric"], r.get("group"), r["value"]) for r in rows
           if r["metric"] in ("invariant_ceiling", "nearest_neighbour")]
    assert got == [("invariant_ceiling", "SO2", so2.accuracy), ("invariant_ceiling", "O2", o2.accuracy),
                   ("nearest_neighbour", None, so2.plain_accuracy)]

    acc = get_protocol("accuracy")
    frame = rows_to_frame([{**r, "model": m, "protocol": "accuracy", "dataset": "rotdigits", "seed": 0,
                            "status": "ok"} for m in ("a", "b") for r in rows])
    tables = acc.summarize(frame)
    ceiling = tables["accuracy_ceiling"]
    assert list(ceiling["group"]) == ["SO2", "O2"] and list(ceiling["dataset"]) == ["rotdigits"] * 2
    assert list(ceiling["ceiling_pct"]) == pytest.approx([100 * so2.accuracy, 100 * o2.accuracy])
    assert list(ceiling["nearest_neighbour_pct"]) == pytest.approx([100 * so2.plain_accuracy] * 2)
    assert {"accuracy_by_angle", "accuracy_summary"} <= set(tables)  # the ceiling rows leave the others alone
    assert "accuracy_ceiling" not in acc.summarize(frame[frame["metric"] == "accuracy"])
