"""mm/huge_memory.c: PMD-mapped THPs and the PTE table deposited with each.

An anonymous huge PMD carries a PTE table allocated at fault time and parked on
the PMD table's ``pmd_huge_pte`` list (``pgtable_trans_huge_deposit()``, from
mm/pgtable-generic.c), so that splitting the PMD later cannot fail for want of
memory.  The deposited table is counted in ``nr_ptes`` (``VmPTE``) from the
fault on, is never visible to walkers while deposited, and is freed at once
(``pte_free()``, no grace period) when the huge PMD is zapped.  A read fault
maps the huge zero folio instead, with a deposited table all the same; a write
to it allocates a THP in its place (``do_huge_zero_wp_pmd()``) or, failing
that, splits it into zero-page PTEs.

A file huge PMD (a PMD-sized page-cache folio, ``do_set_pmd()``) has no deposit
on x86: zapping or splitting it just clears it, and the pages refault.
"""

from __future__ import annotations

from ..engine import WRITE, Call, ModelViolation, Op
from ..kernel import spin_lock, spin_unlock
from .pgalloc import pagetable_alloc, pte_free, pte_lockptr
from .pgtable import pmd_offset_lockless
from .tlbflush import flush_tlb_mm_range
from .types import (
    VM_HUGEPAGE,
    VM_WRITE,
    Folio,
    Leaf,
    PageTable,
    anon_vma_prepare,
    folio_exclusive,
    folio_mapcount_add,
    mm_pgtables_add,
    mm_rss_add,
    mm_struct,
    vm_area_struct,
    vma_is_anonymous,
)

# include/linux/mm_types.h: vm_fault_t bits the model returns.
VM_FAULT_OOM = 0x000001
VM_FAULT_FALLBACK = 0x000800


def hpage_pmd_nr(mm: mm_struct) -> int:
    """HPAGE_PMD_NR: base pages one huge PMD maps."""
    geo = mm.geometry
    return 1 << (geo.levels[-2].shift - geo.levels[-1].shift)


def thp_vma_suitable(vma: vm_area_struct, addr: int, pmd_size: int,
                     page_shift: int = 12) -> bool:
    """include/linux/huge_mm.h: thp_vma_suitable_order() for PMD order: the aligned
    PMD range around ``addr`` lies wholly inside the VMA, and for a file the
    offset is aligned the same way (``vm_start - vm_pgoff``)."""
    if not vma.anon and ((vma.vm_start >> page_shift) - vma.vm_pgoff) \
            & ((pmd_size >> page_shift) - 1):
        return False
    haddr = addr & ~(pmd_size - 1)
    return haddr >= vma.vm_start and haddr + pmd_size <= vma.vm_end


def thp_vma_allowable(vma: vm_area_struct, addr: int, pmd_size: int) -> bool:
    """thp_vma_allowable_order(TVA_PAGEFAULT) + thp_vma_suitable_order() for PMD
    order, with THP in "madvise" mode and shmem_enabled=never (this machine's
    settings): an anonymous VMA (not shmem: a shared anonymous mapping never
    gets a huge PMD on fault) with VM_HUGEPAGE, suitable at ``addr``."""
    return bool(vma.vm_flags & VM_HUGEPAGE) and vma_is_anonymous(vma) \
        and thp_vma_suitable(vma, addr, pmd_size)


def vma_alloc_folio_pmd(mm: mm_struct) -> bool:
    """vma_alloc_folio(HPAGE_PMD_ORDER) (or a collapse's ``alloc_charge_folio()``):
    whether the huge folio can be had, as ``mm.thp_budget`` says (None: always;
    else one fewer each time, and none at 0)."""
    if mm.thp_budget is None:
        return True
    if mm.thp_budget <= 0:
        return False
    mm.thp_budget -= 1
    return True


def _deposit(pmd_table: PageTable, pgtable: PageTable) -> None:
    pmd_table.check("pgtable_trans_huge_deposit", "Write")
    pmd_table.deposit.append(pgtable)


def _withdraw(pmd_table: PageTable) -> PageTable:
    pmd_table.check("pgtable_trans_huge_withdraw", "Write")
    if not pmd_table.deposit:
        raise ModelViolation("bug-on", f"pgtable_trans_huge_withdraw: nothing deposited on "
                             f"{pmd_table!r}")
    return pmd_table.deposit.pop(0)


def pgtable_trans_huge_deposit(pmd_table: PageTable, pgtable: PageTable) -> Op:
    """mm/pgtable-generic.c: pgtable_trans_huge_deposit() (PMD lock held): FIFO
    onto ``pmd_huge_pte``."""
    return Call(((pmd_table.loc, WRITE), (pmd_table.page.alive, WRITE)),
                "pgtable_trans_huge_deposit({0!r}, {1!r})", _deposit, pmd_table, pgtable)


def pgtable_trans_huge_withdraw(pmd_table: PageTable) -> Op:
    """mm/pgtable-generic.c: pgtable_trans_huge_withdraw() (PMD lock held)."""
    return Call(((pmd_table.loc, WRITE), (pmd_table.page.alive, WRITE)),
                "pgtable_trans_huge_withdraw({0!r})", _withdraw, pmd_table)


async def do_huge_pmd_anonymous_page(mm: mm_struct, vma: vm_area_struct,
                                     pmd_table: PageTable, idx: int, addr: int,
                                     write: bool = True) -> int:
    """mm/huge_memory.c: do_huge_pmd_anonymous_page(): ``vmf_anon_prepare()`` (for a
    read too), then for a read the huge zero folio (``use_zero_page``; nothing
    to allocate), for a write a huge folio (VM_FAULT_FALLBACK to PTEs if there is
    none) and __do_huge_pmd_anonymous_page(); either way ``pte_alloc_one()`` the
    table to deposit, then under the PMD lock, if the PMD is still none:
    deposit, ``set_pmd_at()``, ``add_mm_counter(HPAGE_PMD_NR)`` (not for the zero
    folio), ``mm_inc_nr_ptes()``; else ``pte_free()`` the unused table.  Returns
    0, VM_FAULT_FALLBACK or VM_FAULT_OOM."""
    if not vma.anon_vma:
        await anon_vma_prepare(vma)
    if write and not vma_alloc_folio_pmd(mm):
        return VM_FAULT_FALLBACK
    pgtable = await pagetable_alloc(mm, len(mm.geometry.levels) - 1, addr)
    if pgtable is None:
        return VM_FAULT_OOM
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    if await pmd_table.load(idx) is not None:
        await spin_unlock(ptl)
        await pte_free(mm, pgtable)          # unlock_release
        return 0
    await pgtable_trans_huge_deposit(pmd_table, pgtable)
    nr = hpage_pmd_nr(mm)
    if write:
        await pmd_table.store(idx, Leaf(True, True, nr, bool(vma.vm_flags & VM_WRITE),
                                        folio=Folio()))
        await mm_rss_add(mm, nr)
    else:                                    # set_huge_zero_folio()
        await pmd_table.store(idx, Leaf(False, True, nr, False, zero=True))
    await mm_pgtables_add(mm, pgtable.depth, 1)
    await spin_unlock(ptl)
    return 0


async def do_huge_zero_wp_pmd(mm: mm_struct, vma: vm_area_struct, pmd_table: PageTable,
                              idx: int, orig: Leaf) -> int:
    """mm/huge_memory.c: do_huge_zero_wp_pmd() (v6.13): a write to the huge zero
    folio allocates a THP and, under the PMD lock if the PMD is unchanged
    (``pmd_same``), replaces it (``pmdp_huge_clear_flush()``,
    ``map_anon_folio_pmd()``): the deposited table stays, VmPTE does not move.
    VM_FAULT_FALLBACK without a folio: the caller splits the PMD."""
    if not vma_alloc_folio_pmd(mm):
        return VM_FAULT_FALLBACK
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    if await pmd_table.load(idx) is orig:
        await pmd_table.get_and_clear(idx)
        await flush_tlb_mm_range(mm)
        nr = hpage_pmd_nr(mm)
        await pmd_table.store(idx, Leaf(True, True, nr, bool(vma.vm_flags & VM_WRITE),
                                        folio=Folio()))
        await mm_rss_add(mm, nr)
    await spin_unlock(ptl)
    return 0


async def zap_deposited_table(mm: mm_struct, pmd_table: PageTable) -> None:
    """mm/huge_memory.c: zap_deposited_table(): withdraw, ``pte_free()`` at once
    (the table was never reachable by a walker), ``mm_dec_nr_ptes()``."""
    pgtable = await pgtable_trans_huge_withdraw(pmd_table)
    await pte_free(mm, pgtable)
    await mm_pgtables_add(mm, pgtable.depth, -1)


async def do_huge_pmd_wp_page(mm: mm_struct, pmd_table: PageTable, idx: int,
                              orig: Leaf) -> bool:
    """mm/huge_memory.c: do_huge_pmd_wp_page() for an anonymous THP: under the PMD
    lock, if the PMD is unchanged and the folio is exclusive (PageAnonExclusive,
    or a reference count of one once a fork's child has let go) it is reused:
    the write bit is set and the THP stays.  False: still shared, the caller
    splits it and COWs at PTE level (``fallback``)."""
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    reuse = await pmd_table.load(idx) is orig and orig.folio is not None \
        and bool(await folio_exclusive(orig.folio))
    if reuse:
        await pmd_table.store(idx, orig.wr(True))   # pmdp_set_access_flags()
    await spin_unlock(ptl)
    return reuse


async def zap_huge_pmd(mm: mm_struct, pmd_table: PageTable, idx: int) -> bool:
    """mm/huge_memory.c: zap_huge_pmd(): under the PMD lock clear the huge PMD; an
    anonymous THP or the huge zero folio gives back its deposited table (a file
    THP has none but where ``arch_needs_pgtable_deposit()``).  False if the PMD
    is no longer huge (``__pmd_trans_huge_lock()`` failed)."""
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    orig = await pmd_table.load(idx)
    if not isinstance(orig, Leaf):
        await spin_unlock(ptl)
        return False
    await pmd_table.get_and_clear(idx)        # pmdp_huge_get_and_clear_full()
    if orig.folio is not None:
        await folio_mapcount_add(orig.folio, -1)
    if orig.anon or orig.zero or mm.geometry.needs_pgtable_deposit:
        await zap_deposited_table(mm, pmd_table)
    if orig.rss:
        await mm_rss_add(mm, -orig.rss)
    await spin_unlock(ptl)
    return True


async def __split_huge_pmd(mm: mm_struct, pmd_table: PageTable, idx: int, addr: int) -> None:
    """mm/huge_memory.c: __split_huge_pmd() -> __split_huge_pmd_locked(): an
    anonymous huge PMD becomes the deposited PTE table filled with one PTE per
    subpage (``pmdp_invalidate()``, withdraw, fill, ``smp_wmb()``,
    ``pmd_populate()``), the huge zero folio one zero-page PTE per subpage
    (``__split_huge_zero_page_pmd()``); a file one is just cleared, to be
    refaulted by PTEs."""
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    orig = await pmd_table.load(idx)
    if isinstance(orig, Leaf):
        if orig.anon or orig.zero:
            # pmdp_invalidate() leaves the entry huge (not present) until
            # pmd_populate(): a racing zap still sees a huge PMD and waits for
            # this lock; GUP-fast, which pins no huge page here, sees no table.
            pgtable = await pgtable_trans_huge_withdraw(pmd_table)
            # Filled before it is published: no walker can see it yet.
            for i in range(orig.nr):
                pgtable.entries[i] = Leaf(orig.anon, False, 1, orig.writable, orig.zero)
            await pmd_table.store(idx, pgtable)       # pmd_populate()
        else:
            await pmd_table.get_and_clear(idx)        # pmdp_huge_clear_flush()
            if mm.geometry.needs_pgtable_deposit:
                await zap_deposited_table(mm, pmd_table)
            await mm_rss_add(mm, -orig.nr)
    await spin_unlock(ptl)


async def split_huge_pmd_address(mm: mm_struct, vma: vm_area_struct, addr: int) -> None:
    """mm/huge_memory.c: split_huge_pmd_if_needed() / split_huge_pmd_address(): a
    huge PMD straddling ``addr`` (not PMD-aligned) is split, so a VMA boundary can
    fall there."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    if addr & (pmd_size - 1) == 0:
        return
    pmd_table = await pmd_offset_lockless(mm, addr)
    if pmd_table is None:
        return
    idx = geo.index(pmd_table.depth, addr)
    if isinstance(await pmd_table.load(idx), Leaf):
        await __split_huge_pmd(mm, pmd_table, idx, addr)


async def vma_adjust_trans_huge(mm: mm_struct, vma: vm_area_struct, start: int,
                                end: int) -> None:
    """mm/huge_memory.c: vma_adjust_trans_huge(): split huge PMDs across the new
    boundaries ``start`` and ``end`` of ``vma``."""
    await split_huge_pmd_address(mm, vma, start)
    await split_huge_pmd_address(mm, vma, end)
