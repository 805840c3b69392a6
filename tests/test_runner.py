"""The harness never loses a finished result: atomic appends, resume, a really killed sweep, failing jobs."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
from protocol_helpers import make_job

from bench.jobs import RunContext
from bench.results import ResultsStore
from bench.runner import execute_job, run_local

FAST_EQ = '[equivariance]\nangles = "0:360:90"\nnum_images = 2\nlie_derivative = false\nfloor = false\n'


def write_profile(tmp_path, models, seeds, extra=""):
    path = tmp_path / "p.toml"
    path.write_text(f'name = "t"\nmodels = {json.dumps(models)}\nprotocols = ["equivariance"]\n'
                    f"seeds = {json.dumps(seeds)}\ndevice = \"cpu\"\nthreads = 1\n{extra}\n{FAST_EQ}")
    return path


def test_sigkill_mid_sweep_then_resume_loses_and_duplicates_nothing(tmp_path, cli_env):
    profile = write_profile(tmp_path, ["plugin_models:slow"], list(range(12)))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bench", "run", "--profile", str(profile), "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in results.read_text().splitlines()]
    assert 3 <= len(before) < 12, "the sweep must be killed part-way"

    resumed = subprocess.run(cmd + ["--resume"], env=cli_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    after = [json.loads(line) for line in results.read_text().splitlines()]
    ids = [r["job_id"] for r in after]
    assert len(ids) == len(set(ids)) == 12
    assert after[: len(before)] == before  # finished rows untouched
    assert sorted(r["job"]["seed"] for r in after) == list(range(12))
    assert (out / "results.csv").exists()


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    store = ResultsStore(tmp_path)
    store.append("a", {}, "ok", [{"metric": "m", "value": 1.0, "unit": "u"}])
    with open(store.path, "a") as fh:
        fh.write('{"job_id": "b", "rows": [')
    assert store.finished_job_ids() == {"a"}
    assert store.repair() > 0
    store.append("c", {}, "ok", [])
    assert store.finished_job_ids() == {"a", "c"}


def test_failing_job_is_recorded_and_sweep_continues(tmp_path):
    ctx = RunContext(out_dir=tmp_path)
    settings = {"angles": [0.0, 90.0], "num_images": 2, "lie_derivative": False, "floor": False, "weights": ["init"]}
    jobs = [make_job("equivariance", m, **settings) for m in ("plugin_models:broken", "plugin_models:build")]
    store = ResultsStore(tmp_path)
    run_local(jobs, store, ctx, timeout_s=None)
    records = list(store.records())
    assert [r["status"] for r in records] == ["error", "ok"]
    assert "always fails" in records[0]["message"]
    assert records[1]["rows"] and all(r["model"] == "plugin_models:build" for r in records[1]["rows"])


def test_timeout_becomes_a_status(tmp_path):
    ctx = RunContext(out_dir=tmp_path)
    job = make_job("equivariance", "plugin_models:slow", angles=[0.0], num_images=1, weights=["init"])
    status, rows, message = execute_job(job, ctx, timeout_s=0.05)
    assert status == "timeout" and rows == [] and "timeout" in message


def test_a_misspelled_column_fails_the_job(tmp_path, monkeypatch):
    """Rows are typed: a protocol writing a column its row type does not declare is an error, not a new column."""
    from bench.protocols import get_protocol

    protocol = get_protocol("equivariance")
    real = type(protocol).run
    monkeypatch.setattr(type(protocol), "run", lambda self, job, ctx: [{**r, "feture": "x"} for r in real(self, job, ctx)])
    job = make_job("equivariance", "plugin_models:build", angles=[0.0], num_images=1, weights=["init"],
                   lie_derivative=False, floor=False)
    status, rows, message = execute_job(job, RunContext(out_dir=tmp_path), None)
    assert status == "error" and "feture" in message and rows == []


DEP_PROFILE = """name = "deps"
models = {models}
datasets = ["rotdigits"]
protocols = ["accuracy", "equivariance"]
device = "cpu"
threads = 1
{extra}
[accuracy]
epochs = 1
train_limit = 32
test_limit = 16
angles = [0, 90]
flips = false
[equivariance]
angles = [0, 45]
num_images = 2
floor = false
lie_derivative = false
per_layer = false
reflections = false
"""


def dep_profile(tmp_path, models, extra=""):
    path = tmp_path / "deps.toml"
    path.write_text(DEP_PROFILE.format(models=json.dumps(models), extra=extra))
    return path


def test_dependent_of_a_failed_job_is_skipped_with_the_reason_and_the_run_exits_1(tmp_path, run_cli):
    out = tmp_path / "run"
    res = run_cli("run", "--profile", dep_profile(tmp_path, ["plugin_models:broken", "plugin_models:slow_net"]),
                  "--out", out)
    assert res.returncode == 1, res.stderr
    records = {(r["job"]["protocol"], r["job"]["model"]): r for r in ResultsStore(out).records()}
    eq = records[("equivariance", "plugin_models:broken")]
    assert eq["status"] == "skipped" and "accuracy:plugin_models:broken/rotdigits:seed0" in eq["message"]
    assert "ended error" in eq["message"]
    good = records[("equivariance", "plugin_models:slow_net")]
    assert good["status"] == "ok" and {r["weights"] for r in good["rows"]} == {"init", "trained"}
    acc = records[("accuracy", "plugin_models:slow_net")]
    assert good["job"]["depends_on"] == [acc["job_id"]]
    assert good["started"] >= acc["finished"]
    assert {r["checkpoint"] for r in good["rows"] if r["weights"] == "trained"} == \
        {r["checkpoint"] for r in acc["rows"]}  # the equivariance rows name the checkpoint they measured
    csv = pd.read_csv(out / "results.csv")
    skipped = csv[csv["status"] == "skipped"]
    assert len(skipped) == 1 and skipped["model"].item() == "plugin_models:broken"
    assert "skipped" in (out / "report.html").read_text()


def test_checkpoints_are_keyed_by_the_settings_that_produced_them(tmp_path, run_cli):
    """Changing an accuracy setting makes new accuracy *and* equivariance jobs on resume: an old checkpoint is
    never measured under new settings."""
    out = tmp_path / "run"
    profile = dep_profile(tmp_path, ["plugin_models:slow_net"])
    assert run_cli("run", "--profile", profile, "--out", out, "--no-report").returncode == 0
    text = profile.read_text().replace("epochs = 1", "epochs = 2")
    profile.write_text(text)
    res = run_cli("run", "--profile", profile, "--out", out, "--resume", "--no-report")
    assert res.returncode == 0, res.stderr
    assert "2 of 2 jobs to run" in res.stderr
    records = list(ResultsStore(out).records())
    assert len(records) == 4
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 2
    eq_new = records[-1]
    assert {r["checkpoint"] for r in eq_new["rows"] if r["weights"] == "trained"} == {
        f"plugin_models_slow_net__rotdigits__upright__seed0__{records[-2]['job_id']}.pt"}
