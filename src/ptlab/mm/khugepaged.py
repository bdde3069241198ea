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

from ..engine import READ, Call
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
from .pgalloc import pagetable_alloc, pte_free, pte_free_defer, pte_lockptr
from .pgtable import pmd_offset_lockless
from .rmap import i_mmap_lock_read, i_mmap_unlock_read
from .tlbflush import flush_tlb_mm_range
from .types import (
    VM_WRITE,
    Leaf,
    PageTable,
    address_space,
    mm_pgtables_add,
    mm_rss_add,
    mm_struct,
    vm_area_struct,
)


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
    collapsible (SCAN_* failure, or the PMD changed before the VMA was
    write-locked)."""
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
    # check_pmd_still_valid(): a per-VMA-locked MADV_DONTNEED (PT_RECLAIM) may
    # have freed the table before the VMA was write-locked.
    if await find_pmd_or_thp_or_none(mm, addr) != found:
        await mmap_write_unlock(mm)
        return False
    pmd_ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(pmd_ptl)
    pgtable = await pmdp_collapse_flush(mm, pmd_table, idx)
    await spin_unlock(pmd_ptl)
    assert isinstance(pgtable, PageTable)   # the VMA and mmap write locks hold it
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


async def retract_pte_table(mm: mm_struct, pmd_table: PageTable, idx: int,
                            seen: PageTable | None = None) -> bool:
    """The common end of retract_page_tables() and collapse_pte_mapped_thp(): under
    the PMD lock and the PTE lock (nested when split), re-check that the PMD still
    maps an empty table (``check_pmd_state()``; PT_RECLAIM may have replaced it),
    ``pmdp_collapse_flush()``; then ``mm_dec_nr_ptes()`` and ``pte_free_defer()``
    (v6.5: ``tlb_remove_table_sync_one()`` and ``pte_free()``,
    ``KernelConfig.retract_free``).
    False if the PMD changed meanwhile.  Without ``retract_check_pmd`` (before
    v6.14) the PTE lock is looked up from ``seen``, the table found before the PMD
    lock was taken."""
    pml = pte_lockptr(mm, pmd_table)
    await spin_lock(pml)
    if seen is not None and not mm.config.retract_check_pmd:
        table: object = seen
    else:
        table = await pmd_table.load(idx)              # check_pmd_state()
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
    how = mm.config.retract_free
    if how == "defer":
        await pte_free_defer(mm, table)
    else:
        # collapse_and_free_pmd(): since v6.1 the IPI holds back GUP-fast (not
        # RCU walkers); before it, nothing did.
        if how == "sync_one":
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


def _read_anon_vma(vma: vm_area_struct) -> bool:
    return vma.anon_vma


async def retract_page_tables(mapping: address_space, pgoff: int) -> int:
    """mm/khugepaged.c: collapse_file() -> retract_page_tables(mapping, pgoff):
    under ``i_mmap_lock_read()`` only (since v6.6: no mmap_lock, no VMA lock),
    for each VMA mapping the PMD-aligned range at ``pgoff`` that has no anon_vma
    (``READ_ONCE(vma->anon_vma)``) in a live mm: unmap the old small pages
    (collapse_file()'s ``try_to_unmap()``) and retract the table.  Before v6.6
    each mm was taken with ``mmap_write_trylock()`` and ``vma_start_write()`` (a
    blocking lock here).  The THP refaults PMD-mapped later (file THP faults are
    not modelled: the range refaults with PTEs).  Returns the tables retracted."""
    done = 0
    await i_mmap_lock_read(mapping)
    for mm, vma in list(mapping.i_mmap):
        pmd_size = mm.geometry.levels[-2].size
        addr = vma.vm_start + ((pgoff - vma.vm_pgoff) << mm.geometry.page_shift)
        if addr & (pmd_size - 1) or addr < vma.vm_start or addr + pmd_size > vma.vm_end:
            continue
        if await Call(((vma.lock_loc, READ),), "READ_ONCE({0!r}->anon_vma)",
                      _read_anon_vma, vma):
            continue
        if mm.mm_users == 0:                          # hpage_collapse_test_exit()
            continue
        locked = mm.config.retract_free != "defer"
        if locked:
            await mmap_write_lock(mm)
            await vma_start_write(mm, vma)
        found = await find_pmd_or_thp_or_none(mm, addr)
        if found is not None:
            pmd_table, idx = found
            seen = await pmd_table.load(idx)         # what khugepaged saw
            await try_to_unmap_range(mm, pmd_table, idx)
            done += await retract_pte_table(mm, pmd_table, idx,
                                            seen if isinstance(seen, PageTable) else None)
        if locked:
            await mmap_write_unlock(mm)
    await i_mmap_unlock_read(mapping)
    return done


async def collapse_pte_mapped_thp(mm: mm_struct, addr: int, install_pmd: bool) -> bool:
    """mm/khugepaged.c: collapse_pte_mapped_thp() (mmap_read_lock, since v6.6):
    clear the PTEs that map the page-cache THP, retract the table
    (``pte_free_defer()``), and with ``install_pmd`` (MADV_COLLAPSE) map the THP
    by a huge PMD (``set_huge_pmd()``).  The kernel's ``pmd_same()`` re-check
    under the locks is the emptiness re-check of :func:`retract_pte_table`."""
    # Up to v6.5 madvise_collapse() held mmap_write_lock around it.
    write = mm.config.retract_free != "defer"
    await (mmap_write_lock(mm) if write else mmap_read_lock(mm))
    vma = await find_vma(mm, addr)
    found = await find_pmd_or_thp_or_none(mm, addr) if vma is not None else None
    ok = False
    # A VMA with anon_vma may hold anonymous (COW) pages, not the THP's: abort.
    if vma is not None and found is not None and vma.file is not None \
            and not vma.anon_vma:
        pmd_table, idx = found
        await try_to_unmap_range(mm, pmd_table, idx)
        ok = await retract_pte_table(mm, pmd_table, idx)
        if ok and install_pmd:
            await set_huge_pmd(mm, vma, pmd_table, idx, addr)
    await (mmap_write_unlock(mm) if write else mmap_read_unlock(mm))
    return ok


async def set_huge_pmd(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable, idx: int,
                       addr: int) -> None:
    """mm/khugepaged.c: set_huge_pmd() -> mm/memory.c do_set_pmd(): under the PMD
    lock map the file THP by a huge PMD; where ``arch_needs_pgtable_deposit()``
    (powerpc hash) a preallocated table is deposited and counted."""
    prealloc = None
    if mm.geometry.needs_pgtable_deposit:
        prealloc = await pagetable_alloc(mm, len(mm.geometry.levels) - 1, addr)
        if prealloc is None:
            return
    pml = pte_lockptr(mm, pmd_table)
    await spin_lock(pml)
    if await pmd_table.load(idx) is None:
        if prealloc is not None:                      # deposit_prealloc_pte()
            await pgtable_trans_huge_deposit(pmd_table, prealloc)
            await mm_pgtables_add(mm, prealloc.depth, 1)
            prealloc = None
        nr = hpage_pmd_nr(mm)
        await pmd_table.store(idx, Leaf(False, True, nr, bool(vma.vm_flags & VM_WRITE)))
        await mm_rss_add(mm, nr)
    await spin_unlock(pml)
    if prealloc is not None:
        await pte_free(mm, prealloc)
