"""Measure test accuracy vs training-set size on a dataset (the numbers quoted in docs/datasets.md).

A stand-in for the data-efficiency protocol until it exists: one recipe for every model (the quick profile's:
Adam lr 1e-2, batch 32, cosine schedule, 8 epochs, width 0.25), but at least `--min-steps` optimizer steps, so
a 5-per-class set (one batch per epoch) is trained to convergence rather than for 8 steps. Prints one JSON
line per run and, at the end, the mean accuracy per model and size.

    python benchmarks/data_efficiency_check.py --models cnn gmr c8 --sizes 5 20 500 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from bench.data_efficiency import epochs_for, stratified_subset
from bench.datasets import create_dataset
from bench.models import create_model
from bench.training import deterministic, evaluate_rotations, train_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="rotshapes")
    ap.add_argument("--models", nargs="+", default=["cnn", "gmr", "c8"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[5, 20, 500])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--min-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, test = create_dataset(args.dataset, "train"), create_dataset(args.dataset, "test")
    info = train.info
    results: dict[tuple[str, int], list[float]] = defaultdict(list)
    for model_name in args.models:
        for size in args.sizes:
            for seed in args.seeds:
                subset = stratified_subset(train, size, seed)
                epochs = epochs_for(len(subset), args.batch_size, args.epochs, args.min_steps)
                with deterministic(seed):
                    model = create_model(model_name, info.in_channels, info.num_classes, width=args.width)
                    start = time.perf_counter()
                    fit = train_model(model, subset, seed=seed, epochs=epochs, batch_size=args.batch_size,
                                      lr=args.lr)
                acc = evaluate_rotations(model, test, [0.0], flips=False)["angles"][0.0]
                results[(model_name, size)].append(acc)
                print(json.dumps({"model": model_name, "per_class": size, "seed": seed, "epochs": epochs,
                                  "steps": int(fit["steps"]), "train_loss": round(fit["train_loss_final"], 4),
                                  "accuracy": round(acc, 4), "time_s": round(time.perf_counter() - start, 1)}),
                      flush=True)
    for (model_name, size), accs in results.items():
        t = torch.tensor(accs)
        std = float(t.std()) if len(t) > 1 else 0.0
        print(f"{model_name:>6} {size:>4}/class: {float(t.mean()):.3f} +- {std:.3f} (n={len(t)})")


if __name__ == "__main__":
    main()
