"""A counterexample as one self-contained page: an SVG sequence diagram with a
lane per CPU and one for the RCU machinery, each step labelled by the kernel
function it is in, grace periods and IPIs drawn across the lanes, the violating
step in red, and the KASAN-style report below.  No script, no network; the page
is well-formed XML (XHTML), so any XML or HTML parser reads it."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from .engine import TraceStep
from .report import lanes_of, step_text

LANE_W = 250
ROW_H = 22
TOP = 40
LEFT = 48
LABEL_CHARS = 38

_PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""

# Inside the SVG, so the diagram renders the same when saved on its own.
_SVG_STYLE = """
text { font-family: monospace; font-size: 11px; }
.lane { stroke: #bbb; stroke-width: 1; }
.step { fill: #eef3fb; stroke: #6b8fc7; }
.bad { fill: #fbe3e3; stroke: #c0392b; stroke-width: 2; }
.gp { stroke: #27ae60; stroke-width: 1.5; stroke-dasharray: 6 3; }
.ipi { stroke: #8e44ad; stroke-width: 1.2; marker-end: url(#arrow); }
.head { font-weight: bold; font-size: 12px; }
"""


def _short(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def render_svg(steps: Sequence[TraceStep], violation_step: int | None) -> str:
    """The sequence diagram alone."""
    lanes = lanes_of(steps)
    col = {ln: i for i, ln in enumerate(lanes)}
    width = LEFT + LANE_W * len(lanes) + 10
    height = TOP + ROW_H * (len(steps) + 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<style>{_SVG_STYLE}</style>',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
           'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8e44ad"/>'
           '</marker></defs>']
    for ln, i in col.items():
        x = LEFT + i * LANE_W + LANE_W // 2
        out.append(f'<text class="head" x="{x}" y="20" text-anchor="middle">'
                   f'{escape(ln)}</text>')
        out.append(f'<line class="lane" x1="{x}" y1="28" x2="{x}" y2="{height - 4}"/>')
    sender: TraceStep | None = None
    for row, st in enumerate(steps):
        y = TOP + row * ROW_H
        x0 = LEFT + col[st.lane] * LANE_W + 4
        label = step_text(st)
        bad = violation_step is not None and st.index == violation_step
        out.append(f'<text x="4" y="{y + 15}">{st.index}</text>')
        out.append(f'<g><title>{escape(st.thread)}: {escape(" > ".join(st.stack))}: '
                   f'{escape(label)}</title>'
                   f'<rect class="{"bad" if bad else "step"}" x="{x0}" y="{y + 2}" '
                   f'width="{LANE_W - 8}" height="{ROW_H - 4}" rx="3"/>'
                   f'<text x="{x0 + 4}" y="{y + 15}">{escape(_short(label))}</text></g>')
        if st.op.startswith("smp_call_function("):
            sender = st
        elif "IPI on" in st.op and sender is not None:
            # The interrupt arrives from the CPU that sent it.
            xs = LEFT + col[sender.lane] * LANE_W + LANE_W // 2
            xd = LEFT + col[st.lane] * LANE_W + 4
            out.append(f'<line class="ipi" x1="{xs}" y1="{y - 4}" x2="{xd}" y2="{y + 8}"/>')
        if "rcu_gp_init" in st.op or "rcu_gp_cleanup" in st.op:
            what = "grace period starts" if "init" in st.op else "grace period ends"
            out.append(f'<line class="gp" x1="{LEFT}" y1="{y + ROW_H}" x2="{width - 10}" '
                       f'y2="{y + ROW_H}"/>')
            out.append(f'<text x="{LEFT + 4}" y="{y + ROW_H - 2}" fill="#27ae60">{what}'
                       '</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(title: str, summary: Sequence[str], steps: Sequence[TraceStep],
                violation_step: int | None, report: str) -> str:
    """The whole page: title, what was covered and found, the diagram, the report."""
    parts = ['<!DOCTYPE html>',
             '<html xmlns="http://www.w3.org/1999/xhtml" lang="en">',
             f'<head><meta charset="utf-8"/><title>{escape(title)}</title>'
             f'<style>{_PAGE_STYLE}</style></head>',
             f'<body><h1>{escape(title)}</h1>']
    parts += [f"<p>{escape(line)}</p>" for line in summary]
    if steps:
        parts.append(render_svg(steps, violation_step))
    if report:
        parts.append(f"<pre>{escape(report)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
