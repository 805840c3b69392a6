"""Measure the zoo for docs/models.md: parameters (both matches) and build times.

    python -m baselines.zoo_table [--models a,b,...] [--repeats 3] > table.md

Build time = wall time of `create_model` with the implementing module (and so its library) already imported,
the way the efficiency protocol's ``build_s`` is defined. "cold" is the first build in a fresh process (the
library's kernel-basis caches are empty; escnn's on-disk Clebsch-Gordan cache is warm), "warm" the median of
`repeats` further builds in the same process. Each model is measured in its own subprocess.
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
    else:
        configs = {"params": dict(match="params"), "channels": dict(match="channels")}
        cin = 1
    out: dict = {"name": name, "level": level}
    first = True
    for label, kw in configs.items():
        t = time.perf_counter()
        model = create_model(name, cin, 10, **kw)
        cold = time.perf_counter() - t
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            create_model(name, cin, 10, **kw)
            warm.append(time.perf_counter() - t)
        out[label] = {
            "params": sum(p.numel() for p in model.parameters()),
            "cold_s": cold if first else None,
            "warm_s": statistics.median(warm) if warm else None,
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
