"""kernel/fork.c and mm/memory.c: fork (``dup_mmap()``, ``copy_page_range()``) and
the end of an mm (``mmput()``, ``mmdrop()``).

The child gets a table wherever the parent has one under a VMA that needs
copying (``vma_needs_copy()``: private anonymous memory here), even an empty PTE
table, since ``copy_pte_range()`` allocates before it looks; huge PMDs are
copied with a fresh deposited table for the child.  Private writable PTEs are
write-protected in both (COW), and the parent's TLB is flushed.
"""

from __future__ import annotations

from ..engine import READ, WRITE, Call
from ..kernel import rcu_read_unlock, spin_lock, spin_unlock
from .huge_memory import hpage_pmd_nr, pgtable_trans_huge_deposit
from .memory import __pte_offset_map, __pxd_alloc, pte_offset_map_lock, pte_unmap_unlock
from .mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from .pgalloc import destroy_context, mm_alloc_pgd, mm_free_pgd, pagetable_alloc, pte_lockptr
from .tlbflush import flush_tlb_mm_range
from .types import (
    VM_WRITE,
    Leaf,
    PageTable,
    folio_mapcount_add,
    mm_pgtables_add,
    mm_rss_add,
    mm_struct,
    vm_area_struct,
    vma_is_anonymous,
)
from .vma import exit_mmap, vma_dup, vma_link


def _anon_vma(vma: vm_area_struct) -> bool:
    return vma.anon_vma


def anon_vma_fork(src_vma: vm_area_struct) -> Call:
    """mm/rmap.c: anon_vma_fork(): the child's VMA gets an anon_vma if the parent's
    has one now."""
    return Call(((src_vma.lock_loc, READ),), "anon_vma_fork({0!r})", _anon_vma, src_vma)


def vma_needs_copy(src_vma: vm_area_struct) -> Call:
    """mm/memory.c: vma_needs_copy(): the parent's VMA has an ``anon_vma`` (it has
    had an anonymous or COW page); other file pages are refaulted by the child.
    (uffd-wp and VM_PFNMAP/VM_MIXEDMAP are not modelled.)  Read when the copy
    starts: a fault that is not held off may set it after the VMA was duplicated."""
    return Call(((src_vma.lock_loc, READ),), "vma_needs_copy({0!r})", _anon_vma, src_vma)


def _wrprotect(table: PageTable, idx: int) -> Leaf:
    table.check("wrprotect", "Write")
    old: Leaf = table.entries[idx]
    new = old.wr(False)
    table.entries[idx] = new
    return new


def wrprotect(table: PageTable, idx: int) -> Call:
    """ptep_set_wrprotect() / pmdp_set_wrprotect(): clear the write bit in place."""
    return Call(((table.loc, WRITE), (table.page.alive, WRITE)), "wrprotect({0!r}[{1}])",
                _wrprotect, table, idx)


async def copy_huge_pmd(dst_mm: mm_struct, src_mm: mm_struct, dst_pmd: PageTable, di: int,
                        src_pmd: PageTable, si: int, vma: vm_area_struct) -> bool:
    """mm/huge_memory.c: copy_huge_pmd(): a file THP is not copied ("Skip if can
    be re-fill on fault": ``!vma_is_anonymous()``); else ``pte_alloc_one()`` a
    table for the child's deposit; under both PMD locks deposit it,
    ``mm_inc_nr_ptes(dst)`` (the huge zero folio too, but no RSS),
    write-protect the parent's PMD and set the child's.  False: -ENOMEM."""
    if not vma_is_anonymous(vma):
        return True
    pgtable = await pagetable_alloc(dst_mm, len(dst_mm.geometry.levels) - 1, 0)
    if pgtable is None:
        return False
    dst_ptl = pte_lockptr(dst_mm, dst_pmd)
    src_ptl = pte_lockptr(src_mm, src_pmd)
    await spin_lock(dst_ptl)
    await spin_lock(src_ptl)
    leaf = await src_pmd.load(si)
    assert isinstance(leaf, Leaf)
    if leaf.folio is not None:
        await folio_mapcount_add(leaf.folio, 1)
    if not leaf.zero:
        await mm_rss_add(dst_mm, hpage_pmd_nr(dst_mm))
    await mm_pgtables_add(dst_mm, pgtable.depth, 1)
    await pgtable_trans_huge_deposit(dst_pmd, pgtable)
    if vma.vm_flags & VM_WRITE:
        leaf = await wrprotect(src_pmd, si)
    await dst_pmd.store(di, leaf)
    await spin_unlock(src_ptl)
    await spin_unlock(dst_ptl)
    return True


async def copy_pte_range(dst_mm: mm_struct, src_mm: mm_struct, dst_pmd: PageTable, di: int,
                         src_pmd: PageTable, si: int, addr: int, end: int,
                         vma: vm_area_struct) -> bool:
    """mm/memory.c: copy_pte_range(): ``pte_alloc_map_lock()`` the child's table
    (allocated even if the parent's turns out empty), then map the parent's with
    ``pte_offset_map_rw_nolock()`` and its lock nested; copy each present PTE,
    write-protecting a COW mapping in both.  False: -ENOMEM."""
    geo = src_mm.geometry
    if await dst_pmd.load(di) is None and not await __pxd_alloc(dst_mm, dst_pmd, di, addr):
        return False
    dst = await pte_offset_map_lock(dst_mm, dst_pmd, di)
    assert dst is not None
    src = await __pte_offset_map(src_pmd, si)
    if src is None:
        await pte_unmap_unlock(dst_mm, dst)
        return True
    src_ptl = pte_lockptr(src_mm, src)
    await spin_lock(src_ptl)
    copied = 0
    cow = bool(vma.vm_flags & VM_WRITE)
    while addr < end:
        i = geo.index(src.depth, addr)
        if i in src.entries:
            pte = await src.load(i)
            if isinstance(pte, Leaf):
                if cow and pte.writable:
                    pte = await wrprotect(src, i)
                await dst.store(i, pte)
                copied += pte.rss               # the zero page is not counted
        addr += geo.levels[-1].size
    if copied:
        await mm_rss_add(dst_mm, copied)
    await spin_unlock(src_ptl)
    await rcu_read_unlock()                                  # pte_unmap(src_pte)
    await pte_unmap_unlock(dst_mm, dst)
    return True


async def _copy_level(dst_mm: mm_struct, src_mm: mm_struct, dst: PageTable, src: PageTable,
                      addr: int, end: int, vma: vm_area_struct) -> bool:
    """copy_p4d_range() / copy_pud_range() / copy_pmd_range(): for each present
    entry of ``src`` in ``[addr, end)``, ``pXd_alloc()`` the child's and go down."""
    geo = src_mm.geometry
    size = geo.levels[src.depth].size
    last = len(geo.levels) - 2
    while addr < end:
        nxt = min((addr + size) & ~(size - 1), end)
        i = geo.index(src.depth, addr)
        child = await src.load(i)
        if src.depth == last:
            if isinstance(child, Leaf):
                if not await copy_huge_pmd(dst_mm, src_mm, dst, i, src, i, vma):
                    return False
            elif child is not None and not await copy_pte_range(
                    dst_mm, src_mm, dst, i, src, i, addr, nxt, vma):
                return False
        elif isinstance(child, PageTable):
            if await dst.load(i) is None and not await __pxd_alloc(dst_mm, dst, i, addr):
                return False
            below = await dst.load(i)
            assert isinstance(below, PageTable)
            if not await _copy_level(dst_mm, src_mm, below, child, addr, nxt, vma):
                return False
        addr = nxt
    return True


async def copy_page_range(dst_mm: mm_struct, src_mm: mm_struct,
                          vma: vm_area_struct) -> bool:
    """mm/memory.c: copy_page_range(): walk the parent's tables under ``vma`` (the
    parent's VMA)."""
    if not await vma_needs_copy(vma):
        return True
    assert dst_mm.pgd is not None and src_mm.pgd is not None
    return await _copy_level(dst_mm, src_mm, dst_mm.pgd, src_mm.pgd, vma.vm_start,
                             vma.vm_end, vma)


async def dup_mm(oldmm: mm_struct) -> mm_struct | None:
    """kernel/fork.c: dup_mm() -> mm_init() (``mm_alloc_pgd()``) and dup_mmap():
    under the parent's ``mmap_write_lock``, write-lock each VMA (since 6.4.y/v6.5,
    fb49c455323f: per-VMA-locked faults are otherwise not held off), duplicate it into
    the child's tree and ``copy_page_range()``; then ``flush_tlb_mm(oldmm)`` for the
    write-protected PTEs.  None: -ENOMEM (the half-built child is torn down)."""
    mm = mm_struct(oldmm.geometry, oldmm.config)
    mm.mappings = oldmm.mappings             # the same files
    await mm_alloc_pgd(mm)
    await mmap_write_lock(oldmm)
    await mmap_write_lock(mm)
    ok = True
    for vma in list(oldmm.vmas):
        if oldmm.config.fork_locks_vmas:
            await vma_start_write(oldmm, vma)
        tmp = vma_dup(vma)
        tmp.anon_vma = await anon_vma_fork(vma)
        await vma_link(mm, tmp)
        ok = await copy_page_range(mm, oldmm, vma)
        if not ok:
            break
    await flush_tlb_mm_range(oldmm)
    await mmap_write_unlock(mm)
    await mmap_write_unlock(oldmm)
    if not ok:
        await mmput(mm)
        return None
    return mm


def _count(mm: mm_struct, field: str) -> int:
    mm.obj.check(field, "Write")
    n: int = getattr(mm, field) - 1
    setattr(mm, field, n)
    return n


async def __mmdrop(mm: mm_struct) -> None:
    """kernel/fork.c: __mmdrop(): ``mm_free_pgd()``, ``destroy_context()``, free the
    mm."""
    await mm_free_pgd(mm)
    await destroy_context(mm)


async def mmdrop(mm: mm_struct) -> None:
    """include/linux/sched/mm.h: mmdrop(): the last ``mm_count`` reference frees it."""
    if await Call(((mm.obj.alive, WRITE),), "mmdrop(mm)", _count, mm, "mm_count") == 0:
        await __mmdrop(mm)


async def mmput(mm: mm_struct) -> None:
    """kernel/fork.c: mmput(): the last user tears the address space down
    (``__mmput()``: ``exit_mmap()``), then ``mmdrop()``."""
    if await Call(((mm.obj.alive, WRITE),), "mmput(mm)", _count, mm, "mm_users") == 0:
        await exit_mmap(mm)
        await mmdrop(mm)
