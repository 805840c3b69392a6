"""The compact terminal report of a CheckResult (what `equibench check` prints)."""

from __future__ import annotations

from . import grid
from .check import CheckResult, ModuleResult

BEFORE, AFTER = 4, 2  # module rows shown before / after the first break
ANGLES_PER_LINE = 4


def num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


def yes_no(x: bool | None) -> str:
    return "—" if x is None else ("yes" if x else "NO")


def module_label(name: str) -> str:
    return name if name else "(the model's own forward)"


def _table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = indent + "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def _module_rows(modules: list[ModuleResult], first: str | None) -> tuple[list[list[str]], int, int]:
    """Rows around the first breaking module, and how many rows were left out before / after."""
    idx = next((i for i, m in enumerate(modules) if m.exact is False), len(modules))
    lo, hi = max(0, idx - BEFORE), min(len(modules), idx + 1 + AFTER)
    rows = []
    for i in range(lo, hi):
        m = modules[i]
        call = f" (call {m.call})" if m.call > 1 else ""
        mark = "  <- first break" if i == idx else ""
        rows.append([m.name + call, m.type, m.compared, num(m.error), num(m.input_error) + mark])
    return rows, lo, len(modules) - hi


def format_text(r: CheckResult) -> str:
    shape = "x".join(map(str, r.input_shape))
    stored = f" (stored {r.stored_dtype})" if r.stored_dtype and r.stored_dtype != r.dtype else ""
    contract = f"  contract {r.contract_group}" if r.contract_group else "  no symmetry contract"
    out = [f"equibench check {r.target}  input {shape}  {r.dtype}{stored}  tolerance {r.tolerance:.0e}{contract}", ""]

    out.append(f"1. exact symmetries (relative error of the output {r.output['shape']}, compared as "
               f"{r.output['compared']})")
    claimed = r.contract_group is not None
    header = ["element", "error", "exact"] + (["claimed"] if claimed else [])
    rows = [[e.element, num(e.error), yes_no(e.exact)] + ([yes_no(e.claimed)] if claimed else []) for e in r.elements]
    out += _table(header, rows)
    out.append(f"  exact group: {r.exact_group}")
    for f in r.features:
        exact = [k for k, v in f.errors.items() if v is not None and v <= r.tolerance]
        out.append(f"  exposed feature {f.name} {f.shape} ({f.compared}): exact under "
                   f"{grid.largest_exact_subgroup(exact)}; largest error {num(max((v for v in f.errors.values() if v is not None), default=None))}")

    out += ["", "2. where exactness breaks"]
    if r.first_failing_element is None:
        undefined = [e.element for e in r.elements if e.exact is None]
        out.append("  every element is exact" if not undefined else
                   f"  every defined element is exact ({', '.join(undefined)}: undefined for this input)")
    else:
        rows, before, after = _module_rows(r.modules, r.first_failing_element)
        out.append(f"  module outputs in execution order under {r.first_failing_element} (the first failing element)")
        if before:
            out.append(f"  ... {before} earlier module call(s), all exact")
        out += _table(["module", "type", "compared", "error", "input error"], rows)
        if after:
            out.append(f"  ... {after} later module call(s)")
        out.append(f"  first breaking module: {module_label(r.first_breaking_module or '')}")
        others = {k: v for k, v in r.breaks.items() if k != r.first_failing_element and v != r.first_breaking_module}
        for element, name in others.items():
            out.append(f"    under {element}: {module_label(name or '')}")

    out += ["", "3. likely causes"]
    if not r.causes:
        out.append("  none (every element is exact)")
    for c in r.causes:
        where = f" {c.module}" if c.module else ""
        out.append(f"  - [{c.rule}{where}] ({', '.join(c.elements)}) {c.message}")
    if r.sizes is not None:
        out.append(f"  exact sizes ({r.sizes_group}): {', '.join(map(str, r.exact_sizes or [])) or 'none'}")
        out += _table(["size", "exact group"], [[str(s.size), s.exact_group or f"error: {s.error}"] for s in r.sizes],
                      indent="    ")

    out += ["", f"4. continuous angles ({r.rotation} rotation; floor = round trip of the rotation alone)"]
    if not r.angles:
        out.append("  not measured")
    else:
        cells = [f"{a.angle_deg:6g}°  {num(a.error)} (floor {num(a.floor)})" for a in r.angles]
        for i in range(0, len(cells), ANGLES_PER_LINE):
            out.append("  " + "   ".join(cells[i:i + ANGLES_PER_LINE]))
        worst = max(r.angles, key=lambda a: a.error)
        out.append(f"  largest error {num(worst.error)} at {worst.angle_deg:g}°")
    if r.lie_derivative is not None:
        out.append(f"  Lie derivative: {r.lie_derivative:.3g} {r.lie_derivative_unit}")
    for note in r.notes:
        out.append(f"note: {note}")
    return "\n".join(out)
