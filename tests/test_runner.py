"""The harness never loses a finished result: atomic appends, resume, a really killed sweep, failing jobs."""

import json
import os
import signal
import subprocess
import sys
import time

from bench.jobs import Job, RunContext
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
    settings = {"angles": [0.0, 90.0], "num_images": 2, "lie_derivative": False, "floor": False}
    jobs = [Job("equivariance", m, None, 0, "cpu", settings) for m in ("plugin_models:broken", "plugin_models:build")]
    store = ResultsStore(tmp_path)
    run_local(jobs, store, ctx, timeout_s=None)
    records = list(store.records())
    assert [r["status"] for r in records] == ["error", "ok"]
    assert "always fails" in records[0]["message"]
    assert records[1]["rows"] and all(r["model"] == "plugin_models:build" for r in records[1]["rows"])


def test_timeout_becomes_a_status(tmp_path):
    ctx = RunContext(out_dir=tmp_path)
    job = Job("equivariance", "plugin_models:slow", None, 0, "cpu", {"angles": [0.0], "num_images": 1})
    status, rows, message = execute_job(job, ctx, timeout_s=0.05)
    assert status == "timeout" and rows == [] and "timeout" in message
