"""A synthetic but realistic run directory, for trying the report without running a sweep (and for its tests).

    python -m reports.demo OUT_DIR            # writes OUT_DIR/results.jsonl, environment.json, profile.toml
                                              # and renders OUT_DIR/report.html

The numbers are made up (smooth functions of the angle plus seeded noise) but have the shapes real runs give:
several models and seeds, angles 0..360, interpolation floors, reflections, init/trained weights, per-layer
attribution, accuracy curves with summary rows, an efficiency sweep over kernel size and batch, a failed job.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from bench.results import ResultsStore

NETWORKS = ("c4", "c8", "cnn", "gmr")
LAYERS = ("layer_c8", "layer_conv2d", "layer_gmr")
DATASET = "rotdigits"
DEVICE = "cuda:0"

ENVIRONMENT = {
    "command": "equibench run --profile paper --out runs/paper",
    "cpu_count": 16,
    "cuda": "12.4",
    "device": DEVICE,
    "device_name": "NVIDIA H200",
    "dtype": "float32",
    "equibench_revision": "7ec059d2f3c1a9b4e6d8c0a1b2c3d4e5f6a7b8c9",
    "packages": {"GMR-Conv": "1.0.3", "e2cnn": None, "equibench": "0.1.0", "escnn": "1.0.11",
                 "matplotlib": "3.9.2", "numpy": "1.26.4", "pandas": "2.2.3", "scikit-learn": "1.5.2",
                 "scipy": "1.14.1", "submitit": "1.5.2", "torch": "2.4.1", "torchvision": "0.19.1"},
    "platform": "Linux-6.8.0-x86_64-with-glibc2.36",
    "profile": "paper",
    "python": "3.11.2",
    "started_at": "2025-01-15T09:30:00+00:00",
    "threads": 8,
}

PROFILE = """name = "paper"
description = "Synthetic demo run: networks and layers, three protocols"
models = ["cnn", "gmr", "c4", "c8"]
datasets = ["rotdigits"]
protocols = ["accuracy", "equivariance", "efficiency"]
seeds = [0, 1, 2]
device = "cuda"

[equivariance]
models = ["cnn", "gmr", "c4", "c8", "layer_conv2d", "layer_gmr", "layer_c8"]
angles = "0:360:7.5"
"""


def _job_id(job: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(job, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _job(protocol: str, model: str, dataset: str | None, seed: int, **settings: Any) -> dict[str, Any]:
    return {"protocol": protocol, "model": model, "dataset": dataset, "seed": seed, "device": DEVICE,
            "settings": settings}


def _common(job: dict[str, Any]) -> dict[str, Any]:
    return {"model": job["model"], "protocol": job["protocol"], "dataset": job["dataset"], "seed": job["seed"],
            "device": DEVICE, "dtype": "float32", "status": "ok", "reflect": "none"}


def _dist(angle: float, period: float) -> float:
    """Angular distance to the nearest multiple of `period`."""
    r = angle % period
    return min(r, period - r)


def equivariance_error(model: str, angle: float, reflect: str, feature: str) -> float:
    base = {"features": 1.6, "pooled": 0.8, "logits": 1.0, "out": 1.0}[feature]
    s2 = abs(math.sin(math.radians(2 * angle)))
    if model in ("cnn", "layer_conv2d"):
        e = 0.0 if (_dist(angle, 360) < 1e-9 and reflect == "none") else 0.32 + 0.12 * abs(math.sin(math.radians(angle)))
    elif model == "c4":
        e = 0.3 if reflect != "none" else (2e-7 if _dist(angle, 90) < 1e-9 else 0.006 + 0.03 * s2 ** 0.7)
    elif model in ("c8", "layer_c8"):
        e = 2e-7 if _dist(angle, 90) < 1e-9 else 0.004 + 0.006 * abs(math.sin(math.radians(4 * angle))) ** 0.5
        e *= 1.3 if reflect != "none" else 1.0
    else:  # gmr: radially symmetric kernels, close to the interpolation floor at every angle, flips included
        e = 3e-7 if _dist(angle, 90) < 1e-9 else 0.0035 + 0.0045 * s2
    return base * e


def floor(kind: str, angle: float) -> float:
    if _dist(angle, 90) < 1e-9:
        return 0.0
    s2 = abs(math.sin(math.radians(2 * angle)))
    return (0.0022 + 0.0035 * s2) if kind == "roundtrip" else (0.0012 + 0.0018 * s2)


def accuracy(model: str, condition: str, angle: float) -> float:
    if condition == "rotation":
        return {"cnn": 92.5, "gmr": 97.1, "c4": 97.6, "c8": 98.0}[model] - 0.6 * abs(
            math.sin(math.radians(2 * angle)))
    if model == "cnn":
        return 98.2 * (0.22 + 0.78 * math.exp(-((_dist(angle, 360) / 38.0) ** 2)))
    if model == "c4":
        return 98.6 * (0.55 + 0.45 * math.exp(-((_dist(angle, 90) / 26.0) ** 2)))
    if model == "c8":
        return 98.8 - 2.2 * abs(math.sin(math.radians(4 * angle))) ** 0.7
    return 97.4 - 0.7 * abs(math.sin(math.radians(2 * angle)))


def write_demo_run(out_dir: str | Path, seeds: tuple[int, ...] = (0, 1, 2), angle_step: float = 7.5) -> Path:
    """Write results.jsonl, environment.json and profile.toml of a synthetic run into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "results.jsonl").exists():
        (out / "results.jsonl").unlink()
    store = ResultsStore(out)
    rng = np.random.default_rng(1234)
    angles = sorted({*np.arange(0.0, 360.0 + 1e-9, angle_step).tolist(), 10.0, 22.5})

    def noisy(v: float, rel: float = 0.05) -> float:
        return float(v * (1 + rel * rng.standard_normal()))

    # accuracy (networks x two training conditions x seeds)
    acc_angles = np.arange(0.0, 360.0 + 1e-9, 15.0).tolist()
    for model in NETWORKS:
        for condition in ("upright", "rotation"):
            for seed in seeds:
                job = _job("accuracy", model, DATASET, seed, condition=condition)
                c = {**_common(job), "condition": condition}
                rows = []
                per = {}
                for a in acc_angles:
                    v = min(100.0, accuracy(model, condition, a) + 0.35 * rng.standard_normal())
                    per[a] = v
                    rows.append({**c, "metric": "accuracy", "value": v / 100, "unit": "fraction", "angle_deg": a})
                for a in acc_angles[::3]:
                    drop = {"cnn": 14.0, "c4": 9.0, "c8": 3.0, "gmr": 1.2}[model]
                    v = min(100.0, accuracy(model, condition, a) - drop + 0.4 * rng.standard_normal())
                    rows.append({**c, "metric": "accuracy", "value": v / 100, "unit": "fraction", "angle_deg": a,
                                 "reflect": "h"})
                vals = [per[a] for a in acc_angles if a < 360]
                summary = {"upright": per[0.0], "mean": float(np.mean(vals)), "worst": float(np.min(vals)),
                           "flip_h": rows[len(acc_angles)]["value"] * 100, "flip_v": noisy(per[0.0] * 0.97, 0.01)}
                for name, v in summary.items():
                    rows.append({**c, "metric": "accuracy", "value": v / 100, "unit": "fraction", "summary": name})
                store.append(_job_id(job), job, "ok", rows)

    # equivariance, shaped like bench.protocols.equivariance: feature maps -> equivariance_error (regular fields
    # also after group pooling, ":gpool"; the raw field only at angles inside the group), vectors (pooled,
    # logits) -> invariance_error, logits -> prediction_agreement; floors with weights "none"
    regular = {"c4": 90.0, "c8": 45.0, "layer_c8": 45.0}
    for model in (*NETWORKS, *LAYERS):
        is_layer = model.startswith("layer_")
        maps = ("out",) if is_layer else ("features",)
        job = _job("equivariance", model, None if is_layer else DATASET, 0)
        c = {**_common(job), "rotation": "bilinear", "inputs": "bandlimited"}
        rows = []
        for weights in (("init",) if is_layer else ("init", "trained")):
            cw = {**c, "weights": weights}
            scale = 1.0 if weights == "init" else 1.4
            for feature in maps:
                views = [feature]
                if model in regular:
                    views.append(f"{feature}:gpool")
                for a in angles:
                    for reflect in ("none", "h"):
                        for view in views:
                            outside = _dist(a, regular.get(model, 1.0)) > 1e-9 or reflect != "none"
                            if view == feature and model in regular and outside:
                                continue  # outside the group (C_n has no flips): only the pooled view
                            v = equivariance_error(model, a, reflect, "out") * scale * (0.8 if ":" in view else 1.6)
                            rows.append({**cw, "metric": "equivariance_error", "value": noisy(v),
                                         "unit": "relative", "angle_deg": a, "reflect": reflect, "feature": view})
                rows.append({**cw, "metric": "lie_derivative", "value": noisy(0.6 * scale, 0.08) *
                             equivariance_error(model, 22.5, "none", "out") / 0.3, "unit": "relative/rad",
                             "feature": f"{feature}:gpool" if model in regular else feature})
            if not is_layer:
                for a in angles:
                    for reflect in ("none", "h"):
                        for feature in ("pooled", "logits"):
                            v = equivariance_error(model, a, reflect, feature) * scale
                            rows.append({**cw, "metric": "invariance_error", "value": noisy(v), "unit": "relative",
                                         "angle_deg": a, "reflect": reflect, "feature": feature})
                        agree = 1.0 - min(0.95, 2.2 * equivariance_error(model, a, reflect, "logits") * scale)
                        rows.append({**cw, "metric": "prediction_agreement", "value": agree, "unit": "fraction",
                                     "angle_deg": a, "reflect": reflect, "feature": "logits"})
                rows.append({**cw, "metric": "lie_derivative", "value": noisy(0.05 * scale, 0.08) *
                             equivariance_error(model, 22.5, "none", "logits") / 0.3, "unit": "1/rad",
                             "feature": "logits"})
                for i, layer in enumerate(("conv1", "bn1", "conv2", "bn2", "conv3", "pool")):
                    exact = layer.startswith("bn")  # pointwise stages commute with the rotation
                    v = 1e-7 if exact else equivariance_error(model, 45.0, "none", "out") * scale * (0.4 + 0.2 * i)
                    rows.append({**cw, "metric": "equivariance_error", "value": noisy(v), "unit": "relative",
                                 "angle_deg": 45.0, "feature": "stage", "layer": layer})
        for kind in ("roundtrip", "blur"):
            for a in angles:
                rows.append({**c, "metric": "interpolation_floor", "value": floor(kind, a), "unit": "relative",
                             "angle_deg": a, "feature": "input", "floor_kind": kind, "weights": "none"})
        store.append(_job_id(job), job, "ok", rows)

    # efficiency, shaped like bench.protocols.efficiency: a base point plus one-factor sweeps (networks over the
    # batch size, layers over the kernel size), every row with its point; memory kinds step / peak
    net_params = {"cnn": 391_434, "gmr": 118_250, "c4": 412_880, "c8": 452_106}
    net_lat = {"cnn": 0.82, "gmr": 1.05, "c4": 1.9, "c8": 3.4}
    lay_lat = {"layer_conv2d": (0.11, 0.012), "layer_gmr": (0.14, 0.013), "layer_c8": (0.32, 0.05)}
    for model in (*NETWORKS, *LAYERS):
        is_layer = model.startswith("layer_")
        job = _job("efficiency", model, None, 0)
        c = _common(job)
        if is_layer:
            points = [("base", 5, 32)] + [("kernel_size", k, 32) for k in (3, 5, 7, 9)]
        else:
            points = [("base", None, 32)] + [("batch", None, b) for b in (1, 32, 128)]
        rows = []
        for sweep, k, batch in points:
            pt = {**c, "sweep": sweep, "kernel_size": k, "channels": 16 if is_layer else None, "batch": batch,
                  "resolution": 64 if is_layer else 28, "threads": 8}
            if is_layer:
                params = {"layer_conv2d": 16 * 16 * k * k, "layer_gmr": 16 * 16 * (k // 2 + 1),
                          "layer_c8": 16 * 16 * k * k // 8}[model]
                lat = lay_lat[model][0] + lay_lat[model][1] * k * k
                flops = params * 64 * 64 * 2.0 * batch
                mem = 8.0 + 0.4 * k + (6.0 if model == "layer_c8" else 0.0)
            else:
                params = net_params[model]
                lat = net_lat[model] * (1 + batch / 24)
                flops = params * 61.0 * batch
                mem = 2 + batch * (0.9 if model != "gmr" else 0.6) * (2.6 if model in ("c4", "c8") else 1.0)
            rows.append({**pt, "metric": "params", "value": params, "unit": "count"})
            rows.append({**pt, "metric": "build_s", "value": {"cnn": 0.02, "gmr": 0.05, "c4": 1.4, "c8": 2.9}.get(
                model, 0.01 if model != "layer_c8" else 0.6), "unit": "s"})
            for mode, factor in (("eval", 1.0), ("train", 2.9)):
                rows.append({**pt, "metric": "flops", "value": flops * factor, "unit": "FLOPs", "mode": mode})
                med = lat * factor
                rows.append({**pt, "metric": "latency_ms", "value": med, "unit": "ms", "mode": mode,
                             "stat": "median", "runs": 50})
                rows.append({**pt, "metric": "latency_ms", "value": med * 0.04, "unit": "ms", "mode": mode,
                             "stat": "iqr", "runs": 50})
                step = mem * (1.0 if mode == "eval" else 2.4)
                rows.append({**pt, "metric": "peak_memory_mb", "value": step, "unit": "MiB", "mode": mode,
                             "memory": "step"})
                rows.append({**pt, "metric": "peak_memory_mb", "value": step + 412.0, "unit": "MiB", "mode": mode,
                             "memory": "peak"})
        if is_layer:
            rows.append({**c, "sweep": "batch", "kernel_size": 9, "channels": 16, "batch": 4096, "resolution": 64,
                         "metric": "peak_memory_mb", "value": None, "unit": "MiB", "mode": "train",
                         "memory": "step", "status": "oom", "message": "CUDA out of memory at batch 4096"})
        store.append(_job_id(job), job, "ok", rows)

    # jobs that did not finish
    job = _job("accuracy", "c8", DATASET, 2, condition="upright", epochs=40)
    store.append(_job_id(job), job, "timeout", [], "job exceeded timeout_s=1800")
    job = _job("equivariance", "e2_wrn", None, 0)
    store.append(_job_id(job), job, "error", [],
                 "MissingDependencyError: model 'e2_wrn' needs escnn (pip install escnn --no-deps)")

    (out / "environment.json").write_text(json.dumps(ENVIRONMENT, indent=2, sort_keys=True))
    (out / "profile.toml").write_text(PROFILE)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    write_demo_run(args.out_dir)
    from reports import render_report

    print(render_report(args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
