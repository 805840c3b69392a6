"""submitit executor (its local cluster): results flow into the same store; orphaned worker records are kept."""

import json
import os

from protocol_helpers import make_job

from bench.executors import _parameters, ingest_orphans, run_submitit
from bench.jobs import Job, RunContext
from bench.results import ResultsStore

SETTINGS = {"angles": [0.0, 90.0], "num_images": 2, "lie_derivative": False, "floor": False, "weights": ["init"]}


def test_submitit_local_executor_runs_jobs_into_the_store(tmp_path, monkeypatch):
    tests_dir = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    ctx = RunContext(out_dir=tmp_path, threads=1)
    jobs = [make_job("equivariance", "plugin_models:build", None, s, **SETTINGS) for s in (0, 1)]
    jobs.append(make_job("equivariance", "plugin_models:broken", None, 0, **SETTINGS))
    store = ResultsStore(tmp_path)
    run_submitit(jobs, store, ctx, timeout_s=120, slurm={"cluster": "local"})
    records = {r["job_id"]: r for r in store.records()}
    assert set(records) == {j.job_id for j in jobs}
    assert [records[j.job_id]["status"] for j in jobs] == ["ok", "ok", "error"]
    assert all(row["model"] == "plugin_models:build" for row in records[jobs[0].job_id]["rows"])
    # the worker-side copies exist, and re-ingesting them adds nothing twice
    assert len(list((tmp_path / "submitit" / "results").glob("*.json"))) == 3
    assert ingest_orphans(store) == 0


def test_orphaned_worker_records_are_ingested_once(tmp_path):
    folder = tmp_path / "submitit" / "results"
    folder.mkdir(parents=True)
    (folder / "abc.json").write_text(json.dumps({"job_id": "abc", "job": {}, "status": "ok",
                                                 "rows": [{"metric": "m", "value": 1.0}], "message": ""}))
    store = ResultsStore(tmp_path)
    assert ingest_orphans(store) == 1 and ingest_orphans(store) == 0
    assert store.finished_job_ids() == {"abc"}


def test_latency_jobs_get_a_whole_node_and_one_gpu():
    job = Job("efficiency", "cnn", None, 0, "cuda", {})
    params = _parameters({"partition": "gpu", "gpus_per_node": 4}, job, 600)
    assert params["gpus_per_node"] == 1 and params["slurm_additional_parameters"] == {"exclusive": True}
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 10
    other = _parameters({"gpus_per_node": 2}, Job("accuracy", "cnn", "rotdigits", 0, "cuda", {}), None)
    assert other["gpus_per_node"] == 2 and "slurm_additional_parameters" not in other


# -- dependencies through the executor -------------------------------------------------------------------------
def plan_dependent_sweep(models):
    """accuracy + equivariance on rotdigits: each equivariance job depends on its model's accuracy job."""
    from bench.plan import plan_jobs
    from bench.profiles import Profile

    profile = Profile(name="deps", models=list(models), datasets=["rotdigits"],
                      protocols=["accuracy", "equivariance"], seeds=[0], device="cpu",
                      settings={"accuracy": {"epochs": 1, "train_limit": 32, "test_limit": 16, "angles": [0, 90],
                                             "flips": False, "model_kwargs": {"delay": 3.0}},
                                "equivariance": {"angles": [0, 45], "num_images": 2, "floor": False,
                                                 "lie_derivative": False, "per_layer": False,
                                                 "reflections": False}})
    return plan_jobs(profile, "cpu")


def check_dependencies_honoured(store: ResultsStore, jobs: list[Job]) -> None:
    records = {r["job_id"]: r for r in store.records()}
    assert set(records) == {j.job_id for j in jobs}
    by_key = {(r["job"]["protocol"], r["job"]["model"]): r for r in records.values()}
    slow_acc, slow_eq = by_key[("accuracy", "plugin_models:slow_net")], by_key[("equivariance", "plugin_models:slow_net")]
    assert slow_acc["status"] == slow_eq["status"] == "ok"
    assert slow_eq["job"]["depends_on"] == [slow_acc["job_id"]]
    assert slow_eq["started"] >= slow_acc["finished"], "a dependent job started before its prerequisite finished"
    assert {r["weights"] for r in slow_eq["rows"]} == {"init", "trained"}
    broken_eq = by_key[("equivariance", "plugin_models:broken")]
    assert by_key[("accuracy", "plugin_models:broken")]["status"] == "error"
    assert broken_eq["status"] == "skipped" and "ended error" in broken_eq["message"] and not broken_eq["rows"]


def test_submitit_releases_dependents_only_after_their_prerequisite_finished_ok(tmp_path, monkeypatch):
    """Several local workers at once: the slow accuracy job runs while independent jobs proceed; its equivariance
    job is submitted only after it finished ok; the failed accuracy job's dependent is skipped."""
    tests_dir = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    jobs = plan_dependent_sweep(["plugin_models:slow_net", "plugin_models:broken"])
    store = ResultsStore(tmp_path)
    run_submitit(jobs, store, RunContext(out_dir=tmp_path, threads=1), timeout_s=300,
                 slurm={"cluster": "local", "array_parallelism": 4}, poll_s=0.2)
    check_dependencies_honoured(store, jobs)
    # the independent accuracy jobs overlapped: both were submitted together
    acc = [r for r in store.records() if r["job"]["protocol"] == "accuracy"]
    assert max(r["started"] for r in acc) < min(r["finished"] for r in acc)


def slurm_available() -> bool:
    import shutil
    import subprocess

    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and any(s.strip() in ("idle", "mixed", "allocated") for s in res.stdout.split())


def test_real_slurm_honours_dependencies(tmp_path, monkeypatch):
    """Against a real Slurm controller (single node; `.ci/run` brings one up from Debian's slurm-wlm packages)."""
    import pytest

    if not slurm_available():
        if os.environ.get("EQUIBENCH_REQUIRE_SLURM") == "1":
            pytest.fail("no idle Slurm node (sinfo) although EQUIBENCH_REQUIRE_SLURM=1")
        pytest.skip("no Slurm controller here (start one as .ci/run does, or set EQUIBENCH_REQUIRE_SLURM=1)")
    tests_dir = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    jobs = plan_dependent_sweep(["plugin_models:slow_net", "plugin_models:broken"])
    store = ResultsStore(tmp_path)
    run_submitit(jobs, store, RunContext(out_dir=tmp_path, threads=1), timeout_s=600,
                 slurm={"cluster": "slurm", "cpus_per_task": 1, "mem_gb": 2, "timeout_min": 10}, poll_s=1.0)
    check_dependencies_honoured(store, jobs)
