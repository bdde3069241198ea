"""Allocating and freeing page tables: include/asm-generic/pgalloc.h and
include/linux/mm.h (``pagetable_alloc()``, ``pagetable_*_ctor()``,
``pagetable_dtor()``, ``pagetable_free()``), and where the architecture takes over.

One table per page (x86-64, arm64, s390 since v6.7) is modelled here; a table
records its slot in ``page.payload`` so that a freed slot handed out again is
caught by generation.  The split lock lives in the table's ptdesc (PTE tables;
PMD tables with split PMD locks), else it is ``mm->page_table_lock``.

Where ``Geometry.pte_alloc`` says so, tables share pages and the architecture's
allocator serves them (:func:`pgtable_allocator`): powerpc's fragments for PTE and
PMD tables (ptlab.arch.powerpc.pgalloc), s390 v6.6's 2K halves for PTE tables
(ptlab.arch.s390.pgalloc).  Their ctor and dtor run once per page, so NR_PAGETABLE
counts pages; the generic code calls the functions below and stays as it is.
"""

from __future__ import annotations

from typing import Literal

from ..arch.powerpc import pgalloc as powerpc
from ..arch.s390 import pgalloc as s390
from ..engine import ADD, WRITE, Call, ModelError, ModelViolation, Op
from ..kernel import (
    GFP_PGTABLE_USER,
    Page,
    __free_page,
    alloc_pages,
    call_rcu,
    current_kernel,
    rcu_head,
    spinlock_t,
)
from ..kernel.page_alloc import mod_nr_pagetable
from .types import PageTable, mm_struct

Allocator = Literal["page", "powerpc-frag", "s390-2k"]


def pgtable_allocator(mm: mm_struct, depth: int) -> Allocator:
    """Who allocates and frees the tables of level ``depth``: the architecture for
    powerpc PTE and PMD tables (``pte_fragment_alloc()``, ``pmd_fragment_alloc()``)
    and s390 v6.6 PTE tables (``page_table_alloc()``), else the generic page."""
    how = mm.geometry.pte_alloc
    name = mm.geometry.levels[depth].name
    if how == "powerpc-frag" and name in ("pte", "pmd"):
        return "powerpc-frag"
    if how == "s390-2k" and name == "pte":
        return "s390-2k"
    return "page"


def __pagetable_ctor(page: Page) -> Op:
    """include/linux/mm.h: __pagetable_ctor(): __folio_set_pgtable();
    lruvec_stat_add_folio(NR_PAGETABLE)."""
    return mod_nr_pagetable(page, 1, "pagetable_ctor(pfn {0.pfn:#x})")


async def pagetable_dtor(table: PageTable) -> None:
    """include/linux/mm.h: pagetable_dtor(): ptlock_free(); __folio_clear_pgtable();
    lruvec_stat_sub_folio(NR_PAGETABLE).  Nothing for a table that shares its page:
    the architecture runs the page's dtor when the page's last table goes."""
    if pgtable_allocator(table.mm, table.depth) == "page":
        await mod_nr_pagetable(table.page, -1, "pagetable_dtor(pfn {0.pfn:#x})")


async def pagetable_alloc(mm: mm_struct, depth: int, addr: int) -> PageTable | None:
    """``pte_alloc_one()`` / ``pmd_alloc_one()`` / ``pud_alloc_one()``:
    ``pagetable_alloc(GFP_PGTABLE_USER, order)`` and the level's ctor
    (``pagetable_pte_ctor()`` initialises the split ptlock); on powerpc and s390
    v6.6 the architecture's allocator (:func:`pgtable_allocator`)."""
    how = pgtable_allocator(mm, depth)
    if how == "powerpc-frag":
        if depth == len(mm.geometry.levels) - 1:
            return await powerpc.pte_fragment_alloc(mm, addr)
        return await powerpc.pmd_fragment_alloc(mm, addr)
    if how == "s390-2k":
        return await s390.page_table_alloc(mm, addr)
    geo = mm.geometry
    lv = geo.levels[depth]
    page = await alloc_pages(GFP_PGTABLE_USER, lv.page_order)
    if page is None:
        return None
    await __pagetable_ctor(page)
    start = addr & lv.mask if depth else 0
    name = lv.name
    split = ((lv.name == "pte" and mm.config.split_pte_ptlocks)
             or (lv.name == "pmd" and mm.config.split_pmd_ptlocks))
    ptl = spinlock_t(name + " ptl", page) if split else None
    table = PageTable(mm, page, depth, name, start, lv.table_bytes, 0, ptl)
    page.payload = [table]
    return table


async def pagetable_free(table: PageTable) -> None:
    """include/linux/mm.h: pagetable_free(): ``__free_pages(page, order)``; the
    table's slot is emptied, so a stale pointer to it is caught."""
    page = table.page
    await __free_page(page)
    if isinstance(page.payload, list):
        page.payload[table.frag] = None


async def pte_free(mm: mm_struct, table: PageTable) -> None:
    """include/asm-generic/pgalloc.h: pte_free() (and pmd_free(), pud_free()):
    ``pagetable_dtor(); pagetable_free()`` at once, for a table never published.
    powerpc: ``pte_fragment_free(table, 0)`` / ``pmd_fragment_free()``; s390 v6.6:
    ``page_table_free()``."""
    how = pgtable_allocator(mm, table.depth)
    if how == "powerpc-frag":
        await powerpc.pgtable_free(table)
    elif how == "s390-2k":
        await s390.page_table_free(mm, table)
    else:
        await pagetable_dtor(table)
        await pagetable_free(table)


def _check_shared_free_path(mm: mm_struct) -> None:
    """Paths the kernel never takes for tables that share a page, refused rather
    than run wrong: powerpc and s390 select MMU_GATHER_RCU_TABLE_FREE (no
    tlb_remove_page() of a table), and the single-table ``call_rcu()`` fallback on
    the page's one ``pt_rcu_head`` exists only with PT_RECLAIM, on x86-64."""
    cfg = mm.config
    if not cfg.mmu_gather_rcu_table_free or (
            cfg.table_free_one == "call_rcu" and current_kernel().alloc.fail_nowait):
        raise ModelError(f"{mm.geometry.name} frees its shared table pages through "
                         "tlb_remove_table() with the IPI fallback: use a configuration "
                         "with mmu_gather_rcu_table_free and table_free_one='ipi'")


async def pte_free_tlb_arch(table: PageTable) -> None:
    """What ``__pte_free_tlb()`` does in the architecture before
    ``tlb_remove_table()`` (mmu_gather's pte_free_tlb() calls it): s390 v6.6's
    page_table_free_rcu() marks the half pending; powerpc only encodes the level in
    the pointer (``pgtable_free_tlb()``), which the model's table carries."""
    how = pgtable_allocator(table.mm, table.depth)
    if how != "page":
        _check_shared_free_path(table.mm)
    if how == "s390-2k":
        await s390.page_table_free_rcu(table.mm, table)


async def arch_tlb_remove_table(table: PageTable) -> None:
    """The architecture's ``__tlb_remove_table()`` for a table that shares its page,
    after the grace period (or the IPI): powerpc's pgtable_free() by level, s390
    v6.6's half bits."""
    if pgtable_allocator(table.mm, table.depth) == "powerpc-frag":
        await powerpc.__tlb_remove_table(table)
    else:
        await s390.__tlb_remove_table(table)


def _deferred(nbytes: int) -> None:
    current_kernel().alloc.pt_bytes_deferred += nbytes


def _deferred_stat(nbytes: int) -> Op:
    """The model's count of unlinked table bytes waiting for a grace period (what
    the simulator reports as deferred, and the oracle wants back to 0)."""
    return Call(((current_kernel().alloc.nr_pagetable_loc, ADD),), "pt_bytes_deferred {0:+}",
                _deferred, nbytes)


async def pte_free_now(head: rcu_head) -> None:
    """mm/pgtable-generic.c: pte_free_now(): ``pagetable_dtor_free()`` (``pte_free()``
    in v6.6) of the table the page holds."""
    page = head.owner
    assert isinstance(page, Page)
    # (pgtable_t)page: the table at the start of the page, whichever was deferred.
    table = page.payload[0]
    if not isinstance(table, PageTable):
        raise ModelViolation("double-free", f"pte_free_now(): the table at the start of "
                             f"{page!r} was already freed")
    await pagetable_dtor(table)
    await pagetable_free(table)
    await _deferred_stat(-table.size)


async def pte_free_defer(mm: mm_struct, table: PageTable) -> None:
    """Free an unlinked PTE table after a grace period (khugepaged's
    retract_page_tables(), since v6.6): mm/pgtable-generic.c pte_free_defer():
    ``call_rcu(&page->rcu_head, pte_free_now)``; powerpc
    (arch/powerpc/mm/pgtable-frag.c) and s390 v6.6 (arch/s390/mm/pgalloc.c) have
    their own, for tables that share a page and its one rcu_head."""
    how = pgtable_allocator(mm, table.depth) if mm.config.arch_pte_free_defer else "page"
    if how == "powerpc-frag":
        await powerpc.pte_free_defer(mm, table)
    elif how == "s390-2k":
        await s390.pte_free_defer(mm, table)
    else:
        await _deferred_stat(table.size)
        await call_rcu(table.page.pt_rcu_head, pte_free_now)


async def destroy_context(mm: mm_struct) -> None:
    """``destroy_context()``, from ``__mmdrop()``, as far as page tables go: powerpc
    (arch/powerpc/mm/book3s64/mmu_context.c) drops the references of the fragments
    its caches never handed out; x86, arm64 and s390 keep no tables there."""
    if mm.geometry.pte_alloc == "powerpc-frag":
        await powerpc.destroy_context(mm)


def pgtable_cache_pages(mm: mm_struct) -> list[Page]:
    """Table pages the mm holds outside its tree (powerpc's fragment caches): the
    mm's until destroy_context() (no step: for the oracle)."""
    return powerpc.cached_pages(mm)


def pte_lockptr(mm: mm_struct, table: PageTable) -> spinlock_t:
    """include/linux/mm.h: pte_lockptr() / pmd_lockptr(): the split lock in the
    table's ptdesc, or ``mm->page_table_lock``."""
    return table.ptl if table.ptl is not None else mm.page_table_lock


async def mm_alloc_pgd(mm: mm_struct) -> None:
    """kernel/fork.c: mm_alloc_pgd(): the top-level table (not in pgtables_bytes)."""
    pgd = await pagetable_alloc(mm, 0, 0)
    assert pgd is not None
    mm.pgd = pgd


def _clear_check(mm: mm_struct) -> None:
    mm.obj.check("mm_free_pgd", "Write")


async def mm_free_pgd(mm: mm_struct) -> None:
    """kernel/fork.c: mm_free_pgd(): pgd_free()."""
    pgd = mm.pgd
    assert pgd is not None
    await Call(((mm.obj.alive, WRITE),), "mm_free_pgd(mm)", _clear_check, mm)
    await pte_free(mm, pgd)
    mm.pgd = None
