"""Rendering results for a person: traces with one column per CPU, KASAN reports,
the ``--all`` table.  Plain text with fixed widths, so output is byte-for-byte
reproducible."""

from __future__ import annotations

from collections.abc import Sequence

from .engine import TraceStep

COL = 44


def _cell(text: str, width: int = COL) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def lanes_of(steps: Sequence[TraceStep]) -> list[str]:
    lanes: list[str] = []
    for st in steps:
        if st.lane not in lanes:
            lanes.append(st.lane)
    cpus = sorted((ln for ln in lanes if ln.startswith("cpu")), key=lambda x: int(x[3:]))
    return cpus + [ln for ln in lanes if not ln.startswith("cpu")]


def step_text(st: TraceStep) -> str:
    fn = st.stack[-1] if st.stack else st.thread
    op = st.op
    if st.nchoices > 1:
        op += f" [choice {st.choice}/{st.nchoices}]"
    res = f" = {st.result}" if st.result else ""
    if op.startswith(fn):  # the op already says where it is
        return f"{op}{res}"
    return f"{fn}: {op}{res}"


def render_trace(steps: Sequence[TraceStep], violation_step: int | None) -> str:
    """One column per lane (CPU, then RCU); one row per step."""
    lanes = lanes_of(steps)
    head = "step  " + " ".join(_cell(ln).ljust(COL) for ln in lanes)
    lines = [head.rstrip(), "-" * len(head.rstrip())]
    for st in steps:
        cells = []
        for ln in lanes:
            cells.append(_cell(step_text(st) if st.lane == ln else "").ljust(COL))
        mark = ">>" if violation_step is not None and st.index == violation_step else "  "
        lines.append((f"{st.index:>3}{mark} " + " ".join(cells)).rstrip())
    return "\n".join(lines)


def render_steps_long(steps: Sequence[TraceStep]) -> str:
    """Each step in full: lane, thread, call chain, op and result."""
    out = []
    for st in steps:
        chain = " > ".join(st.stack)
        out.append(f"{st.index:>3} [{st.lane}] {st.thread}: {chain}: {step_text(st)}")
    return "\n".join(out)


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in header]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    fmt = "  ".join("{:<" + str(w) + "}" for w in widths)
    lines = [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)
