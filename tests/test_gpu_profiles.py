"""The `teaser` and `gpu` profiles plan (the gpu one without a GPU, under --dry-run), cover what they promise, and
the one-call GPU check (`python -m bench.gpu_check`) runs end to end on the CPU with a tiny profile."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from bench.plan import plan_jobs
from bench.profiles import load_profile
from bench.protocols import get_protocol
from bench.protocols.efficiency import job_settings, plan_points
from bench.schema import model_family, model_level

EFF = get_protocol("efficiency")


def _points(job):
    s = job_settings(EFF.settings_of(job), job.model)
    return s, {p for _, p in plan_points(s, model_level(job.model))}


def test_gpu_profile_plans_for_cuda_under_dry_run_without_a_gpu(run_cli):
    res = run_cli("run", "--profile", "gpu", "--dry-run", "--device", "cuda")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "11 jobs (0 already done); nothing written" in res.stdout
    if not torch.cuda.is_available():
        assert "planned for cuda; no CUDA device is available here" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_stops_before_writing_and_names_the_way_out(run_cli, tmp_path):
    res = run_cli("run", "--profile", "gpu", "--out", tmp_path / "run")
    assert res.returncode == 2
    assert "no CUDA device is available" in res.stderr and "--dry-run" in res.stderr
    assert not (tmp_path / "run").exists()


def test_gpu_profile_covers_every_family_both_modes_memory_the_teaser_and_resnet18_scale():
    jobs = plan_jobs(load_profile("gpu"), "cuda")
    assert {j.device for j in jobs} == {"cuda"}
    layers = [j for j in jobs if model_level(j.model) == "layer"]
    nets = {j.model: j for j in jobs if model_level(j.model) == "network"}
    assert {model_family(j.model) for j in layers} == {"plain", "gmr", "group", "steerable"}
    assert {"layer_conv2d", "layer_c8", "layer_gmr", "layer_gmr_official"} <= {j.model for j in layers}
    assert set(nets) == {"resnet18", "gmr_resnet18", "c8_resnet18"}
    for job in jobs:
        s, points = _points(job)
        assert s["modes"] == ["eval", "train"] and {"latency_ms", "peak_memory_mb"} <= set(s["sweep_metrics"])
        assert s["reference"] == "gmr_paper_teaser"
    s, points = _points(layers[0])
    teaser = {p.kernel_size for p in points if (p.batch, p.resolution, p.channels) == (16, 64, 64)}
    assert teaser == {3, 5, 7, 9, 11}
    s, points = _points(nets["gmr_resnet18"])
    assert s["in_channels"] == 3 and {p.batch for p in points if p.resolution == 32} == {1, 32, 128, 512}
    assert {p.kernel_size for p in points} == {None}  # the networks' own kernels, not the layers' base k
    assert s["model_kwargs"]["gmr_resnet18"] == {"match": "channels"}  # the paper's GMR-ResNet-18 (4.0M params)


def test_teaser_profile_is_the_four_layers_over_k_3_to_11_with_the_paper_reference():
    jobs = plan_jobs(load_profile("teaser"), "cpu")
    assert [j.model for j in jobs] == ["layer_conv2d", "layer_c8", "layer_gmr", "layer_gmr_official"]
    for job in jobs:
        s, points = _points(job)
        assert s["reference"] == "gmr_paper_teaser" and s["modes"] == ["eval", "train"]
        assert sorted(p.kernel_size for p in points) == [3, 5, 7, 9, 11]
        assert {(p.batch, p.resolution, p.channels) for p in points} == {(16, 64, 64)}
    assert EFF.settings_of(jobs[1]).model_kwargs["layer_c8"] == {"in_type": "regular"}


# -- the GPU check, rehearsed on the CPU -------------------------------------------------------------------------
TINY = """
name = "gpu_tiny"
models = ["layer_conv2d", "layer_gmr", "layer_c8", "resnet18", "gmr_resnet18"]
protocols = ["efficiency"]
device = "cpu"
threads = 1
timeout_s = 600

[efficiency]
batch = 2
resolution = 16
layer_channels = 8
kernel_size = 9
kernel_sizes = [3, 9]
channels = []
resolutions = []
batch_sizes = []
metrics = ["params", "latency_ms"]
sweep_metrics = ["latency_ms"]
modes = ["eval", "train"]
warmup = 1
min_run_time = 0.005
min_runs = 2
reference = "gmr_paper_teaser"
model_kwargs = { layer_c8 = { in_type = "regular" }, gmr_resnet18 = { match = "channels" } }

[efficiency.network_settings]
batch = 1
resolution = 16
kernel_size = "auto"
in_channels = 3
batch_sizes = [2]
metrics = ["peak_memory_mb"]
sweep_metrics = ["peak_memory_mb"]
modes = ["train"]
"""


def _gpu_check(cli_env, tmp_path, *extra):
    profile = tmp_path / "tiny.toml"
    profile.write_text(TINY)
    cmd = [sys.executable, "-m", "bench.gpu_check", "--device", "cpu", "--profile", str(profile), "--skip-tests",
           "--results-dir", str(tmp_path / "results"), "--run-dir", str(tmp_path / "run"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env, cwd=tmp_path, timeout=900)


@pytest.mark.slow
def test_gpu_check_rehearsal_on_cpu_runs_every_step_and_lands_the_results(cli_env, tmp_path):
    res = _gpu_check(cli_env, tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "results"
    for name in ("report.html", "results.csv", "environment.json", "profile.json", "summary.md", "check.json",
                 "tables/efficiency_reference.csv", "tables/efficiency_points.csv", "sweep.log"):
        assert (out / name).exists(), name
    check = json.loads((out / "check.json").read_text())
    assert [(s["name"], s["status"]) for s in check["steps"]] == [
        ("environment", "ok"), ("cuda tests", "skipped"), ("sweep", "ok"), ("results", "ok")]
    summary = (out / "summary.md").read_text()
    assert "jobs finished ok: 5 of 5 planned" in summary
    assert "Teaser (b)" in summary and "Teaser (a)" in summary and summary in res.stdout
    ref = pd.read_csv(out / "tables/efficiency_reference.csv")
    assert {"latency_ms", "peak_memory_mb"} == set(ref["metric"])
    assert ref[(ref["model"] == "gmr_resnet18")]["ratio"].notna().all()
    assert "Seconds per 1,000 convolutions vs kernel size" in (out / "report.html").read_text()


@pytest.mark.slow
def test_gpu_check_past_its_limit_stops_the_sweep_and_reports_the_finished_jobs(cli_env, tmp_path):
    res = _gpu_check(cli_env, tmp_path, "--run-limit-s", "25")
    assert res.returncode == 1
    check = json.loads((tmp_path / "results" / "check.json").read_text())
    sweep = next(s for s in check["steps"] if s["name"] == "sweep")
    assert sweep["status"] == "timeout" and "report rebuilt from the finished jobs" in sweep["detail"]
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "of 5 planned" in summary and "jobs finished ok: 5 of 5" not in summary
    assert (tmp_path / "results" / "report.html").exists()
