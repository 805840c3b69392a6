"""CLI behaviour a user sees: listing, bad input (exit 2, valid choices, nothing written), dry runs."""

import json

import pytest


def test_list_commands(run_cli):
    models = run_cli("list", "models")
    assert models.returncode == 0 and "layer_gmr" in models.stdout and "c8" in models.stdout
    profiles = run_cli("list", "profiles")
    assert profiles.returncode == 0 and "smoke" in profiles.stdout and "quick" in profiles.stdout
    assert "equivariance" in run_cli("list", "protocols").stdout


@pytest.mark.parametrize("args,needle", [
    (["--models", "layer_gmrr"], "Did you mean 'layer_gmr'"),
    (["--protocols", "equivarance"], "Did you mean 'equivariance'"),
    (["--profile", "quik"], "Did you mean 'quick'"),
    (["--angles", "0:360:0"], "start:stop:step"),
    (["--rotation", "lanczos"], "bicubic"),
    (["--seeds", "a,b"], "integers"),
    (["--models", "nosuchmodule:build"], "cannot import"),
])
def test_bad_input_exits_2_and_writes_nothing(run_cli, tmp_path, args, needle):
    out = tmp_path / "run"
    res = run_cli("run", "--profile", "smoke", "--out", out, *args) if "--profile" not in args else \
        run_cli("run", "--out", out, *args)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr
    assert not out.exists()


def test_malformed_profile_exits_2(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('models = ["cnn"\n')
    res = run_cli("run", "--profile", bad, "--out", tmp_path / "o")
    assert res.returncode == 2 and "malformed profile" in res.stderr
    bad.write_text('modles = ["cnn"]\nprotocols = ["equivariance"]\n')
    res = run_cli("run", "--profile", bad, "--out", tmp_path / "o")
    assert res.returncode == 2 and "Did you mean 'models'" in res.stderr
    assert not (tmp_path / "o").exists()


def test_existing_results_need_resume(run_cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("")
    res = run_cli("run", "--profile", "smoke", "--out", out)
    assert res.returncode == 2 and "--resume" in res.stderr


def test_dry_run_lists_jobs_and_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--profile", "smoke", "--out", out, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "equivariance:layer_gmr" in res.stdout and "nothing written" in res.stdout
    assert not out.exists()


def test_plugin_model_runs_through_the_cli(run_cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--profile", "smoke", "--models", "plugin_models:build", "--out", out,
                  "--angles", "0,45,90", "--no-report")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows[0]["status"] == "ok" and rows[0]["job"]["model"] == "plugin_models:build"
    assert (out / "environment.json").exists() and (out / "results.csv").exists()
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and env["threads"] == 2


def test_missing_dataset_exits_2_naming_the_files(run_cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli("run", "--profile", "quick", "--models", "cnn", "--protocols", "accuracy", "--datasets",
                  "mnist_rot", "--data-dir", tmp_path / "data", "--out", out)
    assert res.returncode == 2, res.stderr
    assert "mnist_all_rotation_normalized_float_test.amat" in res.stderr or "amat" in res.stderr
    assert not out.exists()
