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
