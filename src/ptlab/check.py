"""Checking a scenario variant: pick a strategy, run it, shrink and replay any
counterexample, and say what was covered.  Wires scenarios to the engine; knows
neither's insides."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .engine import (
    DPOR,
    PCT,
    Model,
    RandomWalk,
    Replay,
    Result,
    TraceStep,
    Violation,
    context_switches,
    decode,
    encode,
    shrink,
)
from .engine.schedule import run_schedule, shrink_exhaustive
from .scenarios import OK, SCENARIOS, Scenario

STRATEGIES = ("dpor", "random", "pct")
# Default execution budgets: an exhaustive search that would run for hours stops and
# says so ("bound hit: executions") rather than look hung; --executions raises it.
DPOR_BUDGET = 200_000
SAMPLING_BUDGET = 1_000
TRACE_FORMAT = "ptlab-trace/1"


class InputError(ValueError):
    """Bad input from the user: reported in one line, exit status 2."""


@dataclass
class CheckSpec:
    scenario: str
    variant: str
    overrides: dict[str, int] = field(default_factory=dict)
    strategy: str = "dpor"
    executions: int | None = None
    seed: int = 0
    preemptions: int | None = None
    depth: int = 3
    max_steps: int | None = None   # per thread per execution; None: the scenario's
    deep: bool = False             # the scenarios' deep bounds
    minimal: bool = False          # shrink to the fewest context switches of all


@dataclass
class CheckOutcome:
    spec: CheckSpec
    params: dict[str, int]
    expected: str
    result: Result
    schedule: list[int] | None = None        # shrunk, replayable
    trace: list[TraceStep] | None = None
    violation: Violation | None = None
    shrunk: str = ""                          # how the schedule was shrunk

    @property
    def found(self) -> str:
        return self.violation.kind if self.violation else OK

    @property
    def matches(self) -> bool:
        if self.expected == OK:
            return self.violation is None and self.result.exhaustive
        return self.violation is not None and self.violation.kind == self.expected

    def to_json(self) -> dict[str, Any]:
        r = self.result
        v = self.violation
        return {
            "scenario": self.spec.scenario,
            "variant": self.spec.variant,
            "params": self.params,
            "strategy": self.spec.strategy,
            "seed": self.spec.seed,
            "verdict": "violation" if v else "ok",
            "expected": self.expected,
            "matches_expected": self.matches,
            "exhaustive": r.exhaustive,
            "bound_hit": r.bound_hit,
            "executions": r.stats.executions,
            "sleep_blocked": r.stats.sleep_blocked,
            "infeasible": r.stats.infeasible,
            "pruned": r.stats.pruned,
            "steps": r.stats.steps,
            "sometimes_reached": sorted(r.reached),
            "violation": None if v is None else {
                "kind": v.kind, "message": v.message, "step": v.step, "thread": v.thread,
                "report": v.report,
            },
            "schedule": encode(self.schedule) if self.schedule is not None else None,
            "context_switches": context_switches(self.schedule) if self.schedule else None,
            "trace": None if self.trace is None else [
                {"step": s.index, "lane": s.lane, "thread": s.thread, "function": s.stack[-1]
                 if s.stack else s.thread, "stack": s.stack, "op": s.op, "result": s.result,
                 "choice": s.choice} for s in self.trace],
        }


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise InputError(f"unknown scenario {name!r} (choose from: "
                         f"{', '.join(SCENARIOS)})") from None


def resolve(spec: CheckSpec) -> tuple[Scenario, dict[str, int]]:
    sc = scenario(spec.scenario)
    names = [v.name for v in sc.variants]
    if spec.variant not in names:
        raise InputError(f"unknown variant {spec.variant!r} of {sc.name} "
                         f"(choose from: {', '.join(names)})")
    known = {p.name: p for p in sc.params}
    for k, val in spec.overrides.items():
        if k not in known:
            raise InputError(f"unknown parameter {k!r} of {sc.name} "
                             f"(choose from: {', '.join(known)})")
        p = known[k]
        if not p.minimum <= val <= p.maximum:
            raise InputError(f"{k}={val} is out of range for {sc.name} "
                             f"({p.minimum}..{p.maximum})")
    if spec.strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {spec.strategy!r} (choose from: "
                         f"{', '.join(STRATEGIES)})")
    if spec.preemptions is not None and spec.strategy != "dpor":
        raise InputError("--preemptions applies to --strategy dpor only")
    return sc, sc.resolve(spec.variant, spec.overrides, spec.deep)


def run_check(spec: CheckSpec, *, shrink_runs: int = 300) -> CheckOutcome:
    sc, params = resolve(spec)
    try:
        make: Callable[[], Model] = sc.make(spec.variant, params)
    except ValueError as e:     # a parameter the variant cannot take
        raise InputError(f"{sc.name} {spec.variant}: {e}") from None
    steps = spec.max_steps or sc.max_steps
    if spec.strategy == "dpor":
        result = DPOR(make, preemption_bound=spec.preemptions,
                      max_executions=spec.executions or DPOR_BUDGET, max_steps=steps).run()
    elif spec.strategy == "random":
        result = RandomWalk(make, seed=spec.seed,
                            max_executions=spec.executions or SAMPLING_BUDGET,
                            max_steps=steps).run()
    else:
        result = PCT(make, depth=spec.depth, seed=spec.seed,
                     max_executions=spec.executions or SAMPLING_BUDGET, max_steps=steps).run()
    out = CheckOutcome(spec, params, sc.variant(spec.variant).expect, result)
    if result.violation is not None and result.schedule is not None:
        kind = result.violation.kind
        best: list[int] | None = None
        if spec.minimal:
            best, n = shrink_exhaustive(make, kind, max_steps=steps)
            out.shrunk = (f"the fewest of any {kind} (all traces: {n:,} executions)"
                          if best is not None else
                          f"by local search (all traces need more than {n:,} executions)")
        sched = best or shrink(make, result.schedule, kind, max_runs=shrink_runs,
                               max_steps=steps)
        out.shrunk = out.shrunk or "by local search"
        ex, eo = run_schedule(make, Replay(sched), trace=True, max_steps=steps)
        if eo.violation is None or eo.violation.kind != result.violation.kind:
            sched = result.schedule  # shrinking must never lose the finding
            ex, eo = run_schedule(make, Replay(sched), trace=True, max_steps=steps)
        out.schedule, out.trace, out.violation = sched, ex.steps, eo.violation
    return out


# -- trace files ------------------------------------------------------------------

def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees all of it or none."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ptlab-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def trace_file(out: CheckOutcome) -> str:
    assert out.schedule is not None and out.violation is not None
    doc = {
        "format": TRACE_FORMAT,
        "scenario": out.spec.scenario,
        "variant": out.spec.variant,
        "params": out.params,
        "strategy": out.spec.strategy,
        "seed": out.spec.seed,
        "schedule": encode(out.schedule),
        "violation": {"kind": out.violation.kind, "message": out.violation.message,
                      "step": out.violation.step},
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


@dataclass
class ReplayOutcome:
    doc: dict[str, Any]
    trace: list[TraceStep]
    violation: Violation | None
    same: bool


def load_trace(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise InputError(f"cannot read trace file {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not a ptlab trace: invalid JSON at line {e.lineno}") from None
    if not isinstance(doc, dict) or doc.get("format") != TRACE_FORMAT:
        raise InputError(f"{path} is not a ptlab trace (expected \"format\": "
                         f"\"{TRACE_FORMAT}\")")
    for key, typ in (("scenario", str), ("variant", str), ("params", dict),
                     ("schedule", str)):
        if not isinstance(doc.get(key), typ):
            raise InputError(f"{path}: field {key!r} is missing or not a {typ.__name__}")
    if not all(isinstance(v, int) for v in doc["params"].values()):
        raise InputError(f"{path}: every parameter must be an integer")
    return doc


def replay_trace(path: str) -> ReplayOutcome:
    doc = load_trace(path)
    spec = CheckSpec(doc["scenario"], doc["variant"], dict(doc["params"]))
    sc, params = resolve(spec)
    try:
        labels = decode(doc["schedule"])
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    chooser = Replay(labels)
    ex, eo = run_schedule(sc.make(spec.variant, params), chooser, trace=True,
                          max_steps=sc.max_steps)
    if chooser.error is not None:
        raise InputError(f"{path}: the schedule does not replay: {chooser.error}")
    want = doc.get("violation") or {}
    same = eo.violation is not None and eo.violation.kind == want.get("kind") \
        and eo.violation.step == want.get("step")
    return ReplayOutcome(doc, ex.steps, eo.violation, same)
