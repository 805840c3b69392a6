"""CPU peak-memory probe, run in a fresh process by `bench.cost.memory.probe_cpu_subprocess`.

    python -m bench.cost.memprobe --spec '{"model": "layer_conv2d", "mode": "train", "batch": 8, ...}'
    python -m bench.cost.memprobe --calibrate [--mb 200]

Prints one line ``MEMPROBE_RESULT {json}`` (a `MemoryResult`). ``--calibrate`` measures a model whose forward
allocates a known-size tensor and prints measured vs expected MiB (a self-check for a new machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from bench.cost.memory import RESULT_MARKER, MemoryResult, ProbeSpec, RssMonitor, cpu_step_memory_in_process


def _emit(result: MemoryResult) -> None:
    sys.stdout.write(RESULT_MARKER + json.dumps(result.as_dict()) + "\n")
    sys.stdout.flush()


def run_probe(spec: ProbeSpec) -> None:
    """Build the model once, then measure each mode of `spec`, emitting one result line per mode."""
    import torch

    from bench.cost.steps import is_oom, make_input, make_step, parse_dtype
    from bench.models import create_model

    torch.set_num_threads(max(1, int(spec.threads)))
    torch.manual_seed(spec.seed)
    pending = list(spec.modes)

    def on_exceed(rss_mb: float) -> None:
        msg = f"probe RSS {rss_mb:.0f} MiB exceeded max_memory_mb={spec.max_memory_mb:g}"
        for mode in pending:
            _emit(MemoryResult(status="oom", mode=mode, peak_mb=rss_mb, message=msg))
        os._exit(0)

    monitor = RssMonitor(limit_mb=spec.max_memory_mb, on_exceed=on_exceed)
    monitor.start()
    try:
        dtype = parse_dtype(spec.dtype)
        try:
            model = create_model(spec.model, spec.in_channels, spec.num_classes, **spec.model_kwargs).to(dtype=dtype)
            x = make_input(spec.batch, spec.in_channels, spec.resolution, dtype=dtype, seed=spec.seed)
        except Exception as exc:  # noqa: BLE001
            if not is_oom(exc):
                raise
            for mode in list(pending):
                _emit(MemoryResult(status="oom", mode=mode, message=f"during setup: {exc}"[:500]))
            return
        while pending:
            mode = pending[0]
            step = None
            try:
                step = make_step(model, x, mode)
                result = cpu_step_memory_in_process(step, warmup=spec.warmup, mode=mode, monitor=monitor)
            except Exception as exc:  # noqa: BLE001 - reported per mode
                traceback.print_exc()
                result = MemoryResult(status="error", mode=mode, message=f"{type(exc).__name__}: {exc}"[:800])
            del step
            _emit(result)
            pending.pop(0)
    finally:
        monitor.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost.memprobe", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="ProbeSpec as JSON")
    parser.add_argument("--calibrate", action="store_true", help="measure a known allocation and compare")
    parser.add_argument("--mb", type=float, default=200.0, help="size of the calibration allocation (MiB)")
    args = parser.parse_args(argv)
    if args.calibrate:
        from bench.cost.memory import probe_cpu_subprocess

        spec = ProbeSpec(model="bench.cost.calibration:alloc_model", modes=["eval"], model_kwargs={"mb": args.mb})
        res = probe_cpu_subprocess(spec)["eval"]
        print(json.dumps(res.as_dict(), indent=1))
        if res.status != "ok" or res.step_mb is None:
            return 1
        err = abs(res.step_mb - args.mb) / args.mb
        print(f"expected {args.mb:.1f} MiB, measured {res.step_mb:.1f} MiB ({err:.1%} off)")
        return 0 if err < 0.10 else 1
    if not args.spec:
        parser.error("--spec or --calibrate is required")
    spec = ProbeSpec(**json.loads(args.spec))
    run_probe(spec)  # an exception here (e.g. the build fails) exits non-zero; the parent reports stderr
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
