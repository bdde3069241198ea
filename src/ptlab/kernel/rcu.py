"""RCU as consolidated in Linux (kernel/rcu/tree.c), reduced to what page-table
freeing relies on.

* A grace period starts (``rcu_gp_init``: ``gp_seq`` becomes odd; every CPU then
  inside a read-side critical section owes a quiescent state, the others are seen
  quiescent at once), ends when every debt is paid (each CPU reports as it leaves
  its critical section), and then ``gp_seq`` becomes even again.
* ``call_rcu()`` records ``rcu_seq_snap(gp_seq)``: its callback may run once a grace
  period that started after the call has ended.
* Ready callbacks are invoked in an order the checker chooses: RCU does not order
  callbacks with respect to each other (seed 000: "RCU callbacks are not ordered").
* The grace-period kthread and the callback invoker are engine threads, so their
  timing is explored like any CPU's.

Debug-objects checks (CONFIG_DEBUG_OBJECTS_RCU_HEAD): ``call_rcu()`` on a head that
is already queued is a "double call_rcu" violation; freeing memory whose head is
still queued is reported by the memory model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..engine import (
    ADD,
    AWAIT,
    CONSUME,
    PEEK,
    READ,
    SIGNAL,
    UPDATE,
    WRITE,
    Call,
    DynamicOp,
    Footprint,
    ModelViolation,
    Op,
    WaitUntil,
    current_stack,
    new_loc,
)
from ..engine.coro import recording_stacks
from .current import current_kernel
from .memory import _UNRECORDED, KObject

RcuCallback = Callable[["rcu_head"], Awaitable[None]]


class rcu_head:
    """``struct rcu_head`` inside ``owner`` (a page's ``pt_rcu_head``, a slab object)."""

    __slots__ = ("func", "loc", "name", "owner", "queued", "queued_stack")

    def __init__(self, owner: KObject, name: str = "rcu_head") -> None:
        self.loc = new_loc()
        self.owner = owner
        self.name = name
        self.queued = False
        self.func: RcuCallback | None = None
        self.queued_stack: list[str] = []


class _Cb:
    __slots__ = ("func", "head", "seq", "snap")

    def __init__(self, snap: int, head: rcu_head, func: RcuCallback, seq: int) -> None:
        self.snap = snap
        self.head = head
        self.func = func
        self.seq = seq

    def __repr__(self) -> str:
        return f"{getattr(self.func, '__name__', '?')}(&{self.head.name})"


def rcu_seq_snap(s: int) -> int:
    """kernel/rcu/rcu.h: the gp_seq value at which a full grace period has elapsed."""
    return (s + 3) & ~1


class RCU:
    """The state of RCU: ``gp_seq``, callback lists, per-CPU quiescent-state debts."""

    def __init__(self, cpus: list[Any]) -> None:
        ncpus = len(cpus)
        self.cpus = cpus
        self.gp_loc = new_loc()
        self.gp_seq = 0
        self.cb_loc = new_loc()          # pending callbacks, and how many were ever queued
        self.pending: list[_Cb] = []
        self.nqueued = 0
        self.ready_loc = new_loc()
        self.ready: list[_Cb] = []
        self.inv_loc = new_loc()         # callbacks not yet finished (rcu_barrier)
        self.inflight: list[int] = []
        self.qs_loc = [new_loc() for _ in range(ncpus)]
        self.qs_owed = [False] * ncpus
        self.grace_periods = 0
        self._qs_read: Footprint = tuple((loc, AWAIT) for loc in self.qs_loc)

    # -- grace-period kthread ------------------------------------------------
    def _gp_needed(self) -> bool:
        s = self.gp_seq
        for cb in self.pending:
            if cb.snap > s:
                return True
        return False

    def _gp_init(self) -> None:
        self.gp_seq += 1
        for c, cpu in enumerate(self.cpus):
            self.qs_owed[c] = cpu.rcu.holder is not None

    def _all_qs(self) -> bool:
        return not any(self.qs_owed)

    def _gp_cleanup(self) -> None:
        self.gp_seq += 1
        self.grace_periods += 1
        s = self.gp_seq
        done = [cb for cb in self.pending if cb.snap <= s]
        if done:
            self.pending = [cb for cb in self.pending if cb.snap > s]
            self.ready.extend(done)
            # NOTE: invocation order is chosen by index into a list sorted by a key
            # that is the same in every equivalent execution (head location, then
            # queueing order of that head), never by arrival order.
            self.ready.sort(key=lambda cb: (cb.head.loc, cb.seq))

    async def rcu_gp_kthread(self) -> None:
        """kernel/rcu/tree.c: rcu_gp_kthread(): rcu_gp_init, wait for QS, rcu_gp_cleanup."""
        init_fp: Footprint = ((self.gp_loc, WRITE), *((loc, WRITE) for loc in self.qs_loc),
                              *((cpu.rcu.loc, PEEK) for cpu in self.cpus))
        while True:
            await WaitUntil(((self.cb_loc, AWAIT), (self.gp_loc, READ)),
                            "wait for callbacks needing a grace period", self._gp_needed)
            await Call(init_fp, "rcu_gp_init()", self._gp_init)
            await WaitUntil(self._qs_read, "wait for every CPU's quiescent state", self._all_qs)
            await _GpCleanup(self)

    # -- callback invocation ----------------------------------------------------
    def _ready_fp(self) -> Footprint:
        return ((self.ready_loc, CONSUME), *((cb.head.loc, WRITE) for cb in self.ready))

    def _pop_ready(self, k: int) -> _Cb:
        cb = self.ready.pop(k)
        cb.head.owner.check(cb.head.name + " (invoking RCU callback)")
        cb.head.queued = False
        return cb

    async def rcu_do_batch(self) -> None:
        """kernel/rcu/tree.c: rcu_do_batch(), in an order the checker chooses."""
        while True:
            cb = await _InvokeChoice(self)
            await cb.func(cb.head)
            await Call(((self.inv_loc, ADD),), "rcu_do_batch: callback done", self._invoked,
                       cb.seq)

    def _invoked(self, seq: int) -> None:
        self.inflight.remove(seq)

    # -- API ----------------------------------------------------------------------
    def _call_rcu(self, head: rcu_head, func: RcuCallback) -> None:
        head.owner.check(head.name, "Write")
        if head.queued:
            stack = current_stack()
            report = "\n".join([
                "ODEBUG: activate active (active state 1) object type: rcu_head hint: "
                + getattr(head.func, "__name__", "?"),
                f"WARNING: double call_rcu() on {head.name} at {head.owner.addr:#x}",
                "Call trace:",
                *(f" {fn}" for fn in reversed(stack[1:])),
                f"First queued by task {head.queued_stack[0]}:",
                *(f" {fn}" for fn in reversed(head.queued_stack[1:])),
            ])
            raise ModelViolation("double-call_rcu",
                                 f"call_rcu() on {head.name} of {head.owner.kind} at "
                                 f"{head.owner.addr:#x}, which is already queued", report)
        head.queued = True
        head.func = func
        head.queued_stack = current_stack() if recording_stacks() else _UNRECORDED
        self.nqueued += 1
        self.inflight.append(self.nqueued)
        self.pending.append(_Cb(rcu_seq_snap(self.gp_seq), head, func, self.nqueued))


class _InvokeChoice(DynamicOp):
    """Pop the k-th ready callback; its footprint covers every ready head."""

    __slots__ = ("rcu",)
    choice = True
    blocking = True

    def __init__(self, rcu: RCU) -> None:
        self.rcu = rcu
        DynamicOp.__init__(self, ())

    def footprint(self) -> Footprint:
        return self.rcu._ready_fp()

    def enabled(self) -> bool:
        return bool(self.rcu.ready)

    def nchoices(self) -> int:
        return len(self.rcu.ready)

    def run(self, choice: int) -> Any:
        return self.rcu._pop_ready(choice)

    def describe(self) -> str:
        names = [getattr(cb.func, "__name__", "?") + "(" + cb.head.name + ")"
                 for cb in self.rcu.ready]
        return "rcu_do_batch: invoke " + " | ".join(names)


def _rcu() -> RCU:
    return current_kernel().rcu


class _GpCleanup(DynamicOp):
    """rcu_gp_cleanup(): end the grace period and move the callbacks it satisfied to
    the ready list.  It SIGNALs the ready list when it finds it empty: the invoker
    cannot have run before it then."""

    __slots__ = ("rcu",)

    def __init__(self, rcu: RCU) -> None:
        self.rcu = rcu
        DynamicOp.__init__(self, ())

    def footprint(self) -> Footprint:
        rcu = self.rcu
        kind = SIGNAL if not rcu.ready else WRITE
        return ((rcu.gp_loc, WRITE), (rcu.cb_loc, UPDATE), (rcu.ready_loc, kind))

    def run(self, choice: int) -> Any:
        self.rcu._gp_cleanup()

    def describe(self) -> str:
        return "rcu_gp_cleanup()"


class _CallRcu(DynamicOp):
    """call_rcu().  It SIGNALs the callback list when it is the first callback that
    needs a grace period beyond those already requested: the grace-period kthread
    cannot start that grace period before it."""

    __slots__ = ("func", "head", "rcu")

    def __init__(self, rcu: RCU, head: rcu_head, func: RcuCallback) -> None:
        self.rcu = rcu
        self.head = head
        self.func = func
        DynamicOp.__init__(self, ())

    def footprint(self) -> Footprint:
        rcu, head = self.rcu, self.head
        snap = rcu_seq_snap(rcu.gp_seq)
        kind = ADD if any(cb.snap >= snap for cb in rcu.pending) else SIGNAL
        return ((head.loc, WRITE), (head.owner.alive, READ), (rcu.gp_loc, READ),
                (rcu.cb_loc, kind))

    @property
    def fp_bound(self) -> Footprint:
        rcu, head = self.rcu, self.head
        return ((head.loc, WRITE), (head.owner.alive, READ), (rcu.gp_loc, READ),
                (rcu.cb_loc, SIGNAL))

    def run(self, choice: int) -> Any:
        self.rcu._call_rcu(self.head, self.func)

    def describe(self) -> str:
        return "call_rcu(&" + self.head.name + ", " + getattr(self.func, "__name__", "?") + ")"


def call_rcu(head: rcu_head, func: RcuCallback) -> Op:
    """kernel/rcu/tree.c: call_rcu(): queue ``func(head)`` after a grace period."""
    return _CallRcu(_rcu(), head, func)


class _Completion:
    """``struct completion``: a flag and its location."""

    __slots__ = ("done", "loc")

    def __init__(self) -> None:
        self.loc = new_loc()
        self.done = False

    def complete(self) -> None:
        self.done = True

    def is_done(self) -> bool:
        return self.done


async def rcu_sequential_gp() -> int:
    """A sequential simulation's passage of time: between two steps of a workload
    every CPU is quiescent, so each grace period completes at once; run grace
    periods until no callback is left (a callback may queue another).  Returns the
    number of callbacks invoked, in the order the explorer would try first."""
    rcu = _rcu()
    invoked = 0
    while rcu.pending or rcu.ready:
        rcu.gp_seq = (rcu.gp_seq | 1) + 1
        rcu.grace_periods += 1
        rcu.ready.extend(rcu.pending)
        rcu.pending = []
        rcu.ready.sort(key=lambda cb: (cb.head.loc, cb.seq))
        while rcu.ready:
            cb = rcu._pop_ready(0)
            await cb.func(cb.head)
            rcu._invoked(cb.seq)
            invoked += 1
    return invoked


async def synchronize_rcu() -> None:
    """kernel/rcu/tree.c: synchronize_rcu() = wait_rcu_gp(call_rcu): queue a callback
    that completes a completion, and wait for it."""
    if current_kernel().sequential:
        await rcu_sequential_gp()
        return
    rs = KObject("struct rcu_synchronize (on stack)", 48)
    head = rcu_head(rs, "rs.head")
    completion = _Completion()

    async def wakeme_after_rcu(h: rcu_head) -> None:
        await Call(((completion.loc, SIGNAL),), "complete(&rs.completion)",
                   completion.complete)

    await call_rcu(head, wakeme_after_rcu)
    await WaitUntil(((completion.loc, AWAIT),), "wait_for_completion(&rs.completion)",
                    completion.is_done)


async def rcu_barrier() -> None:
    """kernel/rcu/tree.c: rcu_barrier(): wait for every callback queued before it."""
    if current_kernel().sequential:
        await rcu_sequential_gp()
        return
    rcu = _rcu()
    target = await Call(((rcu.cb_loc, READ),), "rcu_barrier: snapshot queued callbacks",
                        lambda: rcu.nqueued)
    # The condition reads the in-flight list, which call_rcu() and the invoker change.
    await WaitUntil(((rcu.inv_loc, READ), (rcu.cb_loc, READ)), "rcu_barrier: wait for them",
                    lambda: all(seq > target for seq in rcu.inflight))
