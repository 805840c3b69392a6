"""Equivariance protocol: error at continuous angles and reflections, invariance, LEE, and the floor.

For every exposed feature f of a model and every group element g = (angle, reflect) of the sweep:
- maps:    ||f(g.x) - rho_out(g) g.f(x)|| / ||g.f(x)|| inside a disk  -> metric ``equivariance_error``
- vectors: ||f(g.x) - f(x)|| / ||f(x)||                               -> metric ``invariance_error``
- logits:  top-1 of f(g.x) equals top-1 of f(x)                        -> metric ``prediction_agreement``
rho_out comes from the model's symmetry contract (bench.fields). Regular fields at angles outside their group
are measured after group pooling (feature name suffixed ``:gpool``). Every curve comes with the floor that the
rotation alone causes (``interpolation_floor`` rows: round trip and an isotropic Gaussian blur).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench import equivariance_metrics as em
from bench.contract import FieldSpec, SymmetryContract, contract_of, exposed_features
from bench.errors import UsageError
from bench.fields import apply_rho, group_pool, in_group
from bench.jobs import Job, RunContext
from bench.models import create_model, model_info
from bench.rotation import bandlimited_images, check_method, disk_mask, parse_angles, rotate_many

DEFAULTS: dict[str, Any] = {
    "angles": "0:360:5,22.5",   # degrees: inclusive ranges and points, see bench.rotation.parse_angles
    "reflections": True,        # also measure the horizontal flip composed with every angle
    "rotation": "bicubic",      # nearest | bilinear | bicubic | fourier
    "inputs": "bandlimited",    # bandlimited | dataset (upright test images of the job's dataset)
    "num_images": 16,
    "size": 33,                 # input side when no dataset fixes it (odd keeps the centre on a pixel)
    "layer_channels": 8,        # input channels for layer-level models
    "cutoff": 0.1,              # band-limit of random inputs, cycles/pixel (std of a Gaussian spectrum)
    "lie_derivative": True,
    "floor": True,
    "blur_sigma": 1.5,          # pixels, for the Gaussian-blur floor
    "weights": ["init", "trained"],  # trained = the accuracy protocol's checkpoint, when present
    "per_layer": True,          # per-layer attribution for models exposing a sequential body
    "attribution_angle": 45.0,
    "chunk": 512,               # images per forward pass
    "model_kwargs": {},         # extra factory kwargs; default: those of the trained checkpoint, if any
}
WEIGHTS = ("init", "trained")
INPUTS = ("bandlimited", "dataset")


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with the profile's table; unknown keys and bad values raise UsageError."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise UsageError(f"unknown equivariance setting(s) {sorted(unknown)}; valid: {', '.join(sorted(DEFAULTS))}")
    out = {**DEFAULTS, **settings}
    out["angles"] = parse_angles(out["angles"])
    if not out["angles"]:
        raise UsageError("angles selects no angle")
    check_method(out["rotation"])
    if out["inputs"] not in INPUTS:
        raise UsageError(f"inputs must be one of {', '.join(INPUTS)}, got {out['inputs']!r}")
    weights = [out["weights"]] if isinstance(out["weights"], str) else list(out["weights"])
    if not weights or any(w not in WEIGHTS for w in weights):
        raise UsageError(f"weights must be a subset of {', '.join(WEIGHTS)}, got {out['weights']!r}")
    out["weights"] = weights
    if not isinstance(out["model_kwargs"], dict):
        raise UsageError(f"model_kwargs must be a table of factory keyword arguments, got {out['model_kwargs']!r}")
    for key in ("num_images", "size", "layer_channels", "chunk"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise UsageError(f"{key} must be a positive integer, got {out[key]!r}")
    if not 0 < float(out["cutoff"]) <= 0.5:
        raise UsageError(f"cutoff must be in (0, 0.5] cycles/pixel, got {out['cutoff']!r}")
    if float(out["blur_sigma"]) <= 0:
        raise UsageError(f"blur_sigma must be > 0, got {out['blur_sigma']!r}")
    return out


# --------------------------------------------------------------------------------------------------------
# inputs and models
# --------------------------------------------------------------------------------------------------------
def geometry(job: Job, s: dict[str, Any]) -> tuple[int, int, int]:
    """(in_channels, num_classes, size) of the job: from its dataset for networks, from settings otherwise."""
    if job.dataset is not None:
        from bench.datasets import dataset_info

        info = dataset_info(job.dataset)
        if info.num_classes is None or info.image_size is None:
            raise UsageError(f"dataset {job.dataset!r} fixes its classes/size only from the data; run the "
                             "accuracy protocol on it or use band-limited inputs")
        return info.in_channels, info.num_classes, info.image_size
    level = model_info(job.model).get("level")
    channels = s["layer_channels"] if level == "layer" else 1
    return channels, 10, s["size"]


def make_inputs(job: Job, ctx: RunContext, s: dict[str, Any], channels: int, size: int) -> torch.Tensor:
    """Seeded inputs confined to the rotation-safe disk."""
    if s["inputs"] == "dataset":
        if job.dataset is None:
            raise UsageError("inputs='dataset' needs a dataset (layer-level models use band-limited inputs)")
        from bench.datasets import create_dataset

        data = create_dataset(job.dataset, "test", data_dir=ctx.data_dir, download=ctx.download)
        gen = torch.Generator().manual_seed(job.seed)
        idx = torch.randperm(len(data), generator=gen)[: s["num_images"]].tolist()
        x = torch.stack([data[i][0] for i in idx]).to(ctx.dtype)
        x = x * disk_mask(size, device=x.device).to(x.dtype)
    else:
        x = bandlimited_images(s["num_images"], channels, size, cutoff=float(s["cutoff"]), seed=job.seed,
                               dtype=ctx.dtype)
    return x.to(ctx.device)


# --------------------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------------------
Features = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def batched_features(model: torch.nn.Module, x: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """exposed_features over a large batch in chunks (many angles x images in few forward passes)."""
    parts: list[dict[str, torch.Tensor]] = []
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            parts.append(exposed_features(model, x[i:i + chunk]))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _feature_views(name: str, spec: FieldSpec, angle: float, reflect: bool) -> list[tuple[str, FieldSpec, bool]]:
    """(row feature name, spec to use, pool first?) for one feature at one element."""
    if spec.kind in ("regular", "irreps"):
        views = [(f"{name}:gpool", FieldSpec("scalar"), True)]
        if in_group(spec, angle, reflect):
            views.insert(0, (name, spec, False))
        return views
    return [(name, spec, False)]


def element_rows(contract: SymmetryContract, f0: dict[str, torch.Tensor], fg: dict[str, torch.Tensor],
                 angles: Sequence[float], reflect: bool, method: str) -> list[dict[str, Any]]:
    """Rows for every feature at every angle of one reflection branch. fg[k] has shape (A*N, ...)."""
    rows: list[dict[str, Any]] = []
    n = next(iter(f0.values())).shape[0]
    for name, ref in f0.items():
        spec = contract.features.get(name, FieldSpec("invariant" if ref.dim() == 2 else "scalar"))
        got = fg[name].reshape(len(angles), n, *ref.shape[1:])
        if not spec.spatial:
            errs = em.masked_relative_error(got, ref.expand_as(got)).mean(dim=-1)
            for a, e in zip(angles, errs.tolist()):
                rows.append(_row("invariance_error", e, a, reflect, name, contract))
            if name == "logits":
                agree = (got.argmax(-1) == ref.argmax(-1)).to(torch.float64).mean(dim=-1)
                for a, v in zip(angles, agree.tolist()):
                    rows.append(_row("prediction_agreement", v, a, reflect, name, contract, unit="fraction"))
            continue
        target_maps = rotate_many(ref, angles, method, reflect)  # (A, N, C, H, W)
        mask = em.map_mask(ref)
        for i, a in enumerate(angles):
            for row_name, view_spec, pool in _feature_views(name, spec, a, reflect):
                if pool:
                    pred, target = group_pool(spec, got[i]), group_pool(spec, target_maps[i])
                else:
                    pred, target = got[i], apply_rho(view_spec, target_maps[i], a, reflect)
                err = em.masked_relative_error(pred, target, mask).mean().item()
                rows.append(_row("equivariance_error", err, a, reflect, row_name, contract))
    return rows


def _row(metric: str, value: float, angle: float | None, reflect: bool, feature: str,
         contract: SymmetryContract, unit: str = "relative") -> dict[str, Any]:
    row = {"metric": metric, "value": float(value), "unit": unit, "angle_deg": angle,
           "reflect": "h" if reflect else "none", "feature": feature}
    if angle is not None:
        row["claimed"] = contract.claims(angle, reflect)
    return row


def floor_rows(x: torch.Tensor, angles: Sequence[float], method: str, sigma: float) -> list[dict[str, Any]]:
    """What the rotation alone costs at each angle (flips are exact, so one set serves both branches)."""
    rows = []
    for kind, values in (("roundtrip", em.roundtrip_floor(x, angles, method)),
                         ("blur", em.blur_floor(x, angles, method, sigma))):
        for a, v in zip(angles, values.tolist()):
            rows.append({"metric": "interpolation_floor", "value": v, "unit": "relative", "angle_deg": a,
                         "reflect": "none", "feature": "input", "floor_kind": kind})
    return rows


def feature_floor_rows(contract: SymmetryContract, f0: dict[str, torch.Tensor], angles: Sequence[float],
                       method: str) -> list[dict[str, Any]]:
    """Round-trip floor of each exposed map at its own resolution: small late maps interpolate far worse than
    the input, so their errors must be read against this, not against the input's floor."""
    rows = []
    for name, ref in f0.items():
        if ref.dim() != 4:
            continue
        spec = contract.features.get(name, FieldSpec("scalar"))
        values = em.roundtrip_floor(ref, angles, method).tolist()
        labels = [name] if spec.kind == "scalar" else [name, f"{name}:gpool"]  # fibre permutations are exact
        for label in labels:
            rows += [{"metric": "interpolation_floor", "value": v, "unit": "relative", "angle_deg": a,
                      "reflect": "none", "feature": label, "floor_kind": "roundtrip"} for a, v in zip(angles, values)]
    return rows


def lie_rows(model: torch.nn.Module, contract: SymmetryContract, x: torch.Tensor, method: str) -> list[dict[str, Any]]:
    """LEE on logits (Gruver et al.) and the relative Lie derivative of each exposed map (pooled to scalars)."""
    rows = []
    with torch.no_grad():
        names = exposed_features(model, x[:1])
    for name, sample in names.items():
        spec = contract.features.get(name, FieldSpec("invariant" if sample.dim() == 2 else "scalar"))
        if name == "logits":
            value = em.lie_derivative_logits(lambda inp: exposed_features(model, inp)["logits"], x, method)
            rows.append({"metric": "lie_derivative", "value": value.mean().item(), "unit": "1/rad",
                         "feature": name, "reflect": "none"})
        elif spec.spatial:
            def pooled_map(inp: torch.Tensor, n: str = name, sp: FieldSpec = spec) -> torch.Tensor:
                return group_pool(sp, exposed_features(model, inp)[n])

            value = em.lie_derivative_map(pooled_map, x, method)
            label = name if spec.kind == "scalar" else f"{name}:gpool"
            rows.append({"metric": "lie_derivative", "value": value.mean().item(), "unit": "relative/rad",
                         "feature": label, "reflect": "none"})
    return rows


def sequential_body(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]] | None:
    """The plain-tensor sequential stages of a model with scalar features, if it exposes them as `.body`."""
    body = getattr(model, "body", None)
    contract = contract_of(model)
    feat = contract.features.get("features") or contract.features.get("out")
    if not isinstance(body, torch.nn.Sequential) or feat is None or feat.kind != "scalar":
        return None
    return list(body.named_children())


def attribution_rows(model: torch.nn.Module, x: torch.Tensor, angle: float, method: str) -> list[dict[str, Any]]:
    """Error each stage adds on its own: stage i fed g.h_{i-1} vs g applied to its output, scalar maps only."""
    stages = sequential_body(model)
    if not stages:
        return []
    rows = []
    h = getattr(model, "stem", torch.nn.Identity())(x) if hasattr(model, "stem") else x
    with torch.no_grad():
        for name, stage in stages:
            out = stage(h)
            if out.dim() != 4:
                break
            lhs = stage(rotate_many(h, [angle], method)[0])
            rhs = rotate_many(out, [angle], method)[0]
            err = em.masked_relative_error(lhs, rhs, em.map_mask(out)).mean().item()
            rows.append({"metric": "equivariance_error", "value": err, "unit": "relative", "angle_deg": angle,
                         "reflect": "none", "feature": "stage",
                         "layer": f"{name}:{type(stage).__name__}"})
            h = out
    return rows


def measure(model: torch.nn.Module, x: torch.Tensor, s: dict[str, Any]) -> list[dict[str, Any]]:
    """All rows of one model state on inputs x (everything except the weights/rotation labels)."""
    contract = contract_of(model)
    angles, method = s["angles"], s["rotation"]
    f0 = batched_features(model, x, s["chunk"])
    rows: list[dict[str, Any]] = []
    for reflect in ([False, True] if s["reflections"] else [False]):
        rotated = rotate_many(x, angles, method, reflect).flatten(0, 1)
        fg = batched_features(model, rotated, s["chunk"])
        rows += element_rows(contract, f0, fg, angles, reflect, method)
    if s["floor"]:
        rows += feature_floor_rows(contract, f0, angles, method)
    if s["lie_derivative"]:
        rows += lie_rows(model, contract, x, method)
    if s["per_layer"]:
        rows += attribution_rows(model, x[:16], float(s["attribution_angle"]), method)  # a diagnostic: few images suffice
    return rows


def run(job: Job, ctx: RunContext) -> list[dict[str, Any]]:
    from bench.training import load_trained, read_checkpoint

    s = validate_settings(job.settings)
    channels, classes, size = geometry(job, s)
    x = make_inputs(job, ctx, s, channels, size)
    path = ctx.checkpoint_path(job.model, job.dataset, job.seed) if job.dataset else None
    checkpoint = path if path is not None and path.exists() and "trained" in s["weights"] else None
    # init weights of the same architecture the accuracy protocol trained, unless told otherwise
    kwargs = s["model_kwargs"] or (dict(read_checkpoint(checkpoint).get("model_kwargs") or {}) if checkpoint else {})
    rows: list[dict[str, Any]] = []
    for weights in s["weights"]:
        if weights == "init":
            torch.manual_seed(job.seed)
            model = create_model(job.model, in_channels=channels, num_classes=classes, **kwargs)
        elif checkpoint is not None:
            model = load_trained(job.model, checkpoint, channels, classes, **s["model_kwargs"])
        else:
            continue
        model = model.to(device=ctx.device, dtype=ctx.dtype).eval()
        rows += [{**r, "weights": weights} for r in measure(model, x, s)]
    if s["floor"]:
        rows += [{**r, "weights": "none"} for r in floor_rows(x, s["angles"], s["rotation"], float(s["blur_sigma"]))]
    return [{**r, "rotation": s["rotation"], "inputs": s["inputs"]} for r in rows]
