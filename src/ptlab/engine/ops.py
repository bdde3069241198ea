"""Awaitable operations: the only way model code touches shared state.

A model thread is an ``async def`` coroutine.  Every access to shared state is an
``Op`` that the coroutine awaits; the engine sees the op *before* it runs it,
together with its footprint: the locations it touches and how.  Code between two
awaits is local to the thread and atomic.

The footprint vocabulary is deliberately small.  Plain data uses READ, WRITE,
UPDATE (a read-modify-write whose result the thread sees) and ADD (a
read-modify-write whose result nobody sees, so two ADDs commute: ``atomic_inc``,
per-CPU statistics).  Locks and lock-like resources (an IRQ-disabled region, an
RCU read-side critical section) use ACQUIRE, RELEASE, PEEK (observe whether the
resource is held, like RCU's grace-period start does), HELD (a failed trylock:
it saw the resource held), TRY (a trylock that succeeds: unlike a
blocking acquire it could have run before the previous release, and failed) and
PROBE (wait until the resource is free and observe that instant: an IPI being
delivered, a quiescent state being reported).  An op whose outcome decides its
footprint (a trylock) computes ``fp`` from the state when it is about to run;
both of its possible footprints must conflict with whatever changes that state,
and each must be exact (a failed trylock is HELD, never TRY: TRY would order a
later acquire after it and hide that acquire's race with the holder).

Handshakes use SIGNAL and AWAIT.  An op that SIGNALs a location can run only after
the last WRITE to it (a CPU reports the quiescent state a grace period asked of
it); an op that AWAITs a location can run only after every SIGNAL to it (the
grace period ends once all CPUs reported; ``smp_call_function()`` returns once
every CPU ran the function).  CONSUME is an UPDATE that likewise needs every
SIGNAL before it (taking work from a queue that the signaller filled when it was
empty).  Because such a pair can never run the other way round, the explorer
orders them without trying to reverse them.  An op may SIGNAL only when the
waiter truly could not run without it: the footprint then depends on the state,
and the state it depends on must be written only by ops that conflict with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

(READ, WRITE, UPDATE, ADD, ACQUIRE, RELEASE, PEEK, PROBE, TRY, SIGNAL, AWAIT, CONSUME,
 HELD) = range(13)
KIND_NAMES = ("read", "write", "update", "add", "acquire", "release", "peek", "probe", "try",
              "signal", "await", "consume", "held")

# CONFLICT[earlier][later]: 0 = independent, 1 = dependent and reversible (a race
# the explorer may reorder), 2 = dependent but only an ordering edge: a release
# followed by an acquire cannot be swapped (the acquire would block), so the race
# that matters is the one between the two acquires; 3 = the later op needs the
# earlier one (a handshake, below): an ordering edge that also carries everything
# before the earlier op, since the later op can never run without it.  HELD is a
# failed trylock: it saw the resource held, so an acquire after it is ordered like
# one after a release (it could not have run in the trylock's place; the race that
# matters is with the holder).
_R, _S, _N = 1, 2, 3
CONFLICT: tuple[tuple[int, ...], ...] = (
    # later:  R   W   U   A  ACQ REL PEEK PROBE TRY SIG AWAIT CONS HELD   earlier:
    (0, _R, _R, _R, 0, 0, 0, 0, 0, _R, 0, _R, 0),  # READ
    (_R, _R, _R, _R, 0, 0, 0, 0, 0, _N, _R, _R, 0),  # WRITE
    (_R, _R, _R, _R, 0, 0, 0, 0, 0, _R, _R, _R, 0),  # UPDATE
    (_R, _R, _R, 0, 0, 0, 0, 0, 0, _R, _R, _R, 0),  # ADD
    (0, 0, 0, 0, _R, _R, _R, _R, _R, 0, 0, 0, _R),  # ACQUIRE
    (0, 0, 0, 0, _S, _R, _R, _S, _R, 0, 0, 0, _R),  # RELEASE
    (0, 0, 0, 0, _R, _R, 0, 0, _R, 0, 0, 0, 0),  # PEEK
    (0, 0, 0, 0, _R, _R, 0, 0, _R, 0, 0, 0, 0),  # PROBE
    (0, 0, 0, 0, _R, _R, _R, _R, _R, 0, 0, 0, _R),  # TRY
    (_R, _R, _R, _R, 0, 0, 0, 0, 0, _R, _N, _N, 0),  # SIGNAL
    (0, _R, _R, _R, 0, 0, 0, 0, 0, _R, 0, _R, 0),  # AWAIT
    (_R, _R, _R, _R, 0, 0, 0, 0, 0, _R, _R, _R, 0),  # CONSUME
    (0, 0, 0, 0, _S, _R, 0, _S, _R, 0, 0, 0, 0),  # HELD
)
NKINDS = len(CONFLICT)
DEPENDENT: tuple[tuple[bool, ...], ...] = tuple(
    tuple(bool(CONFLICT[a][b] or CONFLICT[b][a]) for b in range(NKINDS)) for a in range(NKINDS)
)

Footprint = tuple[tuple[int, int], ...]
LOCAL: Footprint = ()


class ModelViolation(Exception):
    """Raised by model code when a property is broken (KASAN, double call_rcu, ...).

    ``kind`` is a short stable name (``use-after-free``, ``double-call_rcu``,
    ``leak``); ``report`` is the multi-line, kernel-style report.
    """

    def __init__(self, kind: str, message: str, report: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.report = report or message


class ModelError(Exception):
    """The model itself is broken (a forgotten ``await``, a bad op): not a finding."""


class _Context:
    """Who is running now.  Set by the execution driving the coroutines."""

    __slots__ = ("execution", "setup_locs", "thread")

    def __init__(self) -> None:
        self.thread: Any = None
        self.setup_locs = 0
        self.execution: Any = None


CTX = _Context()


def current_thread() -> Any:
    """The engine thread whose step is running (None during set-up)."""
    return CTX.thread


def new_loc() -> int:
    """A fresh location id, stable across executions that are equivalent so far.

    Ids are (creating thread, creation count) packed in an int, so the k-th object
    a thread creates has the same id in every execution, whatever the other
    threads did in between; objects made before any thread runs use thread -1.
    """
    t = CTX.thread
    if t is None or t.idx < 0:
        CTX.setup_locs += 1
        return CTX.setup_locs
    t.locs += 1
    idx: int = t.idx
    n: int = t.locs
    return ((idx + 1) << 24) | n


class Op:
    """One awaited step.  Subclasses set ``fp`` and implement ``run``.

    ``run(choice)`` performs the step and returns the value the ``await``
    evaluates to.  ``blocking`` ops also implement ``enabled()``; ``nchoices()``
    > 1 makes the step a choice the explorer branches on (an allocation that may
    fail, which ready RCU callback runs next).
    """

    __slots__ = ("fp",)
    blocking: ClassVar[bool] = False
    choice: ClassVar[bool] = False
    name: ClassVar[str] = "op"

    def __init__(self, fp: Footprint) -> None:
        self.fp = fp
        # NOTE: counting creations (not awaits) is what lets the engine catch an
        # op that was built but never awaited, at the cost of one increment.
        t = CTX.thread
        if t is not None:
            t.created += 1

    def __await__(self) -> Generator[Op, Any, Any]:
        return (yield self)

    def enabled(self) -> bool:
        return True

    @property
    def fp_bound(self) -> Footprint:
        """The footprint to assume for this op at another place in the schedule.

        Ops whose footprint depends on the state (a trylock is TRY or HELD) must
        override it with one that conflicts with everything any of their footprints
        conflicts with: the explorer reads it after the execution ended, when the
        state no longer says what the op would do elsewhere.
        """
        return self.fp

    def nchoices(self) -> int:
        return 1

    def run(self, choice: int) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class DynamicOp(Op):
    """An op whose footprint depends on the state when it is about to run (a trylock,
    a queue that may be empty).  ``base`` is the footprint given at construction;
    subclasses compute the current one in ``footprint()``, following the rule in the
    module docstring, and may widen ``fp_bound``."""

    __slots__ = ("base",)

    @property
    def fp(self) -> Footprint:
        return self.footprint()

    @fp.setter
    def fp(self, value: Footprint) -> None:
        self.base = value

    def footprint(self) -> Footprint:
        return self.base

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # NOTE: ``fp`` is read for every step; making each subclass's property call
        # its footprint() directly saves a call per read.
        setattr(cls, "fp", property(cls.footprint, _set_base))  # noqa: B010


def _set_base(op: DynamicOp, value: Footprint) -> None:
    op.base = value


def _await_inline(self: Op) -> Generator[Op, Any, Any]:
    if self.blocking and not self.enabled():
        raise ModelError(f"{self.describe()} would block outside a schedule")
    return self.run(0)
    yield  # a generator, as __await__ must return one


def _call_inline(self: Call) -> Generator[Op, Any, Any]:
    return self.fn(*self.args)
    yield  # a generator, as __await__ must return one


class _Mode:
    __slots__ = ("inline",)

    def __init__(self) -> None:
        self.inline = False


MODE = _Mode()
"""``MODE.inline`` is true inside :func:`ops_inline`."""


class _Done:
    """An awaitable that completes at once with None.

    NOTE: its ``__await__`` is a C function (an exhausted tuple iterator), so
    awaiting it runs no Python frame at all."""

    __slots__ = ()
    __await__ = ().__iter__


Step = Awaitable[Any]
"""What a step's builder returns: an :class:`Op`, or in a sequential run the
step already done (:data:`DONE`, ``done(value)``)."""

DONE: Step = _Done()  # type: ignore[assignment]


async def done(value: Any) -> Any:
    """An awaitable that completes at once with ``value``."""
    return value


def call(fp: Footprint, label: str, fn: Callable[..., Any], *args: Any) -> Step:
    """``Call(fp, label, fn, *args)``; in a sequential run (:func:`ops_inline`),
    ``fn(*args)`` at once and an awaitable of its value."""
    if MODE.inline:
        value = fn(*args)
        return DONE if value is None else done(value)
    return Call(fp, label, fn, *args)


@contextmanager
def ops_inline() -> Iterator[None]:
    """Run every awaited op at once, where it is awaited, for code that runs outside
    any schedule (a sequential simulation).

    NOTE: swapping ``Op.__await__`` for the duration, rather than testing a flag in
    every await, keeps the search's hot path as it was; it also spares the
    suspension of every coroutine on the await chain.  The builders of the
    steps every page fault takes (page-table entries, spinlocks, RCU, the VMA
    lock) go further: they test ``MODE.inline`` and, in a sequential run, do
    the step themselves and return :data:`DONE` or ``done(value)`` (see
    :func:`call`), which builds neither an op nor a generator: a simulated
    fault is then about twice as fast."""
    saved = Op.__dict__["__await__"]
    saved_call = Call.__dict__.get("__await__")
    Op.__await__ = _await_inline  # type: ignore[method-assign]
    # NOTE: most steps are Calls, which never block: skip the check and run().
    Call.__await__ = _call_inline  # type: ignore[method-assign,assignment]
    MODE.inline = True
    try:
        yield
    finally:
        MODE.inline = False
        Op.__await__ = saved  # type: ignore[method-assign]
        if saved_call is None:
            del Call.__await__
        else:
            Call.__await__ = saved_call  # type: ignore[method-assign]


class Call(Op):
    """A generic step: ``fn(*args)`` run atomically with footprint ``fp``.

    ``label`` is a ``str.format`` template over ``args``, formatted only when a
    trace is printed.
    """

    __slots__ = ("args", "fn", "label")

    def __init__(self, fp: Footprint, label: str, fn: Callable[..., Any], *args: Any) -> None:
        # NOTE: Op.__init__ inlined: most steps are Calls.
        self.fp = fp
        t = CTX.thread
        if t is not None:
            t.created += 1
        self.fn = fn
        self.args = args
        self.label = label

    def run(self, choice: int) -> Any:
        return self.fn(*self.args)

    def describe(self) -> str:
        return self.label.format(*self.args) if self.args else self.label


class WaitUntil(Op):
    """Block until ``cond()`` holds, then return ``fn()`` (or None)."""

    __slots__ = ("cond", "fn", "label")
    blocking = True

    def __init__(
        self,
        fp: Footprint,
        label: str,
        cond: Callable[[], bool],
        fn: Callable[[], Any] | None = None,
    ) -> None:
        Op.__init__(self, fp)
        self.cond = cond
        self.fn = fn
        self.label = label

    def enabled(self) -> bool:
        return self.cond()

    def run(self, choice: int) -> Any:
        return None if self.fn is None else self.fn()

    def describe(self) -> str:
        return self.label


class Choose(Op):
    """Branch ``n`` ways; ``fn(k)`` runs for the chosen ``k``.  Blocks while n == 0."""

    __slots__ = ("count", "fn", "label")
    choice = True
    blocking = True

    def __init__(
        self,
        fp: Footprint,
        label: str,
        count: Callable[[], int],
        fn: Callable[[int], Any],
    ) -> None:
        Op.__init__(self, fp)
        self.count = count
        self.fn = fn
        self.label = label

    def enabled(self) -> bool:
        return self.count() > 0

    def nchoices(self) -> int:
        return self.count()

    def run(self, choice: int) -> Any:
        return self.fn(choice)

    def describe(self) -> str:
        return self.label


class Var:
    """A shared variable at one location (loom's ``Cell``)."""

    __slots__ = ("_rfp", "_wfp", "loc", "name", "value")

    def __init__(self, value: Any, name: str = "var") -> None:
        self.loc = new_loc()
        self.value = value
        self.name = name
        self._rfp: Footprint = ((self.loc, READ),)
        self._wfp: Footprint = ((self.loc, WRITE),)

    def load(self) -> Op:
        return Call(self._rfp, "READ_ONCE({0.name})", Var._get, self)

    def store(self, value: Any) -> Op:
        return Call(self._wfp, "WRITE_ONCE({0.name}, {1!r})", Var._set, self, value)

    def _get(self) -> Any:
        return self.value

    def _set(self, value: Any) -> None:
        self.value = value
