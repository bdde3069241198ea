"""Creating and removing mappings: mm/vma.c, mm/mmap.c, mm/madvise.c.

``do_vmi_align_munmap()`` follows the order the kernel relies on: write-lock and
detach the VMAs (``vms_gather_munmap_vmas()``), remove them from the tree, then
(optionally after downgrading ``mmap_lock``) zap, ``free_pgtables()`` with
``floor = prev->vm_end`` and ``ceiling = next->vm_start``, ``tlb_finish_mmu()``,
and only then free the VMAs.
"""

from __future__ import annotations

from ..engine import WRITE, Call, ModelViolation
from ..kernel import call_rcu, kfree, rcu_head
from .memory import free_pgtables, unmap_page_range
from .mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_mark_attached,
    vma_mark_detached,
    vma_start_write,
)
from .mmu_gather import tlb_finish_mmu, tlb_gather_mmu
from .types import mm_struct, vm_area_struct

FIRST_USER_ADDRESS = 0
USER_PGTABLES_CEILING = 0   # "0 is both bottom and top"


def _insert(mm: mm_struct, vma: vm_area_struct) -> None:
    mm.obj.check("vma_iter_store", "Write")
    i = mm.find_vma_index(vma.vm_start)
    if i < len(mm.vmas) and mm.vmas[i].vm_start < vma.vm_end:
        raise ModelViolation("bad-mmap", f"{vma!r} overlaps {mm.vmas[i]!r}")
    mm.vmas.insert(i, vma)


def _remove(mm: mm_struct, vmas: list[vm_area_struct]) -> None:
    mm.obj.check("vma_iter_clear", "Write")
    for vma in vmas:
        mm.vmas.remove(vma)


async def do_mmap(mm: mm_struct, start: int, length: int, flags: int, anon: bool = True,
                  file: str | None = None) -> vm_area_struct:
    """mm/mmap.c: do_mmap() at a fixed address (MAP_FIXED_NOREPLACE): a new VMA in
    the tree.  Page tables are allocated later, by faults."""
    await mmap_write_lock(mm)
    vma = vm_area_struct(start, start + length, flags, anon, file)
    await vma_mark_attached(vma)
    await Call(((mm.vma_loc, WRITE),), "vma_iter_store({1!r})", _insert, mm, vma)
    await mmap_write_unlock(mm)
    return vma


async def vm_area_free_rcu_cb(head: rcu_head) -> None:
    await kfree(head.owner, head)


async def vm_area_free(vma: vm_area_struct) -> None:
    """kernel/fork.c: vm_area_free(): by RCU (v6.4-v6.14), or into a
    SLAB_TYPESAFE_BY_RCU cache (v6.15), whose memory also outlives a grace period:
    either way a lockless reader of the VMA tree may still look at it."""
    await call_rcu(rcu_head(vma, "vma->vm_rcu"), vm_area_free_rcu_cb)


async def do_vmi_align_munmap(mm: mm_struct, start: int, end: int,
                              downgrade: bool = True) -> int:
    """mm/vma.c: do_vmi_align_munmap() (mmap_lock held for write on entry; released
    on return, like ``do_vmi_munmap(..., unlock=true)``).  Splitting a VMA at the
    edges is not modelled: ``[start, end)`` must cover whole VMAs.  Returns the
    number of VMAs removed."""
    i = mm.find_vma_index(start)
    detach: list[vm_area_struct] = []
    while i < len(mm.vmas) and mm.vmas[i].vm_start < end:
        vma = mm.vmas[i]
        if vma.vm_start < start or vma.vm_end > end:
            raise ModelViolation("model-limit", f"munmap [{start:#x}, {end:#x}) splits "
                                 f"{vma!r}: VMA splitting is not modelled")
        detach.append(vma)
        i += 1
    if not detach:
        await mmap_write_unlock(mm)
        return 0
    first = mm.vmas.index(detach[0])
    prev = mm.vmas[first - 1] if first else None
    nxt = mm.vmas[i] if i < len(mm.vmas) else None
    # vms_gather_munmap_vmas(): write-lock and detach each VMA.
    for vma in detach:
        await vma_start_write(mm, vma)
        await vma_mark_detached(vma)
    unmap_start = prev.vm_end if prev else FIRST_USER_ADDRESS
    unmap_end = nxt.vm_start if nxt else USER_PGTABLES_CEILING
    await Call(((mm.vma_loc, WRITE),), "vma_iter_clear_gfp()", _remove, mm, detach)
    # vms_complete_munmap_vmas()
    if downgrade:
        await mmap_write_downgrade(mm)
    tlb = tlb_gather_mmu(mm)
    for vma in detach:                                       # unmap_vmas()
        await unmap_page_range(mm, tlb, vma.vm_start, vma.vm_end)
    await free_pgtables(mm, tlb, detach, unmap_start, unmap_end)
    await tlb_finish_mmu(tlb)
    for vma in detach:                                       # remove_vma()
        await vm_area_free(vma)
    if downgrade:
        await mmap_read_unlock(mm)
    else:
        await mmap_write_unlock(mm)
    return len(detach)


async def munmap(mm: mm_struct, start: int, length: int) -> int:
    """mm/mmap.c: the munmap() syscall: ``mmap_write_lock_killable()`` then
    ``do_vmi_munmap(..., unlock=true)``."""
    await mmap_write_lock(mm)
    return await do_vmi_align_munmap(mm, start, start + length)


async def madvise_dontneed(mm: mm_struct, start: int, length: int) -> bool:
    """mm/madvise.c: madvise(MADV_DONTNEED) -> madvise_dontneed_single_vma() under
    the per-VMA read lock (v6.17, "mm: use per_vma lock for MADV_DONTNEED"):
    ``zap_page_range_single()`` with ``.reclaim_pt = true`` when PT_RECLAIM is built.
    False when the range is not one mapped VMA (the model's -ENOMEM)."""
    vma = await lock_vma_under_rcu(mm, start)
    if vma is None or start + length > vma.vm_end:
        if vma is not None:
            await vma_end_read(vma)
        return False
    tlb = tlb_gather_mmu(mm)
    await unmap_page_range(mm, tlb, start, start + length, reclaim_pt=mm.config.pt_reclaim)
    await tlb_finish_mmu(tlb)
    await vma_end_read(vma)
    return True


async def exit_mmap(mm: mm_struct) -> None:
    """mm/mmap.c: exit_mmap(): the last user is gone: zap everything, free every
    table (``floor = FIRST_USER_ADDRESS``, ``ceiling = USER_PGTABLES_CEILING``) with a
    full-mm gather, then free the VMAs."""
    await mmap_write_lock(mm)
    vmas = list(mm.vmas)
    tlb = tlb_gather_mmu(mm, fullmm=True)
    for vma in vmas:
        await unmap_page_range(mm, tlb, vma.vm_start, vma.vm_end)
    for vma in vmas:
        await vma_start_write(mm, vma)
        await vma_mark_detached(vma)
    if vmas:
        await free_pgtables(mm, tlb, vmas, FIRST_USER_ADDRESS, USER_PGTABLES_CEILING)
    await tlb_finish_mmu(tlb)
    await Call(((mm.vma_loc, WRITE),), "__mt_destroy()", _remove, mm, vmas)
    for vma in vmas:
        await vm_area_free(vma)
    await mmap_write_unlock(mm)
