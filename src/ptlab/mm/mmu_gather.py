"""mm/mmu_gather.c and include/asm-generic/tlb.h: gathering what an unmap frees,
flushing the TLB, and freeing page tables after it.

With MMU_GATHER_RCU_TABLE_FREE, ``tlb_remove_table()`` collects tables in a batch
page (allocated ``GFP_NOWAIT``: its failure is a choice the checker explores) that
``tlb_table_flush()`` queues with ``call_rcu()``; when the batch page cannot be
had, the table goes alone through ``tlb_remove_table_one()``, whose form is the
era's (an IPI then free; ``call_rcu``; ``synchronize_rcu`` then free).  Without it
(x86 before v6.15 without PARAVIRT), a table is freed like a data page after the
TLB flush, which on bare metal is an IPI that IRQ-off walkers hold back.
"""

from __future__ import annotations

from typing import Any

from ..engine import ADD, Call, Op
from ..kernel import (
    __GFP_NOWARN,
    GFP_NOWAIT,
    KObject,
    call_rcu,
    current_kernel,
    kfree,
    kmalloc,
    rcu_head,
    smp_call_function,
    synchronize_rcu,
)
from .pgalloc import (
    arch_tlb_remove_table,
    pagetable_dtor,
    pagetable_free,
    pgtable_allocator,
    pte_free_tlb_arch,
)
from .types import PageTable, mm_struct


def tlb_remove_table_smp_sync(arg: Any) -> None:
    """Simply deliver the interrupt."""


async def tlb_remove_table_sync_one() -> None:
    """mm/mmu_gather.c: tlb_remove_table_sync_one().

    "Not an RCU grace period ... sufficient for software page-table walkers that
    rely on IRQ disabling": an IPI to every other CPU, waited for.  It does not wait
    for a CPU inside ``rcu_read_lock()`` with interrupts enabled.
    """
    await smp_call_function(tlb_remove_table_smp_sync, None, 1)


class mmu_table_batch(KObject):
    """``struct mmu_table_batch``: one page of table pointers and an rcu_head."""

    __slots__ = ("rcu", "tables")

    def __init__(self) -> None:
        KObject.__init__(self, "mmu_table_batch", 4096)
        self.rcu = rcu_head(self, "batch->rcu")
        self.tables: list[PageTable] = []


class mmu_gather:
    """``struct mmu_gather`` (on the unmapper's stack)."""

    __slots__ = ("batch", "freed_tables", "fullmm", "mm", "need_flush", "pages")

    def __init__(self, mm: mm_struct, fullmm: bool) -> None:
        self.mm = mm
        self.fullmm = fullmm
        self.freed_tables = False
        self.need_flush = False
        self.batch: mmu_table_batch | None = None
        self.pages: list[PageTable] = []   # tables freed like pages (no RCU table free)


def _deferred(nbytes: int) -> None:
    current_kernel().alloc.pt_bytes_deferred += nbytes


def _defer_stat(table: PageTable, sign: int) -> Op:
    a = current_kernel().alloc
    return Call(((a.nr_pagetable_loc, ADD),), "pt_bytes_deferred {0:+}", _deferred,
                table.size * sign)


def tlb_gather_mmu(mm: mm_struct, fullmm: bool = False) -> mmu_gather:
    """mm/mmu_gather.c: tlb_gather_mmu() / tlb_gather_mmu_fullmm()."""
    return mmu_gather(mm, fullmm)


def flush_tlb_func(info: Any) -> None:
    """arch/x86/mm/tlb.c: flush_tlb_func(), run on each CPU the IPI reaches."""


async def tlb_flush_mmu_tlbonly(tlb: mmu_gather) -> None:
    """include/asm-generic/tlb.h: tlb_flush_mmu_tlbonly() -> flush_tlb_mm_range():
    on bare metal an IPI to every CPU that may cache the mm's translations, waited
    for; under a hypervisor (PARAVIRT with a hypercall flush) no IPI at all."""
    if not tlb.need_flush and not tlb.freed_tables:
        return
    if tlb.mm.config.tlb_flush == "ipi":
        await smp_call_function(flush_tlb_func, None, 1)
    # __tlb_reset_range(): the next flush is owed only for what is cleared after.
    tlb.need_flush = False
    tlb.freed_tables = False


async def __tlb_remove_table(table: PageTable) -> None:
    """include/asm-generic/tlb.h (generic since v6.14): __tlb_remove_table():
    ``pagetable_dtor(); pagetable_free()`` (the dtor ran at unlink before v6.14).
    powerpc and s390 v6.6 have their own for the tables that share a page
    (pgalloc.arch_tlb_remove_table())."""
    if pgtable_allocator(table.mm, table.depth) != "page":
        await arch_tlb_remove_table(table)
    else:
        if table.mm.config.dtor_at_free:
            await pagetable_dtor(table)
        await pagetable_free(table)
    await _defer_stat(table, -1)


async def tlb_remove_table_rcu(head: rcu_head) -> None:
    """mm/mmu_gather.c: tlb_remove_table_rcu() -> __tlb_remove_table_free(): free
    every table of the batch, then the batch page."""
    batch = head.owner
    assert isinstance(batch, mmu_table_batch)
    for table in batch.tables:
        await __tlb_remove_table(table)
    await kfree(batch, batch.rcu)


async def __tlb_remove_table_one_rcu(head: rcu_head) -> None:
    """mm/mmu_gather.c (CONFIG_PT_RECLAIM, v6.14): the table's own pt_rcu_head."""
    page = head.owner
    table = page.payload[0]  # type: ignore[attr-defined]
    assert isinstance(table, PageTable)
    await __tlb_remove_table(table)


async def tlb_remove_table_one(tlb: mmu_gather, table: PageTable) -> None:
    """mm/mmu_gather.c: tlb_remove_table_one() -> __tlb_remove_table_one(), in the
    era's form (``KernelConfig.table_free_one``)."""
    how = tlb.mm.table_free_one
    if how == "call_rcu":
        await call_rcu(table.page.pt_rcu_head, __tlb_remove_table_one_rcu)
        return
    if how == "ipi":
        await tlb_remove_table_sync_one()
    else:
        await synchronize_rcu()  # tlb_remove_table_sync_rcu()
    await __tlb_remove_table(table)


async def tlb_table_invalidate(tlb: mmu_gather) -> None:
    """mm/mmu_gather.c: tlb_table_invalidate(): flush the TLB (and paging-structure
    caches) before the tables can be freed."""
    await tlb_flush_mmu_tlbonly(tlb)


async def tlb_table_flush(tlb: mmu_gather) -> None:
    """mm/mmu_gather.c: tlb_table_flush(): queue the batch for a grace period."""
    batch = tlb.batch
    if batch is not None:
        await tlb_table_invalidate(tlb)
        await call_rcu(batch.rcu, tlb_remove_table_rcu)  # tlb_remove_table_free()
        tlb.batch = None


async def tlb_remove_table(tlb: mmu_gather, table: PageTable) -> None:
    """mm/mmu_gather.c: tlb_remove_table()."""
    await _defer_stat(table, 1)
    if tlb.batch is None:
        batch = await kmalloc("mmu_table_batch", 4096, GFP_NOWAIT | __GFP_NOWARN,
                              mmu_table_batch)  # __get_free_page()
        if batch is None:
            await tlb_table_invalidate(tlb)
            await tlb_remove_table_one(tlb, table)
            return
        assert isinstance(batch, mmu_table_batch)
        tlb.batch = batch
    tlb.batch.tables.append(table)
    if len(tlb.batch.tables) == tlb.mm.config.max_table_batch:
        await tlb_table_flush(tlb)


async def tlb_remove_page(tlb: mmu_gather, table: PageTable) -> None:
    """include/asm-generic/tlb.h: tlb_remove_page(): freed by tlb_flush_mmu_free()
    after the TLB flush (x86 native_tlb_remove_table() before v6.15)."""
    await _defer_stat(table, 1)
    tlb.pages.append(table)


async def pte_free_tlb(tlb: mmu_gather, table: PageTable, addr: int) -> None:
    """include/asm-generic/tlb.h: pte_free_tlb() (also pmd_/pud_/p4d_free_tlb()):
    mark the flush as freeing tables, then ``__pte_free_tlb()``: x86's
    ``___pte_free_tlb()`` -> ``paravirt_tlb_remove_table()``: ``tlb_remove_table()``
    with RCU table free, else ``tlb_remove_page()``."""
    tlb.freed_tables = True
    tlb.need_flush = True
    if not table.mm.config.dtor_at_free:
        await pagetable_dtor(table)   # pagetable_pte_dtor() in ___pte_free_tlb()
    await pte_free_tlb_arch(table)    # s390 v6.6: page_table_free_rcu() marks the half
    if tlb.mm.config.mmu_gather_rcu_table_free:
        await tlb_remove_table(tlb, table)
    else:
        await tlb_remove_page(tlb, table)


async def tlb_flush_mmu(tlb: mmu_gather) -> None:
    """mm/mmu_gather.c: tlb_flush_mmu(): the TLB flush, then tlb_flush_mmu_free():
    the table batch goes to RCU and gathered pages are freed."""
    await tlb_flush_mmu_tlbonly(tlb)
    await tlb_table_flush(tlb)
    pages, tlb.pages = tlb.pages, []
    for table in pages:
        await pagetable_free(table)
        await _defer_stat(table, -1)


async def tlb_finish_mmu(tlb: mmu_gather) -> None:
    """mm/mmu_gather.c: tlb_finish_mmu()."""
    await tlb_flush_mmu(tlb)
