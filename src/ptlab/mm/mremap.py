"""mm/mremap.c: moving a mapping, and with it whole page tables.

``move_page_tables()`` moves a whole PMD table for a PUD-aligned 1 GiB extent
(``move_normal_pud()``, the same code one level up), and for each PMD-sized
extent the whole PTE table (``move_normal_pmd()``: clear the old PMD, populate
the new one, flush) when both addresses are PMD-aligned, or a huge PMD with its
deposited table (``move_huge_pmd()``); otherwise it allocates the destination
table and moves the PTEs one by one under both PTE locks (``move_ptes()``).  The old range is then
unmapped like munmap, which frees the old tables that were emptied.
"""

from __future__ import annotations

from ..engine import ModelViolation
from ..kernel import rcu_read_unlock, spin_lock, spin_unlock, spinlock_t
from .huge_memory import (
    __split_huge_pmd,
    pgtable_trans_huge_deposit,
    pgtable_trans_huge_withdraw,
)
from .memory import __pte_offset_map, __pxd_alloc, pte_offset_map_lock, pte_unmap_unlock
from .memory import walk_alloc as alloc_new_pmd
from .mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from .pgalloc import pte_lockptr
from .pgtable import pmd_offset_lockless
from .rmap import i_mmap_lock_write, i_mmap_unlock_write
from .tlbflush import flush_tlb_mm_range
from .types import Leaf, PageTable, mm_struct, vm_area_struct
from .vma import do_vmi_align_munmap, vma_dup, vma_link, vmas_in_range


async def pmd_lock_both(mm: mm_struct, old_pmd: PageTable,
                        new_pmd: PageTable) -> tuple[spinlock_t, spinlock_t]:
    """``old_ptl = pmd_lock(mm, old_pmd)``, then the new PMD's lock nested if it
    differs ("exclusive mmap_lock prevents deadlock")."""
    old_ptl = pte_lockptr(mm, old_pmd)
    new_ptl = pte_lockptr(mm, new_pmd)
    await spin_lock(old_ptl)
    if new_ptl is not old_ptl:
        await spin_lock(new_ptl)
    return old_ptl, new_ptl


async def pmd_unlock_both(old_ptl: spinlock_t, new_ptl: spinlock_t) -> None:
    if new_ptl is not old_ptl:
        await spin_unlock(new_ptl)
    await spin_unlock(old_ptl)


async def move_normal_pmd(mm: mm_struct, old_pmd: PageTable, oi: int, new_pmd: PageTable,
                          ni: int) -> bool:
    """mm/mremap.c: move_normal_pmd() and move_normal_pud(): under the old and the
    new entry's locks (``pmd_lock()``; for a PUD entry ``pud_lock()``, i.e.
    ``mm->page_table_lock`` for both), move the table below the entry itself
    (``pXd_clear()``, ``pXd_populate()``) and flush the old range.  False if the
    new entry is not none (WARN) or the old one no longer maps a table ("Racing
    with collapse?")."""
    if await new_pmd.load(ni) is not None:
        return False
    old_ptl, new_ptl = await pmd_lock_both(mm, old_pmd, new_pmd)
    table = await old_pmd.load(oi)
    moved = isinstance(table, PageTable)
    if moved:
        await old_pmd.get_and_clear(oi)
        await new_pmd.store(ni, table)
        await flush_tlb_mm_range(mm)
    await pmd_unlock_both(old_ptl, new_ptl)
    return moved


async def move_pgt_entry(mm: mm_struct, vma: vm_area_struct, old: PageTable, oi: int,
                         new: PageTable, ni: int) -> bool:
    """mm/mremap.c: move_pgt_entry(NORMAL_PMD / NORMAL_PUD): with the rmap locks
    (``should_take_rmap_locks()`` is true for both; the file's ``i_mmap_rwsem``
    here), move the whole table below the entry."""
    mapping = mm.mapping(vma.file) if vma.file is not None else None
    if mapping is not None:
        await i_mmap_lock_write(mapping)
    moved = await move_normal_pmd(mm, old, oi, new, ni)
    if mapping is not None:
        await i_mmap_unlock_write(mapping)
    return moved


async def move_huge_pmd(mm: mm_struct, old_pmd: PageTable, oi: int, new_pmd: PageTable,
                        ni: int) -> bool:
    """mm/huge_memory.c: move_huge_pmd(): under both PMD locks move the huge PMD;
    with different locks the deposited table of an anonymous (or huge zero) PMD
    moves too (``pmd_move_must_withdraw()``: ``vma_is_anonymous()``); a file
    THP has none on x86."""
    if await new_pmd.load(ni) is not None:
        return False
    old_ptl, new_ptl = await pmd_lock_both(mm, old_pmd, new_pmd)
    leaf = await old_pmd.load(oi)
    moved = isinstance(leaf, Leaf)
    if moved:
        await old_pmd.get_and_clear(oi)
        if (leaf.anon or leaf.zero) and new_pmd is not old_pmd:
            await pgtable_trans_huge_deposit(new_pmd, await pgtable_trans_huge_withdraw(old_pmd))
        await new_pmd.store(ni, leaf)
        await flush_tlb_mm_range(mm)
    await pmd_unlock_both(old_ptl, new_ptl)
    return moved


async def move_ptes(mm: mm_struct, old_pmd: PageTable, oi: int, old_addr: int,
                    new_pmd: PageTable, ni: int, new_addr: int, extent: int) -> bool:
    """mm/mremap.c: move_ptes(): ``pte_offset_map_lock()`` the old table,
    ``pte_offset_map_rw_nolock()`` the new one and take its lock nested; move each
    present PTE; flush if any moved.  False (-EAGAIN) if a table went away."""
    geo = mm.geometry
    old = await pte_offset_map_lock(mm, old_pmd, oi)
    if old is None:
        return False
    new = await __pte_offset_map(new_pmd, ni)
    if new is None:
        await pte_unmap_unlock(mm, old)
        return False
    new_ptl = pte_lockptr(mm, new)
    old_ptl = pte_lockptr(mm, old)
    if new_ptl is not old_ptl:
        await spin_lock(new_ptl)
    page = geo.levels[-1].size
    moved = False
    for off in range(0, extent, page):
        i = geo.index(old.depth, old_addr + off)
        if i not in old.entries:
            continue
        pte = await old.get_and_clear(i)                 # get_and_clear_full_ptes()
        if pte is not None:
            await new.store(geo.index(new.depth, new_addr + off), pte)
            moved = True
    if moved:
        await flush_tlb_mm_range(mm)
    if new_ptl is not old_ptl:
        await spin_unlock(new_ptl)
    await rcu_read_unlock()                               # pte_unmap(new_pte)
    await pte_unmap_unlock(mm, old)
    return True


async def move_page_tables(mm: mm_struct, vma: vm_area_struct, old_addr: int, new_addr: int,
                           length: int) -> int:
    """mm/mremap.c: move_page_tables(): a PUD-aligned 1 GiB extent moves its whole
    PMD table (NORMAL_PUD, HAVE_MOVE_PUD); otherwise per extent (up to the next
    PMD boundary of either address), whole PTE tables when aligned and the arch
    allows it (``arch_supports_page_table_move()``: not powerpc hash), else
    ``pte_alloc()`` and ``move_ptes()`` (retried on -EAGAIN).  Returns the bytes
    moved."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    old_end = old_addr + length
    done = 0
    pud_size = geo.levels[-3].size if len(geo.levels) > 3 else 0
    while old_addr < old_end:
        if pud_size and geo.supports_move_pud and geo.supports_page_table_move and \
                old_end - old_addr >= pud_size and not (old_addr | new_addr) & (pud_size - 1):
            # NORMAL_PUD: a PUD-sized, PUD-aligned extent moves its PMD table whole.
            old_pud = await pmd_offset_lockless(mm, old_addr, -3)     # get_old_pud()
            pi = geo.index(len(geo.levels) - 3, old_addr)
            if old_pud is not None and isinstance(await old_pud.load(pi), PageTable):
                new_pud = await alloc_new_pmd(mm, new_addr, -3)       # alloc_new_pud()
                if new_pud is None:
                    break
                if await move_pgt_entry(mm, vma, old_pud, pi, new_pud,
                                        geo.index(new_pud.depth, new_addr)):
                    old_addr += pud_size
                    new_addr += pud_size
                    done += pud_size
                    continue
        extent = min(pmd_size - (old_addr & (pmd_size - 1)),
                     pmd_size - (new_addr & (pmd_size - 1)), old_end - old_addr)
        old_pmd = await pmd_offset_lockless(mm, old_addr)          # get_old_pmd()
        oi = geo.index(len(geo.levels) - 2, old_addr)
        if old_pmd is not None and await old_pmd.load(oi) is not None:
            new_pmd = await alloc_new_pmd(mm, new_addr)
            if new_pmd is None:
                break
            ni = geo.index(new_pmd.depth, new_addr)
            while True:                                              # again:
                cur = await old_pmd.load(oi)
                if cur is None:
                    break
                if isinstance(cur, Leaf):
                    if extent == pmd_size and await move_huge_pmd(mm, old_pmd, oi, new_pmd, ni):
                        break
                    await __split_huge_pmd(mm, old_pmd, oi, old_addr)
                    continue
                if extent == pmd_size and geo.supports_page_table_move and \
                        await move_pgt_entry(mm, vma, old_pmd, oi, new_pmd, ni):
                    break
                if await new_pmd.load(ni) is None and \
                        not await __pxd_alloc(mm, new_pmd, ni, new_addr):   # pte_alloc()
                    return done
                if await move_ptes(mm, old_pmd, oi, old_addr, new_pmd, ni, new_addr, extent):
                    break
        old_addr += extent
        new_addr += extent
        done += extent
    return done


async def mremap(mm: mm_struct, old_addr: int, length: int, new_addr: int) -> bool:
    """mm/mremap.c: mremap(old_addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
    new_addr).  Until v6.16 ``[old_addr, +len)`` must lie inside one VMA; since
    v6.17 (``mremap_multi_vma``: remap_move(), "mm/mremap: permit mremap() move
    of multiple VMAs") every VMA in it moves, each to the same offset in the new
    range (gaps kept), but no gap may open the range.  Each piece:
    :func:`move_vma`.  False (-EFAULT) when the range does not qualify, or the
    ranges overlap."""
    end = old_addr + length
    await mmap_write_lock(mm)
    vmas = vmas_in_range(mm, old_addr, end)
    ok = bool(vmas) and vmas[0].vm_start <= old_addr and (
        new_addr + length <= old_addr or end <= new_addr)
    if ok and not mm.config.mremap_multi_vma:
        ok = len(vmas) == 1 and vmas[0].vm_end >= end
    if not ok:
        await mmap_write_unlock(mm)
        return False
    for vma in vmas:
        lo, hi = max(old_addr, vma.vm_start), min(end, vma.vm_end)
        await move_vma(mm, vma, lo, new_addr + (lo - old_addr), hi - lo)
    await mmap_write_unlock(mm)
    return True


async def move_vma(mm: mm_struct, vma: vm_area_struct, old_addr: int, new_addr: int,
                   length: int) -> None:
    """mm/mremap.c: mremap_to() -> move_vma() for ``[old_addr, +len)`` of ``vma``:
    unmap whatever is at the destination, write-lock the VMA (no racing faults),
    ``copy_vma()`` the new VMA, ``move_page_tables()``, and unmap the old range."""
    await do_vmi_align_munmap(mm, new_addr, new_addr + length, unlock=False)  # mremap_to()
    await vma_start_write(mm, vma)
    new_vma = copy_vma(mm, vma, old_addr, new_addr, length)
    await vma_start_write(mm, new_vma)
    await vma_link(mm, new_vma)
    moved = await move_page_tables(mm, vma, old_addr, new_addr, length)
    if moved != length:
        raise ModelViolation("model-limit", "mremap: move_page_tables() ran out of memory; "
                             "moving back is not modelled")
    await do_vmi_align_munmap(mm, old_addr, old_addr + length, unlock=False)


def copy_vma(mm: mm_struct, vma: vm_area_struct, old_addr: int, new_addr: int,
             length: int) -> vm_area_struct:
    """mm/vma.c: copy_vma(): a new VMA for ``[new_addr, +len)`` with the old one's
    flags and the matching file offset (merging with a neighbour is not
    modelled)."""
    new = vma_dup(vma)
    new.vm_start, new.vm_end = new_addr, new_addr + length
    new.vm_pgoff = vma.vm_pgoff + ((old_addr - vma.vm_start) >> mm.geometry.page_shift)
    return new
