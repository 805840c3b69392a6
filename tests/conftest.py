import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # plugin_models


@pytest.fixture
def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    return env


@pytest.fixture
def run_cli(cli_env, tmp_path):
    """Run `python -m bench ...` in a subprocess; returns CompletedProcess."""

    def _run(*args, timeout=600):
        return subprocess.run([sys.executable, "-m", "bench", *map(str, args)], capture_output=True, text=True,
                              env=cli_env, cwd=tmp_path, timeout=timeout)

    return _run


# A real sweep with tiny settings, shared by the report, browser and CLI tests: every protocol, two networks and
# two layers, plus a plugin that always fails (so the run exits 1 and lists it).
E2E_PROFILE = """
name = "e2e"
description = "tests: every protocol, tiny settings"
models = ["cnn", "gmr", "plugin_models:broken"]
datasets = ["rotdigits"]
protocols = ["accuracy", "equivariance", "efficiency", "data_efficiency"]
seeds = [0]
device = "cpu"
threads = 2

[accuracy]
epochs = 1
batch_size = 32
train_limit = 64
test_limit = 40
angles = "0:360:45"
model_kwargs = { width = 0.25 }
ceiling = true

[data_efficiency]
models = ["cnn", "gmr"]
sizes = [2, 4]
steps = 2
batch_size = 32
test_limit = 40
angles = "0:360:90"
targets = [5, 15]
model_kwargs = { width = 0.25 }

[equivariance]
models = ["layer_conv2d", "layer_gmr", "cnn", "gmr"]
angles = "0:90:22.5"
num_images = 2
per_layer = true

[efficiency]
models = ["layer_conv2d", "layer_gmr", "cnn", "gmr"]
kernel_sizes = [3, 5]
channels = []
resolutions = []
batch_sizes = [1, 2]
network_sweeps = ["batch_sizes"]
metrics = ["params", "flops", "latency_ms"]
sweep_metrics = ["latency_ms"]
min_run_time = 0.01
warmup = 1
min_runs = 3
model_kwargs = { cnn = { width = 0.25 }, gmr = { width = 0.25 } }
"""


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory):
    """(run folder, CompletedProcess) of `equibench run` on E2E_PROFILE."""
    base = tmp_path_factory.mktemp("e2e")
    profile = base / "e2e.toml"
    profile.write_text(E2E_PROFILE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.setdefault("MPLBACKEND", "Agg")
    out = base / "run"
    res = subprocess.run([sys.executable, "-m", "bench", "run", "--profile", str(profile), "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=base, timeout=900)
    return out, res
