"""mm/khugepaged.c: collapsing PTE-mapped ranges into huge PMDs.

* Anonymous memory, ``collapse_huge_page()``: under ``mmap_write_lock`` and the
  VMA write lock, clear the PMD (``pmdp_collapse_flush()``), send
  ``tlb_remove_table_sync_one()`` so no GUP-fast walker is still inside the old
  table, empty it, and *deposit* it under the new huge PMD: the table is not
  freed, so VmPTE does not change.
* File memory, ``retract_page_tables()`` (khugepaged, no mmap_lock at all, since
  v6.6) and ``collapse_pte_mapped_thp()`` (MADV_COLLAPSE, mmap_read_lock): the
  emptied PTE table is unlinked under the PMD and PTE locks and freed with
  ``pte_free_defer()``, which must outlast ``pte_offset_map()`` users.
"""

from __future__ import annotations

from ..kernel import spin_lock, spin_unlock
from .huge_memory import hpage_pmd_nr, pgtable_trans_huge_deposit, thp_vma_allowable
from .memory import pte_offset_map_lock, pte_unmap_unlock
from .mmap_lock import (
    find_vma,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from .mmu_gather import tlb_remove_table_sync_one
from .pgalloc import pte_free, pte_free_defer, pte_lockptr
from .pgtable import pmd_offset_lockless
from .tlbflush import flush_tlb_mm_range
from .types import VM_WRITE, Leaf, PageTable, mm_pgtables_add, mm_rss_add, mm_struct


async def find_pmd_or_thp_or_none(mm: mm_struct, addr: int) -> tuple[PageTable, int] | None:
    """mm/khugepaged.c: find_pmd_or_thp_or_none(): the PMD entry for ``addr`` if it
    maps a PTE table (SCAN_SUCCEED), else None."""
    pmd_table = await pmd_offset_lockless(mm, addr)
    if pmd_table is None:
        return None
    idx = mm.geometry.index(pmd_table.depth, addr)
    if not isinstance(await pmd_table.load(idx), PageTable):
        return None
    return pmd_table, idx


async def pmdp_collapse_flush(mm: mm_struct, pmd_table: PageTable, idx: int) -> object:
    """mm/pgtable-generic.c: pmdp_collapse_flush(): ``pmdp_huge_get_and_clear()``
    and ``flush_tlb_range()`` of the PMD's range."""
    old = await pmd_table.get_and_clear(idx)
    await flush_tlb_mm_range(mm)
    return old


async def _clear_ptes(mm: mm_struct, pte: PageTable) -> int:
    """Clear every present PTE of a locked table; the number cleared."""
    n = 0
    for i in sorted(pte.entries):
        if await pte.get_and_clear(i) is not None:
            n += 1
    return n


async def collapse_huge_page(mm: mm_struct, addr: int) -> bool:
    """mm/khugepaged.c: collapse_huge_page() for the PMD range holding ``addr``
    (khugepaged's scan found a PTE table there): revalidate under
    ``mmap_write_lock``, ``vma_start_write()``, clear the PMD under its lock,
    ``tlb_remove_table_sync_one()``, isolate and copy the pages (the old PTEs are
    cleared under the PTE lock; each none PTE is now backed: +1 RSS), then under
    the PMD lock deposit the old table and set the huge PMD.  False: not
    collapsible (SCAN_* failure)."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    await mmap_write_lock(mm)
    vma = await find_vma(mm, addr)              # hugepage_vma_revalidate()
    found = None
    if vma is not None and thp_vma_allowable(vma, addr, pmd_size):
        found = await find_pmd_or_thp_or_none(mm, addr)
    if vma is None or found is None:
        await mmap_write_unlock(mm)
        return False
    pmd_table, idx = found
    await vma_start_write(mm, vma)
    pmd_ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(pmd_ptl)
    pgtable = await pmdp_collapse_flush(mm, pmd_table, idx)
    await spin_unlock(pmd_ptl)
    assert isinstance(pgtable, PageTable)
    await tlb_remove_table_sync_one()
    # pte_offset_map_lock(mm, &_pmd, ...): the stack copy of the PMD, so no
    # pmd_same() against the cleared entry.
    ptl = pte_lockptr(mm, pgtable)
    await spin_lock(ptl)
    present = await _clear_ptes(mm, pgtable)   # __collapse_huge_page_copy_succeeded()
    await spin_unlock(ptl)
    nr = hpage_pmd_nr(mm)
    await mm_rss_add(mm, nr - present)
    await spin_lock(pmd_ptl)
    await pgtable_trans_huge_deposit(pmd_table, pgtable)
    await pmd_table.store(idx, Leaf(True, True, nr, bool(vma.vm_flags & VM_WRITE)))
    await spin_unlock(pmd_ptl)
    await mmap_write_unlock(mm)
    return True


async def retract_pte_table(mm: mm_struct, pmd_table: PageTable, idx: int) -> bool:
    """The common end of retract_page_tables() and collapse_pte_mapped_thp(): under
    the PMD lock and the PTE lock (nested when split), re-check that the PMD still
    maps an empty table (``check_pmd_state()``; PT_RECLAIM may have replaced it),
    ``pmdp_collapse_flush()``; then ``mm_dec_nr_ptes()`` and ``pte_free_defer()``
    (v6.5: ``tlb_remove_table_sync_one()`` and ``pte_free()``,
    ``KernelConfig.retract_free``).
    False if the PMD changed meanwhile."""
    pml = pte_lockptr(mm, pmd_table)
    await spin_lock(pml)
    table = await pmd_table.load(idx)
    if not isinstance(table, PageTable):
        await spin_unlock(pml)
        return False
    ptl = pte_lockptr(mm, table)
    if ptl is not pml:
        await spin_lock(ptl)
    empty = await table.count() == 0
    if empty:
        await pmdp_collapse_flush(mm, pmd_table, idx)
    if ptl is not pml:
        await spin_unlock(ptl)
    await spin_unlock(pml)
    if not empty:
        return False
    await mm_pgtables_add(mm, table.depth, -1)
    if mm.config.retract_free == "defer":
        await pte_free_defer(mm, table)
    else:
        # v6.5 collapse_and_free_pmd(): the IPI holds back GUP-fast, not RCU walkers.
        await tlb_remove_table_sync_one()
        await pte_free(mm, table)
    return True


async def try_to_unmap_range(mm: mm_struct, pmd_table: PageTable, idx: int) -> None:
    """mm/rmap.c: try_to_unmap() of the old small pages of one PMD range (what
    collapse_file() does before retracting): clear the PTEs under the PTE lock."""
    pte = await pte_offset_map_lock(mm, pmd_table, idx)
    if pte is None:
        return
    n = await _clear_ptes(mm, pte)
    if n:
        await mm_rss_add(mm, -n)
    await pte_unmap_unlock(mm, pte)


async def retract_page_tables(mm: mm_struct, addr: int) -> bool:
    """mm/khugepaged.c: collapse_file() -> retract_page_tables() for the PMD range
    holding ``addr`` of a file VMA without anon_vma: since v6.6 with no mmap_lock
    and no VMA lock (``i_mmap_lock_read()`` only; before, under
    ``mmap_write_lock``), the old pages are unmapped and the table retracted; the
    THP refaults PMD-mapped later (file THP faults are not modelled: the range
    refaults with PTEs)."""
    locked = mm.config.retract_free == "sync_one"
    if locked:
        # Before v6.6: mmap_write_trylock() and vma_start_write() (a blocking
        # down_write here: the trylock's "skip this mm" is not modelled).
        await mmap_write_lock(mm)
        vma = await find_vma(mm, addr)
        if vma is not None:
            await vma_start_write(mm, vma)
    found = await find_pmd_or_thp_or_none(mm, addr)
    ok = False
    if found is not None:
        await try_to_unmap_range(mm, *found)
        ok = await retract_pte_table(mm, *found)
    if locked:
        await mmap_write_unlock(mm)
    return ok


async def collapse_pte_mapped_thp(mm: mm_struct, addr: int, install_pmd: bool) -> bool:
    """mm/khugepaged.c: collapse_pte_mapped_thp() (mmap_read_lock, since v6.6):
    clear the PTEs that map the page-cache THP, retract the table
    (``pte_free_defer()``), and with ``install_pmd`` (MADV_COLLAPSE) map the THP
    by a huge PMD (``set_huge_pmd()``, no deposit for a file THP)."""
    await mmap_read_lock(mm)
    vma = await find_vma(mm, addr)
    found = await find_pmd_or_thp_or_none(mm, addr) if vma is not None else None
    ok = False
    if vma is not None and found is not None and vma.file is not None:
        pmd_table, idx = found
        await try_to_unmap_range(mm, pmd_table, idx)
        ok = await retract_pte_table(mm, pmd_table, idx)
        if ok and install_pmd:
            pml = pte_lockptr(mm, pmd_table)
            await spin_lock(pml)
            if await pmd_table.load(idx) is None:
                nr = hpage_pmd_nr(mm)
                await pmd_table.store(idx, Leaf(False, True, nr,
                                                bool(vma.vm_flags & VM_WRITE)))
                await mm_rss_add(mm, nr)
            await spin_unlock(pml)
    await mmap_read_unlock(mm)
    return ok
