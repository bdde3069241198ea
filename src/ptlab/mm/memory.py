"""mm/memory.c: the page fault, zapping PTEs, and freeing page tables.

* ``handle_mm_fault()`` allocates missing tables top-down; each level's
  ``__pXd_alloc()`` publishes its new table under the lock, after re-checking the
  entry is still empty, and the loser frees its unpublished table at once
  (``pmd_install()`` for PTE tables).  The PTE is then set under the PTE lock,
  after ``pte_offset_map_lock()`` re-checked the PMD (``pmd_same``).  A read
  fault maps the zero page (private anonymous) or the file's page, read-only
  where the mapping is private; a later write takes the write-protect path
  (``do_wp_page()``: COW, with an anon_vma, or just the write bit).  A file
  range the page cache holds as one PMD-sized folio is mapped by a huge PMD
  (``do_set_pmd()``), no PTE table.
* ``zap_pte_range()`` clears PTEs; with PT_RECLAIM (madvise only) it frees the
  emptied table: the fast path trylocks the PMD lock while holding the PTE lock,
  the slow path rescans under both.
* ``free_pgtables()`` / ``free_pgd_range()`` free the tables of unmapped VMAs with
  the floor/ceiling rules, without the PTE lock (the VMAs are detached).
"""

from __future__ import annotations

from ..engine import ModelViolation
from ..kernel import (
    need_resched,
    rcu_read_lock,
    rcu_read_unlock,
    spin_lock,
    spin_trylock,
    spin_unlock,
)
from .huge_memory import (
    VM_FAULT_FALLBACK,
    VM_FAULT_OOM,
    __split_huge_pmd,
    do_huge_pmd_anonymous_page,
    do_huge_pmd_wp_page,
    do_huge_zero_wp_pmd,
    hpage_pmd_nr,
    pgtable_trans_huge_deposit,
    thp_vma_allowable,
    thp_vma_suitable,
    zap_huge_pmd,
)
from .mmu_gather import mmu_gather, pte_free_tlb
from .pgalloc import pagetable_alloc, pte_free, pte_lockptr
from .pgtable import pmd_offset_lockless
from .rmap import filemap_add_folio, filemap_pmd_folio, unlink_file_vma
from .types import (
    VM_SHARED,
    VM_WRITE,
    Leaf,
    PageTable,
    anon_vma_prepare,
    mm_pgtables_add,
    mm_rss_add,
    mm_struct,
    vm_area_struct,
    vma_is_anonymous,
)

# -- lock-free mapping of a PTE table (mm/pgtable-generic.c) ------------------------------


async def __pte_offset_map(pmd_table: PageTable, idx: int) -> PageTable | None:
    """mm/pgtable-generic.c: ___pte_offset_map(): ``rcu_read_lock()``, read the PMD
    locklessly; NULL (after ``rcu_read_unlock()``) if none or huge."""
    await rcu_read_lock()
    pmdval = await pmd_table.load(idx)
    if not isinstance(pmdval, PageTable):   # pmd_none() or pmd_trans_huge()
        await rcu_read_unlock()
        return None
    return pmdval


async def pte_offset_map_lock(mm: mm_struct, pmd_table: PageTable,
                              idx: int) -> PageTable | None:
    """mm/pgtable-generic.c: __pte_offset_map_lock(): map, take the PTE lock, and
    re-check the PMD still points to the table (``pmd_same``), else retry.  The
    table comes back locked and mapped (RCU held), or None."""
    while True:
        pte = await __pte_offset_map(pmd_table, idx)
        if pte is None:
            return None
        ptl = pte_lockptr(mm, pte)
        await spin_lock(ptl)
        if await pmd_table.load(idx) is pte:
            locked: PageTable = pte
            return locked
        await spin_unlock(ptl)
        await rcu_read_unlock()   # pte_unmap_unlock()


async def pte_unmap_unlock(mm: mm_struct, pte: PageTable) -> None:
    """include/linux/mm.h: pte_unmap_unlock(): ``spin_unlock(ptl); pte_unmap()``."""
    await spin_unlock(pte_lockptr(mm, pte))
    await rcu_read_unlock()


# -- allocation -------------------------------------------------------------------------


async def __pxd_alloc(mm: mm_struct, parent: PageTable, idx: int, addr: int) -> bool:
    """mm/memory.c: __pud_alloc() / __pmd_alloc() / __pte_alloc() with
    pmd_install(): allocate, then under the lock publish it if the entry is still
    empty (``mm_inc_nr_*``, ``smp_wmb()``, ``pXd_populate()``); else free it at
    once, never published.  False on -ENOMEM."""
    depth = parent.depth + 1
    new = await pagetable_alloc(mm, depth, addr)
    if new is None:
        return False
    # pud_lock()/pmd_lock(): the PMD table's split lock guards PMD entries.
    ptl = pte_lockptr(mm, parent) if mm.geometry.levels[parent.depth].name == "pmd" \
        else mm.page_table_lock
    await spin_lock(ptl)
    if await parent.load(idx) is None:       # "Has another populated it ?"
        await mm_pgtables_add(mm, depth, 1)
        await parent.store(idx, new)
        new = None
    await spin_unlock(ptl)
    if new is not None:
        await pte_free(mm, new)
    return True


async def walk_alloc(mm: mm_struct, addr: int, depth: int = -2) -> PageTable | None:
    """The ``p4d_alloc() / pud_alloc() / pmd_alloc()`` chain of
    __handle_mm_fault(): the PMD table for ``addr`` (or the table at ``depth``,
    counted as a list index: -3 is the PUD table), allocating what is missing."""
    geo = mm.geometry
    table = mm.pgd
    assert table is not None
    last = depth % len(geo.levels)
    while table.depth < last:
        idx = geo.index(table.depth, addr)
        nxt = await table.load(idx)
        if nxt is None:
            if not await __pxd_alloc(mm, table, idx, addr):
                return None
            nxt = await table.load(idx)
        if not isinstance(nxt, PageTable):
            raise ModelViolation("bad-walk", f"{table!r}[{idx}] is {nxt!r}, not a table")
        table = nxt
    return table


async def handle_pte_fault(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable,
                           addr: int, write: bool = True) -> bool:
    """mm/memory.c: handle_pte_fault() once the PTE table exists.  A none PTE:
    a private write gets a new anonymous page (do_anonymous_page(), or
    do_cow_fault() for a file), after ``vmf_anon_prepare()``; a private
    anonymous read the zero page (do_anonymous_page()'s ``!FAULT_FLAG_WRITE``
    branch: no anon_vma, no RSS); anything else the file's (or shmem's) page
    (do_read_fault() / do_shared_fault(); writable only in a shared writable
    mapping, shmem's ``vm_page_prot``).  A present read-only PTE written in a
    writable VMA: do_wp_page().  ``pte_offset_map_lock()`` first; False when the
    table went away (the fault is retried)."""
    geo = mm.geometry
    shared = bool(vma.vm_flags & VM_SHARED)
    cow = write and not shared
    if cow and not vma.anon_vma:
        await anon_vma_prepare(vma)
    pte = await pte_offset_map_lock(mm, pmd_table, geo.index(pmd_table.depth, addr))
    if pte is None:
        return False
    idx = geo.index(pte.depth, addr)
    cur = await pte.load(idx)
    if cur is None:
        if cow:
            leaf = Leaf(True, False, 1, bool(vma.vm_flags & VM_WRITE))
        elif vma_is_anonymous(vma):
            leaf = Leaf(False, False, 1, False, zero=True)
        else:
            leaf = Leaf(False, False, 1, shared and bool(vma.vm_flags & VM_WRITE))
        if not vma.anon:
            filemap_add_folio(mm, vma, addr)     # __do_fault(): in the page cache
        await pte.store(idx, leaf)
        if leaf.rss:
            await mm_rss_add(mm, 1)
    elif write and isinstance(cur, Leaf) and not cur.writable and vma.vm_flags & VM_WRITE:
        return await do_wp_page(mm, vma, pmd_table, pte, idx, cur, addr)
    await pte_unmap_unlock(mm, pte)
    return True


async def do_wp_page(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable,
                     pte: PageTable, idx: int, orig: Leaf, addr: int) -> bool:
    """mm/memory.c: do_wp_page(), entered with the PTE locked.  A shared mapping
    (wp_page_shared()) or an anonymous page (wp_page_reuse(), or a copy of a
    page still shared with a fork: the same PTE either way) just gets the write
    bit.  The zero page or a private file page is copied (wp_page_copy()): the
    lock is dropped, ``vmf_anon_prepare()`` gives the VMA its anon_vma (so fork
    will copy its tables), and under the lock again, if the PTE is unchanged
    (``pte_same``), a new anonymous page replaces it (RSS: +1 for the zero page,
    file -1 anon +1 for a file page)."""
    if vma.vm_flags & VM_SHARED or orig.anon:
        await pte.store(idx, orig.wr(True))
        await pte_unmap_unlock(mm, pte)
        return True
    await pte_unmap_unlock(mm, pte)
    if not vma.anon_vma:
        await anon_vma_prepare(vma)
    geo = mm.geometry
    pte2 = await pte_offset_map_lock(mm, pmd_table, geo.index(pmd_table.depth, addr))
    if pte2 is None:
        return False
    if await pte2.load(idx) is orig:
        await pte2.store(idx, Leaf(True, False, 1, True))
        if orig.zero:
            await mm_rss_add(mm, 1)
    await pte_unmap_unlock(mm, pte2)
    return True


def filemap_map_pmd_ok(mm: mm_struct, vma: vm_area_struct, addr: int, write: bool) -> bool:
    """finish_fault()'s ``folio_test_pmd_mappable()`` and do_set_pmd()'s checks,
    before any table is allocated: a file fault that maps the page-cache folio
    itself (not a private write, which maps its COW copy) where that folio is
    PMD-sized and the VMA suits a PMD at ``addr``."""
    return not vma.anon and (bool(vma.vm_flags & VM_SHARED) or not write) \
        and filemap_pmd_folio(mm, vma, addr) \
        and thp_vma_suitable(vma, addr, mm.geometry.levels[-2].size, mm.geometry.page_shift)


async def do_set_pmd(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable, idx: int,
                     addr: int, write: bool = False) -> int:
    """mm/memory.c: do_set_pmd(): under the PMD lock, if the PMD is still none,
    map the PMD-sized page-cache folio by a huge PMD (``add_mm_counter()``; the
    entry is writable as ``vm_page_prot`` makes it: shared writable mappings;
    ``maybe_pmd_mkwrite()`` on a write); where ``arch_needs_pgtable_deposit()``
    (powerpc hash) a preallocated table is deposited and counted.  No PTE table
    on x86.  Returns 0, VM_FAULT_FALLBACK (the PMD was no longer none) or
    VM_FAULT_OOM."""
    prealloc = None
    if mm.geometry.needs_pgtable_deposit:
        prealloc = await pagetable_alloc(mm, len(mm.geometry.levels) - 1, addr)
        if prealloc is None:
            return VM_FAULT_OOM
    ret = VM_FAULT_FALLBACK
    pml = pte_lockptr(mm, pmd_table)
    await spin_lock(pml)
    if await pmd_table.load(idx) is None:
        if prealloc is not None:                      # deposit_prealloc_pte()
            await pgtable_trans_huge_deposit(pmd_table, prealloc)
            await mm_pgtables_add(mm, prealloc.depth, 1)
            prealloc = None
        nr = hpage_pmd_nr(mm)
        writable = bool(vma.vm_flags & VM_WRITE) and bool(vma.vm_flags & VM_SHARED)
        await pmd_table.store(idx, Leaf(False, True, nr, writable))
        await mm_rss_add(mm, nr)
        ret = 0
    await spin_unlock(pml)
    if prealloc is not None:
        await pte_free(mm, prealloc)
    return ret


async def handle_mm_fault(mm: mm_struct, vma: vm_area_struct, addr: int,
                          write: bool = True) -> bool:
    """mm/memory.c: handle_mm_fault() -> __handle_mm_fault() -> handle_pte_fault():
    allocate the upper tables; at a none PMD try a huge one (create_huge_pmd():
    a THP, the huge zero folio for a read, VM_FAULT_FALLBACK to PTEs); at a huge
    PMD a read is done (huge_pmd_set_accessed()), a write to a read-only one
    goes to wp_huge_pmd() (the huge zero folio: do_huge_zero_wp_pmd(); else, or
    on its fallback, split and retry at PTE level); a file range held by a
    PMD-sized folio gets do_set_pmd(); else ``pte_alloc()`` and map the page.
    The caller holds the VMA read lock or ``mmap_lock``.  False: VM_FAULT_OOM."""
    geo = mm.geometry
    while True:
        pmd_table = await walk_alloc(mm, addr)
        if pmd_table is None:
            return False
        idx = geo.index(pmd_table.depth, addr)
        pmdval = await pmd_table.load(idx)
        if pmdval is None and thp_vma_allowable(vma, addr, geo.levels[-2].size):
            if await do_huge_pmd_anonymous_page(mm, vma, pmd_table, idx, addr,
                                                write) == VM_FAULT_OOM:
                return False
            pmdval = await pmd_table.load(idx)
        if isinstance(pmdval, Leaf):                      # pmd_trans_huge()
            if not write or pmdval.writable or not vma.vm_flags & VM_WRITE:
                return True
            # wp_huge_pmd() -> do_huge_pmd_wp_page(): the huge zero folio is
            # replaced by a THP if one can be had; otherwise (or a forked THP,
            # or a file THP) split, then handle the write at PTE level.
            if pmdval.zero and await do_huge_zero_wp_pmd(
                    mm, vma, pmd_table, idx, pmdval) != VM_FAULT_FALLBACK:
                continue
            if pmdval.folio is not None and await do_huge_pmd_wp_page(
                    mm, pmd_table, idx, pmdval):
                continue
            await __split_huge_pmd(mm, pmd_table, idx, addr)
            continue
        if pmdval is None:
            if filemap_map_pmd_ok(mm, vma, addr, write):
                # do_fault() -> __do_fault() -> finish_fault() -> do_set_pmd()
                if await do_set_pmd(mm, vma, pmd_table, idx, addr, write) == VM_FAULT_OOM:
                    return False
                continue
            if not await __pxd_alloc(mm, pmd_table, idx, addr):   # pte_alloc()
                return False
        if await handle_pte_fault(mm, vma, pmd_table, addr, write):
            return True


# -- zap ---------------------------------------------------------------------------------


async def try_get_and_clear_pmd(mm: mm_struct, pmd_table: PageTable, idx: int) -> bool:
    """mm/pt_reclaim.c: try_get_and_clear_pmd(): with the PTE lock held, trylock
    the PMD lock (lock order pml -> ptl) and clear the PMD."""
    pml = pte_lockptr(mm, pmd_table)
    if not await spin_trylock(pml):
        return False
    await pmd_table.get_and_clear(idx)
    await spin_unlock(pml)
    return True


async def free_pte(mm: mm_struct, tlb: mmu_gather, table: PageTable, addr: int) -> None:
    """mm/pt_reclaim.c: free_pte(): ``pte_free_tlb(); mm_dec_nr_ptes()``.  Like
    CONFIG_PAGE_TABLE_CHECK, the model refuses to free a table that still maps a
    page (its PMD is clear: nothing can add one now)."""
    if table.entries:
        raise ModelViolation("page-table-check", f"PT_RECLAIM frees {table!r}, which still "
                             f"maps {len(table.entries)} page(s)")
    await pte_free_tlb(tlb, table, addr)
    await mm_pgtables_add(mm, table.depth, -1)


async def try_to_free_pte(mm: mm_struct, tlb: mmu_gather, pmd_table: PageTable, idx: int,
                          addr: int) -> None:
    """mm/pt_reclaim.c: try_to_free_pte(): the slow path: under the PMD lock and then
    the PTE lock, check the PMD still maps a table, rescan all of it for
    ``pte_none()``, and only then clear the PMD and free the table."""
    pml = pte_lockptr(mm, pmd_table)
    await spin_lock(pml)
    pte = await pmd_table.load(idx)       # pte_offset_map_rw_nolock()
    if not isinstance(pte, PageTable):
        await spin_unlock(pml)
        return
    ptl = pte_lockptr(mm, pte)
    if ptl is not pml:
        await spin_lock(ptl)
    if await pte.count() == 0:
        await pmd_table.get_and_clear(idx)
        freed: PageTable | None = pte
    else:
        freed = None
    if ptl is not pml:
        await spin_unlock(ptl)
    await spin_unlock(pml)
    if freed is not None:
        await free_pte(mm, tlb, freed, addr)


async def zap_pte_range(mm: mm_struct, tlb: mmu_gather, pmd_table: PageTable, idx: int,
                        start: int, end: int, reclaim_pt: bool) -> None:
    """mm/memory.c: zap_pte_range(): clear the PTEs of ``[start, end)`` in one table
    under its lock, dropping the lock and starting over from where it was when
    ``need_resched()`` says so; with ``reclaim_pt`` (PT_RECLAIM, the range covers
    the whole table) free the table once it is empty: the fast path clears the
    PMD under a trylock while still holding the PTE lock (only if the lock was
    never dropped mid-scan, since the February 2025 fix), else the slow path
    rescans under both locks."""
    geo = mm.geometry
    size = geo.levels[-1].size
    can_reclaim_pt = reclaim_pt and end - start >= geo.levels[-2].size
    direct_reclaim = True
    addr = start
    while True:                                                   # retry:
        pte = await pte_offset_map_lock(mm, pmd_table, idx)
        if pte is None:
            return
        removed = rss = 0
        while True:                                   # do { ... } while (addr != end)
            if await need_resched():
                if mm.config.zap_break_fix:
                    direct_reclaim = False       # entries may be refilled meanwhile
                break
            # do_zap_pte_range(): skip all consecutive none PTEs (read under the
            # PTE lock, which every writer of them holds), then zap the next one.
            while addr < end and geo.index(pte.depth, addr) not in pte.entries:
                addr += size
            if addr < end:
                old = await pte.get_and_clear(geo.index(pte.depth, addr))
                if isinstance(old, Leaf):
                    removed += 1
                    rss += old.rss              # the zero page is not counted
                addr += size
            if addr == end:
                break
        if rss:
            await mm_rss_add(mm, -rss)
        if removed:
            tlb.need_flush = True
        if can_reclaim_pt and direct_reclaim and addr == end:
            direct_reclaim = await try_get_and_clear_pmd(mm, pmd_table, idx)
        await pte_unmap_unlock(mm, pte)
        if addr == end:
            break
    if can_reclaim_pt:
        if direct_reclaim:
            await free_pte(mm, tlb, pte, start)
        else:
            await try_to_free_pte(mm, tlb, pmd_table, idx, start)


async def unmap_page_range(mm: mm_struct, tlb: mmu_gather, start: int, end: int,
                           reclaim_pt: bool = False) -> None:
    """mm/memory.c: unmap_page_range() down to zap_pmd_range(): a huge PMD is zapped
    whole (``zap_huge_pmd()``) when the range covers it, else split first; each PMD
    entry that maps a table goes to zap_pte_range()."""
    geo = mm.geometry
    pmd_lv = geo.levels[-2]
    addr = start
    while addr < end:
        nxt = min((addr + pmd_lv.size) & ~(pmd_lv.size - 1), end)
        pmd_table = await pmd_offset_lockless(mm, addr)
        if pmd_table is not None:
            idx = geo.index(pmd_table.depth, addr)
            pmdval = await pmd_table.load(idx)
            if isinstance(pmdval, Leaf):
                if nxt - addr == pmd_lv.size:
                    if await zap_huge_pmd(mm, pmd_table, idx):
                        tlb.need_flush = True
                        addr = nxt
                        continue
                else:
                    await __split_huge_pmd(mm, pmd_table, idx, addr)
                pmdval = await pmd_table.load(idx)
            if pmdval is not None:
                await zap_pte_range(mm, tlb, pmd_table, idx, addr, nxt, reclaim_pt)
        addr = nxt


# -- free_pgtables ------------------------------------------------------------------------


async def free_pte_range(mm: mm_struct, tlb: mmu_gather, pmd_table: PageTable, idx: int,
                         addr: int) -> None:
    """mm/memory.c: free_pte_range(): ``pmd_clear(); pte_free_tlb();
    mm_dec_nr_ptes()`` -- no PTE lock: the VMAs are detached."""
    token = await pmd_table.get_and_clear(idx)
    assert isinstance(token, PageTable)
    await pte_free_tlb(tlb, token, addr)
    await mm_pgtables_add(mm, token.depth, -1)


async def free_pxd_range(mm: mm_struct, tlb: mmu_gather, parent: PageTable, pidx: int,
                         addr: int, end: int, floor: int, ceiling: int) -> None:
    """mm/memory.c: free_pmd_range() / free_pud_range() / free_p4d_range(): free the
    tables below this entry's table in ``[addr, end)``, then the table itself if
    the whole of it lies within ``[floor, ceiling)`` ("0 is both bottom and top")."""
    geo = mm.geometry
    table = await parent.load(pidx)
    assert isinstance(table, PageTable)
    start = addr
    await _free_entries(mm, tlb, table, addr, end, floor, ceiling)
    mask = geo.levels[table.depth - 1].size - 1        # PUD_MASK for a PMD table
    start &= ~mask
    if start < floor:
        return
    if ceiling:
        ceiling &= ~mask
        if not ceiling:
            return
    if (end - 1) & _U64 > (ceiling - 1) & _U64:
        return
    await parent.get_and_clear(pidx)                    # pud_clear()
    await pte_free_tlb(tlb, table, start)               # pmd_free_tlb()
    await mm_pgtables_add(mm, table.depth, -1)          # mm_dec_nr_pmds()


_U64 = (1 << 64) - 1


async def free_pgd_range(mm: mm_struct, tlb: mmu_gather, addr: int, end: int, floor: int,
                         ceiling: int) -> None:
    """mm/memory.c: free_pgd_range(): trim ``[addr, end)`` to whole PMD entries that
    lie within ``[floor, ceiling)``, then walk the top level."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    pmd_mask = ~(pmd_size - 1) & _U64
    addr &= pmd_mask
    if addr < floor:
        addr += pmd_size
        if not addr:
            return
    if ceiling:
        ceiling &= pmd_mask
        if not ceiling:
            return
    if (end - 1) & _U64 > (ceiling - 1) & _U64:
        end -= pmd_size
    if addr > (end - 1) & _U64:
        return
    assert mm.pgd is not None
    await _free_entries(mm, tlb, mm.pgd, addr, end, floor, ceiling)


async def _free_entries(mm: mm_struct, tlb: mmu_gather, table: PageTable, addr: int, end: int,
                        floor: int, ceiling: int) -> None:
    """The ``do { next = pXd_addr_end(addr, end); ... } while (addr = next, addr != end)``
    loop of each free_pXd_range(): free what each present entry of ``table`` maps."""
    geo = mm.geometry
    size = geo.levels[table.depth].size
    while True:
        nxt = (addr + size) & ~(size - 1)
        nxt = end if nxt - 1 >= end - 1 else nxt           # pXd_addr_end()
        idx = geo.index(table.depth, addr)
        if await table.load(idx) is not None:              # pXd_none_or_clear_bad()
            if table.depth == len(geo.levels) - 2:
                await free_pte_range(mm, tlb, table, idx, addr)
            else:
                await free_pxd_range(mm, tlb, table, idx, addr, nxt, floor, ceiling)
        addr = nxt
        if addr == end:
            break


async def free_pgtables(mm: mm_struct, tlb: mmu_gather, vmas: list[vm_area_struct],
                        floor: int, ceiling: int) -> None:
    """mm/memory.c: free_pgtables(): for the detached VMAs, in order, gather
    neighbours closer than a PMD, unlink them from the file rmap
    (``unlink_file_vma_batch_final()``), and free their tables with
    ``ceiling = next ? next->vm_start : ceiling``."""
    pmd_size = mm.geometry.levels[-2].size
    i = 0
    while i < len(vmas):
        vma = vmas[i]
        addr = vma.vm_start
        j = i
        while j + 1 < len(vmas) and vmas[j + 1].vm_start <= vmas[j].vm_end + pmd_size:
            j += 1
        nxt = vmas[j + 1].vm_start if j + 1 < len(vmas) else ceiling
        # Out of the file rmap first: khugepaged can no longer find them.
        await unlink_file_vma(mm, vmas[i:j + 1])
        await free_pgd_range(mm, tlb, addr, vmas[j].vm_end, floor, nxt)
        i = j + 1
