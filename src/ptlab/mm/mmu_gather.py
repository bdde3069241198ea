"""mm/mmu_gather.c: the parts of table freeing that do not wait for RCU."""

from __future__ import annotations

from typing import Any

from ..kernel import smp_call_function


def tlb_remove_table_smp_sync(arg: Any) -> None:
    """Simply deliver the interrupt."""


async def tlb_remove_table_sync_one() -> None:
    """mm/mmu_gather.c: tlb_remove_table_sync_one().

    "Not an RCU grace period ... sufficient for software page-table walkers that
    rely on IRQ disabling": an IPI to every other CPU, waited for.  It does not wait
    for a CPU inside ``rcu_read_lock()`` with interrupts enabled.
    """
    await smp_call_function(tlb_remove_table_smp_sync, None, 1)
