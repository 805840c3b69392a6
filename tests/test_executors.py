"""submitit executor (its local cluster): results flow into the same store; orphaned worker records are kept."""

import json
import os

from bench.executors import _parameters, ingest_orphans, run_submitit
from bench.jobs import Job, RunContext
from bench.results import ResultsStore

SETTINGS = {"angles": [0.0, 90.0], "num_images": 2, "lie_derivative": False, "floor": False}


def test_submitit_local_executor_runs_jobs_into_the_store(tmp_path, monkeypatch):
    tests_dir = os.path.dirname(__file__)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests_dir, os.environ.get("PYTHONPATH", "")]))
    ctx = RunContext(out_dir=tmp_path, threads=1)
    jobs = [Job("equivariance", "plugin_models:build", None, s, "cpu", SETTINGS) for s in (0, 1)]
    jobs.append(Job("equivariance", "plugin_models:broken", None, 0, "cpu", SETTINGS))
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
