"""Benchmark of the exploration engine (Optimal-DPOR).

For every variant of the scenario ``pte-free-defer-fragments`` (default parameters)
and for the classic DPOR programs ``readers(n)`` and ``lastzero(n)`` it reports:

* executions, and executions per second (best of 3 plain runs, no instrumentation);
* sleep-set-blocked executions and infeasible wakeup sequences (engine counters);
* distinct Mazurkiewicz traces, from a second, instrumented run that computes
  ``trace_signature()`` of every complete execution that is not a violation;
* redundancy = (executions + sleep_blocked) / distinct traces (1.00 is optimal).

Speed and traces are measured in separate runs because ``trace_signature()`` is
quadratic in the length of an execution and would distort the timing.

Usage::

    python bench/engine.py [--quick] [--json FILE] [--max-executions N]

It measures whichever build of the engine is installed (printed as "engine build"):
the wheel from ``pip install .`` compiles the search loop with mypyc
(hatch_build.py); an editable install runs it as plain Python.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ptlab.engine import BUILD, DPOR, Execution, Model, Var
from ptlab.engine.execution import trace_signature
from ptlab.scenarios import SCENARIOS

SCENARIO = "pte-free-defer-fragments"
TARGET_VARIANT = "frag-refcount"
TARGET_EXEC_PER_S = 5_000.0
TARGET_REDUNDANCY = 1.05
DEFAULT_MAX_EXECUTIONS = 200_000


# -- the classic DPOR benchmark programs ------------------------------------------


class Readers:
    """readers(n): one writer writes x, n readers read x.  2**n traces."""

    def __init__(self, n: int) -> None:
        self.n = n

    def build(self, ex: Execution) -> None:
        self.x = Var(0, "x")
        self.ys: list[tuple[int, int]] = []

        async def writer() -> None:
            await self.x.store(1)

        async def reader(i: int) -> None:
            y = await self.x.load()
            self.ys.append((i, y))

        ex.spawn("w", writer())
        for i in range(self.n):
            ex.spawn(f"r{i}", reader(i))

    def finish(self, ex: Execution) -> None:
        pass


class LastZero:
    """lastzero(n): array a[0..n]; thread 0 scans a[n..1] backwards until it reads 0;
    thread j (1..n) sets a[j] = a[j-1] + 1."""

    def __init__(self, n: int) -> None:
        self.n = n

    def build(self, ex: Execution) -> None:
        n = self.n
        a = [Var(0, f"a{i}") for i in range(n + 1)]

        async def t0() -> None:
            i = n
            while i > 0:
                v = await a[i].load()
                if v == 0:
                    break
                i -= 1

        async def tj(j: int) -> None:
            v = await a[j - 1].load()
            await a[j].store(v + 1)

        ex.spawn("t0", t0())
        for j in range(1, n + 1):
            ex.spawn(f"t{j}", tj(j))

    def finish(self, ex: Execution) -> None:
        pass


# -- measuring -----------------------------------------------------------------------


@dataclass
class Target:
    group: str
    name: str
    params: str
    make: Callable[[], Model]
    max_steps: int = 10_000


@dataclass
class Row:
    group: str
    name: str
    params: str
    executions: int = 0
    seconds: float = 0.0          # best of the timing runs
    all_seconds: list[float] = field(default_factory=list)
    exec_per_s: float = 0.0
    steps: int = 0
    sleep_blocked: int = 0
    infeasible: int = 0
    violations: int = 0
    violation_kinds: dict[str, int] = field(default_factory=dict)
    distinct_traces: int = 0      # of the non-violating complete executions
    violation_traces: int = 0     # distinct traces of the violating (truncated) executions
    redundancy: float | None = None
    # (executions + sleep_blocked) / (distinct_traces + violation_traces): the same as
    # redundancy when nothing is violated.
    redundancy_all_traces: float | None = None
    capped: bool = False          # stopped at --max-executions: not exhaustive
    trace_run_seconds: float = 0.0


def _dpor(t: Target, cap: int | None) -> DPOR:
    return DPOR(t.make, stop_on_violation=False, max_executions=cap, max_steps=t.max_steps)


def measure(t: Target, runs: int, cap: int | None) -> Row:
    row = Row(t.group, t.name, t.params)
    # Speed: plain runs, nothing hooked in.
    for _ in range(runs):
        gc.collect()
        d = _dpor(t, cap)
        t0 = time.perf_counter()
        res = d.run()
        dt = time.perf_counter() - t0
        row.all_seconds.append(dt)
        st = res.stats
        if len(row.all_seconds) > 1 and (st.executions, st.sleep_blocked) != \
                (row.executions, row.sleep_blocked):
            raise RuntimeError(f"{t.group} {t.name}: exploration is not deterministic")
        row.executions, row.sleep_blocked = st.executions, st.sleep_blocked
        row.infeasible, row.steps = st.infeasible, st.steps
        row.capped = res.bound_hit == "executions"
    row.seconds = min(row.all_seconds)
    row.exec_per_s = row.executions / row.seconds if row.seconds > 0 else float("inf")

    # Traces: a separate, instrumented run.
    sigs: set[Any] = set()
    vsigs: set[Any] = set()
    kinds: Counter[str] = Counter()

    def on_execution(ex: Execution) -> None:
        if ex.aborted:
            return
        if ex.violation is not None:
            kinds[ex.violation.kind] += 1
            vsigs.add(trace_signature(ex))
            return
        sigs.add(trace_signature(ex))

    gc.collect()
    d = _dpor(t, cap)
    d.on_execution = on_execution
    t0 = time.perf_counter()
    res = d.run()
    row.trace_run_seconds = time.perf_counter() - t0
    if (res.stats.executions, res.stats.sleep_blocked) != (row.executions, row.sleep_blocked):
        raise RuntimeError(f"{t.group} {t.name}: the instrumented run explored differently")
    row.violations = sum(kinds.values())
    row.violation_kinds = dict(kinds)
    row.distinct_traces = len(sigs)
    row.violation_traces = len(vsigs)
    work = row.executions + row.sleep_blocked
    if sigs:
        row.redundancy = work / len(sigs)
    if sigs or vsigs:
        row.redundancy_all_traces = work / (len(sigs) + len(vsigs))
    return row


# Variants that run on the whole mm model rather than the seed-001 designs: their
# long executions make the instrumented trace count (quadratic) take minutes.
MM_MODEL_VARIANTS = ("s390-v6.6",)


def targets(quick: bool) -> list[Target]:
    sc = SCENARIOS[SCENARIO]
    out: list[Target] = []
    for v in sc.variants:
        if v.name in MM_MODEL_VARIANTS:
            continue
        params = sc.resolve(v.name, {})
        ps = " ".join(f"{k}={val}" for k, val in params.items())
        out.append(Target(SCENARIO, v.name, ps, sc.make(v.name, params), sc.max_steps))
    readers_n = range(2, 6) if quick else range(2, 9)
    lastzero_n = range(2, 6) if quick else range(2, 8)
    for n in readers_n:
        out.append(Target("readers", f"readers({n})", f"n={n}",
                          lambda n=n: Readers(n)))
    for n in lastzero_n:
        out.append(Target("lastzero", f"lastzero({n})", f"n={n}",
                          lambda n=n: LastZero(n)))
    return out


# -- reporting ---------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def table(rows: list[Row]) -> list[str]:
    cols = [
        ("benchmark", "<", lambda r: r.name + (" *" if r.capped else "")),
        ("executions", ">", lambda r: f"{r.executions:,}"),
        ("exec/s", ">", lambda r: _fmt_rate(r.exec_per_s)),
        ("best s", ">", lambda r: f"{r.seconds:.4f}"),
        ("sleep-blk", ">", lambda r: f"{r.sleep_blocked:,}"),
        ("infeasible", ">", lambda r: f"{r.infeasible:,}"),
        ("violations", ">", lambda r: f"{r.violations:,}" + (" +" if r.violations else "")),
        ("traces", ">", lambda r: f"{r.distinct_traces:,}"),
        ("redundancy", ">", lambda r: "-" if r.redundancy is None else f"{r.redundancy:.3f}"),
    ]
    cells = [[fn(r) for _, _, fn in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return "  ".join(f"{v:{al}{w}}" for v, (_, al, _), w in zip(vals, cols, widths,
                                                                     strict=True)).rstrip()

    out = [line([h for h, _, _ in cols]), "  ".join("-" * w for w in widths)]
    group = None
    for r, c in zip(rows, cells, strict=True):
        if r.group != group:
            if group is not None:
                out.append("")
            group = r.group
            if r.group == SCENARIO:
                out.append(f"[{SCENARIO}, default params; {r.params} unless noted]")
        out.append(line(c))
    return out


def processor() -> str:
    """platform.processor(), or the model name from /proc/cpuinfo when it is empty."""
    name = platform.processor()
    if name:
        return name
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip() + " (from /proc/cpuinfo)"
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer sizes (readers/lastzero n<=5) and one timing run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--max-executions", type=int, default=DEFAULT_MAX_EXECUTIONS,
                    metavar="N", help="cap each exploration at N executions "
                    f"(default {DEFAULT_MAX_EXECUTIONS:,}; 0 = no cap); capped rows are "
                    "marked '*' and are not exhaustive")
    args = ap.parse_args(argv)
    runs = 1 if args.quick else 3
    cap = args.max_executions or None

    t_start = time.perf_counter()
    rows: list[Row] = []
    for t in targets(args.quick):
        print(f"  running {t.group} {t.name} ...", file=sys.stderr, flush=True)
        rows.append(measure(t, runs, cap))
    total = time.perf_counter() - t_start

    default_params = rows[0].params
    print("ptlab exploration-engine benchmark (Optimal-DPOR, stop_on_violation=False)")
    print(f"python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {platform.system()} {platform.machine()}; "
          f"processor: {processor()}; cpu_count: {os.cpu_count()}")
    print(f"engine build: {BUILD}" + ("" if BUILD == "mypyc" else
          " (editable or no C compiler; `pip install .` builds the compiled engine)"))
    print(f"speed: best of {runs} plain run(s); traces: one separate run with "
          "trace_signature(); redundancy = (executions + sleep-blk) / traces")
    print()
    lines = table(rows)
    print("\n".join(lines))
    print()
    for r in rows:
        if r.group == SCENARIO and r.params != default_params:
            print(f"note: {r.name} runs with {r.params} (the variant's own parameters, "
                  "needed to show its verdict)")
    viol = [r for r in rows if r.violations]
    if viol:
        print("+ variants with violations: 'traces' counts distinct traces of the "
              "non-violating complete executions only;")
        print("  'executions' (and so the redundancy numerator) includes the violating ones, "
              "so their redundancy is")
        print("  inflated.  Counting the distinct traces of the violating (truncated) "
              "executions as well:")
        for r in viol:
            kinds = ", ".join(f"{k} x{n}" for k, n in sorted(r.violation_kinds.items()))
            print(f"    {r.name}: {r.violation_traces:,} distinct violating traces ({kinds}); "
                  f"({r.executions:,} + {r.sleep_blocked:,}) / ({r.distinct_traces:,} + "
                  f"{r.violation_traces:,}) = {r.redundancy_all_traces:.3f}")
    capped = [r for r in rows if r.capped]
    if capped:
        print(f"* capped at --max-executions {cap:,}: NOT exhaustive: "
              + ", ".join(r.name for r in capped))
    else:
        print("every exploration ran to completion (no row hit the execution cap)")

    tgt = next(r for r in rows if r.group == SCENARIO and r.name == TARGET_VARIANT)
    speed_ok = tgt.exec_per_s >= TARGET_EXEC_PER_S and not tgt.capped
    red_ok = tgt.redundancy is not None and tgt.redundancy <= TARGET_REDUNDANCY
    print()
    print(f"target (issue): >= {TARGET_EXEC_PER_S:,.0f} executions/s for the exhaustive "
          f"{TARGET_VARIANT} check, and redundancy <= {TARGET_REDUNDANCY}")
    print(f"  speed:      {_fmt_rate(tgt.exec_per_s)} executions/s "
          f"({tgt.executions:,} in {tgt.seconds:.3f} s)  -> "
          f"{'MET' if speed_ok else 'NOT MET'}")
    red_s = "-" if tgt.redundancy is None else f"{tgt.redundancy:.3f}"
    print(f"  redundancy: {red_s} (({tgt.executions:,} + {tgt.sleep_blocked:,}) / "
          f"{tgt.distinct_traces:,} traces)  -> {'MET' if red_ok else 'NOT MET'}")
    worst = max(rows, key=lambda r: r.redundancy_all_traces or 0)
    print(f"  (worst redundancy of any row, violating traces counted: "
          f"{worst.redundancy_all_traces or 0:.3f}, {worst.name})")
    print()
    print(f"total time: {total:.1f} s")

    if args.json:
        data = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "engine_build": BUILD,
            "platform": platform.platform(),
            "processor": processor(),
            "cpu_count": os.cpu_count(),
            "quick": args.quick,
            "timing_runs": runs,
            "max_executions": cap,
            "total_seconds": total,
            "target": {
                "variant": f"{SCENARIO}/{TARGET_VARIANT}",
                "exec_per_s": TARGET_EXEC_PER_S,
                "redundancy": TARGET_REDUNDANCY,
                "measured_exec_per_s": tgt.exec_per_s,
                "measured_redundancy": tgt.redundancy,
                "speed_met": speed_ok,
                "redundancy_met": red_ok,
            },
            "results": [asdict(r) for r in rows],
        }
        path = os.path.abspath(args.json)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".engine-bench-",
                                   suffix=".json.tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
