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


def test_list_protocols_describes_each(run_cli):
    res = run_cli("list", "protocols")
    lines = res.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["accuracy", "data_efficiency", "efficiency", "equivariance"]
    assert all(len(line.split()) > 3 for line in lines)


def test_out_naming_a_file_exits_2(run_cli, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    res = run_cli("run", "--profile", "smoke", "--out", target)
    assert res.returncode == 2 and "is an existing file" in res.stderr and "Traceback" not in res.stderr
    assert target.read_text() == "not a folder"


def test_second_run_on_the_same_folder_exits_2_naming_the_holder(run_cli, cli_env, tmp_path):
    import subprocess
    import sys
    import time

    profile = tmp_path / "slow.toml"
    profile.write_text('name = "slow"\nmodels = ["plugin_models:slow"]\nprotocols = ["equivariance"]\n'
                       'seeds = [0, 1, 2, 3, 4, 5]\ndevice = "cpu"\nthreads = 1\n[equivariance]\nangles = [0]\n'
                       'num_images = 1\nfloor = false\nlie_derivative = false\nmodel_kwargs = { delay = 2.0 }\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench", "run", "--profile", str(profile), "--out", str(out), "--no-report"]
    first = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "results.jsonl").exists():
            time.sleep(0.05)
        second = run_cli("run", "--profile", profile, "--out", out, "--resume", "--no-report")
        assert second.returncode == 2, second.stderr
        assert f"in use by process {first.pid}" in second.stderr
    finally:
        assert first.wait(timeout=120) == 0
    ids = [json.loads(line)["job_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 6  # nothing was run twice


def test_all_ok_exits_0_and_a_broken_renderer_exits_1_after_writing_results(run_cli, cli_env, tmp_path):
    out = tmp_path / "ok"
    res = run_cli("run", "--profile", "smoke", "--models", "plugin_models:build", "--out", out, "--angles", "0,90")
    assert res.returncode == 0, res.stderr
    fake = tmp_path / "fake"
    (fake / "reports").mkdir(parents=True)
    (fake / "reports" / "__init__.py").write_text('raise ImportError("renderer deliberately broken")\n')
    cli_env["PYTHONPATH"] = f"{fake}:{cli_env['PYTHONPATH']}"
    out2 = tmp_path / "broken"
    res = run_cli("run", "--profile", "smoke", "--models", "plugin_models:build", "--out", out2, "--angles", "0,90")
    assert res.returncode == 1
    assert "renderer deliberately broken" in res.stderr
    assert (out2 / "results.csv").exists() and (out2 / "tables" / "headline.csv").exists()
    assert not (out2 / "report.html").exists()
