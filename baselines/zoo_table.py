"""Measure the zoo for docs/models.md: parameters (both matches) and build times.

    python -m baselines.zoo_table [--models a,b,...] [--repeats 3] > table.md

Build time = wall time of `create_model` with the implementing module (and so its library) already imported,
the way the efficiency protocol's ``build_s`` is defined. "cold" is the first build in a fresh process (the
library's kernel-basis caches are empty; escnn's on-disk Clebsch-Gordan cache is warm), "warm" the median of
`repeats` further builds in the same process. Each model is measured in its own subprocess, with one torch
thread; wall and process CPU time are both recorded (on a loaded machine the CPU time is the stable number).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings


def _measure_one(name: str, repeats: int) -> dict:
    warnings.filterwarnings("ignore")
    import torch

    from bench.models import MODELS, create_model, model_info

    torch.set_num_threads(1)
    MODELS.get(name)  # import the implementing module (and its library) first
    level = model_info(name)["level"]
    if level == "layer":
        configs = {"k7": dict(channels=16, kernel_size=7), "k9": dict(channels=16, kernel_size=9)}
        cin = 16
        if name in ("layer_c8", "layer_d8", "layer_e2cnn_c8"):  # hidden layer: 128 regular -> 128 regular channels
            configs["hidden_k9"] = dict(channels=128, kernel_size=9, in_type="regular")
    else:
        configs = {"params": dict(match="params"), "channels": dict(match="channels")}
        cin = 1
    out: dict = {"name": name, "level": level}
    first = True
    for label, kw in configs.items():
        c_in = 128 if label == "hidden_k9" else cin
        t, c = time.perf_counter(), time.process_time()
        model = create_model(name, c_in, 10, **kw)
        cold, cold_cpu = time.perf_counter() - t, time.process_time() - c
        warm, warm_cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            create_model(name, c_in, 10, **kw)
            warm.append(time.perf_counter() - t)
            warm_cpu.append(time.process_time() - c)
        out[label] = {
            "params": sum(p.numel() for p in model.parameters()),
            "cold_s": cold if (first or label == "hidden_k9") else None,
            "cold_cpu_s": cold_cpu if (first or label == "hidden_k9") else None,
            "warm_s": statistics.median(warm) if warm else None,
            "warm_cpu_s": statistics.median(warm_cpu) if warm_cpu else None,
            "widths": list(getattr(model, "widths", ()) or ()),
        }
        if level == "network":
            out[label]["params_rgb"] = sum(p.numel() for p in create_model(name, 3, 10, **kw).parameters())
        first = False
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(_measure_one(args.one, args.repeats)))
        return
    from bench.models import list_models

    names = args.models.split(",") if args.models else list_models(available_only=True)
    for name in names:
        proc = subprocess.run([sys.executable, "-m", "baselines.zoo_table", "--one", name, "--repeats",
                               str(args.repeats)], capture_output=True, text=True)
        if proc.returncode:
            print(json.dumps({"name": name, "error": proc.stderr[-500:]}), flush=True)
        else:
            print(proc.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
