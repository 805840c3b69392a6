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
                    rows.append({**c, "metric": "accuracy", "value": v, "unit": "%", "angle_deg": a})
                for a in acc_angles[::3]:
                    drop = {"cnn": 14.0, "c4": 9.0, "c8": 3.0, "gmr": 1.2}[model]
                    v = min(100.0, accuracy(model, condition, a) - drop + 0.4 * rng.standard_normal())
                    rows.append({**c, "metric": "accuracy", "value": v, "unit": "%", "angle_deg": a,
                                 "reflect": "h"})
                vals = [per[a] for a in acc_angles if a < 360]
                summary = {"upright": per[0.0], "mean": float(np.mean(vals)), "worst": float(np.min(vals)),
                           "flip_h": rows[len(acc_angles)]["value"], "flip_v": noisy(per[0.0] * 0.97, 0.01)}
                for name, v in summary.items():
                    rows.append({**c, "metric": "accuracy", "value": v, "unit": "%", "summary": name})
                store.append(_job_id(job), job, "ok", rows)

    # equivariance (networks: init + trained, three features, per-layer rows; layers: init, "out")
    for model in (*NETWORKS, *LAYERS):
        is_layer = model.startswith("layer_")
        features = ("out",) if is_layer else ("features", "pooled", "logits")
        for weights in (("init",) if is_layer else ("init", "trained")):
            job = _job("equivariance", model, None if is_layer else DATASET, 0, weights=weights)
            c = {**_common(job), "rotation": "bilinear", "weights": weights}
            scale = 1.0 if weights == "init" else 1.4
            rows = []
            for feature in features:
                for a in angles:
                    for reflect in ("none", "h"):
                        v = equivariance_error(model, a, reflect, feature) * scale
                        rows.append({**c, "metric": "equivariance_error", "value": noisy(v), "unit": "rel",
                                     "angle_deg": a, "reflect": reflect, "feature": feature})
                lee = {"cnn": 0.9, "layer_conv2d": 0.8, "c4": 0.21, "c8": 0.06, "layer_c8": 0.05,
                       "gmr": 0.03, "layer_gmr": 0.025}[model]
                rows.append({**c, "metric": "lie_derivative", "value": noisy(lee * scale, 0.08), "unit": "rel",
                             "feature": feature})
            for kind in ("roundtrip", "blur"):
                for a in angles:
                    rows.append({**c, "metric": "interpolation_floor", "value": floor(kind, a), "unit": "rel",
                                 "angle_deg": a, "floor_kind": kind})
            if not is_layer:
                for a in angles[::4]:
                    for feature in ("pooled", "logits"):
                        v = equivariance_error(model, a, "none", feature) * scale * 0.8
                        rows.append({**c, "metric": "invariance_error", "value": noisy(v), "unit": "rel",
                                     "angle_deg": a, "feature": feature})
                    agree = 1.0 - min(0.95, 2.2 * equivariance_error(model, a, "none", "logits") * scale)
                    rows.append({**c, "metric": "prediction_agreement", "value": agree, "unit": "fraction",
                                 "angle_deg": a})
                for i, layer in enumerate(("conv1", "conv2", "conv3", "conv4", "pool", "head")):
                    for a in (22.5, 45.0, 67.5):
                        v = equivariance_error(model, a, "none", "features") * scale * (0.35 + 0.18 * i)
                        rows.append({**c, "metric": "equivariance_error", "value": noisy(v), "unit": "rel",
                                     "angle_deg": a, "feature": "features", "layer": layer})
            store.append(_job_id(job), job, "ok", rows)

    # efficiency: networks over batch sizes, layers over kernel sizes
    net_params = {"cnn": 391_434, "gmr": 118_250, "c4": 412_880, "c8": 452_106}
    net_lat = {"cnn": 0.82, "gmr": 1.05, "c4": 1.9, "c8": 3.4}
    for model in NETWORKS:
        job = _job("efficiency", model, None, 0)
        c = _common(job)
        rows = [{**c, "metric": "params", "value": net_params[model], "unit": "count"},
                {**c, "metric": "flops", "value": net_params[model] * 61.0, "unit": "count"},
                {**c, "metric": "build_s", "value": {"cnn": 0.02, "gmr": 0.05, "c4": 1.4, "c8": 2.9}[model],
                 "unit": "s"}]
        for batch in (1, 32, 128):
            cfg = {"batch": batch, "resolution": 28}
            for mode, factor in (("eval", 1.0), ("train", 2.9)):
                med = net_lat[model] * factor * (1 + batch / 24)
                rows.append({**c, **cfg, "metric": "latency_ms", "value": med, "unit": "ms", "mode": mode,
                             "stat": "median"})
                rows.append({**c, **cfg, "metric": "latency_ms", "value": med * 0.04, "unit": "ms", "mode": mode,
                             "stat": "iqr"})
                mem = (12 + net_params[model] * 4e-6 + batch * (0.9 if model != "gmr" else 0.6)
                       * (2.6 if model in ("c4", "c8") else 1.0)) * (1.0 if mode == "eval" else 2.4)
                rows.append({**c, **cfg, "metric": "peak_memory_mb", "value": mem, "unit": "MB", "mode": mode})
        store.append(_job_id(job), job, "ok", rows)
    for model in LAYERS:
        job = _job("efficiency", model, None, 0)
        c = _common(job)
        rows = []
        for k in (3, 5, 7, 9):
            cfg = {"kernel_size": k, "channels": 16, "batch": 32, "resolution": 64}
            params = {"layer_conv2d": 16 * 16 * k * k, "layer_gmr": 16 * 16 * (k // 2 + 1),
                      "layer_c8": 16 * 16 * k * k // 8 * 8}[model]
            lat = {"layer_conv2d": 0.11 + 0.012 * k * k, "layer_gmr": 0.14 + 0.013 * k * k,
                   "layer_c8": 0.32 + 0.05 * k * k}[model]
            rows += [{**c, **cfg, "metric": "params", "value": params, "unit": "count"},
                     {**c, **cfg, "metric": "flops", "value": params * 64 * 64 * 2.0, "unit": "count"},
                     {**c, **cfg, "metric": "latency_ms", "value": lat, "unit": "ms", "mode": "eval",
                      "iqr_ms": lat * 0.05},
                     {**c, **cfg, "metric": "latency_ms", "value": lat * 2.7, "unit": "ms", "mode": "train",
                      "iqr_ms": lat * 0.12},
                     {**c, **cfg, "metric": "peak_memory_mb",
                      "value": 8.0 + 0.4 * k + (6.0 if model == "layer_c8" else 0.0), "unit": "MB",
                      "mode": "eval"}]
        rows.append({**c, "kernel_size": 9, "channels": 16, "batch": 4096, "resolution": 64,
                     "metric": "peak_memory_mb", "value": None, "unit": "MB", "mode": "train", "status": "oom",
                     "message": "CUDA out of memory at batch 4096"})
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
