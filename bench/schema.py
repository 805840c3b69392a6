"""The one schema of the suite: column names, row types, statuses, run-folder files and the shared rules.

Every other module imports its names from here, so a column, a file or a rule ("is this angle on the pixel
grid?", "is this model a layer?") has exactly one definition.

Rows are typed: each protocol declares a `TypedDict` of the columns it may write (`EquivarianceRow`,
`AccuracyRow`, `EfficiencyRow`, ...); the runner checks every row against its type (`check_rows`), so a
misspelled column fails the job (and its test) instead of silently creating a new column in a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Required, TypedDict, get_type_hints

# -- run folder ---------------------------------------------------------------------------------------------
RESULTS_FILE = "results.jsonl"      # the append-only store, one JSON line per finished job
RESULTS_CSV = "results.csv"         # every row of the store, tidy long format, plus one row per unfinished job
TABLES_DIR = "tables"               # one CSV per summary table (the numbers the report shows, unrounded)
ENV_FILE = "environment.json"
PROFILE_FILE = "profile.json"
REPORT_FILE = "report.html"
LOCK_FILE = ".equibench.lock"
CHECKPOINT_DIR = "checkpoints"
SUBMITIT_DIR = "submitit"

# -- job statuses ---------------------------------------------------------------------------------------------
OK = "ok"
SKIPPED = "skipped"                 # a prerequisite job did not finish ok
STATUSES = ("ok", "oom", "nan", "timeout", "error", "skipped")

# -- columns --------------------------------------------------------------------------------------------------
MODEL, PROTOCOL, DATASET, METRIC, VALUE, UNIT = "model", "protocol", "dataset", "metric", "value", "unit"
ANGLE, REFLECT, MODE, SEED, DEVICE, DTYPE = "angle_deg", "reflect", "mode", "seed", "device", "dtype"
STATUS, MESSAGE, JOB_ID = "status", "message", "job_id"
# Columns every row of results.csv has, in this order (protocol-specific columns follow, sorted).
COLUMNS = [MODEL, PROTOCOL, DATASET, METRIC, VALUE, UNIT, ANGLE, REFLECT, MODE, SEED, DEVICE, DTYPE, STATUS,
           MESSAGE, JOB_ID]


class Row(TypedDict, total=False):
    """Columns any protocol may write."""

    metric: Required[str]
    value: Required[float | int | None]
    unit: Required[str]
    angle_deg: float | None
    reflect: str
    mode: str | None
    status: str        # a row may carry its own status (e.g. an out-of-memory sweep point inside an ok job)
    message: str


class EquivarianceRow(Row, total=False):
    feature: str       # exposed feature (logits, features, out, ...; ':gpool' = after group pooling)
    claimed: bool      # the model claims exact equivariance at this element
    weights: str       # init | trained | none (floor rows)
    checkpoint: str    # trained weights: the checkpoint file they came from
    rotation: str      # interpolation method of the finite rotations
    inputs: str        # bandlimited | dataset
    floor_kind: str    # interpolation_floor rows: roundtrip | blur
    stage: str         # per-stage attribution: '<name>:<module type>'
    stage_index: int   # execution order of the stage


class AccuracyRow(Row, total=False):
    condition: str     # upright | rotation (training augmentation)
    rotation: str
    mask: bool
    summary: str       # upright | mean | worst | flip_h | flip_v
    checkpoint: str
    group: str         # invariant_ceiling rows: SO2 | O2


class DataEfficiencyRow(Row, total=False):
    per_class: int       # training examples per class (nested, class-balanced subset)
    train_examples: int  # per_class x classes
    summary: str         # upright | mean | worst (accuracy over the evaluated angles)
    rotation: str
    mask: bool
    target_pct: float    # examples_needed rows: the target accuracy (%)


class EfficiencyRow(Row, total=False):
    stat: str          # latency: median | iqr
    runs: int
    memory: str        # peak memory: step | peak | reserved
    memory_method: str
    batch: int
    resolution: int
    kernel_size: int | None
    channels: int | None
    threads: int
    sweep: str         # base | the swept axis


class SchemaError(TypeError):
    """A protocol wrote a row that does not fit its declared row type (a bug in the protocol)."""


def row_columns(row_type: type) -> frozenset[str]:
    return frozenset(get_type_hints(row_type))


def check_rows(row_type: type, rows: Iterable[Mapping[str, Any]], where: str = "") -> None:
    """Raise SchemaError for a row with a column its type does not declare, or without a required one."""
    allowed = row_columns(row_type)
    required = row_type.__required_keys__  # type: ignore[attr-defined]
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise SchemaError(f"{where}row has undeclared column(s) {sorted(unknown)}; {row_type.__name__} "
                              f"declares: {', '.join(sorted(allowed))}")
        missing = required - set(row)
        if missing:
            raise SchemaError(f"{where}row lacks required column(s) {sorted(missing)}")


# -- shared rules ---------------------------------------------------------------------------------------------
GRID_STEP = 90.0
_ANGLE_TOL = 1e-6


def is_grid_angle(angle_deg: float) -> bool:
    """A multiple of 90°: an exact pixel permutation, so no interpolation enters the measurement there.

    Summaries "over non-grid angles" exclude exactly these (and, for that reason, 0° and 360°)."""
    r = float(angle_deg) % GRID_STEP
    return r < _ANGLE_TOL or GRID_STEP - r < _ANGLE_TOL




LEVELS = ("layer", "network")
REFERENCE_MODELS = {"layer": "layer_conv2d", "network": "cnn"}  # the plain baseline every ratio divides by


def model_level(name: str) -> str:
    """'layer' or 'network' from the model registry (plugins 'pkg.mod:fn' are networks)."""
    from bench.models import model_info

    level = model_info(name).get("level", "network")
    if level not in LEVELS:
        raise ValueError(f"model {name!r} declares level {level!r}; valid: {', '.join(LEVELS)}")
    return str(level)


def reference_model(name: str) -> str:
    """The plain baseline a model's costs are divided by: `layer_conv2d` for layers, `cnn` for networks."""
    return REFERENCE_MODELS[model_level(name)]


def model_family(name: str) -> str:
    """Registry family (plain, gmr, group, steerable; 'plugin' for 'pkg.mod:fn')."""
    from bench.models import model_info

    return str(model_info(name).get("family", "plugin"))
