"""One-page, self-contained HTML report of a `bench.diagnose.CheckResult` (`equibench check --html`).

Built from the sweep report's pieces: its figure plumbing (reports.plots.common: style, deterministic PNG data
URIs) and number formatting (reports.format). One jinja2 template string; no external files, no clock.
"""

from __future__ import annotations

import math

import jinja2

from bench.diagnose import CheckResult

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="equibench check">
<title>equibench check {{ r.target }}</title>
<style>
body { margin: 0; color: #1f2933; background: #f4f6f9;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
header { background: #17253a; color: #fff; padding: 20px 40px 14px; }
header h1 { margin: 0 0 4px; font-size: 21px; }
header .sub { color: #b9c6d6; font-size: 13px; }
.chip { display: inline-block; margin: 10px 6px 0 0; padding: 2px 10px; border-radius: 999px; font-size: 12px;
  background: rgba(255,255,255,.12); border: 1px solid rgba(255,255,255,.2); }
.chip.bad { background: rgba(240,80,60,.3); } .chip.good { background: rgba(60,180,110,.3); }
main { max-width: 1180px; margin: 0 auto; padding: 10px 40px 40px; }
section { background: #fff; border: 1px solid #e2e7ec; border-radius: 8px; margin: 18px 0; padding: 4px 22px 16px; }
h2 { font-size: 17px; margin: 14px 0 8px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { padding: 3px 12px 3px 0; text-align: left; border-bottom: 1px solid #eef1f4; }
th { color: #5f6b7a; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; text-align: right; }
tr.break td { background: #fdecea; font-weight: 600; }
.no { color: #b42318; font-weight: 600; } .yes { color: #1a7f46; }
.muted { color: #5f6b7a; } code { font-size: 12.5px; }
li { margin: 4px 0; } img { max-width: 100%; height: auto; }
details summary { cursor: pointer; color: #0b5cad; margin: 6px 0; }
</style>
</head>
<body>
<header>
<h1>equibench check <code>{{ r.target }}</code></h1>
<div class="sub">input {{ shape }} · {{ r.dtype }}{% if r.stored_dtype and r.stored_dtype != r.dtype %} (stored
{{ r.stored_dtype }}){% endif %} · exactness tolerance {{ "%.0e"|format(r.tolerance) }} · seed {{ r.seed }} ·
{{ r.images }} image(s) per element</div>
<span class="chip {{ 'good' if r.exact_group != 'trivial' else 'bad' }}">exact group: {{ r.exact_group }}</span>
<span class="chip">contract: {{ r.contract_group or "none" }}</span>
{% if r.first_breaking_module is not none %}<span class="chip bad">first break: {{ module_label(r.first_breaking_module) }}
under {{ r.first_failing_element }}</span>{% endif %}
</header>
<main>
<section>
<h2>1. Exact symmetries</h2>
<p class="muted">Relative error of the output (shape {{ r.output.shape }}, compared as {{ r.output.compared }}) under
each symmetry of the pixel grid; exact means at most {{ "%.0e"|format(r.tolerance) }}.</p>
<table><tr><th>element</th><th>error</th><th>exact</th>{% if r.contract_group %}<th>claimed</th>{% endif %}</tr>
{% for e in r.elements %}<tr><td>{{ e.element }}</td><td class="num">{{ sig(e.error) }}</td>
<td class="{{ 'yes' if e.exact else 'no' }}">{{ yes_no(e.exact) }}</td>{% if r.contract_group %}
<td>{{ yes_no(e.claimed) }}</td>{% endif %}</tr>
{% endfor %}</table>
<p>Largest exact subgroup of D4: <b>{{ r.exact_group }}</b></p>
{% if r.features %}<p class="muted">Exposed features (forward_features), compared under their declared field types:</p>
<table><tr><th>feature</th><th>shape</th><th>compared</th>{% for e in r.elements %}<th>{{ e.element }}</th>{% endfor %}</tr>
{% for f in r.features %}<tr><td>{{ f.name }}</td><td>{{ f.shape }}</td><td>{{ f.compared }}</td>
{% for e in r.elements %}<td class="num">{{ sig(f.errors[e.element]) }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
</section>
<section>
<h2>2. Where exactness breaks</h2>
{% if r.first_failing_element is none %}<p>Every element is exact.</p>{% else %}
<p>Module outputs in execution order under <b>{{ r.first_failing_element }}</b> (the first failing element). First
breaking module: <b><code>{{ module_label(r.first_breaking_module) }}</code></b>.{% for el, name in other_breaks %}
Under {{ el }}: <code>{{ module_label(name) }}</code>.{% endfor %}</p>
{% if modules_plot %}<img src="{{ modules_plot }}" alt="module error in execution order">{% endif %}
<details><summary>all {{ r.modules|length }} module calls</summary>
<table><tr><th>#</th><th>module</th><th>type</th><th>compared</th><th>error</th><th>input error</th></tr>
{% for m in r.modules %}<tr{% if loop.index0 == break_index %} class="break"{% endif %}><td>{{ loop.index }}</td>
<td><code>{{ m.name }}</code>{% if m.call > 1 %} (call {{ m.call }}){% endif %}</td><td>{{ m.type }}</td>
<td>{{ m.compared }}</td><td class="num">{{ sig(m.error) }}</td><td class="num">{{ sig(m.input_error) }}</td></tr>
{% endfor %}</table></details>{% endif %}
</section>
<section>
<h2>3. Likely causes</h2>
{% if r.causes %}<ul>{% for c in r.causes %}<li><b>{{ c.rule }}</b>{% if c.module %} at <code>{{ c.module }}</code>{% endif %}
<span class="muted">({{ c.elements|join(", ") }})</span>: {{ c.message }}</li>{% endfor %}</ul>
{% else %}<p>None: every element is exact.</p>{% endif %}
{% if r.sizes is not none %}<h3>Input sizes</h3>
<p>Exact under {{ r.sizes_group }} at: <b>{{ r.exact_sizes|join(", ") if r.exact_sizes else "no scanned size" }}</b></p>
<table><tr><th>size</th><th>exact group</th></tr>{% for s in r.sizes %}<tr><td>{{ s.size }}</td>
<td>{{ s.exact_group if s.exact_group else "error: " ~ s.error }}</td></tr>{% endfor %}</table>{% endif %}
</section>
<section>
<h2>4. Continuous angles</h2>
{% if angles_plot %}<img src="{{ angles_plot }}" alt="error against angle">
<p class="muted">{{ r.rotation }} rotation of band-limited disk images; the floor is the round-trip error of the
rotation alone at the output's resolution, the blur floor the error of an isotropic Gaussian blur. Values below
1e-8 (round-off, e.g. at multiples of 90 degrees) are drawn at 1e-8.</p>
{% else %}<p>Not measured.</p>{% endif %}
{% if r.lie_derivative is not none %}<p>Lie derivative: <b>{{ sig(r.lie_derivative) }}</b> {{ r.lie_derivative_unit }}</p>{% endif %}
</section>
{% if r.notes %}<section><h2>Notes</h2><ul>{% for n in r.notes %}<li>{{ n }}</li>{% endfor %}</ul></section>{% endif %}
</main>
</body>
</html>
"""


def _yes_no(x: bool | None) -> str:
    return "—" if x is None else ("yes" if x else "no")


def _module_label(name: str | None) -> str:
    return "(the model's own forward)" if not name else name


ROUNDOFF_FLOOR = 1e-17  # module plot: exact (round-off) next to broken, over the whole range
ANGLE_FLOOR = 1e-8  # angle plot: like the sweep report, round-off at grid angles is drawn at 1e-8


def _floor(x: float | None, floor: float = ROUNDOFF_FLOOR) -> float:
    """Log axes cannot show 0 or None: plot them at `floor`."""
    return floor if x is None or not math.isfinite(x) or x <= floor else x


def modules_plot(r: CheckResult) -> str | None:
    """Error of each module's output in execution order under the first failing element (log scale)."""
    if r.first_failing_element is None or not r.modules:
        return None
    from reports.plots.common import figure, finish, legend_outside, style

    with style():
        fig, axes = figure(2.6, 10.0)
        ax = axes[0][0]
        ys = [_floor(m.error) for m in r.modules]
        ax.semilogy(range(1, len(ys) + 1), ys, marker="o", color="#0072B2", label=f"module output, {r.first_failing_element}")
        ax.axhline(r.tolerance, color="#D55E00", linestyle="--", label="exactness tolerance")
        ax.set_xlabel("module call, execution order")
        ax.set_ylabel("relative error")
        legend_outside(ax)
        return finish(fig, "module errors", "").src


def angles_plot(r: CheckResult) -> str | None:
    if not r.angles:
        return None
    from reports.plots.common import figure, finish, legend_outside, style

    with style():
        fig, axes = figure(2.8, 10.0)
        ax = axes[0][0]
        xs = [a.angle_deg for a in r.angles]
        ax.semilogy(xs, [_floor(a.error, ANGLE_FLOOR) for a in r.angles], marker="o", color="#0072B2",
                    label="output error")
        ax.semilogy(xs, [_floor(a.floor, ANGLE_FLOOR) for a in r.angles], color="#6b7785", linestyle="--",
                    label="round-trip floor")
        ax.semilogy(xs, [_floor(a.blur_floor, ANGLE_FLOOR) for a in r.angles], color="#009E73", linestyle=":",
                    label="blur floor")
        ax.set_xlabel("angle (degrees)")
        ax.set_ylabel("relative error")
        legend_outside(ax)
        return finish(fig, "error against angle", "").src


def render_html(r: CheckResult) -> str:
    from reports.format import sig

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE)
    break_index = next((i for i, m in enumerate(r.modules) if m.exact is False), -1)
    other = [(k, v) for k, v in r.breaks.items() if k != r.first_failing_element and v != r.first_breaking_module]
    return template.render(r=r, shape="x".join(map(str, r.input_shape)), sig=sig, yes_no=_yes_no,
                           module_label=_module_label, modules_plot=modules_plot(r), angles_plot=angles_plot(r),
                           break_index=break_index, other_breaks=other)
