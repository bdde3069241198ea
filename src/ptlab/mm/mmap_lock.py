"""``mmap_lock`` and per-VMA locks: include/linux/mmap_lock.h, mm/mmap_lock.c.

Per-VMA locks follow the v6.15 design ("replace vm_lock and detached flag with a
reference count"): ``vm_refcnt`` is 0 while the VMA is detached, 1 when attached
with no readers, +1 per reader, +VMA_LOCK_OFFSET while a writer waits;
``vm_lock_seq == mm_lock_seq`` means write-locked until ``mmap_write_unlock()``.
A reader's seq check, refcount increment and re-check are one step here: the
kernel orders them so that they act as one against a writer.
"""

from __future__ import annotations

from ..engine import READ, UPDATE, WRITE, Call, Op, Step, WaitUntil, call
from ..kernel import rcu_read_lock, rcu_read_unlock
from ..kernel.rwsem import down_read, down_write, downgrade_write, up_read, up_write
from .types import VMA_LOCK_OFFSET, mm_struct, vm_area_struct

EAGAIN = "EAGAIN"


def mmap_read_lock(mm: mm_struct) -> Op:
    return down_read(mm.mmap_lock)


def mmap_read_unlock(mm: mm_struct) -> Op:
    return up_read(mm.mmap_lock)


def mmap_write_lock(mm: mm_struct) -> Op:
    return down_write(mm.mmap_lock)


def _end_write_all(mm: mm_struct) -> None:
    mm.mm_lock_seq += 1


async def mmap_write_unlock(mm: mm_struct) -> None:
    """mmap_write_unlock(): vma_end_write_all() (bump mm_lock_seq: every VMA this
    writer locked is unlocked at once), then up_write()."""
    await Call(((mm.seq_loc, WRITE),), "vma_end_write_all(mm)", _end_write_all, mm)
    await up_write(mm.mmap_lock)


async def mmap_write_downgrade(mm: mm_struct) -> None:
    """mmap_write_downgrade(): vma_end_write_all(), then downgrade_write()."""
    await Call(((mm.seq_loc, WRITE),), "vma_end_write_all(mm)", _end_write_all, mm)
    await downgrade_write(mm.mmap_lock)


def _try_read(mm: mm_struct, vma: vm_area_struct) -> object:
    if vma.vm_lock_seq == mm.mm_lock_seq:
        return None                       # write-locked
    if vma.vm_refcnt == 0:
        return EAGAIN                     # detached: replaced, look again
    if vma.vm_refcnt >= VMA_LOCK_OFFSET:
        return None                       # a writer is waiting
    vma.vm_refcnt += 1
    return vma


def vma_start_read(mm: mm_struct, vma: vm_area_struct) -> Step:
    """mm/mmap_lock.c: vma_start_read(): the VMA read-locked, None (fall back to
    mmap_lock) or EAGAIN (detached)."""
    return call(((vma.lock_loc, UPDATE), (mm.seq_loc, READ)), "vma_start_read({1!r})",
                _try_read, mm, vma)


def _put(vma: vm_area_struct) -> None:
    vma.vm_refcnt -= 1


def vma_end_read(vma: vm_area_struct) -> Step:
    return call(((vma.lock_loc, UPDATE),), "vma_end_read({0!r})", _put, vma)


def _enter(vma: vm_area_struct) -> None:
    vma.vm_refcnt += VMA_LOCK_OFFSET


def _mark_locked(mm: mm_struct, vma: vm_area_struct) -> None:
    vma.vm_lock_seq = mm.mm_lock_seq


def _locked(mm: mm_struct, vma: vm_area_struct) -> None:
    vma.vm_lock_seq = mm.mm_lock_seq
    vma.vm_refcnt -= VMA_LOCK_OFFSET


async def vma_start_write(mm: mm_struct, vma: vm_area_struct) -> None:
    """include/linux/mmap_lock.h: vma_start_write() (mmap_lock held for write):
    ``__vma_enter_locked()`` waits for readers to drain, then records the seq."""
    if vma.vm_lock_seq == mm.mm_lock_seq:
        return
    if vma.vm_refcnt == 0:
        # Detached (a VMA being built, e.g. by __split_vma()): no reader can
        # reach it, so there is nobody to wait for.
        await Call(((vma.lock_loc, UPDATE), (mm.seq_loc, READ)), "__vma_start_write({1!r})",
                   _mark_locked, mm, vma)
        return
    await Call(((vma.lock_loc, UPDATE),), "__vma_enter_locked({0!r})", _enter, vma)
    await WaitUntil(((vma.lock_loc, READ),), "wait for VMA readers",
                    lambda: vma.vm_refcnt == VMA_LOCK_OFFSET + 1)
    await Call(((vma.lock_loc, UPDATE), (mm.seq_loc, READ)), "__vma_start_write({1!r})",
               _locked, mm, vma)


def _attach(vma: vm_area_struct) -> None:
    vma.vm_refcnt = 1


def vma_mark_attached(vma: vm_area_struct) -> Op:
    return Call(((vma.lock_loc, WRITE),), "vma_mark_attached({0!r})", _attach, vma)


async def vma_mark_detached(vma: vm_area_struct) -> None:
    """mm/mmap_lock.c: vma_mark_detached(): drop the attach reference, waiting for
    transient readers (whose lock attempt fails) to go."""
    await WaitUntil(((vma.lock_loc, READ),), "vma_mark_detached: wait for readers",
                    lambda: vma.vm_refcnt == 1)
    await Call(((vma.lock_loc, UPDATE),), "vma_mark_detached({0!r})", _put, vma)


def _walk(mm: mm_struct, addr: int) -> vm_area_struct | None:
    mm.obj.check("mas_walk")
    for vma in mm.vmas:
        if vma.vm_start <= addr < vma.vm_end:
            return vma
    return None


def find_vma(mm: mm_struct, addr: int) -> Step:
    """mas_walk() / vma_lookup(): the VMA containing ``addr`` (the maple tree is read
    under RCU or mmap_lock)."""
    return call(((mm.vma_loc, READ),), "mas_walk({1:#x})", _walk, mm, addr)


async def lock_vma_under_rcu(mm: mm_struct, addr: int) -> vm_area_struct | None:
    """mm/mmap_lock.c: lock_vma_under_rcu()."""
    while True:
        await rcu_read_lock()
        vma: vm_area_struct | None = await find_vma(mm, addr)
        if vma is None:
            await rcu_read_unlock()
            return None
        got = await vma_start_read(mm, vma)
        if got is EAGAIN:
            await rcu_read_unlock()
            continue
        await rcu_read_unlock()
        if got is None:
            return None
        if not vma.vm_start <= addr < vma.vm_end:
            await vma_end_read(vma)
            return None
        return vma
