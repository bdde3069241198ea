"""CPUs and their interrupt, preemption and RCU read-side state.

Each modelled CPU runs one model thread.  Two lock-like resources per CPU carry
what other CPUs can observe of it:

* ``irq``: held while interrupts are disabled.  An IPI is delivered only when it
  is free (a PROBE), so ``local_irq_save()`` holds back ``smp_call_function()``.
* ``rcu``: held while the CPU is in any RCU read-side critical section; since the
  RCU flavour consolidation (v4.20) that is ``rcu_read_lock()``, an IRQ-disabled
  region or a preempt-disabled region (a spinlock).  A grace period that starts
  while it is held owes a quiescent state that the CPU reports when it lets go
  (``rcu_read_unlock_special()``, the next context switch); one that starts while
  it is free sees the CPU quiescent at once (the FQS scan of idle CPUs).

Nesting counts are the CPU's own business and change without a scheduling point;
only the transitions that others can observe are steps.
"""

from __future__ import annotations

from typing import Any

from ..engine import (
    ACQUIRE,
    DONE,
    MODE,
    RELEASE,
    SIGNAL,
    DynamicOp,
    Footprint,
    ModelViolation,
    Op,
    Step,
    new_loc,
)
from ..engine.ops import CTX


class Resource:
    """A lock-like resource: a location and who holds it."""

    __slots__ = ("holder", "loc", "name")

    def __init__(self, name: str) -> None:
        self.loc = new_loc()
        self.holder: Any = None
        self.name = name


class CPU:
    __slots__ = (
        "fp_rcu_enter",
        "fp_rcu_exit",
        "idx",
        "irq",
        "irqs_disabled",
        "kernel",
        "preempt_count",
        "rcu",
        "rcu_nesting",
        "resched_left",
        "thread_name",
    )

    def __init__(self, kernel: Any, idx: int) -> None:
        self.idx = idx
        self.kernel = kernel
        self.irq = Resource(f"cpu{idx}.irq")
        self.rcu = Resource(f"cpu{idx}.rcu")
        self.preempt_count = 0
        self.rcu_nesting = 0
        self.irqs_disabled = False
        self.resched_left = 0            # need_resched() yeses left (Kernel(resched=))
        self.thread_name = f"cpu{idx}"
        # The footprints of entering and leaving a read-side section, built once.
        self.fp_rcu_enter: Footprint = ((self.rcu.loc, ACQUIRE),)
        self.fp_rcu_exit: Footprint = ((self.rcu.loc, RELEASE),)

    @property
    def quiescent(self) -> bool:
        return self.rcu.holder is None

    def _in_rcu_cs(self) -> bool:
        return self.rcu_nesting > 0 or self.preempt_count > 0 or self.irqs_disabled


def this_cpu() -> CPU:
    cpu = getattr(CTX.thread, "ctx", None)
    if cpu.__class__ is not CPU:
        raise ModelViolation("bad-context", "a per-CPU primitive was used outside a CPU thread")
    return cpu


class _Transition(DynamicOp):
    """A change of this CPU's interrupt/preempt/RCU state that others can see."""

    __slots__ = ("cpu", "irq_to", "label", "rcu_to", "result")

    def __init__(self, cpu: CPU, label: str, fp: Footprint, irq_to: int, rcu_to: int,
                 result: Any) -> None:
        # NOTE: DynamicOp.__init__ inlined (its fp setter is a call): RCU and IRQ
        # transitions are a quarter of the steps of a page fault.
        self.base = fp
        t = CTX.thread
        if t is not None:
            t.created += 1
        self.cpu = cpu
        self.label = label
        self.irq_to = irq_to  # -1 leave, 0 release, 1 acquire
        self.rcu_to = rcu_to
        self.result = result

    def run(self, choice: int) -> Any:
        cpu = self.cpu
        if self.irq_to == 1:
            cpu.irq.holder = cpu
        elif self.irq_to == 0:
            cpu.irq.holder = None
        if self.rcu_to == 1:
            cpu.rcu.holder = cpu
        elif self.rcu_to == 0:
            rcu_exit(cpu)
        return self.result

    def describe(self) -> str:
        return self.label


def _transition(cpu: CPU, label: str, was_irq: bool, was_cs: bool,
                extra: Footprint = (), result: Any = None) -> Op:
    """Build the step for a state change, given the state before it."""
    now_irq = cpu.irqs_disabled
    now_cs = cpu.rcu_nesting > 0 or cpu.preempt_count > 0 or now_irq
    if now_irq == was_irq and now_cs == was_cs:
        return _Transition(cpu, label, extra, -1, -1, result)
    fp = extra
    irq_to = rcu_to = -1
    if now_irq != was_irq:
        irq_to = int(now_irq)
        fp = (*fp, (cpu.irq.loc, ACQUIRE if now_irq else RELEASE))
    if now_cs != was_cs:
        rcu_to = int(now_cs)
        if now_cs:
            fp = (*fp, (cpu.rcu.loc, ACQUIRE))
        else:
            return _RcuExit(cpu, label, (*fp, (cpu.rcu.loc, RELEASE)), irq_to, rcu_to, result)
    return _Transition(cpu, label, fp, irq_to, rcu_to, result)


def rcu_exit(cpu: CPU) -> None:
    """Leave the read-side critical section; report a quiescent state if owed."""
    cpu.rcu.holder = None
    rcu = cpu.kernel.rcu
    if rcu.qs_owed[cpu.idx]:
        rcu.qs_owed[cpu.idx] = False


def rcu_exit_footprint(cpu: CPU, base: Footprint, bound: bool = False) -> Footprint:
    """The footprint of a step that ends ``cpu``'s read-side critical section.

    It SIGNALs the CPU's quiescent-state location only when the current grace
    period waits for it, so that the grace period's AWAIT is ordered after exactly
    the reports it needs; whatever changes that (``rcu_gp_init()``) PEEKs this CPU's
    resource and so conflicts either way.  ``bound``: as if a report were owed.
    """
    rcu = cpu.kernel.rcu
    if bound or rcu.qs_owed[cpu.idx]:
        return base + ((rcu.qs_loc[cpu.idx], SIGNAL),)
    return base


class _RcuExit(_Transition):
    """The end of a read-side critical section (see :func:`rcu_exit_footprint`);
    its ``fp`` ends with the RELEASE of the CPU's RCU resource."""

    __slots__ = ()

    def footprint(self) -> Footprint:
        return rcu_exit_footprint(self.cpu, self.base)

    @property
    def fp_bound(self) -> Footprint:
        return rcu_exit_footprint(self.cpu, self.base, bound=True)


def local_irq_save() -> Op:
    """arch/x86/include/asm/irqflags.h: local_irq_save(); returns the old flags."""
    cpu = this_cpu()
    was_irq, was_cs = cpu.irqs_disabled, cpu._in_rcu_cs()
    cpu.irqs_disabled = True
    return _transition(cpu, "local_irq_save()", was_irq, was_cs, result=was_irq)


def local_irq_restore(flags: bool) -> Op:
    """local_irq_restore(flags): re-enable interrupts unless they were off before."""
    cpu = this_cpu()
    was_irq, was_cs = cpu.irqs_disabled, cpu._in_rcu_cs()
    cpu.irqs_disabled = flags
    return _transition(cpu, "local_irq_restore()", was_irq, was_cs)


def preempt_disable() -> Op:
    """include/linux/preempt.h: preempt_disable()."""
    cpu = this_cpu()
    was_irq, was_cs = cpu.irqs_disabled, cpu._in_rcu_cs()
    cpu.preempt_count += 1
    return _transition(cpu, "preempt_disable()", was_irq, was_cs)


def preempt_enable() -> Op:
    """include/linux/preempt.h: preempt_enable()."""
    cpu = this_cpu()
    was_irq, was_cs = cpu.irqs_disabled, cpu._in_rcu_cs()
    if cpu.preempt_count <= 0:
        raise ModelViolation("preempt-imbalance", "preempt_enable() without preempt_disable()")
    cpu.preempt_count -= 1
    return _transition(cpu, "preempt_enable()", was_irq, was_cs)


def rcu_read_lock() -> Step:
    """include/linux/rcupdate.h: rcu_read_lock()."""
    cpu = this_cpu()
    # NOTE: the two cases spelled out (not _transition()): a page fault takes
    # two read-side sections.
    if cpu.rcu_nesting or cpu.preempt_count or cpu.irqs_disabled:
        cpu.rcu_nesting += 1
        if MODE.inline:
            return DONE
        return _Transition(cpu, "rcu_read_lock()", (), -1, -1, None)
    cpu.rcu_nesting = 1
    if MODE.inline:
        cpu.rcu.holder = cpu
        return DONE
    return _Transition(cpu, "rcu_read_lock()", cpu.fp_rcu_enter, -1, 1, None)


def rcu_read_unlock() -> Step:
    """include/linux/rcupdate.h: rcu_read_unlock()."""
    cpu = this_cpu()
    n = cpu.rcu_nesting
    if n <= 0:
        raise ModelViolation("rcu-imbalance", "rcu_read_unlock() without rcu_read_lock()")
    cpu.rcu_nesting = n - 1
    if n > 1 or cpu.preempt_count or cpu.irqs_disabled:
        if MODE.inline:
            return DONE
        return _Transition(cpu, "rcu_read_unlock()", (), -1, -1, None)
    if MODE.inline:
        rcu_exit(cpu)
        return DONE
    return _RcuExit(cpu, "rcu_read_unlock()", cpu.fp_rcu_exit, -1, 0, None)


def lockdep_assert_idle(cpu: CPU) -> None:
    """What lockdep/RCU would say if a CPU went idle with something still held."""
    if cpu.irqs_disabled or cpu.preempt_count or cpu.rcu_nesting:
        raise ModelViolation(
            "context-imbalance",
            f"cpu{cpu.idx} finished with irqs_disabled={cpu.irqs_disabled} "
            f"preempt_count={cpu.preempt_count} rcu_read_lock_nesting={cpu.rcu_nesting}")
