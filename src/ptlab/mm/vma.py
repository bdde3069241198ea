"""Creating and removing mappings: mm/vma.c, mm/mmap.c, mm/madvise.c.

``do_vmi_align_munmap()`` follows the order the kernel relies on: write-lock and
detach the VMAs (``vms_gather_munmap_vmas()``), remove them from the tree, then
(optionally after downgrading ``mmap_lock``) zap, ``free_pgtables()`` with
``floor = prev->vm_end`` and ``ceiling = next->vm_start``, ``tlb_finish_mmu()``,
and only then free the VMAs.
"""

from __future__ import annotations

from ..engine import WRITE, Call, ModelViolation, Op
from ..kernel import call_rcu, kfree, rcu_head
from .huge_memory import vma_adjust_trans_huge
from .memory import free_pgtables, unmap_page_range
from .mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
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
from .rmap import unlink_file_vma, vma_link_file
from .types import VM_ACCOUNT, VM_SHARED, VM_WRITE, mm_struct, vm_area_struct

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


async def vma_link(mm: mm_struct, vma: vm_area_struct) -> None:
    """mm/vma.c: vma_link(): a new VMA goes into the tree (``vma_iter_store_new()``,
    which marks it attached since v6.15) and into its file's rmap
    (``vma_link_file()``)."""
    await Call(((mm.vma_loc, WRITE),), "vma_iter_store({1!r})", _insert, mm, vma)
    await vma_mark_attached(vma)
    await vma_link_file(mm, vma)


async def do_mmap(mm: mm_struct, start: int, length: int, flags: int, anon: bool = True,
                  file: str | None = None) -> vm_area_struct:
    """mm/mmap.c: do_mmap() at a fixed address (MAP_FIXED_NOREPLACE): a new VMA in
    the tree (mmap_region(): a private writable mapping is charged,
    ``accountable_mapping()`` -> VM_ACCOUNT).  Page tables are allocated later, by
    faults."""
    if flags & VM_WRITE and not flags & VM_SHARED:
        flags |= VM_ACCOUNT
    await mmap_write_lock(mm)
    vma = vm_area_struct(start, start + length, flags, anon, file)
    await vma_link(mm, vma)
    await mmap_write_unlock(mm)
    return vma


async def vm_area_free_rcu_cb(head: rcu_head) -> None:
    await kfree(head.owner, head)


async def vm_area_free(vma: vm_area_struct) -> None:
    """kernel/fork.c: vm_area_free(): by RCU (v6.4-v6.14), or into a
    SLAB_TYPESAFE_BY_RCU cache (v6.15), whose memory also outlives a grace period:
    either way a lockless reader of the VMA tree may still look at it."""
    await call_rcu(rcu_head(vma, "vma->vm_rcu"), vm_area_free_rcu_cb)


def _set_range(mm: mm_struct, vma: vm_area_struct, new: vm_area_struct | None,
               start: int, end: int, pgoff: int) -> None:
    mm.obj.check("vma_iter_store", "Write")
    vma.vm_start, vma.vm_end, vma.vm_pgoff = start, end, pgoff
    if new is not None:
        mm.vmas.insert(mm.vmas.index(vma) + (new.vm_start >= end), new)


def vma_set_range(mm: mm_struct, vma: vm_area_struct, start: int, end: int, pgoff: int,
                  insert: vm_area_struct | None = None) -> Op:
    """mm/vma.c: vma_set_range() and vma_complete()'s ``vma_iter_store(insert)``: the
    tree and the VMA's range change in one step for a lockless ``mas_walk()``."""
    return Call(((mm.vma_loc, WRITE),), "vma_set_range({1!r}, {2:#x}, {3:#x})", _set_range,
                mm, vma, insert, start, end, pgoff)


def vma_dup(vma: vm_area_struct) -> vm_area_struct:
    """kernel/fork.c: vm_area_dup(): a detached copy (``vm_refcnt`` 0)."""
    new = vm_area_struct(vma.vm_start, vma.vm_end, vma.vm_flags, vma.anon, vma.file,
                         vma.vm_pgoff)
    new.anon_vma = vma.anon_vma          # anon_vma_clone() / anon_vma_fork()
    return new


async def __split_vma(mm: mm_struct, vma: vm_area_struct, addr: int,
                      new_below: bool) -> vm_area_struct:
    """mm/vma.c: __split_vma(): a new VMA takes ``[vm_start, addr)`` (new_below) or
    ``[addr, vm_end)``; both are write-locked, huge PMDs across ``addr`` are split
    (``vma_adjust_trans_huge()``), then the range shrinks and the new VMA goes
    into the tree.  Returns the new VMA."""
    new = vma_dup(vma)
    pg = (addr - vma.vm_start) >> mm.geometry.page_shift
    if new_below:
        new.vm_end = addr
    else:
        new.vm_start = addr
        new.vm_pgoff += pg
    await vma_start_write(mm, vma)
    await vma_start_write(mm, new)
    await vma_adjust_trans_huge(mm, vma, addr, addr)
    if new_below:
        await vma_set_range(mm, vma, addr, vma.vm_end, vma.vm_pgoff + pg, new)
    else:
        await vma_set_range(mm, vma, vma.vm_start, addr, vma.vm_pgoff, new)
    await vma_mark_attached(new)
    await vma_link_file(mm, new)
    return new


def can_vma_merge(a: vm_area_struct, b: vm_area_struct, flags: int) -> bool:
    """mm/vma.c: can_vma_merge_after()/before() for ``a`` just below ``b``: same
    flags, both anonymous or the same file at contiguous offsets."""
    return (a.vm_end == b.vm_start and a.vm_flags == flags and b.vm_flags == flags
            and a.anon == b.anon and a.file == b.file
            and (a.file is None
                 or a.vm_pgoff + ((a.vm_end - a.vm_start) >> 12) == b.vm_pgoff))


async def vma_merge_neighbours(mm: mm_struct, vma: vm_area_struct) -> vm_area_struct:
    """mm/vma.c: vma_merge_existing_range(), as its result: ``vma`` joins a
    mergeable ``prev`` (which expands, ``vma_expand()``) and a mergeable ``next`` is
    absorbed; the VMA that goes is detached and freed (``vma_complete()``).  The
    kernel merges instead of splitting first; the tree and the tables end the
    same."""
    i = mm.vmas.index(vma)
    # Both sides are judged against the changed VMA as it was (vmg->middle),
    # before either merge.  is_mergeable_anon_vma() lets a VMA with an anon_vma
    # join one without (Cases 1 and 2) or with the same (Case 3); the model's
    # anon_vma is a flag, so two that have one are taken to share it, and the
    # fork-child checks are not modelled.  Merging all three also needs prev's
    # and next's anon_vmas to agree.
    left = bool(i) and can_vma_merge(mm.vmas[i - 1], vma, vma.vm_flags)
    right = i + 1 < len(mm.vmas) and can_vma_merge(vma, mm.vmas[i + 1], vma.vm_flags)
    if left and right and mm.vmas[i - 1].anon_vma and mm.vmas[i + 1].anon_vma \
            and not vma.anon_vma:
        right = False       # two anon_vmas of their own: the model cannot tell them apart
    if left:
        prev = mm.vmas[i - 1]
        await vma_start_write(mm, prev)
        await vma_start_write(mm, vma)
        await Call(((mm.vma_loc, WRITE),), "vma_expand({1!r})", _absorb, mm, prev, vma)
        await unlink_file_vma(mm, [vma])
        await vma_mark_detached(vma)
        await vm_area_free(vma)
        vma, i = prev, i - 1
    if right:
        nxt = mm.vmas[i + 1]
        await vma_start_write(mm, vma)
        await vma_start_write(mm, nxt)
        await Call(((mm.vma_loc, WRITE),), "vma_expand({1!r})", _absorb, mm, vma, nxt)
        await unlink_file_vma(mm, [nxt])
        await vma_mark_detached(nxt)
        await vm_area_free(nxt)
    return vma


def _absorb(mm: mm_struct, keep: vm_area_struct, gone: vm_area_struct) -> None:
    mm.obj.check("vma_iter_store", "Write")
    keep.vm_end = max(keep.vm_end, gone.vm_end)
    # dup_anon_vma(): the merged VMA keeps the anon_vma either had
    # (is_mergeable_anon_vma() let them merge), so a later fork still copies.
    keep.anon_vma = keep.anon_vma or gone.anon_vma
    mm.vmas.remove(gone)


def vmas_in_range(mm: mm_struct, start: int, end: int) -> list[vm_area_struct]:
    i = mm.find_vma_index(start)
    out = []
    while i < len(mm.vmas) and mm.vmas[i].vm_start < end:
        out.append(mm.vmas[i])
        i += 1
    return out


async def do_vmi_align_munmap(mm: mm_struct, start: int, end: int,
                              unlock: bool = True) -> int:
    """mm/vma.c: do_vmi_align_munmap() (mmap_lock held for write on entry; with
    ``unlock`` downgraded before the zap and released on return, else kept): split the VMAs at
    ``start`` and ``end``, write-lock and detach those inside, remove them from the
    tree, optionally downgrade, then ``unmap_region()``: zap ``[start, end)``,
    ``free_pgtables()`` with ``floor = prev->vm_end``, ``ceiling =
    next->vm_start``, ``tlb_finish_mmu()``; and only then free the VMAs.  Returns
    the number of VMAs removed."""
    detach = vmas_in_range(mm, start, end)
    if not detach:
        if unlock:
            await mmap_write_unlock(mm)
        return 0
    if detach[0].vm_start < start:                          # split the first one
        await __split_vma(mm, detach[0], start, True)
    if detach[-1].vm_end > end:                             # split the end
        await __split_vma(mm, detach[-1], end, False)
    first = mm.vmas.index(detach[0])
    i = first + len(detach)
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
    if unlock:
        await mmap_write_downgrade(mm)
    tlb = tlb_gather_mmu(mm)
    for vma in detach:                                       # unmap_vmas()
        await unmap_page_range(mm, tlb, vma.vm_start, vma.vm_end)
    await free_pgtables(mm, tlb, detach, unmap_start, unmap_end)
    await tlb_finish_mmu(tlb)
    for vma in detach:                                       # remove_vma()
        await vm_area_free(vma)
    if unlock:
        await mmap_read_unlock(mm)
    return len(detach)


async def munmap(mm: mm_struct, start: int, length: int) -> int:
    """mm/mmap.c: the munmap() syscall: ``mmap_write_lock_killable()`` then
    ``do_vmi_munmap(..., unlock=true)``."""
    await mmap_write_lock(mm)
    n = await do_vmi_align_munmap(mm, start, start + length)
    return n


async def madvise_dontneed_single_vma(mm: mm_struct, start: int, end: int) -> None:
    """mm/madvise.c: madvise_dontneed_single_vma() -> zap_page_range_single() with
    ``.reclaim_pt = true`` (PT_RECLAIM, where built): its own gather."""
    tlb = tlb_gather_mmu(mm)
    await unmap_page_range(mm, tlb, start, end, reclaim_pt=mm.pt_reclaim)
    await tlb_finish_mmu(tlb)


async def madvise_dontneed(mm: mm_struct, start: int, length: int) -> bool:
    """mm/madvise.c: madvise(MADV_DONTNEED): a range inside one VMA is done under
    that VMA's read lock (v6.17 ``try_vma_read_lock()``, "mm: use per_vma lock for
    MADV_DONTNEED"); otherwise under ``mmap_read_lock`` VMA by VMA
    (``madvise_walk_vmas()``).  False (-ENOMEM) if part of the range is unmapped;
    the mapped parts are zapped all the same."""
    end = start + length
    vma = await lock_vma_under_rcu(mm, start) if mm.config.per_vma_lock else None
    if vma is not None:
        if end <= vma.vm_end:
            await madvise_dontneed_single_vma(mm, start, end)
            await vma_end_read(vma)
            return True
        await vma_end_read(vma)
    await mmap_read_lock(mm)
    covered, hole = start, False
    for vma in vmas_in_range(mm, start, end):
        lo, hi = max(start, vma.vm_start), min(end, vma.vm_end)
        hole = hole or lo > covered               # unmapped_error = -ENOMEM
        await madvise_dontneed_single_vma(mm, lo, hi)
        covered = hi
    await mmap_read_unlock(mm)
    return not hole and covered >= end


async def exit_mmap(mm: mm_struct) -> None:
    """mm/mmap.c: exit_mmap(): the last user is gone.  Under ``mmap_read_lock`` zap
    everything with a full-mm gather; then under ``mmap_write_lock`` free every
    table (``floor = FIRST_USER_ADDRESS``, ``ceiling = USER_PGTABLES_CEILING``),
    finish the gather, and detach and free the VMAs (no ``vma_start_write()``:
    the mm is unreachable)."""
    await mmap_read_lock(mm)
    vmas = list(mm.vmas)
    if not vmas:
        await mmap_read_unlock(mm)
        await mmap_write_lock(mm)
    else:
        tlb = tlb_gather_mmu(mm, fullmm=True)
        for vma in vmas:                                     # unmap_vmas()
            await unmap_page_range(mm, tlb, vma.vm_start, vma.vm_end)
        await mmap_read_unlock(mm)
        await mmap_write_lock(mm)
        await free_pgtables(mm, tlb, vmas, FIRST_USER_ADDRESS, USER_PGTABLES_CEILING)
        await tlb_finish_mmu(tlb)
        for vma in vmas:
            await vma_mark_detached(vma)
            await vm_area_free(vma)                          # remove_vma()
    await Call(((mm.vma_loc, WRITE),), "__mt_destroy()", _remove, mm, vmas)
    await mmap_write_unlock(mm)
