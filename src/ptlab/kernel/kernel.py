"""A booted kernel: CPUs, RCU, IPIs and the allocator for one execution.

``Kernel(ex, ncpus)`` creates the per-CPU state and spawns the engine threads
that stand for the kernel's own machinery (the RCU grace-period kthread, each
CPU's quiescent-state reports and interrupt entry, the callback invoker).  Model
code reaches it through :func:`current_kernel` and :func:`this_cpu`, the way
kernel code reaches per-CPU data.

``Kernel(None, ncpus, sequential=True)`` is a kernel for a sequential simulation:
no engine threads; IPIs are taken at once and grace periods pass when the
simulation says so (:func:`ptlab.kernel.rcu.rcu_sequential_gp`); :meth:`Kernel.run`
runs a task to completion on CPU 0.

``Kernel(None, ncpus)`` creates the state only, for a set-up that a search takes
once and clones for every execution (:class:`ptlab.engine.SetupCache`); the copy
is then started with :meth:`Kernel.boot`.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ..engine import Choose, Execution
from ..engine.ops import ops_inline
from .cpu import CPU, lockdep_assert_idle, this_cpu
from .current import current_kernel, set_current_kernel
from .page_alloc import Allocator
from .rcu import RCU
from .smp import SMP

__all__ = ["Kernel", "current_kernel", "need_resched"]


def _two() -> int:
    return 2


async def need_resched() -> bool:
    """include/linux/sched.h: need_resched(): whether the scheduler wants this CPU
    (a loop that holds a lock breaks out, drops it and calls cond_resched()).  A
    choice the checker explores while this CPU has some of the ``resched`` yeses
    the kernel was booted with left; else no.  The budget is the model's stand-in
    for time: a real loop makes progress between two ticks, an unbounded choice
    would let it break at every turn forever."""
    cpu = this_cpu()
    if not cpu.resched_left:
        return False

    def taken(k: int) -> bool:
        if k:
            cpu.resched_left -= 1
        return k == 1

    # The budget is the CPU's own: the step touches nothing shared.
    return bool(await Choose((), "need_resched()", _two, taken))


class _NoModel:
    """The model a sequential kernel's execution needs to exist; nothing is explored."""

    def build(self, ex: Execution) -> None:
        pass

    def finish(self, ex: Execution) -> None:
        pass


class Kernel:
    def __init__(self, ex: Execution | None, ncpus: int, *, fail_nowait: bool = False,
                 ipis: bool = True, sequential: bool = False, resched: int = 0) -> None:
        set_current_kernel(self)
        # The last CPU runs RCU callbacks (softirq / rcuc); the others run tasks.
        self.cpus = [CPU(self, i) for i in range(ncpus + 1)]
        self.rcu_cpu = self.cpus[-1]
        self.rcu = RCU(self.cpus)
        self.smp = SMP(self.cpus)
        self.alloc = Allocator(fail_nowait)
        self.ipis = ipis
        self.sequential = sequential
        # need_resched() may say yes this many times on each CPU (a choice the
        # checker explores).
        self.resched = resched
        for cpu in self.cpus:
            cpu.resched_left = resched
        self._ex: Execution | None = None
        if sequential:
            self._ex = Execution(_NoModel())
        elif ex is not None:
            self.boot(ex)

    @property
    def ex(self) -> Execution:
        if self._ex is None:
            raise RuntimeError("Kernel.boot() has not run")
        return self._ex

    def boot(self, ex: Execution) -> None:
        """Make this the current kernel of ``ex`` and start its own threads."""
        set_current_kernel(self)
        self._ex = ex
        ex.spawn("rcu_gp", self.rcu.rcu_gp_kthread(), daemon=True, lane="rcu")
        ex.spawn("rcu_cb", self.rcu.rcu_do_batch(), daemon=True, lane="rcu", ctx=self.rcu_cpu)
        if self.ipis:
            for cpu in self.cpus:
                ex.spawn(f"ipi/{cpu.idx}", self.smp.ipi_handler(cpu), daemon=True,
                         lane=f"cpu{cpu.idx}", ctx=cpu)

    def run(self, body: Coroutine[Any, Any, Any]) -> Any:
        """A sequential kernel: run ``body`` to completion as the task on CPU 0, every
        step at once (``ops_inline()``); returns what it returns."""
        if not self.sequential:
            raise RuntimeError("Kernel.run() is for a sequential kernel")
        with ops_inline():
            return self.ex.run_sync(body, self.cpus[0])

    def run_on(self, cpu_idx: int, name: str, body: Coroutine[Any, Any, Any]) -> None:
        """Run ``body`` as the task on CPU ``cpu_idx``; it must leave the CPU idle."""
        cpu = self.cpus[cpu_idx]
        cpu.thread_name = name
        self.ex.spawn(name, body, lane=f"cpu{cpu_idx}", ctx=cpu,
                      on_exit=lambda: lockdep_assert_idle(cpu))
