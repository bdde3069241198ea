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
  ``collapse_file()`` first puts one PMD-sized folio in the page cache, which
  later faults map by a huge PMD (``do_set_pmd()``).
* ``madvise_collapse()`` (MADV_COLLAPSE) runs either per whole PMD range and
  maps the outcome to an errno the way the kernel does.

Results are the kernel's ``enum scan_result`` (:class:`Scan`).
"""

from __future__ import annotations

import errno
from enum import IntEnum

from ..engine import READ, Call, ModelViolation
from ..kernel import spin_lock, spin_unlock
from .huge_memory import (
    hpage_pmd_nr,
    pgtable_trans_huge_deposit,
    thp_vma_allowable,
    thp_vma_suitable,
    vma_alloc_folio_pmd,
)
from .memory import do_set_pmd, pte_offset_map_lock, pte_unmap_unlock, walk_alloc
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
from .rmap import (
    filemap_pmd_folio,
    filemap_set_pmd_folio,
    i_mmap_lock_read,
    i_mmap_unlock_read,
    linear_page_index,
)
from .tlbflush import flush_tlb_mm_range
from .types import (
    VM_WRITE,
    Folio,
    Leaf,
    PageTable,
    address_space,
    mm_pgtables_add,
    mm_rss_add,
    mm_struct,
    vm_area_struct,
    vma_is_anonymous,
)
from .vma import vmas_in_range


class Scan(IntEnum):
    """mm/khugepaged.c: ``enum scan_result``, the values the model produces."""

    SCAN_FAIL = 0
    SCAN_SUCCEED = 1
    SCAN_PMD_NULL = 2
    SCAN_PMD_NONE = 3
    SCAN_PMD_MAPPED = 4
    SCAN_PTE_MAPPED_HUGEPAGE = 10
    SCAN_PAGE_RO = 11
    SCAN_PAGE_NULL = 13
    SCAN_PAGE_ANON = 18
    SCAN_PAGE_COMPOUND = 19
    SCAN_VMA_NULL = 21
    SCAN_VMA_CHECK = 22
    SCAN_ADDRESS_RANGE = 23
    SCAN_ALLOC_HUGE_PAGE_FAIL = 25
    SCAN_TRUNCATED = 27


async def find_pmd(mm: mm_struct, addr: int) -> tuple[Scan, PageTable | None, int]:
    """mm/khugepaged.c: find_pmd_or_thp_or_none() with its result: SCAN_PMD_NULL
    (no PMD table: ``mm_find_pmd()`` failed), SCAN_PMD_NONE, SCAN_PMD_MAPPED (a
    huge PMD) or SCAN_SUCCEED (it maps a PTE table); the PMD table and index."""
    pmd_table = await pmd_offset_lockless(mm, addr)
    if pmd_table is None:
        return Scan.SCAN_PMD_NULL, None, 0
    idx = mm.geometry.index(pmd_table.depth, addr)
    pmdval = await pmd_table.load(idx)
    if pmdval is None:
        return Scan.SCAN_PMD_NONE, pmd_table, idx
    if isinstance(pmdval, Leaf):
        return Scan.SCAN_PMD_MAPPED, pmd_table, idx
    return Scan.SCAN_SUCCEED, pmd_table, idx


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
    """Clear every present PTE of a locked table; the pages cleared that RSS
    counted (not the zero page)."""
    n = 0
    for i in sorted(pte.entries):
        old = await pte.get_and_clear(i)
        if isinstance(old, Leaf):
            n += old.rss
    return n


async def collapse_huge_page(mm: mm_struct, addr: int, khugepaged: bool = True) -> Scan:
    """mm/khugepaged.c: collapse_huge_page() for the PMD range holding ``addr``
    (the scan found a PTE table there): allocate the huge folio
    (``alloc_charge_folio()``: SCAN_ALLOC_HUGE_PAGE_FAIL without one), revalidate
    under ``mmap_write_lock`` (``hugepage_vma_revalidate()``: THP allowed as
    khugepaged's sysfs settings say, or forced for MADV_COLLAPSE; an anonymous
    VMA with an anon_vma), ``vma_start_write()``, clear the PMD under its lock,
    ``tlb_remove_table_sync_one()``, isolate and copy the pages (the old PTEs are
    cleared under the PTE lock; each none or zero-page PTE is now backed: +1
    RSS), then under the PMD lock deposit the old table and set the huge PMD.
    SCAN_SUCCEED, or why not (the PMD changed before the VMA was
    write-locked)."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    if not vma_alloc_folio_pmd(mm):
        return Scan.SCAN_ALLOC_HUGE_PAGE_FAIL
    await mmap_write_lock(mm)
    vma = await find_vma(mm, addr)              # hugepage_vma_revalidate()
    result = Scan.SCAN_SUCCEED
    if vma is None or vma.vm_start > addr:
        result = Scan.SCAN_VMA_NULL
    elif not thp_vma_suitable(vma, addr, pmd_size, geo.page_shift):
        result = Scan.SCAN_ADDRESS_RANGE
    elif (khugepaged and not thp_vma_allowable(vma, addr, pmd_size)) \
            or not vma_is_anonymous(vma):
        result = Scan.SCAN_VMA_CHECK
    elif not vma.anon_vma:
        result = Scan.SCAN_PAGE_ANON
    found = None
    if result == Scan.SCAN_SUCCEED:
        found = await find_pmd_or_thp_or_none(mm, addr)
        if found is None:
            result = Scan.SCAN_PMD_NULL
    if vma is None or found is None:
        await mmap_write_unlock(mm)
        return result
    pmd_table, idx = found
    await vma_start_write(mm, vma)
    # check_pmd_still_valid(): a per-VMA-locked MADV_DONTNEED (PT_RECLAIM) may
    # have freed the table before the VMA was write-locked.
    if await find_pmd_or_thp_or_none(mm, addr) != found:
        await mmap_write_unlock(mm)
        return Scan.SCAN_FAIL
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
    await pmd_table.store(idx, Leaf(True, True, nr, bool(vma.vm_flags & VM_WRITE),
                                    folio=Folio()))
    await spin_unlock(pmd_ptl)
    await mmap_write_unlock(mm)
    return Scan.SCAN_SUCCEED


async def hpage_collapse_scan_pmd(mm: mm_struct, vma: vm_area_struct,
                                  addr: int) -> tuple[Scan, bool]:
    """mm/khugepaged.c: hpage_collapse_scan_pmd() for MADV_COLLAPSE (no
    max_ptes_none/shared/referenced limits), ``mmap_read_lock`` held: the PMD
    must map a PTE table (find_pmd_or_thp_or_none()); under its lock, none and
    zero-page PTEs are skipped, every other page must be anonymous
    (SCAN_PAGE_ANON), and before v6.18 at least one PTE writable (else
    SCAN_PAGE_RO: ``collapse_needs_writable``); then
    ``mmap_read_unlock()`` and collapse_huge_page().  The result, and whether
    ``mmap_lock`` is still held."""
    result, pmd_table, idx = await find_pmd(mm, addr)
    if result != Scan.SCAN_SUCCEED or pmd_table is None:
        return result, True
    pte = await pte_offset_map_lock(mm, pmd_table, idx)
    if pte is None:
        return Scan.SCAN_PMD_NULL, True
    writable = False
    for i in sorted(pte.entries):
        leaf = await pte.load(i)
        if not isinstance(leaf, Leaf) or leaf.zero:    # pte_none_or_zero()
            continue
        writable = writable or leaf.writable
        if not leaf.anon:
            result = Scan.SCAN_PAGE_ANON
            break
    if result == Scan.SCAN_SUCCEED and not writable and mm.config.collapse_needs_writable:
        result = Scan.SCAN_PAGE_RO
    await pte_unmap_unlock(mm, pte)
    if result != Scan.SCAN_SUCCEED:
        return result, True
    await mmap_read_unlock(mm)
    return await collapse_huge_page(mm, addr, khugepaged=False), False


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


async def collapse_pte_mapped_thp(mm: mm_struct, addr: int, install_pmd: bool) -> Scan:
    """mm/khugepaged.c: collapse_pte_mapped_thp() under ``mmap_read_lock`` (since
    v6.6; MADV_COLLAPSE held ``mmap_write_lock`` up to v6.5), for a file range
    the page cache already holds as one PMD-sized folio (``collapse_file()``):
    if every present PTE maps that folio (not an anonymous COW copy), clear them,
    retract the table (``pte_free_defer()``), and with ``install_pmd``
    (MADV_COLLAPSE) map the folio by a huge PMD (``set_huge_pmd()``).  A PMD
    already none skips to the install.  The kernel's ``pmd_same()`` re-check
    under the locks is the emptiness re-check of :func:`retract_pte_table`."""
    write = mm.config.retract_free != "defer"
    await (mmap_write_lock(mm) if write else mmap_read_lock(mm))
    result = await _collapse_pte_mapped_thp(mm, addr, install_pmd)
    await (mmap_write_unlock(mm) if write else mmap_read_unlock(mm))
    return result


async def _collapse_pte_mapped_thp(mm: mm_struct, addr: int, install_pmd: bool) -> Scan:
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    haddr = addr & ~(pmd_size - 1)
    vma = await find_vma(mm, haddr)                  # vma_lookup()
    if vma is None or vma.vm_start > haddr or vma.file is None \
            or haddr + pmd_size > vma.vm_end:
        return Scan.SCAN_VMA_CHECK
    result, pmd_table, idx = await find_pmd(mm, haddr)
    if result == Scan.SCAN_PMD_MAPPED:
        return result
    # thp_vma_allowable_order(TVA_FORCED_COLLAPSE): sysfs settings elided.
    if not thp_vma_suitable(vma, haddr, pmd_size, geo.page_shift):
        return Scan.SCAN_VMA_CHECK
    if not filemap_pmd_folio(mm, vma, haddr):        # filemap_lock_folio()
        cached = linear_page_index(mm, vma, haddr) in mm.mapping(vma.file).cached
        return Scan.SCAN_PAGE_COMPOUND if cached else Scan.SCAN_PAGE_NULL
    if result == Scan.SCAN_PMD_NULL and mm.config.collapse_installs_tables:
        # v6.18: no PMD table is like an empty PMD; install_huge_pmd() allocates
        # the tables (p4d_alloc(), pud_alloc(), pmd_alloc()).
        if not install_pmd:
            return Scan.SCAN_SUCCEED
        pmd_table = await walk_alloc(mm, haddr)
        if pmd_table is None:
            return Scan.SCAN_FAIL
        result, idx = Scan.SCAN_PMD_NONE, geo.index(pmd_table.depth, haddr)
    if result == Scan.SCAN_PMD_NONE:
        # "All pte entries have been removed and pmd cleared."
        return await set_huge_pmd(mm, vma, pmd_table, idx, haddr) if install_pmd \
            else Scan.SCAN_SUCCEED
    if result != Scan.SCAN_SUCCEED or pmd_table is None:
        return result
    # Step 1: every mapped PTE must be the folio's page ("MAP_PRIVATE may change
    # the page table, but the new page will not be a subpage of hpage").
    pte = await pte_offset_map_lock(mm, pmd_table, idx)
    if pte is None:
        return Scan.SCAN_FAIL
    ours = True
    for i in sorted(pte.entries):
        leaf = await pte.load(i)
        if isinstance(leaf, Leaf) and (leaf.anon or leaf.zero):
            ours = False
            break
    await pte_unmap_unlock(mm, pte)
    if not ours:
        return Scan.SCAN_FAIL                         # abort
    # Steps 2-4: clear the PTEs, then remove the empty table.
    await try_to_unmap_range(mm, pmd_table, idx)
    if not await retract_pte_table(mm, pmd_table, idx):
        return Scan.SCAN_FAIL
    if install_pmd:                                   # step 5
        return await set_huge_pmd(mm, vma, pmd_table, idx, haddr)
    return Scan.SCAN_SUCCEED


async def set_huge_pmd(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable | None,
                       idx: int, addr: int) -> Scan:
    """mm/khugepaged.c: set_huge_pmd() -> mm/memory.c do_set_pmd() (no
    FAULT_FLAG_WRITE)."""
    if pmd_table is None or await do_set_pmd(mm, vma, pmd_table, idx, addr) != 0:
        return Scan.SCAN_FAIL
    return Scan.SCAN_SUCCEED


async def collapse_file(mm: mm_struct, mapping: address_space, start: int,
                        khugepaged: bool = True) -> Scan:
    """mm/khugepaged.c: collapse_file() on shmem (memfd) for the PMD-aligned
    offset ``start``: allocate the huge folio (SCAN_ALLOC_HUGE_PAGE_FAIL), give
    up on a range with no page cached at all (SCAN_TRUNCATED), copy the pages
    (holes are filled) and ``xas_store()`` the new folio over the range, then
    ``retract_page_tables()`` in every mm.  MADV_COLLAPSE's result is
    SCAN_PTE_MAPPED_HUGEPAGE: its caller then maps the folio
    (collapse_pte_mapped_thp()).  (Page locks, LRU and refcount checks are not
    modelled.)"""
    nr = hpage_pmd_nr(mm)
    if not vma_alloc_folio_pmd(mm):
        return Scan.SCAN_ALLOC_HUGE_PAGE_FAIL
    if not any(i in mapping.cached for i in range(start, start + nr)):
        return Scan.SCAN_TRUNCATED
    filemap_set_pmd_folio(mapping, start, nr)
    await retract_page_tables(mapping, start)
    return Scan.SCAN_SUCCEED if khugepaged else Scan.SCAN_PTE_MAPPED_HUGEPAGE


async def hpage_collapse_scan_file(mm: mm_struct, mapping: address_space,
                                   start: int) -> Scan:
    """mm/khugepaged.c: hpage_collapse_scan_file() for MADV_COLLAPSE: a range the
    page cache already holds as one PMD-sized folio is SCAN_PTE_MAPPED_HUGEPAGE
    ("Maybe PMD-mapped"); else collapse_file()."""
    if start in mapping.huge:
        return Scan.SCAN_PTE_MAPPED_HUGEPAGE
    return await collapse_file(mm, mapping, start, khugepaged=False)


# madvise_collapse(): results after which the next PMD range is still tried.
_CONTINUE = frozenset({Scan.SCAN_PMD_NULL, Scan.SCAN_PAGE_RO, Scan.SCAN_PAGE_NULL,
                       Scan.SCAN_PAGE_COMPOUND})


def madvise_collapse_errno(r: Scan) -> int:
    """mm/khugepaged.c: madvise_collapse_errno(), for the results the model
    produces: -ENOMEM for no huge folio, else -EINVAL (the -EAGAIN and -EBUSY
    ones, page locks, refcounts, LRU, max_ptes_none with userfaultfd, are not
    modelled)."""
    if r == Scan.SCAN_ALLOC_HUGE_PAGE_FAIL:
        return -errno.ENOMEM
    return -errno.EINVAL


async def _madvise_collapse_vma(mm: mm_struct, vma: vm_area_struct, start: int,
                                end: int) -> int:
    """mm/khugepaged.c: madvise_collapse() for one VMA, ``mmap_read_lock`` held on
    entry and on return: each whole PMD range of ``[start, end)`` is scanned and
    collapsed (file: hpage_collapse_scan_file(), then collapse_pte_mapped_thp()
    with ``install_pmd``; anonymous: hpage_collapse_scan_pmd()); SCAN_SUCCEED
    and SCAN_PMD_MAPPED count as done, a few results let the next range be
    tried, any other stops.  0 if every range was done, else the errno of the
    last failure."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    # thp_vma_allowable_order(TVA_FORCED_COLLAPSE): sysfs settings do not
    # matter, but some PMD-aligned range (tried at the VMA's end) must fit.
    if not thp_vma_suitable(vma, vma.vm_end - pmd_size, pmd_size, geo.page_shift):
        return -errno.EINVAL
    # __thp_vma_allowable_orders(): "Allow page fault since anon_vma may be not
    # initialized until the first page fault" -- but not a collapse.
    if vma_is_anonymous(vma) and not vma.anon_vma:
        return -errno.EINVAL
    if vma.anon and not vma_is_anonymous(vma):
        raise ModelViolation("model-limit", "MADV_COLLAPSE of shared anonymous memory "
                             "(shmem's page cache) is not modelled")
    hstart = (start + pmd_size - 1) & ~(pmd_size - 1)
    hend = end & ~(pmd_size - 1)
    thps, last_fail = 0, Scan.SCAN_FAIL
    locked = True
    addr = hstart
    while addr < hend:
        if not locked:
            await mmap_read_lock(mm)
            locked = True
            found = await find_vma(mm, addr)          # hugepage_vma_revalidate()
            if found is None or found.vm_start > addr:
                last_fail = Scan.SCAN_VMA_NULL
                break
            if not thp_vma_suitable(found, addr, pmd_size, geo.page_shift):
                last_fail = Scan.SCAN_ADDRESS_RANGE
                break
            vma = found
            hend = min(hend, vma.vm_end & ~(pmd_size - 1))
        if vma.file is not None:
            await mmap_read_unlock(mm)
            locked = False
            result = await hpage_collapse_scan_file(mm, mm.mapping(vma.file),
                                                    linear_page_index(mm, vma, addr))
            if result == Scan.SCAN_PTE_MAPPED_HUGEPAGE:
                result = await collapse_pte_mapped_thp(mm, addr, install_pmd=True)
        else:
            result, locked = await hpage_collapse_scan_pmd(mm, vma, addr)
        if result in (Scan.SCAN_SUCCEED, Scan.SCAN_PMD_MAPPED):
            thps += 1
        else:
            last_fail = result
            if result not in _CONTINUE:
                break
        addr += pmd_size
    if not locked:
        await mmap_read_lock(mm)
    nr = (hend - hstart) // pmd_size if hend >= hstart else -1
    return 0 if thps == nr else madvise_collapse_errno(last_fail)


async def madvise_collapse(mm: mm_struct, start: int, length: int) -> int:
    """mm/madvise.c: madvise(start, length, MADV_COLLAPSE): under
    ``mmap_read_lock``, madvise_walk_vmas() calls mm/khugepaged.c
    madvise_collapse() for each VMA's part of the range and stops at the first
    error; a hole in the range is -ENOMEM at the end.  Returns 0 or -errno."""
    end = start + length
    await mmap_read_lock(mm)
    covered, err, hole = start, 0, False
    for vma in vmas_in_range(mm, start, end):
        lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
        hole = hole or lo > covered
        err = await _madvise_collapse_vma(mm, vma, lo, hi)
        if err:
            break
        covered = hi
    await mmap_read_unlock(mm)
    if err:
        return err
    return -errno.ENOMEM if hole or covered < end else 0
