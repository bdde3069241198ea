"""mm/gup.c: GUP-fast, the IRQ-disabled lockless walker."""

from __future__ import annotations

from ..kernel import Field, local_irq_restore, local_irq_save
from .pgtable import pmd_offset_lockless
from .types import Leaf, PageTable, mm_struct


async def gup_fast_pte_range(pmdp: Field) -> bool:
    """gup_fast() down to gup_fast_pte_range() for one PMD: with interrupts off, read
    the PMD, then the PTE, "pin" it, and re-check both ("corresponds to
    pmdp_collapse_flush() in the THP collapse code path").  Returns True if a page
    was pinned."""
    flags = await local_irq_save()
    pinned = False
    pmd = await pmdp.load()  # pmdp_get_lockless()
    if pmd is not None:
        pte = await pmd.entries.load()  # ptep_get_lockless()
        # try_grab_folio_fast() would take a reference here.
        if await pmdp.load() is pmd and await pmd.entries.load() == pte:
            pinned = True
        # else gup_put_folio() and give up on this range
    await local_irq_restore(flags)
    return pinned


async def gup_fast(mm: mm_struct, addr: int) -> bool:
    """mm/gup.c: gup_fast() for one page: with interrupts off, walk
    ``pgd -> ... -> pmd`` with lockless reads, ``pte_offset_map()`` the stack copy
    of the PMD, read the PTE, "pin" the page, then re-check the PMD and the PTE
    (``gup_put_folio()`` and give up if either changed).  True if pinned."""
    geo = mm.geometry
    flags = await local_irq_save()
    pinned = False
    pmd_table = await pmd_offset_lockless(mm, addr)
    if pmd_table is not None:
        pidx = geo.index(pmd_table.depth, addr)
        table = await pmd_table.load(pidx)                        # pmdp_get_lockless()
        if isinstance(table, PageTable):
            pte = await table.load(geo.index(table.depth, addr))  # ptep_get_lockless()
            if isinstance(pte, Leaf):
                # try_grab_folio_fast() would take a reference here.
                if await pmd_table.load(pidx) is table and \
                        await table.load(geo.index(table.depth, addr)) is pte:
                    pinned = True
    await local_irq_restore(flags)
    return pinned
