"""The rotation floors table of docs/metrics.md: what each interpolator costs before any model is involved.

    PYTHONPATH=. python -m bench.floors_table            # prints the markdown table (about a minute on a CPU)

For every method (nearest is left out: its single-rotation error is ~0.19 on these inputs), angle and input
kind it reports, as relative L2 errors inside the disk, means over the images:

- ``single``: ||R_a x - exact R_a x|| / ||exact R_a x||, against `bench.rotation.bandlimited_rotated` (the
  continuous image behind the band-limited inputs, rotated analytically). Dataset images have no continuous
  original, so no exact reference: "-".
- ``round trip``: ||R_-a R_a x - x|| / ||x|| (two interpolations; not a lower bound of a single one).
- ``blur``: the equivariance error of an isotropic Gaussian blur (sigma 1.5 px), ||B R_a x - R_a B x|| /
  ||R_a B x||: what an exactly equivariant operator scores, i.e. the floor every model's curve sits on.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from bench.equivariance_metrics import blur_floor, map_mask, masked_relative_error, roundtrip_floor
from bench.rotation import bandlimited_images, bandlimited_rotated, rotate_many

METHODS = ("bilinear", "bicubic", "bspline", "fourier")
ANGLES = (1.0, 5.0, 22.5, 45.0)
BLUR_SIGMA = 1.5


def bandlimited_inputs(n: int, size: int = 33, cutoff: float = 0.1, seed: int = 0) -> torch.Tensor:
    return bandlimited_images(n, 1, size, cutoff=cutoff, seed=seed, dtype=torch.float64)


def dataset_inputs(n: int, seed: int = 0) -> torch.Tensor:
    """`n` seeded rotdigits test images (29x29, already zero outside the disk), in float64."""
    from bench.datasets import create_dataset

    data = create_dataset("rotdigits", "test")
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return torch.stack([data[i][0] for i in idx]).to(torch.float64)


def single_errors(x: torch.Tensor, exact: Sequence[torch.Tensor], angles: Sequence[float],
                  method: str) -> list[float]:
    """Mean relative error of one rotation by each angle against the exact rotations `exact[i]`."""
    rotated = rotate_many(x, angles, method)
    mask = map_mask(x)
    return [masked_relative_error(rotated[i], exact[i], mask).mean().item() for i in range(len(angles))]


def floors(n: int = 32, angles: Sequence[float] = ANGLES, methods: Sequence[str] = METHODS,
           cutoff: float = 0.1) -> list[dict[str, object]]:
    """One row per (input kind, method, angle) with the keys single, roundtrip, blur (None: no reference)."""
    rows: list[dict[str, object]] = []
    inputs = {"band-limited": bandlimited_inputs(n, cutoff=cutoff), "rotdigits": dataset_inputs(n)}
    exact = [bandlimited_rotated(n, 1, 33, a, cutoff=cutoff, dtype=torch.float64) for a in angles]
    for kind, x in inputs.items():
        for method in methods:
            single = single_errors(x, exact, angles, method) if kind == "band-limited" else [None] * len(angles)
            trip = roundtrip_floor(x, angles, method).tolist()
            blur = blur_floor(x, angles, method, BLUR_SIGMA).tolist()
            for a, s, t, b in zip(angles, single, trip, blur):
                rows.append({"inputs": kind, "method": method, "angle": a, "single": s, "roundtrip": t, "blur": b})
    return rows


def markdown(rows: Sequence[dict[str, object]]) -> str:
    """Rows as a markdown table: one line per input kind and method, angles as column groups."""
    angles = sorted({float(r["angle"]) for r in rows})  # type: ignore[arg-type]
    head = "| inputs | method | " + " | ".join(f"{a:g}° single / round trip / blur" for a in angles) + " |"
    lines = [head, "|" + "---|" * (2 + len(angles))]
    keys = list(dict.fromkeys((r["inputs"], r["method"]) for r in rows))

    def fmt(v: object) -> str:
        return "–" if v is None else f"{float(v):.1e}"  # type: ignore[arg-type]

    for kind, method in keys:
        cells = []
        for a in angles:
            r = next(r for r in rows if r["inputs"] == kind and r["method"] == method and r["angle"] == a)
            cells.append(" / ".join(fmt(r[k]) for k in ("single", "roundtrip", "blur")))
        lines.append(f"| {kind} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per input kind (default 32)")
    args = parser.parse_args(argv)
    print(markdown(floors(args.images)))


if __name__ == "__main__":
    main()
