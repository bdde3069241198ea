"""Inter-processor interrupts: ``smp_call_function()`` (kernel/smp.c).

The caller queues a ``call_single_data`` on every other online CPU and, with
``wait``, spins until each has run the function.  A CPU runs it only while its
interrupts are enabled: an IRQ-disabled region (GUP-fast) holds the caller back,
while an ``rcu_read_lock()`` section with interrupts enabled does not — the whole
point of seed 002.  Each CPU's interrupt entry is an engine thread, so when the
IPI lands is explored; the function runs atomically with respect to that CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import (
    AWAIT,
    CONSUME,
    PROBE,
    SIGNAL,
    UPDATE,
    DynamicOp,
    Footprint,
    ModelViolation,
    WaitUntil,
    new_loc,
)
from .cpu import CPU, this_cpu
from .current import current_kernel

SmpFunc = Callable[[Any], None]


class call_single_data:
    __slots__ = ("done", "func", "info", "loc")

    def __init__(self, func: SmpFunc, info: Any) -> None:
        self.loc = new_loc()
        self.func = func
        self.info = info
        self.done = False


class SMP:
    """Per-CPU call-function queues, and how many IPIs were sent."""

    def __init__(self, cpus: list[CPU]) -> None:
        self.cpus = cpus
        self.queue_loc = [new_loc() for _ in cpus]
        self.queues: list[list[call_single_data]] = [[] for _ in cpus]
        self.ipis_sent = 0
        self.ipis_delayed = 0  # deliveries that had to wait for an IRQ-disabled CPU

    async def ipi_handler(self, cpu: CPU) -> None:
        """generic_smp_call_function_single_interrupt() on ``cpu``."""
        while True:
            await _Deliver(self, cpu)


class _Deliver(DynamicOp):
    __slots__ = ("cpu", "smp")
    blocking = True

    def __init__(self, smp: SMP, cpu: CPU) -> None:
        self.smp = smp
        self.cpu = cpu
        DynamicOp.__init__(self, ())

    def footprint(self) -> Footprint:
        q = self.smp.queues[self.cpu.idx]
        head: Footprint = ((self.smp.queue_loc[self.cpu.idx], CONSUME),
                           (self.cpu.irq.loc, PROBE))
        return head + ((q[0].loc, SIGNAL),) if q else head

    def enabled(self) -> bool:
        return bool(self.smp.queues[self.cpu.idx]) and self.cpu.irq.holder is None

    def run(self, choice: int) -> Any:
        csd = self.smp.queues[self.cpu.idx].pop(0)
        csd.func(csd.info)
        csd.done = True

    def describe(self) -> str:
        q = self.smp.queues[self.cpu.idx]
        name = getattr(q[0].func, "__name__", "?") if q else "?"
        return f"IPI on cpu{self.cpu.idx}: {name}()"


class _Send(DynamicOp):
    """Queue the csds and raise the IPIs.  It SIGNALs a CPU's queue when it finds it
    empty: that CPU's interrupt entry cannot have taken anything before it then."""

    __slots__ = ("csds", "fname", "smp", "targets")

    def __init__(self, smp: SMP, targets: list[CPU], csds: list[call_single_data],
                 fname: str) -> None:
        self.smp = smp
        self.targets = targets
        self.csds = csds
        self.fname = fname
        DynamicOp.__init__(self, ())

    def footprint(self) -> Footprint:
        q, loc = self.smp.queues, self.smp.queue_loc
        return tuple((loc[c.idx], UPDATE if q[c.idx] else SIGNAL) for c in self.targets)

    @property
    def fp_bound(self) -> Footprint:
        return tuple((self.smp.queue_loc[c.idx], SIGNAL) for c in self.targets)

    def run(self, choice: int) -> Any:
        smp = self.smp
        for c, csd in zip(self.targets, self.csds, strict=True):
            smp.queues[c.idx].append(csd)
            if c.irq.holder is not None:
                smp.ipis_delayed += 1
        smp.ipis_sent += len(self.targets)

    def describe(self) -> str:
        return "smp_call_function(" + self.fname + ")"


def _smp() -> SMP:
    return current_kernel().smp


async def smp_call_function(func: SmpFunc, info: Any, wait: int) -> None:
    """kernel/smp.c: smp_call_function(func, info, wait) on every other online CPU."""
    smp = _smp()
    me = this_cpu()
    if me.irqs_disabled:
        raise ModelViolation("ipi-with-irqs-disabled",
                             f"cpu{me.idx}: smp_call_function() with interrupts disabled "
                             "can deadlock (WARN_ON_ONCE in smp_call_function_many_cond)")
    targets = [c for c in smp.cpus if c is not me]
    if current_kernel().sequential:
        # Every other CPU idles with interrupts on between the steps of a
        # sequential simulation: the IPI is taken at once.
        smp.ipis_sent += len(targets)
        for _ in targets:
            func(info)
        return
    csds = [call_single_data(func, info) for _ in targets]

    await _Send(smp, targets, csds, getattr(func, "__name__", "?"))
    if wait:
        await WaitUntil(tuple((csd.loc, AWAIT) for csd in csds), "csd_lock_wait()",
                        lambda: all(csd.done for csd in csds))
