"""``spinlock_t`` (include/linux/spinlock.h, kernel/locking/spinlock.c).

``spin_lock()`` is ``preempt_disable()`` plus the acquire, in one step: on a
non-RT kernel the holder is in an RCU read-side critical section for as long as
it holds the lock.  A lock embedded in freed memory (a split PTE/PMD lock in a
freed page-table page) is a use-after-free.
"""

from __future__ import annotations

from typing import Any

from ..engine import (
    ACQUIRE,
    DONE,
    HELD,
    MODE,
    READ,
    RELEASE,
    TRY,
    DynamicOp,
    Footprint,
    ModelError,
    ModelViolation,
    Op,
    Step,
    new_loc,
)
from ..engine.ops import CTX
from .cpu import CPU, rcu_exit, rcu_exit_footprint, this_cpu
from .memory import KObject


class spinlock_t:
    __slots__ = ("fp_lock", "fp_unlock", "holder", "loc", "name", "owner")

    def __init__(self, name: str, owner: KObject | None = None) -> None:
        self.loc = new_loc()
        self.holder: CPU | None = None
        self.name = name
        self.owner = owner
        # The footprints of a lock and an unlock that do not start or end a
        # read-side section (the common case: the lock is taken inside one).
        alive: Footprint = ((owner.alive, READ),) if owner is not None else ()
        self.fp_lock: Footprint = ((self.loc, ACQUIRE), *alive)
        self.fp_unlock: Footprint = ((self.loc, RELEASE), *alive)


def _acquire(lock: spinlock_t, cpu: CPU, rcu_edge: int) -> None:
    owner = lock.owner
    if owner is not None and owner.freed:
        owner.check(lock.name, "Write")
    lock.holder = cpu
    if rcu_edge == ACQUIRE:
        cpu.rcu.holder = cpu


def _release(lock: spinlock_t, cpu: CPU, rcu_edge: int) -> None:
    owner = lock.owner
    if owner is not None and owner.freed:
        owner.check(lock.name, "Write")
    if lock.holder is not cpu:
        raise ModelViolation("bad-unlock", f"spin_unlock({lock.name}) by a CPU "
                             "that does not hold it")
    lock.holder = None
    if rcu_edge == RELEASE:
        rcu_exit(cpu)


class _LockOp(DynamicOp):
    __slots__ = ("cpu", "label", "lock", "rcu_edge")

    def __init__(self, lock: spinlock_t, cpu: CPU, fp: Footprint, rcu_kind: int,
                 label: str) -> None:
        # NOTE: DynamicOp.__init__ inlined (its fp setter is a call): spinlocks are
        # a quarter of the steps of a page fault.
        self.base = fp if rcu_kind < 0 else (*fp, (cpu.rcu.loc, rcu_kind))
        t = CTX.thread
        if t is not None:
            t.created += 1
        self.rcu_edge = rcu_kind
        self.lock = lock
        self.cpu = cpu
        self.label = label

    def _edge(self) -> None:
        if self.rcu_edge == ACQUIRE:
            self.cpu.rcu.holder = self.cpu
        elif self.rcu_edge == RELEASE:
            rcu_exit(self.cpu)

    def describe(self) -> str:
        return self.label.format(self.lock.name)


class _Lock(_LockOp):
    blocking = True

    def enabled(self) -> bool:
        return self.lock.holder is None

    def run(self, choice: int) -> Any:
        _acquire(self.lock, self.cpu, self.rcu_edge)


class _Unlock(_LockOp):
    __slots__ = ()

    def footprint(self) -> Footprint:
        if self.rcu_edge == RELEASE:
            return rcu_exit_footprint(self.cpu, self.base)
        return self.base

    @property
    def fp_bound(self) -> Footprint:
        if self.rcu_edge == RELEASE:
            return rcu_exit_footprint(self.cpu, self.base, bound=True)
        return self.base

    def run(self, choice: int) -> Any:
        _release(self.lock, self.cpu, self.rcu_edge)


class _TryLock(_LockOp):
    """The footprint depends on the outcome: TRY if the lock is free, else HELD."""

    __slots__ = ()

    def footprint(self) -> Footprint:
        kind = TRY if self.lock.holder is None else HELD
        return ((self.lock.loc, kind), *self.base[1:])

    @property
    def fp_bound(self) -> Footprint:
        return ((self.lock.loc, TRY), *self.base[1:])

    def run(self, choice: int) -> Any:
        if self.lock.owner is not None:
            self.lock.owner.check(self.lock.name, "Write")
        if self.lock.holder is None:
            self.lock.holder = self.cpu
            self._edge()
            return True
        # Failed: undo the preempt_disable() the caller's bookkeeping assumed.
        self.cpu.preempt_count -= 1
        return False


def _rcu_kind_on(cpu: CPU, was_cs: bool) -> int:
    now = cpu._in_rcu_cs()
    if now == was_cs:
        return -1
    return ACQUIRE if now else RELEASE


def spin_lock(lock: spinlock_t) -> Step:
    """spin_lock(): preempt_disable(); arch_spin_lock()."""
    cpu = this_cpu()
    was = cpu.rcu_nesting or cpu.preempt_count or cpu.irqs_disabled
    cpu.preempt_count += 1
    if MODE.inline:
        if lock.holder is not None:
            raise ModelError(f"spin_lock({lock.name}) would block outside a schedule")
        _acquire(lock, cpu, -1 if was else ACQUIRE)
        return DONE
    return _Lock(lock, cpu, lock.fp_lock, -1 if was else ACQUIRE, "spin_lock({})")


def spin_unlock(lock: spinlock_t) -> Step:
    """spin_unlock(): arch_spin_unlock(); preempt_enable()."""
    cpu = this_cpu()
    # The holder is non-preemptible: the unlock ends a read-side section only if
    # nothing else keeps the CPU in one.
    cpu.preempt_count -= 1
    still = cpu.rcu_nesting or cpu.preempt_count or cpu.irqs_disabled
    if MODE.inline:
        _release(lock, cpu, -1 if still else RELEASE)
        return DONE
    return _Unlock(lock, cpu, lock.fp_unlock, -1 if still else RELEASE, "spin_unlock({})")


def spin_trylock(lock: spinlock_t) -> Op:
    """spin_trylock(): preempt_disable(); on failure preempt_enable()."""
    cpu = this_cpu()
    was = cpu._in_rcu_cs()
    if not was:
        # A failed trylock leaves the CPU as it was, so it cannot take the RCU
        # resource speculatively; a trylock from a quiescent CPU is rare in the
        # paths we model, so make it explicit.
        raise ModelViolation("model-limit", "spin_trylock() outside a non-preemptible "
                             "section is not modelled")
    cpu.preempt_count += 1
    return _TryLock(lock, cpu, ((lock.loc, TRY), *lock.fp_lock[1:]), -1, "spin_trylock({})")
