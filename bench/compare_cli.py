"""`equibench compare RUN_A RUN_B`: the verdict of every number of two runs (see `bench.compare` for the rules).

Exit codes: 0 nothing changed beyond round-off, tolerance or seed spread; 1 something changed; 2 bad input (a
missing folder, a folder that is not a run, runs of different profiles: the message lists the settings that
differ, or a malformed / unmatched ``--tolerance``).

``--json PATH`` writes the machine-readable result (schema ``equibench.compare/1``):

    {"schema": "equibench.compare/1",
     "run_a": {"path", "profile", "seeds", "dtype", "revision"}, "run_b": {...},
     "rules": {"roundoff": {"ulps", "rtol"},
               "spread": {"test": "welch", "correction": "benjamini-hochberg", "fdr", "applied"},
               "tolerances": [{"pattern", "value", "relative", "source"}]},
     "notes": [str], "counts": {"identical": n, "within tolerance": n, "within spread": n, "changed": n},
     "exit_code": 0 | 1,
     "rows": [{"table", "model", "keys": {column: value}, "column", "metric", "a", "b", "diff", "rel_diff",
               "verdict", "rule", "p_adjusted"}]}

``a``/``b`` are null where a run lacks the cell; ``diff`` = b - a, ``rel_diff`` = diff / |a|; ``rule`` says
which rule decided (``round-off``, ``default (timing) 50%``, ``Welch p_BH=0.31``, ``only in B``, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UsageError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "compare", help="compare every number of two run folders (identical / within tolerance / within spread / "
                        "changed); exit 1 when something changed",
        description=__doc__.split("\n\n")[0])
    p.add_argument("run_a", type=Path, help="run folder (the baseline)")
    p.add_argument("run_b", type=Path, help="run folder compared with it")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON (schema in --help)")
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=VALUE",
                   help="accepted difference for a metric (column name, row metric or TABLE.COLUMN, globs allowed): "
                        "'20%%' relative or '0.5' absolute in the metric's unit; repeatable, later ones win; replaces "
                        "the default for timings (50%%) and peak memory (10%%)")
    p.add_argument("--all", action="store_true", help="print every cell, not only those that are not identical")
    return p


def run(args: argparse.Namespace) -> int:
    from bench.compare import compare_runs, format_text, load_run, parse_tolerance, write_json

    try:
        tolerances = [parse_tolerance(t) for t in args.tolerance]
        a, b = load_run(args.run_a, "RUN_A"), load_run(args.run_b, "RUN_B")
        result = compare_runs(a, b, tolerances)
    except UsageError as exc:
        print(f"equibench: error: {exc}", file=sys.stderr)
        return 2
    print(format_text(result, show_all=args.all))
    if args.json is not None:
        write_json(result, args.json)
        print(f"json: {args.json}")
    return result.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="equibench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["compare", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())
