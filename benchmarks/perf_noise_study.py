"""Which timing statistic survives a loaded machine? The measurements behind perf_tracker's design (docs/perf.md).

    PYTHONPATH=$PWD python benchmarks/perf_noise_study.py --runs 6 --out .benchmarks/noise_study.json

Each run is a fresh process that times, for every case (target, reference), rounds of one reference call then
one target call at 1 torch thread, recording wall time (``perf_counter``) and CPU time (``process_time``) of
every call. Every other run has two ``python -c 'while 1: pass'`` busy loops competing for the cores. For each
candidate statistic the script prints its value in every run relative to the first run, and the spread
``max / min - 1`` across runs: the run-to-run drift a regression threshold has to absorb.

Candidates: median and minimum of the target's wall or CPU time (absolute), and the median of per-round
ratios target / reference or the ratio of minima (relative), on either clock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# (target model, mode, reference): layers against an nn.Conv2d of their shape, networks against the plain cnn,
# and cnn against a single conv and against the torch-only backbone (bench_zoo.torch_backbone)
CASES = [("layer_conv2d", "eval", "conv"), ("layer_gmr", "eval", "conv"), ("layer_gmr", "train", "conv"),
         ("layer_c8", "eval", "conv"), ("layer_c8", "train", "conv"),
         ("gmr", "eval", "cnn"), ("gmr", "train", "cnn"), ("c8", "eval", "cnn"),
         ("cnn", "eval", "conv"), ("cnn", "eval", "torch_backbone"), ("cnn", "train", "conv"),
         ("cnn", "train", "torch_backbone")]
STATS = ("med_wall", "min_wall", "med_cpu", "min_cpu", "medratio_wall", "minratio_wall", "medratio_cpu",
         "minratio_cpu")


def worker(layer_rounds: int, network_rounds: int) -> dict:
    import torch
    from bench_zoo import LAYER_INPUT, NETWORK_INPUT, NETWORK_KWARGS, conv_reference, torch_backbone

    from bench.cost.steps import make_input, make_step
    from bench.models import create_model

    torch.set_num_threads(1)
    out = {}
    for name, mode, ref in CASES:
        torch.manual_seed(0)
        layer = name.startswith("layer")
        shape = LAYER_INPUT if layer else NETWORK_INPUT
        x = make_input(shape["batch"], shape["in_channels"], shape["resolution"])
        target = make_step(create_model(name, shape["in_channels"], 10, **({} if layer else NETWORK_KWARGS)), x, mode)
        if ref == "conv":
            reference = conv_reference(torch.device("cpu"), mode)[0]
        else:
            net = create_model("cnn", 1, 10, **NETWORK_KWARGS) if ref == "cnn" else torch_backbone(1)
            reference = make_step(net, make_input(8, 1, 32), mode)
        for _ in range(3):
            target(), reference()
        rec: dict[str, list[float]] = {"aw": [], "ac": [], "rw": [], "rc": []}
        for _ in range(layer_rounds if layer else network_rounds):
            for fn, k in ((reference, "r"), (target, "a")):
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                w1, c1 = time.perf_counter(), time.process_time()
                rec[k + "w"].append(w1 - w0)
                rec[k + "c"].append(c1 - c0)
        out[f"{name}:{mode}/{ref}"] = rec
    return out


def stats(rec: dict[str, list[float]]) -> dict[str, float]:
    aw, ac, rw, rc = (np.array(rec[k]) for k in ("aw", "ac", "rw", "rc"))
    return {"med_wall": np.median(aw), "min_wall": aw.min(), "med_cpu": np.median(ac), "min_cpu": ac.min(),
            "medratio_wall": np.median(aw / rw), "minratio_wall": aw.min() / rw.min(),
            "medratio_cpu": np.median(ac / rc), "minratio_cpu": ac.min() / rc.min()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--layer-rounds", type=int, default=60)
    parser.add_argument("--network-rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write the raw times and the statistics as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        json.dump(worker(args.layer_rounds, args.network_rounds), sys.stdout)
        return 0
    runs = []
    for k in range(args.runs):
        hogs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2 if k % 2 else 0)]
        try:
            res = subprocess.run([sys.executable, __file__, "--worker", "--layer-rounds", str(args.layer_rounds),
                                  "--network-rounds", str(args.network_rounds)], capture_output=True, text=True,
                                 check=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        runs.append({"loaded": bool(hogs), "data": json.loads(res.stdout)})
        print(f"run {k}: {'2 busy loops' if hogs else 'no extra load'}", file=sys.stderr, flush=True)
    table = {}
    for case in runs[0]["data"]:
        per = [stats(r["data"][case]) for r in runs]
        table[case] = {s: [float(p[s]) for p in per] for s in STATS}
        print(case)
        for s in STATS:
            v = np.array(table[case][s])
            print(f"   {s:14s} " + " ".join(f"{x:+7.1%}" for x in v / v[0] - 1) + f"   spread {v.max() / v.min() - 1:6.1%}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": runs, "statistics": table}))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
