"""Allocating and freeing page tables: include/asm-generic/pgalloc.h and
include/linux/mm.h (``pagetable_alloc()``, ``pagetable_*_ctor()``,
``pagetable_dtor()``, ``pagetable_free()``).

One table per page (x86-64, arm64, s390 since v6.7) is modelled here; a table
records its slot in ``page.payload`` so that a freed slot handed out again is
caught by generation.  The split lock lives in the table's ptdesc (PTE tables;
PMD tables with split PMD locks), else it is ``mm->page_table_lock``.
"""

from __future__ import annotations

from ..engine import WRITE, Call, Op
from ..kernel import (
    GFP_PGTABLE_USER,
    Page,
    __free_page,
    alloc_pages,
    spinlock_t,
)
from ..kernel.page_alloc import mod_nr_pagetable
from .types import PageTable, mm_struct


def __pagetable_ctor(page: Page) -> Op:
    """include/linux/mm.h: __pagetable_ctor(): __folio_set_pgtable();
    lruvec_stat_add_folio(NR_PAGETABLE)."""
    return mod_nr_pagetable(page, 1, "pagetable_ctor(pfn {0.pfn:#x})")


def pagetable_dtor(table: PageTable) -> Op:
    """include/linux/mm.h: pagetable_dtor(): ptlock_free(); __folio_clear_pgtable();
    lruvec_stat_sub_folio(NR_PAGETABLE)."""
    return mod_nr_pagetable(table.page, -1, "pagetable_dtor(pfn {0.pfn:#x})")


async def pagetable_alloc(mm: mm_struct, depth: int, addr: int) -> PageTable | None:
    """``pte_alloc_one()`` / ``pmd_alloc_one()`` / ``pud_alloc_one()``:
    ``pagetable_alloc(GFP_PGTABLE_USER, order)`` and the level's ctor
    (``pagetable_pte_ctor()`` initialises the split ptlock)."""
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
    ``pagetable_dtor(); pagetable_free()`` at once, for a table never published."""
    await pagetable_dtor(table)
    await pagetable_free(table)


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
