"""DPOR against brute force on small random programs.

Hypothesis generates tiny concurrent programs (2-3 threads of 1-4 instructions over
2-3 shared variables and 1-2 locks).  Each program is explored twice:

* by a brute-force explorer that runs every schedule (every enabled thread and every
  choice value at every step, re-running from scratch with a forced prefix), and
* by :class:`ptlab.engine.DPOR` with ``stop_on_violation=False``.

For every complete execution we keep its *outcome* (variables, lock holders, every
thread's registers, which threads are stuck, the violation if any) and its
Mazurkiewicz trace signature (the events, their footprints and choice values, and
the order of every pair of dependent events from different threads).  DPOR must
find exactly the brute-force outcomes and exactly the brute-force traces, and for
programs without blocking operations, locks or choices it must explore each trace
exactly once.  Redundancy elsewhere is recorded and printed by the last test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ptlab.engine import (
    ACQUIRE,
    ADD,
    DPOR,
    PEEK,
    READ,
    RELEASE,
    TRY,
    UPDATE,
    Call,
    Choose,
    Execution,
    Footprint,
    ModelViolation,
    Op,
    Var,
    WaitUntil,
    new_loc,
)
from ptlab.engine.dpor import dependent
from ptlab.engine.execution import CHOICE_SHIFT, THREAD_MASK

NREGS = 2

# -- the program language -------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """``r[reg] = x[var]``"""

    var: int
    reg: int


@dataclass(frozen=True)
class Write:
    """``x[var] = const`` or, with ``src``, ``x[var] = r[src] + const``"""

    var: int
    const: int
    src: int | None = None


@dataclass(frozen=True)
class Update:
    """``r[reg] = fetch_add(x[var], delta)`` (footprint UPDATE)"""

    var: int
    delta: int
    reg: int


@dataclass(frozen=True)
class Add:
    """``x[var] += delta``, result unseen (footprint ADD: two ADDs commute)"""

    var: int
    delta: int


@dataclass(frozen=True)
class Wait:
    """Block until ``x[var] != 0``, then ``r[reg] = x[var]`` (footprint READ)"""

    var: int
    reg: int


@dataclass(frozen=True)
class Pick:
    """``r[reg] = choose(0, 1)``; with ``var``, ``r[reg] = 10 * x[var] + choice``
    (footprint READ), else footprint-free."""

    reg: int
    var: int | None = None


@dataclass(frozen=True)
class Locked:
    """``lock(L); body; unlock(L)``"""

    lock: int
    body: tuple[Instr, ...]


@dataclass(frozen=True)
class TryLocked:
    """``r[reg] = trylock(L); if r[reg]: body; unlock(L)``"""

    lock: int
    reg: int
    body: tuple[Instr, ...]


Instr = Read | Write | Update | Add | Wait | Pick | Locked | TryLocked


@dataclass(frozen=True)
class Program:
    nvars: int
    nlocks: int
    threads: tuple[tuple[Instr, ...], ...]
    # finish() raises ModelViolation("check") when r[reg] of thread == value.
    check: tuple[int, int, int] | None = None

    def features(self) -> set[str]:
        out: set[str] = set()

        def walk(code: tuple[Instr, ...]) -> None:
            for ins in code:
                if isinstance(ins, Wait):
                    out.add("wait")
                elif isinstance(ins, Pick):
                    out.add("choose")
                elif isinstance(ins, Locked):
                    out.add("lock")
                    walk(ins.body)
                elif isinstance(ins, TryLocked):
                    out.add("trylock")
                    walk(ins.body)

        for code in self.threads:
            walk(code)
        return out

    @property
    def plain(self) -> bool:
        """No blocking ops, locks or choices: DPOR must be exactly optimal."""
        return not self.features()


def _max_steps(code: tuple[Instr, ...]) -> tuple[int, int]:
    """(scheduled steps, choice steps) of ``code`` in the longest run."""
    steps = choices = 0
    for ins in code:
        if isinstance(ins, Locked | TryLocked):
            s, c = _max_steps(ins.body)
            steps += 2 + s
            choices += c
        else:
            steps += 1
            choices += isinstance(ins, Pick)
    return steps, choices


def schedule_bound(prog: Program) -> int:
    """Upper bound on the number of schedules (interleavings times choice values)."""
    lens = [_max_steps(code) for code in prog.threads]
    total = sum(s for s, _ in lens)
    n = math.factorial(total)
    for s, _ in lens:
        n //= math.factorial(s)
    return n << sum(c for _, c in lens)


# -- locks as custom ops ------------------------------------------------------------


class Lock:
    __slots__ = ("holder", "loc", "name")

    def __init__(self, name: str) -> None:
        self.loc = new_loc()
        self.holder: int | None = None
        self.name = name


class Acquire(Op):
    """Blocking: enabled only while the lock is free."""

    __slots__ = ("lock", "tid")
    blocking = True
    name = "lock"

    def __init__(self, lock: Lock, tid: int) -> None:
        Op.__init__(self, ((lock.loc, ACQUIRE),))
        self.lock = lock
        self.tid = tid

    def enabled(self) -> bool:
        return self.lock.holder is None

    def run(self, choice: int) -> None:
        assert self.lock.holder is None
        self.lock.holder = self.tid

    def describe(self) -> str:
        return f"lock({self.lock.name})"


class Release(Op):
    __slots__ = ("lock", "tid")
    name = "unlock"

    def __init__(self, lock: Lock, tid: int) -> None:
        Op.__init__(self, ((lock.loc, RELEASE),))
        self.lock = lock
        self.tid = tid

    def run(self, choice: int) -> None:
        assert self.lock.holder == self.tid
        self.lock.holder = None

    def describe(self) -> str:
        return f"unlock({self.lock.name})"


class TryLock(Op):
    """Non-blocking.  Its footprint depends on the lock state when it runs: TRY (an
    acquire that could also have run before the previous release, and failed) if it
    will succeed, PEEK if it will fail.  ``fp`` is a property, so the engine reads it
    at the moment it schedules or records the step; both footprints conflict with
    the ACQUIRE/RELEASE/TRY steps that change the lock state."""

    __slots__ = ("lock", "tid")
    name = "trylock"

    def __init__(self, lock: Lock, tid: int) -> None:
        self.lock = lock
        self.tid = tid
        Op.__init__(self, ())  # the fp setter below ignores this

    @property  # type: ignore[override]
    def fp(self) -> Footprint:
        return ((self.lock.loc, TRY if self.lock.holder is None else PEEK),)

    @fp.setter
    def fp(self, value: Footprint) -> None:
        pass

    def run(self, choice: int) -> bool:
        if self.lock.holder is None:
            self.lock.holder = self.tid
            return True
        return False

    def describe(self) -> str:
        return f"trylock({self.lock.name})"


# -- the model ----------------------------------------------------------------------


class ProgModel:
    """Runs a :class:`Program`; shared state lives here so the tests can read it."""

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        self.vars: list[Var] = []
        self.locks: list[Lock] = []
        self.regs: list[list[int]] = []

    def build(self, ex: Execution) -> None:
        self.vars = [Var(0, f"x{i}") for i in range(self.prog.nvars)]
        self.locks = [Lock(f"L{i}") for i in range(self.prog.nlocks)]
        self.regs = [[0] * NREGS for _ in self.prog.threads]
        for tid, code in enumerate(self.prog.threads):
            ex.spawn(f"t{tid}", self._thread(tid, code))

    def finish(self, ex: Execution) -> None:
        chk = self.prog.check
        if chk is not None and self.regs[chk[0]][chk[1]] == chk[2]:
            raise ModelViolation("check", f"t{chk[0]}.r{chk[1]} == {chk[2]}")

    async def _thread(self, tid: int, code: tuple[Instr, ...]) -> None:
        for ins in code:
            await self._exec(tid, ins)

    async def _exec(self, tid: int, ins: Instr) -> None:
        regs = self.regs[tid]
        if isinstance(ins, Read):
            regs[ins.reg] = await self.vars[ins.var].load()
        elif isinstance(ins, Write):
            value = ins.const if ins.src is None else regs[ins.src] + ins.const
            await self.vars[ins.var].store(value)
        elif isinstance(ins, Update):
            v = self.vars[ins.var]
            regs[ins.reg] = await Call(((v.loc, UPDATE),), "faa", _fetch_add, v, ins.delta)
        elif isinstance(ins, Add):
            v = self.vars[ins.var]
            await Call(((v.loc, ADD),), "add", _fetch_add, v, ins.delta)
        elif isinstance(ins, Wait):
            v = self.vars[ins.var]
            regs[ins.reg] = await WaitUntil(((v.loc, READ),), "wait", lambda: v.value != 0,
                                            lambda: v.value)
        elif isinstance(ins, Pick):
            if ins.var is None:
                fp: Footprint = ()
                fn: Callable[[int], Any] = _identity
            else:
                v = self.vars[ins.var]
                fp = ((v.loc, READ),)

                def fn(k: int) -> int:
                    return 10 * v.value + k

            regs[ins.reg] = await Choose(fp, "choose", _two, fn)
        elif isinstance(ins, Locked):
            lock = self.locks[ins.lock]
            await Acquire(lock, tid)
            for sub in ins.body:
                await self._exec(tid, sub)
            await Release(lock, tid)
        else:
            lock = self.locks[ins.lock]
            ok = await TryLock(lock, tid)
            regs[ins.reg] = int(ok)
            if ok:
                for sub in ins.body:
                    await self._exec(tid, sub)
                await Release(lock, tid)

    def outcome(self, ex: Execution) -> tuple[Any, ...]:
        """The final state of a complete execution."""
        stuck = tuple(t.idx for t in ex.threads if not t.done)
        v = ex.violation
        return (
            tuple(x.value for x in self.vars),
            tuple(lk.holder for lk in self.locks),
            tuple(tuple(r) for r in self.regs),
            stuck,
            None if v is None else (v.kind, v.message),
        )


def _fetch_add(v: Var, delta: int) -> int:
    old: int = v.value
    v.value = old + delta
    return old


def _identity(k: int) -> int:
    return k


def _two() -> int:
    return 2


# -- trace signatures and exploration --------------------------------------------------

Signature = tuple[frozenset[Any], frozenset[Any]]


def signature(ex: Execution) -> Signature:
    """The Mazurkiewicz trace of ``ex``: its events (thread, seq, footprint, choice)
    and, for every dependent pair from different threads, which came first."""
    seq = [0] * len(ex.threads)
    ids: list[tuple[int, int]] = []
    events = []
    for k, t in enumerate(ex.ev_thread):
        ids.append((t, seq[t]))
        seq[t] += 1
        events.append((t, ids[k][1], ex.ev_fp[k], ex.ev_label[k] >> CHOICE_SHIFT))
    order = []
    n = len(ids)
    for i in range(n):
        ti, fi = ex.ev_thread[i], ex.ev_fp[i]
        for j in range(i + 1, n):
            tj = ex.ev_thread[j]
            if tj != ti and dependent(ti, fi, tj, ex.ev_fp[j]):
                order.append((ids[i], ids[j]))
    return frozenset(events), frozenset(order)


@dataclass
class Explored:
    outcomes: set[tuple[Any, ...]] = field(default_factory=set)
    traces: set[Signature] = field(default_factory=set)
    executions: int = 0
    # For DPOR: how many executions had a trace already seen.
    repeats: int = 0

    def add(self, ex: Execution) -> None:
        model = ex.model
        assert isinstance(model, ProgModel)
        self.executions += 1
        self.outcomes.add(model.outcome(ex))
        sig = signature(ex)
        if sig in self.traces:
            self.repeats += 1
        self.traces.add(sig)


class _Forced:
    """Follow ``prefix``, then take the first enabled label at each step and remember
    the alternatives, so that the caller can explore them later."""

    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.alts: list[tuple[int, list[int]]] = []

    def pick(self, ex: Execution, enabled: list[int]) -> int:
        d = len(ex.ev_thread)
        if d < len(self.prefix):
            label = self.prefix[d]
            assert label & THREAD_MASK in enabled, "brute force: model not deterministic"
            return label
        labels = []
        for t in enabled:
            op = ex.threads[t].pending
            assert op is not None
            n = op.nchoices() if op.choice else 1
            labels.extend(t | (c << CHOICE_SHIFT) for c in range(n))
        self.alts.append((d, labels[1:]))
        return labels[0]


def brute_force(make_model: Callable[[], ProgModel]) -> Explored:
    """Every schedule, each run from scratch: one execution per leaf of the tree."""
    found = Explored()
    todo: list[list[int]] = [[]]
    while todo:
        prefix = todo.pop()
        ex = Execution(make_model())
        chooser = _Forced(prefix)
        out = ex.run(chooser)
        assert not out.aborted
        found.add(ex)
        for d, labels in chooser.alts:
            todo.extend([*ex.ev_label[:d], lab] for lab in labels)
    return found


@dataclass
class DporRun:
    explored: Explored
    executions: int
    sleep_blocked: int
    infeasible: int
    verdict: str


def run_dpor(make_model: Callable[[], ProgModel], *, stop_on_violation: bool = False) -> DporRun:
    found = Explored()

    def on_execution(ex: Execution) -> None:
        if not ex.aborted:
            found.add(ex)

    dpor = DPOR(make_model, stop_on_violation=stop_on_violation)
    dpor.on_execution = on_execution
    res = dpor.run()
    assert res.stats.executions == found.executions
    return DporRun(found, res.stats.executions, res.stats.sleep_blocked, res.stats.infeasible,
                   res.verdict)


# -- program generation ----------------------------------------------------------------

MAX_SCHEDULES = 3000

_REG = st.integers(0, NREGS - 1)
_CONST = st.integers(1, 2)


FEATURES = frozenset({"wait", "choose", "lock", "trylock"})


@st.composite
def simple_instr(draw: st.DrawFn, nvars: int, features: frozenset[str]) -> Instr:
    var = st.integers(0, nvars - 1)
    kinds = ["read", "write", "update", "add"]
    kinds += [k for k in ("wait", "choose") if k in features]
    kind = draw(st.sampled_from(kinds))
    if kind == "read":
        return Read(draw(var), draw(_REG))
    if kind == "write":
        src = draw(st.none() | _REG)
        return Write(draw(var), draw(st.integers(0 if src is not None else 1, 2)), src)
    if kind == "update":
        return Update(draw(var), draw(_CONST), draw(_REG))
    if kind == "add":
        return Add(draw(var), draw(_CONST))
    if kind == "wait":
        return Wait(draw(var), draw(_REG))
    return Pick(draw(_REG), draw(st.none() | var))


@st.composite
def instr(draw: st.DrawFn, nvars: int, locks: tuple[int, ...], features: frozenset[str]) -> Instr:
    """A simple instruction or, if ``locks`` is not empty, a (try)lock section on one
    of them whose body may nest a section on another (two locks, two orders: deadlocks)."""
    kinds = ["simple"]
    if locks:
        kinds += [k for k in ("lock", "trylock") if k in features]
    kind = draw(st.sampled_from(kinds))
    if kind == "simple":
        return draw(simple_instr(nvars, features))
    lock = draw(st.sampled_from(locks))
    inner = tuple(lk for lk in locks if lk != lock)
    body = tuple(draw(st.lists(instr(nvars, inner, features), min_size=1, max_size=2)))
    if kind == "lock":
        return Locked(lock, body)
    return TryLocked(lock, draw(_REG), body)


@st.composite
def programs(draw: st.DrawFn, features: frozenset[str] = FEATURES) -> Program:
    """2-3 threads of 1-4 top-level instructions over 2-3 variables (and 0-2 locks if
    ``features`` has "lock" or "trylock"), plus maybe a final check on a register."""
    nthreads = draw(st.integers(2, 3))
    nvars = draw(st.integers(2, 3))
    nlocks = draw(st.integers(0, 2)) if features & {"lock", "trylock"} else 0
    ins = instr(nvars, tuple(range(nlocks)), features)
    threads = [tuple(draw(st.lists(ins, min_size=1, max_size=4))) for _ in range(nthreads)]
    # Keep brute force affordable: drop trailing instructions of the longest threads.
    prog = Program(nvars, nlocks, tuple(threads))
    while schedule_bound(prog) > MAX_SCHEDULES:
        k = max(range(nthreads), key=lambda i: (_max_steps(threads[i])[0], i))
        if len(threads[k]) > 1:
            threads[k] = threads[k][:-1]
        else:  # one section nesting another: keep its first step only
            threads[k] = (Read(0, 0),)
        prog = Program(nvars, nlocks, tuple(threads))
    check = draw(st.none() | st.tuples(st.integers(0, nthreads - 1), _REG, st.integers(0, 3)))
    return Program(nvars, nlocks, tuple(threads), check)


# -- the comparison ------------------------------------------------------------------------

# Per-feature totals over every generated program, printed by test_zz_report.
REPORT: dict[str, list[int]] = {}


def _record(prog: Program, dpor: DporRun, traces: int) -> None:
    key = "plain" if prog.plain else "+".join(sorted(prog.features()))
    row = REPORT.setdefault(key, [0, 0, 0, 0, 0, 0])
    row[0] += 1
    row[1] += dpor.executions
    row[2] += traces
    row[3] += dpor.sleep_blocked
    row[4] += dpor.infeasible
    row[5] += dpor.executions > traces
    if dpor.executions > traces:
        event("DPOR redundant (executions > traces)")
    if dpor.sleep_blocked:
        event("DPOR sleep-set blocked")


def check_program(prog: Program) -> tuple[Explored, DporRun]:
    def make() -> ProgModel:
        return ProgModel(prog)

    brute = brute_force(make)
    dpor = run_dpor(make)
    # Same final states, deadlocks and violations.
    missing = brute.outcomes - dpor.explored.outcomes
    assert not missing, f"DPOR missed outcomes {sorted(map(repr, missing))}"
    assert dpor.explored.outcomes == brute.outcomes
    # Every trace explored (completeness), and nothing that is not a trace.
    missed_traces = len(brute.traces - dpor.explored.traces)
    assert missed_traces == 0, f"DPOR missed {missed_traces} of {len(brute.traces)} traces"
    assert dpor.explored.traces == brute.traces
    assert dpor.executions >= len(brute.traces)
    # A violation is found with stop_on_violation=True iff one exists.
    any_violation = any(o[-1] is not None for o in brute.outcomes)
    assert run_dpor(make, stop_on_violation=True).verdict == (
        "violation" if any_violation else "ok")
    _record(prog, dpor, len(brute.traces))
    return brute, dpor


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_dpor_matches_brute_force(prog: Program) -> None:
    brute, dpor = check_program(prog)
    if prog.plain:
        assert dpor.executions == len(brute.traces), "DPOR not optimal on a plain program"
        assert dpor.explored.repeats == 0
        assert dpor.sleep_blocked == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(frozenset()))
def test_dpor_optimal_on_plain_programs(prog: Program) -> None:
    brute, dpor = check_program(prog)
    assert dpor.executions == len(brute.traces), "DPOR not optimal on a plain program"
    assert dpor.explored.repeats == 0
    assert dpor.sleep_blocked == 0


def test_zz_report(record_property: Callable[[str, object], None]) -> None:
    """Print (and record for junit) DPOR executions vs distinct traces per feature set."""
    if not REPORT:
        pytest.skip("run together with the property tests")
    lines = [f"{'features':<32} {'progs':>6} {'dpor':>7} {'traces':>7} {'sleep':>6} "
             f"{'infeas':>6} {'redund.progs':>12}"]
    for key, (progs, execs, traces, sleep, infeas, red) in sorted(REPORT.items()):
        lines.append(f"{key:<32} {progs:>6} {execs:>7} {traces:>7} {sleep:>6} {infeas:>6} "
                     f"{red:>12}")
        record_property(f"dpor[{key}]", f"programs={progs} executions={execs} "
                        f"traces={traces} sleep_blocked={sleep} infeasible={infeas}")
    print("\nDPOR executions vs distinct Mazurkiewicz traces (brute force):")
    print("\n".join(lines))
