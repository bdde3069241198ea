"""mm/mprotect.c: mprotect(): split or merge the VMAs, then change the PTEs.

Changing protection never frees a page table, but it walks them with
``pte_offset_map_lock()`` (which may find the table gone: ``-EAGAIN``, retry) and
splits huge PMDs that straddle the range.
"""

from __future__ import annotations

from ..engine import UPDATE, Call
from ..kernel import spin_lock, spin_unlock
from .huge_memory import __split_huge_pmd
from .memory import pte_offset_map_lock, pte_unmap_unlock
from .mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from .mmu_gather import mmu_gather, tlb_finish_mmu, tlb_gather_mmu
from .pgalloc import pte_lockptr
from .pgtable import pmd_offset_lockless
from .types import (
    VM_ACCOUNT,
    VM_SHARED,
    VM_WRITE,
    Leaf,
    PageTable,
    can_change_writable,
    mm_struct,
    vm_area_struct,
    vma_is_anonymous,
)
from .vma import __split_vma, vma_merge_neighbours, vmas_in_range


async def change_pte_range(mm: mm_struct, pmd_table: PageTable, idx: int, start: int,
                           end: int, writable: bool, shared: bool = False) -> bool:
    """mm/mprotect.c: change_pte_range(): under the PTE lock, rewrite each present
    PTE of ``[start, end)`` with the new permission (made writable only where
    ``can_change_pte_writable()``: never the zero page or a private file page).
    False (-EAGAIN) if the table went away before it was locked."""
    geo = mm.geometry
    pte = await pte_offset_map_lock(mm, pmd_table, idx)
    if pte is None:
        return False
    addr = start
    while addr < end:
        i = geo.index(pte.depth, addr)
        if i in pte.entries:
            old = await pte.load(i)
            if isinstance(old, Leaf) and \
                    old.writable != (writable and can_change_writable(old, shared)):
                await pte.store(i, old.wr(not old.writable))
        addr += geo.levels[-1].size
    await pte_unmap_unlock(mm, pte)
    return True


def _set_huge(pmd_table: PageTable, idx: int, writable: bool, shared: bool) -> None:
    pmd_table.check("change_huge_pmd", "Write")
    old: Leaf = pmd_table.entries[idx]
    pmd_table.entries[idx] = old.wr(writable and can_change_writable(old, shared))


async def change_huge_pmd(mm: mm_struct, pmd_table: PageTable, idx: int,
                          writable: bool, shared: bool = False) -> bool:
    """mm/huge_memory.c: change_huge_pmd(): under the PMD lock, rewrite the huge PMD.
    False if it is no longer huge."""
    ptl = pte_lockptr(mm, pmd_table)
    await spin_lock(ptl)
    huge = isinstance(await pmd_table.load(idx), Leaf)
    if huge:
        await Call(((pmd_table.loc, UPDATE), (pmd_table.page.alive, UPDATE)),
                   "change_huge_pmd({0!r}[{1}])", _set_huge, pmd_table, idx, writable,
                   shared)
    await spin_unlock(ptl)
    return huge


async def change_protection(mm: mm_struct, tlb: mmu_gather, vma: vm_area_struct, start: int,
                            end: int, writable: bool) -> None:
    """mm/mprotect.c: change_protection() -> change_pmd_range(): a huge PMD wholly
    inside the range is changed in place, else split; PTE tables are changed under
    their lock, retrying on -EAGAIN."""
    geo = mm.geometry
    pmd_size = geo.levels[-2].size
    shared = bool(vma.vm_flags & VM_SHARED)
    addr = start
    while addr < end:
        nxt = min((addr + pmd_size) & ~(pmd_size - 1), end)
        pmd_table = await pmd_offset_lockless(mm, addr)
        if pmd_table is not None:
            idx = geo.index(pmd_table.depth, addr)
            while True:                                        # again:
                pmdval = await pmd_table.load(idx)
                if pmdval is None:
                    break
                if isinstance(pmdval, Leaf):
                    if nxt - addr == pmd_size:
                        if await change_huge_pmd(mm, pmd_table, idx, writable, shared):
                            tlb.need_flush = True
                            break
                    else:
                        await __split_huge_pmd(mm, pmd_table, idx, addr)
                    continue
                if await change_pte_range(mm, pmd_table, idx, addr, nxt, writable, shared):
                    tlb.need_flush = True
                    break
        addr = nxt


def _set_flags(vma: vm_area_struct, flags: int) -> None:
    vma.vm_flags = flags


async def mprotect_fixup(mm: mm_struct, tlb: mmu_gather, vma: vm_area_struct, start: int,
                         end: int, newflags: int) -> vm_area_struct:
    """mm/mprotect.c: mprotect_fixup(): ``vma_modify_flags()`` (split at ``start``
    and ``end``; merging is done after, by :func:`vma_merge_neighbours`),
    ``vma_start_write()``, ``vm_flags_reset()``, ``change_protection()``."""
    # "If we make a private mapping writable we increase our commit; but ...
    # cannot reduce our commit if we make it unwritable again except in the
    # anonymous case where no anon_vma has yet to be assigned."  The flag then
    # differs from a neighbour's, which keeps the two VMAs apart.
    if newflags & VM_WRITE:
        if not vma.vm_flags & (VM_ACCOUNT | VM_WRITE | VM_SHARED):
            newflags |= VM_ACCOUNT
    elif vma.vm_flags & VM_ACCOUNT and vma_is_anonymous(vma) and not vma.anon_vma:
        newflags &= ~VM_ACCOUNT
    if newflags == vma.vm_flags:
        return vma
    if start > vma.vm_start:
        await __split_vma(mm, vma, start, True)
    if end < vma.vm_end:
        await __split_vma(mm, vma, end, False)
    await vma_start_write(mm, vma)
    await Call(((vma.lock_loc, UPDATE),), "vm_flags_reset({0!r}, {1:#x})", _set_flags, vma,
               newflags)
    await change_protection(mm, tlb, vma, start, end, bool(newflags & VM_WRITE))
    return await vma_merge_neighbours(mm, vma)


async def do_mprotect_pkey(mm: mm_struct, start: int, length: int, writable: bool) -> bool:
    """mm/mprotect.c: do_mprotect_pkey(): under ``mmap_write_lock``, with one
    ``mmu_gather`` for the whole call, fix up each VMA in ``[start, start+len)``.
    A range that starts in a hole changes nothing; one with a hole later has the
    VMAs before the hole changed ("if (vma->vm_start != tmp) { error = -ENOMEM;
    break; }").  False (-ENOMEM) if part of the range is unmapped."""
    end = start + length
    await mmap_write_lock(mm)
    vmas = vmas_in_range(mm, start, end)
    if not vmas or vmas[0].vm_start > start:
        await mmap_write_unlock(mm)
        return False
    reach = start
    for vma in vmas:
        if vma.vm_start > reach:
            break
        reach = vma.vm_end
    stop = min(end, reach)
    tlb = tlb_gather_mmu(mm)
    for vma in vmas_in_range(mm, start, stop):
        newflags = (vma.vm_flags | VM_WRITE) if writable else (vma.vm_flags & ~VM_WRITE)
        await mprotect_fixup(mm, tlb, vma, max(start, vma.vm_start), min(stop, vma.vm_end),
                             newflags)
    await tlb_finish_mmu(tlb)
    await mmap_write_unlock(mm)
    return stop >= end
