"""Cost-measurement helpers shared by the efficiency protocol and the pytest-benchmark suite.

- `bench.cost.steps`: the measured callables (eval forward, train step) and their inputs.
- `bench.cost.flops`: FLOP counting with `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per multiply-add)
  and the analytic formulas for a dense conv and GMR-Conv's two-stage path.
- `bench.cost.timing`: warm-up + `torch.utils.benchmark.Timer.blocked_autorange` at a fixed thread count
  (median and IQR).
- `bench.cost.memory`: peak memory (CUDA allocator stats in-process; CPU peak RSS in a fresh subprocess,
  `python -m bench.cost.memprobe`).
- `bench.cost.ratios`: `ratio_table(df)`, costs relative to the plain reference measured in the same run.
- `bench.cost.calibration`: tiny models with known costs (a known allocation, a simulated OOM) used by the
  tests and by `python -m bench.cost.memprobe --calibrate`.

See docs/perf.md for definitions.
"""
