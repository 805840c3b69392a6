"""Compare two run folders number by number: did a change alter a model's equivariance, accuracy or cost?

Every numeric cell of the summary tables (``tables/*.csv``: the headline first, then each protocol's tables) of
run A is matched with the cell of run B that has the same table, key columns and column, and gets a verdict,
the first of these that applies:

``identical``
    ``|a - b| <= ROUNDOFF_ULPS * eps * max(|a|, |b|)`` where eps is the machine epsilon of the runs' dtype
    (float32: 2**-23, float64: 2**-52): the two numbers are the same up to the rounding of the last floating
    point operation and the order of the float64 sums that aggregate them. The same code, seeds and profile on
    the same machine give bit-identical tables, so anything larger means the arithmetic changed. Two empty
    cells are identical; a cell empty in one run only is ``changed``.
``within tolerance``
    ``|a - b|`` within the cell's tolerance: ``--tolerance`` (relative ``NAME=20%``, absolute ``NAME=0.5`` in
    the column's unit) or, by default, ``TIMING_TOLERANCE`` relative for timings (latency, build time) and
    ``MEMORY_TOLERANCE`` for measured peak memory, which are never reproducible run to run (docs/perf.md).
``within spread``
    the runs have different seeds, both at least two, and the difference is explained by the seed-to-seed
    spread: Welch's t-test of the two cells (each cell's standard deviation across seeds from the tables
    recomputed per seed, its value from the table) is not significant after the Benjamini-Hochberg correction
    over all cells tested this way, at false discovery rate ``SPREAD_FDR``. Welch because the two runs' spreads
    need not be equal; the correction because a run has hundreds of cells, so uncorrected 5 % tests would flag
    some cell of every pair of seed sets.
``changed``
    anything else (exit code 1).

Runs are comparable when their profiles agree on everything that shapes a number (`comparable_settings`):
models, datasets and protocols, every protocol setting after validation (defaults filled in), device, dtype and
threads. Seeds may differ; the profile's name, description, source file, timeout, executor and Slurm settings
do not enter. Columns that describe a sample rather than a model (``std``, ``*_std``, ``n_seeds``, IQRs,
``reference_value``) and the bookkeeping tables (``jobs``, ``run_status``, ``failures``) are not compared.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import UsageError
from bench.results import ResultsStore
from bench.schema import ENV_FILE, PROFILE_FILE, RESULTS_FILE, SEED, TABLES_DIR

IDENTICAL, TOLERANCE, SPREAD, CHANGED = "identical", "within tolerance", "within spread", "changed"
VERDICTS = (IDENTICAL, TOLERANCE, SPREAD, CHANGED)
ROUNDOFF_ULPS = 4
SPREAD_FDR = 0.05
TIMING_PATTERNS = ("latency*", "*_ms", "*_ms_ratio", "build_s*", "*time_s")
MEMORY_PATTERNS = ("peak_memory*", "memory_ratio")
TIMING_TOLERANCE = 0.5   # relative: single timings drift +-20 % on a quiet machine and several-fold under load
MEMORY_TOLERANCE = 0.1   # relative: CPU peak memory is a peak RSS, a few % from run to run
SKIP_TABLES = frozenset({"jobs", "run_status", "failures"})
SKIP_COLUMNS = frozenset({"std", "std_pct", "n_seeds", "reference_value"})
KEY_NUMERIC = frozenset({"angle_deg", "batch", "resolution", "kernel_size", "channels", "threads", "stage_index"})
IGNORED_PROFILE_KEYS = ("name", "description", "source", "seeds", "timeout_s", "executor", "slurm")
JSON_SCHEMA = "equibench.compare/1"


# -- runs ---------------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One run folder as compare reads it."""

    path: Path
    profile: dict[str, Any]
    environment: dict[str, Any]
    tables: dict[str, pd.DataFrame]

    @property
    def seeds(self) -> list[int]:
        return [int(s) for s in self.profile.get("seeds") or []]

    @property
    def dtype(self) -> str:
        return str(self.environment.get("dtype") or self.profile.get("dtype") or "float32")

    @property
    def store(self) -> ResultsStore:
        return ResultsStore(self.path)


def load_run(path: str | Path, label: str = "run") -> Run:
    """The run folder at `path` (UsageError when it is missing or not a run folder)."""
    from bench.tables import build_tables, read_tables

    folder = Path(path)
    if not folder.exists():
        raise UsageError(f"{label} {folder} does not exist; pass the --out folder of an equibench run")
    if not folder.is_dir():
        raise UsageError(f"{label} {folder} is a file, not a run folder; pass the --out folder of an equibench run")
    has_results, has_tables = (folder / RESULTS_FILE).is_file(), (folder / TABLES_DIR).is_dir()
    if not (folder / PROFILE_FILE).is_file() or not (has_results or has_tables):
        raise UsageError(f"{label} {folder} is not a run folder (it needs {PROFILE_FILE} and {RESULTS_FILE} or "
                         f"{TABLES_DIR}/); pass the --out folder of an equibench run")
    profile = _read_json(folder / PROFILE_FILE, label)
    environment = _read_json(folder / ENV_FILE, label) if (folder / ENV_FILE).is_file() else {}
    tables = read_tables(folder) if has_tables else build_tables(ResultsStore(folder))
    return Run(folder, profile, environment, tables)


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{label}: cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{label}: {path} does not hold a JSON object")
    return data


def comparable_settings(profile: Mapping[str, Any], environment: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything in a run's profile that shapes its numbers, flattened to ``key -> value``.

    Protocol settings are validated (defaults filled in), so ``epochs = 10`` written out and left to its default
    compare equal; device and threads come from environment.json (what actually ran) when present."""
    from bench.protocols import PROTOCOLS, get_protocol
    from bench.settings import as_dict

    env = environment or {}
    out: dict[str, Any] = {
        "protocols": list(profile.get("protocols") or []),
        "datasets": list(profile.get("datasets") or []),
        "device": env.get("device", profile.get("device")),
        "dtype": env.get("dtype", profile.get("dtype")),
        "threads": env.get("threads", profile.get("threads")),
    }
    tables = profile.get("settings") or {}
    for name in out["protocols"]:
        table = dict(tables.get(name) or {})
        out[f"{name}.models"] = list(table.pop("models", profile.get("models") or []))
        settings: Mapping[str, Any] = table
        if name in PROTOCOLS:
            try:
                settings = as_dict(get_protocol(name).settings(table))
            except UsageError:
                settings = table  # settings this version no longer accepts: compare them as written
        out.update({f"{name}.{k}": v for k, v in settings.items()})
    return out


def profile_differences(a: Run, b: Run) -> list[str]:
    """``key: A vs B`` for every setting that shapes the numbers and differs (empty: comparable)."""
    sa, sb = comparable_settings(a.profile, a.environment), comparable_settings(b.profile, b.environment)
    missing = object()
    return [f"{k}: {_show(sa.get(k, missing))} vs {_show(sb.get(k, missing))}"
            for k in sorted(set(sa) | set(sb)) if sa.get(k, missing) != sb.get(k, missing)]


def _show(value: Any) -> str:
    return "(not set)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else json.dumps(value)


# -- tolerances ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    pattern: str
    value: float
    relative: bool
    source: str = "--tolerance"   # or "default (timing)" / "default (memory)"

    def allows(self, a: float, b: float) -> bool:
        bound = self.value * abs(a) if self.relative else self.value
        return abs(b - a) <= bound

    def describe(self) -> str:
        return f"{self.value:.0%}" if self.relative and self.value >= 0.01 else \
            (f"{self.value:g} relative" if self.relative else f"±{self.value:g}")


def parse_tolerance(text: str) -> Tolerance:
    """``NAME=20%`` (relative) or ``NAME=0.5`` (absolute, in the column's unit); NAME may be a glob."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise UsageError(f"--tolerance expects NAME=VALUE (e.g. latency_ms=20% or acc_mean_pct=0.5), got {text!r}")
    relative = value.endswith("%")
    try:
        number = float(value[:-1] if relative else value)
    except ValueError:
        raise UsageError(f"--tolerance {text!r}: {value!r} is not a number or a percentage") from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"--tolerance {text!r}: the tolerance must be a finite number >= 0")
    return Tolerance(name, number / 100 if relative else number, relative)


def default_tolerances() -> list[Tolerance]:
    return ([Tolerance(p, TIMING_TOLERANCE, True, "default (timing)") for p in TIMING_PATTERNS]
            + [Tolerance(p, MEMORY_TOLERANCE, True, "default (memory)") for p in MEMORY_PATTERNS])


# -- cells --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellKey:
    table: str
    keys: tuple[tuple[str, str], ...]   # (column, canonical value) of the row's key columns
    column: str

    @property
    def model(self) -> str:
        return dict(self.keys).get("model", "")

    @property
    def metric(self) -> str:
        """The row's ``metric`` key when the table has one (long tables), else the column."""
        return dict(self.keys).get("metric") or self.column

    def names(self) -> tuple[str, ...]:
        """What a tolerance pattern is matched against."""
        return (self.column, self.metric, f"{self.table}.{self.column}")

    def where(self, only: set[str] | None = None) -> str:
        """The row's key columns other than the model (those in `only`, when given)."""
        return " ".join(f"{k}={v}" for k, v in self.keys
                        if k != "model" and v != "" and (only is None or k in only))


def _canonical(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _skipped(column: str) -> bool:
    return column in SKIP_COLUMNS or column.endswith("_std") or "iqr" in column


def key_columns(tables: Iterable[Mapping[str, pd.DataFrame]], name: str) -> list[str]:
    """Columns of table `name` that identify a row: non-numeric in any run, or a known numeric key."""
    keys: dict[str, None] = {}
    for t in tables:
        df = t.get(name)
        if df is None:
            continue
        for col in df.columns:
            if col in KEY_NUMERIC or not pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col]):
                keys[col] = None
    return list(keys)


def table_cells(df: pd.DataFrame, name: str, keys: Sequence[str]) -> dict[CellKey, float | None]:
    """Every comparable numeric cell of one table (None = empty)."""
    out: dict[CellKey, float | None] = {}
    values = [c for c in df.columns if c not in keys and not _skipped(c)]
    stat = "stat" in df.columns
    for row in df.to_dict("records"):
        if stat and row.get("stat") == "iqr":
            continue
        key = tuple((k, _canonical(row.get(k))) for k in keys)
        for col in values:
            v = pd.to_numeric(pd.Series([row.get(col)]), errors="coerce").iloc[0]
            out[CellKey(name, key, col)] = None if pd.isna(v) else float(v)
    return out


def cells(tables: Mapping[str, pd.DataFrame], keys: Mapping[str, Sequence[str]]) -> dict[CellKey, float | None]:
    out: dict[CellKey, float | None] = {}
    for name, df in tables.items():
        if name not in SKIP_TABLES:
            out.update(table_cells(df, name, keys[name]))
    return out


class _SeedView:
    """The part of a results store that one seed wrote (what `bench.tables.build_tables` reads)."""

    def __init__(self, store: ResultsStore, seed: int) -> None:
        self.store, self.seed = store, seed

    def frame(self) -> pd.DataFrame:
        f = self.store.frame()
        return f[pd.to_numeric(f[SEED], errors="coerce") == self.seed].reset_index(drop=True)

    def latest(self) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.store.latest().items() if (r.get("job") or {}).get("seed") == self.seed}


def per_seed_cells(run: Run, keys: Mapping[str, Sequence[str]]) -> dict[CellKey, list[float]]:
    """cell -> its values computed from each seed's results alone (the tables recomputed per seed)."""
    from bench.tables import build_tables

    out: dict[CellKey, list[float]] = {}
    for seed in run.seeds:
        tables = build_tables(_SeedView(run.store, seed))  # type: ignore[arg-type]
        tables = {n: t for n, t in tables.items() if n in keys}
        for k, v in cells(tables, keys).items():
            if v is not None:
                out.setdefault(k, []).append(v)
    return out


# -- comparison ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    key: CellKey
    a: float | None
    b: float | None
    verdict: str = CHANGED
    rule: str = ""
    p_adjusted: float | None = None

    @property
    def diff(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def rel_diff(self) -> float | None:
        d = self.diff
        return None if d is None or not self.a else d / abs(self.a)

    def as_json(self) -> dict[str, Any]:
        return {"table": self.key.table, "model": self.key.model or None,
                "keys": {k: v for k, v in self.key.keys if v != ""}, "column": self.key.column,
                "metric": self.key.metric, "a": _finite(self.a), "b": _finite(self.b), "diff": _finite(self.diff),
                "rel_diff": _finite(self.rel_diff), "verdict": self.verdict, "rule": self.rule,
                "p_adjusted": _finite(self.p_adjusted)}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass
class Comparison:
    a: Run
    b: Run
    rows: list[Row]
    roundoff_rtol: float
    spread_tested: bool
    tolerances: list[Tolerance] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}

    @property
    def changed(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == CHANGED]

    @property
    def exit_code(self) -> int:
        return 1 if self.changed else 0

    def as_json(self) -> dict[str, Any]:
        def run(r: Run) -> dict[str, Any]:
            return {"path": str(r.path), "profile": r.profile.get("name"), "seeds": r.seeds, "dtype": r.dtype,
                    "revision": r.environment.get("equibench_revision")}

        return {"schema": JSON_SCHEMA, "run_a": run(self.a), "run_b": run(self.b),
                "rules": {"roundoff": {"ulps": ROUNDOFF_ULPS, "rtol": self.roundoff_rtol},
                          "spread": {"test": "welch", "correction": "benjamini-hochberg", "fdr": SPREAD_FDR,
                                     "applied": self.spread_tested},
                          "tolerances": [{"pattern": t.pattern, "value": t.value, "relative": t.relative,
                                          "source": t.source} for t in self.tolerances]},
                "notes": self.notes, "counts": self.counts, "exit_code": self.exit_code,
                "rows": [r.as_json() for r in self.rows]}


def roundoff_rtol(dtype: str) -> float:
    return ROUNDOFF_ULPS * float(np.finfo(np.dtype(dtype)).eps)


def _identical(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= rtol * max(abs(a), abs(b))


def _tolerance_for(key: CellKey, tolerances: Sequence[Tolerance]) -> Tolerance | None:
    """The last tolerance whose pattern matches the cell (user ones come after the defaults)."""
    hit = None
    for t in tolerances:
        if any(fnmatch.fnmatchcase(n, t.pattern) for n in key.names()):
            hit = t
    return hit


def _welch_p(a: float, sd_a: float, n_a: int, b: float, sd_b: float, n_b: int) -> float:
    """Two-sided Welch p-value from summary statistics (0 or 1 when both spreads are zero)."""
    from scipy.stats import ttest_ind_from_stats

    if sd_a == 0 and sd_b == 0:
        return 1.0 if a == b else 0.0
    return float(ttest_ind_from_stats(a, sd_a, n_a, b, sd_b, n_b, equal_var=False).pvalue)


def compare_runs(a: Run, b: Run, tolerances: Sequence[Tolerance] = ()) -> Comparison:
    """Verdict of every cell of the two runs (UsageError when the runs are not comparable)."""
    diffs = profile_differences(a, b)
    if diffs:
        raise UsageError(f"runs of different profiles cannot be compared ({a.path} vs {b.path}); settings that "
                         "differ:\n  " + "\n  ".join(diffs))
    names = [n for n in dict.fromkeys([*_ordered(a.tables), *_ordered(b.tables)]) if n not in SKIP_TABLES]
    keys = {n: key_columns((a.tables, b.tables), n) for n in names}
    ca = cells({n: a.tables[n] for n in names if n in a.tables}, keys)
    cb = cells({n: b.tables[n] for n in names if n in b.tables}, keys)
    all_tolerances = [*default_tolerances(), *tolerances]
    for t in tolerances:
        if not any(fnmatch.fnmatchcase(n, t.pattern) for k in (*ca, *cb) for n in k.names()):
            valid = sorted({n for k in (*ca, *cb) for n in (k.column, k.metric)})
            raise UsageError(f"--tolerance {t.pattern!r} matches no compared metric; valid names (globs allowed, "
                             f"also TABLE.COLUMN): {', '.join(valid)}")
    rtol = roundoff_rtol(a.dtype)
    rows = [Row(k, ca.get(k), cb.get(k)) for k in dict.fromkeys([*ca, *cb])]
    same_seeds = set(a.seeds) == set(b.seeds)
    spread_applies = not same_seeds and len(a.seeds) >= 2 and len(b.seeds) >= 2
    notes = []
    if not same_seeds and not spread_applies:
        notes.append(f"seeds differ ({a.seeds} vs {b.seeds}) and a run has fewer than 2 seeds: the seed-to-seed "
                     "spread cannot be estimated, so every difference beyond tolerance is reported as changed")
    pending: list[tuple[Row, float]] = []
    seeds_a = per_seed_cells(a, keys) if spread_applies else {}
    seeds_b = per_seed_cells(b, keys) if spread_applies else {}
    for row in rows:
        tol = _tolerance_for(row.key, all_tolerances)
        if _identical(row.a, row.b, rtol):
            row.verdict, row.rule = IDENTICAL, "round-off"
        elif row.a is None or row.b is None:
            row.verdict, row.rule = CHANGED, "only in " + ("B" if row.a is None else "A")
        elif tol is not None and tol.allows(row.a, row.b):
            row.verdict, row.rule = TOLERANCE, f"{tol.source} {tol.describe()}"
        elif spread_applies and len(seeds_a.get(row.key, ())) >= 2 and len(seeds_b.get(row.key, ())) >= 2:
            va, vb = seeds_a[row.key], seeds_b[row.key]
            p = _welch_p(row.a, float(np.std(va, ddof=1)), len(va), row.b, float(np.std(vb, ddof=1)), len(vb))
            pending.append((row, p))
        else:
            row.verdict = CHANGED
            row.rule = f"beyond {tol.source} {tol.describe()}" if tol is not None else "beyond round-off"
    if pending:
        from scipy.stats import false_discovery_control

        adjusted = false_discovery_control([p for _, p in pending], method="bh")
        for (row, _), q in zip(pending, adjusted):
            row.p_adjusted = float(q)
            row.verdict = SPREAD if q >= SPREAD_FDR else CHANGED
            row.rule = f"Welch p_BH={q:.2g}"
    return Comparison(a, b, rows, rtol, bool(pending), [*default_tolerances(), *tolerances], notes)


def _ordered(tables: Mapping[str, pd.DataFrame]) -> list[str]:
    """Table names in the documented order (`bench.tables.table_specs`: the headline first, then each protocol's
    tables in protocol order), tables no spec documents last."""
    from bench.tables import table_specs

    order = {name: i for i, name in enumerate(table_specs())}
    return sorted(tables, key=lambda n: (order.get(n, len(order)), n))


# -- output -------------------------------------------------------------------------------------------------
def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.6g}"


def format_text(cmp: Comparison, show_all: bool = False) -> str:
    """Headline cells (all of them), then the other tables' cells that are not identical (all with show_all)."""
    a, b = cmp.a, cmp.b
    lines = [f"A: {a.path}  (profile {a.profile.get('name')}, seeds {a.seeds}, "
             f"revision {a.environment.get('equibench_revision', '?')})",
             f"B: {b.path}  (profile {b.profile.get('name')}, seeds {b.seeds}, "
             f"revision {b.environment.get('equibench_revision', '?')})",
             f"identical = |B-A| <= {cmp.roundoff_rtol:.2g} * max(|A|,|B|) ({ROUNDOFF_ULPS} ulps of {a.dtype}); "
             f"timings within {TIMING_TOLERANCE:.0%} and peak memory within {MEMORY_TOLERANCE:.0%} (relative) by "
             "default" + ("; different seeds: Welch t-test with Benjamini-Hochberg at "
                          f"FDR {SPREAD_FDR:g}" if cmp.spread_tested else "")]
    lines += [f"note: {n}" for n in cmp.notes]
    head = [r for r in cmp.rows if r.key.table == "headline"]
    rest = [r for r in cmp.rows if r.key.table != "headline" and (show_all or r.verdict != IDENTICAL)]
    if head:
        lines += ["", "headline", _table([(r.key.model, r.key.column, _num(r.a), _num(r.b), _num(r.diff),
                                           _verdict(r)) for r in head], ("model", "metric", "A", "B", "B-A", "verdict"))]
    if rest:
        title = "other tables" + ("" if show_all else " (cells that are not identical; --all shows every cell)")
        varying = _varying_keys(cmp.rows)
        lines += ["", title, _table([(r.key.table, r.key.model, r.key.where(varying[r.key.table]), r.key.column,
                                      _num(r.a), _num(r.b), _num(r.diff), _verdict(r)) for r in rest],
                                    ("table", "model", "where", "column", "A", "B", "B-A", "verdict"))]
    c = cmp.counts
    lines += ["", f"{len(cmp.rows)} cells: " + ", ".join(f"{c[v]} {v}" for v in VERDICTS)
              + (f" -> exit 1 ({c[CHANGED]} changed)" if c[CHANGED] else " -> exit 0")]
    return "\n".join(lines)


def _varying_keys(rows: Iterable[Row]) -> dict[str, set[str]]:
    """Per table, the key columns that take more than one value (the others need not be printed per row)."""
    seen: dict[str, dict[str, set[str]]] = {}
    for r in rows:
        for k, v in r.key.keys:
            seen.setdefault(r.key.table, {}).setdefault(k, set()).add(v)
    return {t: {k for k, vs in cols.items() if len(vs) > 1} for t, cols in seen.items()}


def _verdict(r: Row) -> str:
    return r.verdict + (f" ({r.rule})" if r.rule and r.verdict != IDENTICAL else "")


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    rows = [tuple(header), *[tuple(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def write_json(cmp: Comparison, path: Path) -> None:
    Path(path).write_text(json.dumps(cmp.as_json(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
