"""One execution of a model under one schedule: the scheduler loop and ``_resume``.

The explorer (DPOR, random, PCT, replay) decides *which* thread steps next; this
module only runs that step, records it, and resumes the coroutine until it shows
its next shared-memory op.  Everything the explorers need to reason about an
execution (which thread ran, the footprint, the choice taken) is kept in flat
per-event lists.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .coro import (
    _unawaited,
    catching_unawaited,
    coroutine_stack,
    current_stack,
    recording_stacks,
)
from .ops import CTX, Footprint, ModelError, ModelViolation, Op

__all__ = [
    "CHOICE_SHIFT",
    "THREAD_MASK",
    "Chooser",
    "Execution",
    "ExecutionOutcome",
    "Model",
    "Prefix",
    "Thread",
    "TraceStep",
    "Violation",
    "catching_unawaited",
    "coroutine_stack",
    "current_stack",
    "exploring",
    "recording_stacks",
    "trace_signature",
]


class Model(Protocol):
    """What the engine explores: a recipe for fresh state and threads."""

    def build(self, ex: Execution) -> None:
        """Create the shared state and ``ex.spawn()`` the threads."""

    def finish(self, ex: Execution) -> None:
        """Run after every thread has finished or blocked for good; may raise
        :class:`ModelViolation` (a leak, broken accounting)."""


class Chooser(Protocol):
    def pick(self, ex: Execution, enabled: list[int]) -> int:
        """A label (``thread | choice << 16``) of an enabled thread, or -1 to give up."""


CHOICE_SHIFT = 16
THREAD_MASK = (1 << CHOICE_SHIFT) - 1


class Thread:
    """A model thread: a coroutine plus what the scheduler needs to know of it."""

    __slots__ = (
        "coro",
        "created",
        "ctx",
        "daemon",
        "done",
        "idx",
        "lane",
        "locs",
        "name",
        "on_exit",
        "pending",
        "steps",
        "yielded",
    )

    def __init__(self, idx: int, name: str, coro: Coroutine[Any, Any, Any], daemon: bool,
                 lane: str, ctx: Any, on_exit: Callable[[], None] | None = None) -> None:
        self.idx = idx
        self.name = name
        self.lane = lane
        self.coro = coro
        self.daemon = daemon
        self.pending: Op | None = None
        self.done = False
        self.created = 0
        self.yielded = 0
        self.locs = 0
        self.steps = 0
        self.ctx = ctx
        self.on_exit = on_exit


@dataclass
class TraceStep:
    """One executed step, as shown to a person."""

    index: int
    thread: str
    lane: str
    stack: list[str]
    op: str
    choice: int
    nchoices: int
    result: str = ""


@contextmanager
def exploring() -> Iterator[None]:
    """The settings a search runs under: unawaited coroutines caught (a model error),
    and the young generation collected less often."""
    # NOTE: every execution leaves a few thousand objects of cyclic garbage (model
    # objects point back at their owners); collecting it every 2,000 allocations
    # rather than every 700 measured about 5% faster, at no cost in memory.
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 2000), old[1], old[2])
    try:
        with catching_unawaited():
            yield
    finally:
        gc.set_threshold(*old)


class Prefix:
    """The first ``length`` steps of an earlier execution, to replay: their labels,
    and the footprints and numbers of choices they had."""

    __slots__ = ("fps", "labels", "length", "nchoices")

    def __init__(self, ex: Execution, length: int) -> None:
        self.labels = ex.ev_label
        self.fps = ex.ev_fp
        self.nchoices = ex.ev_nchoices
        self.length = length


@dataclass
class Violation:
    kind: str
    message: str
    report: str
    step: int
    thread: str


@dataclass
class ExecutionOutcome:
    labels: list[int]
    violation: Violation | None
    aborted: bool
    reached: list[str] = field(default_factory=list)


class Execution:
    """Runs one execution.  ``Model.build`` spawns threads; the chooser schedules."""

    def __init__(self, model: Model, *, trace: bool = False, max_steps: int = 10_000) -> None:
        self.model = model
        self.threads: list[Thread] = []
        self.trace = trace
        self.max_steps = max_steps
        # Flat event log.
        self.ev_thread: list[int] = []
        self.ev_fp: list[Footprint] = []
        self.ev_label: list[int] = []
        self.ev_nchoices: list[int] = []
        self.ev_op: list[Op] = []
        self.steps: list[TraceStep] = []
        self.violation: Violation | None = None
        self.aborted = False
        self.reached: dict[str, None] = {}
        self.last = -1

    # -- model-facing -------------------------------------------------------
    def spawn(self, name: str, coro: Coroutine[Any, Any, Any], *, daemon: bool = False,
              lane: str | None = None, ctx: Any = None,
              on_exit: Callable[[], None] | None = None) -> Thread:
        """A new thread running ``coro``.  ``on_exit`` runs when it returns, as part of
        its last step (it may raise :class:`ModelViolation`)."""
        t = Thread(len(self.threads), name, coro, daemon, lane or name, ctx, on_exit)
        self.threads.append(t)
        return t

    def run_sync(self, coro: Coroutine[Any, Any, Any], ctx: Any = None) -> Any:
        """Run set-up or tear-down code to completion, outside the exploration.

        Its ops run at once (choices take their first branch); one that would
        block is a model error.  Locations it creates belong to set-up.
        """
        t = Thread(-1, "setup", coro, False, "setup", ctx)
        saved, saved_ex = CTX.thread, CTX.execution
        CTX.thread = t
        CTX.execution = self
        value: Any = None
        try:
            while True:
                try:
                    op = coro.send(value)
                except StopIteration as stop:
                    return stop.value
                if op.blocking and not op.enabled():
                    raise ModelError(f"set-up would block at {op.describe()}")
                value = op.run(0)
        finally:
            CTX.thread = saved
            CTX.execution = saved_ex

    def sometimes(self, name: str) -> None:
        """Record that the named ``sometimes`` property held in this execution."""
        self.reached[name] = None

    # -- engine -------------------------------------------------------------
    def _resume(self, t: Thread, value: Any) -> None:
        send = t.coro.send
        while True:
            try:
                op = send(value)
            except StopIteration:
                t.done = True
                t.pending = None
                if t.created != t.yielded or _unawaited:
                    raise _missing_await(t, "") from None
                if t.on_exit is not None:
                    t.on_exit()
                return
            t.yielded += 1
            if t.yielded != t.created or _unawaited:
                raise _missing_await(t, " before " + op.describe())
            # A state-dependent footprint is computed last, and only when needed.
            if op.blocking or op.choice or op.fp:
                t.pending = op
                return
            # NOTE: a footprint-free op touches nothing shared, so running it inline
            # keeps it out of the schedule (and out of the search).
            value = op.run(0)

    def start(self) -> None:
        CTX.execution = self
        CTX.setup_locs = 0
        CTX.thread = None
        self.model.build(self)
        for t in self.threads:
            CTX.thread = t
            try:
                self._resume(t, None)
            except ModelViolation as v:
                self._violate(v, t)
                break
        CTX.thread = None

    def enabled(self) -> list[int]:
        out = []
        for t in self.threads:
            op = t.pending
            if op is not None and (not op.blocking or op.enabled()):
                out.append(t.idx)
        return out

    def step(self, label: int, fp: Footprint | None = None, n: int = 0) -> None:
        """Run the pending op of the labelled thread.  ``fp`` and ``n`` (its number of
        choices), when given, are what an earlier run of the same prefix recorded."""
        tidx = label & THREAD_MASK
        choice = label >> CHOICE_SHIFT
        t = self.threads[tidx]
        op = t.pending
        assert op is not None
        t.pending = None
        self.ev_thread.append(tidx)
        self.ev_fp.append(op.fp if fp is None else fp)
        self.ev_label.append(label)
        if not n:
            n = op.nchoices() if op.choice else 1
        self.ev_nchoices.append(n)
        self.ev_op.append(op)
        trace = self.trace
        if trace:
            self.steps.append(TraceStep(len(self.steps), t.name, t.lane,
                                        coroutine_stack(t.coro), op.describe(),
                                        choice, n))
        CTX.thread = t
        try:
            t.steps += 1
            if t.steps > self.max_steps:
                raise ModelViolation("livelock", f"{t.name} ran more than {self.max_steps} steps "
                                     "in one execution")
            value = op.run(choice)
            if trace:
                self.steps[-1].result = "" if value is None else _short(value)
            self.last = tidx
            self._resume(t, value)
        except ModelViolation as v:
            self._violate(v, t)
        finally:
            CTX.thread = None

    def _violate(self, v: ModelViolation, t: Thread | None) -> None:
        self.violation = Violation(v.kind, v.message, v.report,
                                   len(self.ev_thread) - 1, t.name if t else "<finish>")

    def _end(self) -> None:
        """Nothing can run: a deadlock, or the end, where the model's final checks run."""
        stuck = [t.name for t in self.threads if not t.done and not t.daemon]
        if stuck:
            self.violation = Violation("deadlock", "no thread can run but " + ", ".join(stuck)
                                       + " have not finished", "", len(self.ev_thread), stuck[0])
            return
        CTX.execution = self
        try:
            self.model.finish(self)
        except ModelViolation as v:
            self.violation = Violation(v.kind, v.message, v.report, len(self.ev_thread),
                                       "<finish>")

    def run(self, chooser: Chooser, prefix: Prefix | None = None) -> ExecutionOutcome:
        """Start, replay ``prefix``, then step as the chooser says until nothing is
        enabled, a violation, or the chooser gives up."""
        self.start()
        threads = self.threads
        if prefix is not None:
            # NOTE: a replayed step needs no enabled set, and its footprint and
            # number of choices are the ones recorded (the model is deterministic):
            # together a third of a step's cost.
            labels, fps, ncs = prefix.labels, prefix.fps, prefix.nchoices
            for d in range(prefix.length):
                if self.violation is not None:
                    break
                label = labels[d]
                op = threads[label & THREAD_MASK].pending
                if op is None or (op.blocking and not op.enabled()):
                    raise ModelError("the model is not deterministic: replaying step "
                                     f"{d} found thread "
                                     f"{threads[label & THREAD_MASK].name} blocked")
                self.step(label, fps[d], ncs[d])
        while self.violation is None:
            enabled = self.enabled()
            if not enabled:
                self._end()
                break
            label = chooser.pick(self, enabled)
            if label < 0:
                self.aborted = True
                break
            self.step(label)
        CTX.execution = None
        return ExecutionOutcome(self.ev_label, self.violation, self.aborted, list(self.reached))


def _missing_await(t: Thread, where: str) -> ModelError:
    what = _unawaited[0] if _unawaited else "an operation was created but never awaited"
    return ModelError(f"{t.name}: {what} (missing 'await'?){where}")


def _short(value: Any) -> str:
    s = repr(value)
    if " at 0x" in s:  # a default repr: its address differs from run to run
        s = "<" + type(value).__name__ + ">"
    return s if len(s) <= 40 else s[:37] + "..."


def trace_signature(ex: Execution) -> tuple[frozenset[tuple[int, int, int]],
                                            frozenset[tuple[tuple[int, int, int],
                                                            tuple[int, int, int]]]]:
    """The Mazurkiewicz trace of an execution, as a canonical value.

    Events are named (thread, n-th step of that thread, choice); the trace is the
    set of events and the set of ordered pairs of dependent events.  Two executions of a
    deterministic
    model are equivalent exactly when their signatures are equal.  Quadratic: for
    tests and benchmarks, not for the search.
    """
    from .dpor import dependent

    seq: dict[int, int] = {}
    ids: list[tuple[int, int, int]] = []
    for t, lab in zip(ex.ev_thread, ex.ev_label, strict=True):
        seq[t] = seq.get(t, 0) + 1
        ids.append((t, seq[t], lab >> CHOICE_SHIFT))
    fps, ths = ex.ev_fp, ex.ev_thread
    n = len(ids)
    return frozenset(ids), frozenset((ids[i], ids[j]) for i in range(n) for j in range(i + 1, n)
                                     if dependent(ths[i], fps[i], ths[j], fps[j]))
