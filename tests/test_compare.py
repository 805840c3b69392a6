"""`equibench compare`: known answers on real tiny runs (itself, an edited copy, other seeds, another profile)
and on crafted results that pin the seed-spread rule down."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.compare import (
    CHANGED,
    IDENTICAL,
    SPREAD,
    SPREAD_FDR,
    TOLERANCE,
    compare_runs,
    load_run,
    parse_tolerance,
)
from bench.errors import UsageError
from bench.results import ResultsStore
from bench.schema import PROFILE_FILE
from bench.tables import build_tables, write_tables

# Every protocol, tiny; no timing metric, so two runs of one seed must agree to round-off in every cell.
TINY = """
name = "tiny"
models = ["cnn"]
datasets = ["rotdigits"]
protocols = ["accuracy", "equivariance", "efficiency"]
seeds = {seeds}
device = "cpu"
threads = 1

[accuracy]
epochs = 1
batch_size = 32
train_limit = 48
test_limit = 32
angles = "0:360:90"
model_kwargs = {{ width = 0.25 }}

[equivariance]
models = ["layer_conv2d", "layer_gmr", "cnn"]
angles = "{angles}"
num_images = 2
per_layer = false

[efficiency]
models = ["layer_conv2d", "layer_gmr"]
kernel_sizes = [3]
channels = []
resolutions = []
batch_sizes = []
metrics = ["params", "flops"]
sweep_metrics = ["flops"]
"""


def make_run(base: Path, name: str, seeds: list[int], angles: str = "0:90:45") -> Path:
    """A real sweep (in-process `equibench run`) of the tiny profile."""
    from bench.cli import main

    profile = base / f"{name}.toml"
    profile.write_text(TINY.format(seeds=json.dumps(seeds), angles=angles))
    out = base / name
    threads = torch.get_num_threads()
    try:
        assert main(["run", "--profile", str(profile), "--out", str(out), "--no-report"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    return {"s0": make_run(base, "s0", [0]), "s0_again": make_run(base, "s0_again", [0]),
            "s1": make_run(base, "s1", [1]), "s01": make_run(base, "s01", [0, 1]),
            "s23": make_run(base, "s23", [2, 3]), "base": base}


def compare_cli(*args: object) -> tuple[int, str, str]:
    import contextlib
    import io

    from bench.compare_cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def verdicts(a: Path, b: Path, *tolerances: str) -> pd.DataFrame:
    cmp = compare_runs(load_run(a), load_run(b), [parse_tolerance(t) for t in tolerances])
    return pd.DataFrame([r.as_json() for r in cmp.rows])


# -- real runs ----------------------------------------------------------------------------------------------
def test_run_against_itself_is_identical_everywhere(runs):
    code, out, _ = compare_cli(runs["s0"], runs["s0"])
    assert code == 0, out
    rows = verdicts(runs["s0"], runs["s0"])
    assert len(rows) > 50 and set(rows["verdict"]) == {IDENTICAL}
    # headline metrics first, every protocol's tables after
    assert rows["table"].iloc[0] == "headline"
    assert {"accuracy_summary", "equivariance_summary", "efficiency_base"} <= set(rows["table"])
    assert "headline" in out and "-> exit 0" in out


def is_timing(rows: pd.DataFrame) -> pd.Series:
    return rows["rule"].str.contains("timing") | (rows["metric"] == "build_s")


def test_second_run_of_the_same_seed_is_identical(runs):
    """Same code, profile and seed in another run: every number (accuracy, errors, FLOPs) to round-off; only
    the timings (build_s is always measured) differ, judged by the default relative tolerance."""
    rows = verdicts(runs["s0"], runs["s0_again"])
    timing = is_timing(rows)
    assert timing.any() and (rows.loc[timing, "verdict"] != IDENTICAL).any()
    assert set(rows.loc[~timing, "verdict"]) == {IDENTICAL}, rows[~timing & (rows["verdict"] != IDENTICAL)]


def _edited_copy(src: Path, dst: Path, table: str, column: str, factor: float) -> float:
    shutil.copytree(src, dst)
    path = dst / "tables" / f"{table}.csv"
    df = pd.read_csv(path)
    old = float(df.loc[0, column])
    df.loc[0, column] = old * factor
    df.to_csv(path, index=False)
    return old


def test_one_edited_value_is_the_only_change(runs, tmp_path):
    edited = tmp_path / "edited"
    old = _edited_copy(runs["s0"], edited, "equivariance_summary", "mean_non_grid", 1.001)
    code, out, _ = compare_cli(runs["s0"], edited, "--json", tmp_path / "c.json")
    assert code == 1
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["schema"] == "equibench.compare/1" and result["exit_code"] == 1
    changed = [r for r in result["rows"] if r["verdict"] != IDENTICAL]
    assert len(changed) == 1
    (row,) = changed
    assert (row["table"], row["column"], row["verdict"]) == ("equivariance_summary", "mean_non_grid", CHANGED)
    assert row["a"] == old and row["diff"] == pytest.approx(old * 0.001)
    assert result["counts"][CHANGED] == 1 and result["counts"][IDENTICAL] == len(result["rows"]) - 1
    assert "changed" in out and "mean_non_grid" in out


def test_an_edit_at_round_off_is_identical_and_a_tolerance_accepts_a_change(runs, tmp_path):
    tiny = tmp_path / "tiny_edit"
    _edited_copy(runs["s0"], tiny, "headline", "acc_upright_pct", 1 + 2e-7)  # below 4 float32 ulps (4.8e-7)
    assert compare_cli(runs["s0"], tiny)[0] == 0
    big = tmp_path / "big_edit"
    _edited_copy(runs["s0"], big, "headline", "acc_upright_pct", 1.02)
    assert compare_cli(runs["s0"], big)[0] == 1
    rows = verdicts(runs["s0"], big, "acc_upright_pct=3%")
    cell = (rows["column"] == "acc_upright_pct") & (rows["model"] == "cnn")
    assert rows.loc[cell, "verdict"].tolist() == [TOLERANCE]
    assert compare_cli(runs["s0"], big, "--tolerance", "acc_upright_pct=3%")[0] == 0
    assert compare_cli(runs["s0"], big, "--tolerance", "acc_upright_pct=1%")[0] == 1
    # absolute tolerance, in the column's unit (percentage points)
    assert compare_cli(runs["s0"], big, "--tolerance", "acc_*=5")[0] == 0


def test_timing_columns_get_the_default_relative_tolerance(runs, tmp_path):
    edited = tmp_path / "slow"
    shutil.copytree(runs["s0"], edited)
    path = edited / "tables" / "headline.csv"
    df = pd.read_csv(path)
    df["latency_ms"] = 10.0  # a timing column: +30 % is within the default 50 %, x3 is not
    df.to_csv(path, index=False)
    base = tmp_path / "base"
    shutil.copytree(runs["s0"], base)
    df["latency_ms"] = 10.0 / 1.3
    df.to_csv(base / "tables" / "headline.csv", index=False)
    rows = verdicts(base, edited)
    assert set(rows.loc[rows["column"] == "latency_ms", "verdict"]) == {TOLERANCE}
    df["latency_ms"] = 30.0
    df.to_csv(path, index=False)
    rows = verdicts(base, edited)
    assert set(rows.loc[rows["column"] == "latency_ms", "verdict"]) == {CHANGED}
    assert set(verdicts(base, edited, "latency_ms=300%").query("column == 'latency_ms'")["verdict"]) == {TOLERANCE}


def test_another_single_seed_changes_the_seed_dependent_numbers_only(runs):
    """Seeds differ, one each: no spread to test against, so every seed-dependent number is 'changed' (and a
    note says why); what the seed cannot change (params, FLOPs, the efficiency tables) stays identical."""
    cmp = compare_runs(load_run(runs["s0"]), load_run(runs["s1"]))
    rows = pd.DataFrame([r.as_json() for r in cmp.rows])
    assert cmp.exit_code == 1 and any("cannot be estimated" in n for n in cmp.notes)
    timing = is_timing(rows)
    assert set(rows.loc[~timing, "verdict"]) <= {IDENTICAL, CHANGED}
    eff = rows[rows["table"].str.startswith("efficiency") & ~timing]
    assert len(eff) and set(eff["verdict"]) == {IDENTICAL}
    acc = rows[(rows["table"] == "accuracy_summary") & rows["column"].str.endswith("_pct")]
    eq = rows[(rows["table"] == "equivariance_by_angle") & (rows["keys"].map(lambda k: k.get("angle_deg")) == "45")
              & rows["metric"].isin(["equivariance_error", "invariance_error"])]
    assert len(eq) and set(eq["verdict"]) == {CHANGED}  # other inputs, other init: other errors
    assert CHANGED in set(acc["verdict"])


def test_runs_of_several_other_seeds_are_judged_by_the_seed_spread(runs):
    cmp = compare_runs(load_run(runs["s01"]), load_run(runs["s23"]))
    rows = pd.DataFrame([r.as_json() for r in cmp.rows])
    assert cmp.spread_tested
    tested = rows[rows["p_adjusted"].notna()]
    assert len(tested) > 20  # accuracy and equivariance cells, with 2 seeds on each side
    # the verdict is the rule's: within spread exactly when the BH-adjusted Welch p-value reaches the FDR level
    assert ((tested["p_adjusted"] >= SPREAD_FDR) == (tested["verdict"] == SPREAD)).all()
    timing = is_timing(rows)
    assert set(rows.loc[~timing, "verdict"]) <= {IDENTICAL, SPREAD, CHANGED}
    assert cmp.exit_code == (1 if (rows["verdict"] == CHANGED).any() else 0)
    eff = rows[rows["table"].str.startswith("efficiency") & ~timing]
    assert len(eff) and set(eff["verdict"]) == {IDENTICAL}  # one job per model (seed 0 vs 2): params, FLOPs


# -- bad input ----------------------------------------------------------------------------------------------
def test_different_profiles_exit_2_naming_the_settings(runs):
    other = make_run(runs["base"], "other_angles", [0], angles="0:90:30")
    code, _, err = compare_cli(runs["s0"], other)
    assert code == 2
    assert "equivariance.angles" in err and '"0:90:45"' in err and '"0:90:30"' in err
    assert "accuracy" not in err.split("differ:")[1]  # only the setting that differs is listed


def test_bad_input_exits_2(runs, tmp_path):
    code, _, err = compare_cli(runs["s0"], tmp_path / "missing")
    assert code == 2 and "does not exist" in err and "RUN_B" in err
    (tmp_path / "empty").mkdir()
    code, _, err = compare_cli(tmp_path / "empty", runs["s0"])
    assert code == 2 and "not a run folder" in err and "RUN_A" in err
    code, _, err = compare_cli(runs["s0"], runs["s0"], "--tolerance", "latency_ms")
    assert code == 2 and "NAME=VALUE" in err
    code, _, err = compare_cli(runs["s0"], runs["s0"], "--tolerance", "nosuchmetric=5%")
    assert code == 2 and "matches no compared metric" in err and "acc_mean_pct" in err


def test_parse_tolerance():
    t = parse_tolerance("latency*=20%")
    assert (t.pattern, t.value, t.relative) == ("latency*", 0.2, True)
    assert t.allows(10.0, 11.9) and not t.allows(10.0, 12.1)
    t = parse_tolerance("acc_mean_pct=0.5")
    assert (t.value, t.relative) == (0.5, False) and t.allows(90.0, 90.5) and not t.allows(90.0, 90.6)
    for bad in ("x", "=1", "x=", "x=abc", "x=-1", "x=nan%"):
        with pytest.raises(UsageError):
            parse_tolerance(bad)


# -- the spread rule on crafted results ---------------------------------------------------------------------
def crafted_run(folder: Path, per_seed: dict[int, float]) -> Path:
    """A run folder whose only results are accuracy summaries of `cnn` (upright = mean = worst = the value)."""
    store = ResultsStore(folder)
    for seed, value in per_seed.items():
        job = {"protocol": "accuracy", "model": "cnn", "dataset": "rotdigits", "seed": seed, "device": "cpu"}
        rows = [{"model": "cnn", "protocol": "accuracy", "dataset": "rotdigits", "seed": seed, "metric": "accuracy",
                 "value": value, "unit": "fraction", "angle_deg": None, "reflect": "none", "summary": s,
                 "condition": "upright", "rotation": "bilinear", "mask": False} for s in ("upright", "mean", "worst")]
        store.append(f"acc{seed}", job, "ok", rows)
    write_tables(folder, build_tables(store))
    profile = {"name": "crafted", "models": ["cnn"], "datasets": ["rotdigits"], "protocols": ["accuracy"],
               "seeds": sorted(per_seed), "device": "cpu", "dtype": "float32", "threads": 1, "settings": {}}
    (folder / PROFILE_FILE).write_text(json.dumps(profile))
    return folder


def test_spread_rule_known_answers(tmp_path):
    a = crafted_run(tmp_path / "a", {0: 0.80, 1: 0.82, 2: 0.81})
    near = crafted_run(tmp_path / "near", {3: 0.805, 4: 0.825, 5: 0.815})      # +0.5 points, spread ~1 point
    far = crafted_run(tmp_path / "far", {3: 0.900, 4: 0.902, 5: 0.901})        # +9 points, spread ~0.1-1 point
    same_seeds = crafted_run(tmp_path / "same", {0: 0.80, 1: 0.82, 2: 0.8101})  # same seeds: no spread excuse

    def headline(b: Path) -> pd.DataFrame:
        rows = verdicts(a, b)
        return rows[(rows["table"] == "headline") & rows["column"].isin(["acc_upright_pct", "acc_mean_pct"])]

    near_rows = headline(near)
    assert set(near_rows["verdict"]) == {SPREAD}
    # Welch by hand: means 81 vs 81.5 (%), sd 1 and 1, n 3 and 3 -> t = -0.612, p = 0.574 (4 dof)
    from scipy.stats import ttest_ind_from_stats

    p = ttest_ind_from_stats(81.0, 1.0, 3, 81.5, 1.0, 3, equal_var=False).pvalue
    assert p == pytest.approx(0.5734, abs=1e-3)
    assert (near_rows["p_adjusted"] >= p - 1e-9).all()  # BH never lowers a p-value
    assert set(headline(far)["verdict"]) == {CHANGED}
    assert compare_cli(a, near)[0] == 0 and compare_cli(a, far)[0] == 1
    same = headline(same_seeds)
    assert set(same["verdict"]) == {CHANGED} and same["p_adjusted"].isna().all()


def test_equibench_compare_command(runs, run_cli, tmp_path):
    """The subcommand as users call it (bench/cli.py wiring): exit codes 0 / 1 / 2."""
    assert run_cli("compare", runs["s0"], runs["s0"]).returncode == 0
    edited = tmp_path / "edited"
    _edited_copy(runs["s0"], edited, "headline", "acc_upright_pct", 1.5)
    res = run_cli("compare", runs["s0"], edited, "--json", tmp_path / "c.json")
    assert res.returncode == 1 and "acc_upright_pct" in res.stdout
    assert json.loads((tmp_path / "c.json").read_text())["counts"]["changed"] == 1
    res = run_cli("compare", runs["s0"], tmp_path / "nothing")
    assert res.returncode == 2 and "does not exist" in res.stderr
