"""Kernel configuration: the switches that change how page tables are freed, and
presets for the releases that changed behaviour.

Each switch names the commit or release it follows.  A preset is an *era*: the
behaviour of x86-64 as configured by distributions at that release (for other
architectures the arch-independent switches still apply; ``ptlab.arch`` says what
each architecture selects).  ``KernelConfig.replace(...)`` makes a variant, for a
question such as "v6.18, but with the single-table fallback of v6.13".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

TableFreeOne = Literal["ipi", "call_rcu", "synchronize_rcu"]
TlbFlush = Literal["ipi", "hypercall"]
RetractFree = Literal["free", "sync_one", "defer"]
TableFreeFallback = Literal["ipi", "synchronize_rcu"]


@dataclass(frozen=True)
class KernelConfig:
    """One kernel's configuration, as far as the page-table lifecycle cares."""

    name: str
    #: CONFIG_MMU_GATHER_RCU_TABLE_FREE: tables freed through ``tlb_remove_table()``
    #: wait for a grace period (batched by ``call_rcu``).  Without it x86 frees a
    #: table with ``tlb_remove_page()`` right after the TLB flush, relying on the
    #: flush IPI to wait for IRQ-off walkers.  x86 selects it only with PARAVIRT
    #: until v6.15 (a37259732a7d "x86/mm: Make MMU_GATHER_RCU_TABLE_FREE
    #: unconditional"); PT_RECLAIM selects it (v6.14).
    mmu_gather_rcu_table_free: bool
    #: CONFIG_PT_RECLAIM (v6.14, Qi Zheng, "synchronously scan and reclaim empty
    #: user PTE pages"): ``madvise(MADV_DONTNEED)`` frees PTE tables it empties.
    pt_reclaim: bool
    #: The single-table fallback ``__tlb_remove_table_one()`` when the batch page
    #: cannot be allocated: ``ipi`` = ``tlb_remove_table_sync_one()`` then free
    #: (<= v6.13, and later without PT_RECLAIM); ``call_rcu`` on ``pt_rcu_head``
    #: (v6.14 with PT_RECLAIM, "mm: pgtable: make ptlock be freed by RCU" series);
    #: ``synchronize_rcu`` then free (2026 mm-unstable, "mm/mmu_gather: replace IPI
    #: with synchronize_rcu() when batch allocation fails").
    table_free_one: TableFreeOne
    #: CONFIG_PARAVIRT, and how remote TLBs are flushed: by IPI on bare metal, by
    #: hypercall under Xen PV / Hyper-V / KVM (which is why x86 used RCU table free
    #: with PARAVIRT before v6.15).
    paravirt: bool
    tlb_flush: TlbFlush
    #: CONFIG_PER_VMA_LOCK (v6.4, Suren Baghdasaryan): faults try
    #: ``lock_vma_under_rcu()`` before ``mmap_lock``.
    per_vma_lock: bool
    #: The v6.15 per-VMA lock: ``vm_refcnt`` with VMA_LOCK_OFFSET ("replace vm_lock
    #: and detached flag with a reference count"); before it, a per-VMA rwsem.
    vma_refcount: bool
    #: Split page-table locks (CONFIG_SPLIT_PTE_PTLOCKS, SPLIT_PMD_PTLOCKS): the
    #: PTE/PMD lock lives in the table's ptdesc, else it is ``mm->page_table_lock``.
    split_pte_ptlocks: bool = True
    split_pmd_ptlocks: bool = True
    #: ``pagetable_dtor()`` (NR_PAGETABLE, PG_table) runs when the table is freed,
    #: after the grace period (v6.14, "move pagetable_*_dtor() to
    #: __tlb_batch_free_encoded_pages()"), not when it is unlinked.
    dtor_at_free: bool = True
    #: MAX_TABLE_BATCH: (PAGE_SIZE - sizeof(struct mmu_table_batch)) / sizeof(void *)
    #: = 509 on x86-64; scenarios shrink it to reach the flush inside a small run.
    max_table_batch: int = 509
    #: The single-table fallback when PT_RECLAIM is not built (the ``call_rcu`` form
    #: needs its ``pt_rcu_head``): ``ipi`` until 2026, ``synchronize_rcu`` in the
    #: 2026 tree ("mm/mmu_gather: replace IPI with synchronize_rcu() when batch
    #: allocation fails").
    table_free_fallback: TableFreeFallback = "ipi"
    #: How khugepaged frees a PTE table it retracts from a file VMA: ``free`` =
    #: ``pte_free()`` at once (before v6.1: the GUP-fast race Jann Horn fixed with
    #: "mm/khugepaged: fix GUP-fast interaction by sending IPI"); ``sync_one`` =
    #: ``tlb_remove_table_sync_one()`` then ``pte_free()`` (v6.5 and before:
    #: collapse_and_free_pmd(), Jann Horn's 2022 IPI fix, under mmap_write_lock);
    #: ``defer`` = ``pte_free_defer()`` after a grace period (v6.6, Hugh Dickins,
    #: "mm/khugepaged: retract_page_tables() without mmap or vma lock").
    retract_free: RetractFree = "defer"
    #: dup_mmap() write-locks each parent VMA before copying it (fb49c455323f "fork:
    #: lock VMAs of the parent process when forking", 6.5-rc1 and 6.4.y): per-VMA
    #: locked faults ran concurrently with fork in 6.4.0.
    fork_locks_vmas: bool = True
    #: The architecture's own ``pte_free_defer()`` where tables share a page (v6.6:
    #: powerpc, s390); False = the generic one, ``call_rcu()`` on the page's one
    #: ``pt_rcu_head``, as if the arch had not provided its own.
    arch_pte_free_defer: bool = True
    #: zap_pte_range() gives up the PMD fast path once it dropped the PTE lock mid-scan
    #: (need_resched() or a full batch): entries may have been refilled meanwhile
    #: ("mm: pgtable: fix incorrect reclaim of non-empty PTE pages", Qi Zheng,
    #: 6.14-rc, Fixes 6375e95f381e).
    zap_break_fix: bool = True
    #: retract_page_tables() re-checks the PMD under its lock before looking up the
    #: PTE lock (v6.14, ``check_pmd_state()``: PT_RECLAIM may have freed the table
    #: meanwhile); before, ``pte_lockptr()`` used the PMD read before the lock.
    retract_check_pmd: bool = True
    #: PT_RECLAIM on every architecture with MMU_GATHER_RCU_TABLE_FREE (2026
    #: mm-unstable, Qi Zheng and David Hildenbrand: "PT_RECLAIM def_bool y depends
    #: on MMU_GATHER_RCU_TABLE_FREE", enabling it on more 64-bit archs);
    #: before, only where the arch selects ARCH_SUPPORTS_PT_RECLAIM (x86-64).
    pt_reclaim_any_arch: bool = False
    #: ``zap_empty_pte_table()`` skips the PMD trylock when ptl == pml (2026
    #: mm-unstable, "mm/memory: handle non-split locks correctly").
    reclaim_nonsplit_fix: bool = False
    #: An anonymous collapse needs at least one writable PTE (SCAN_PAGE_RO, so
    #: MADV_COLLAPSE of a range of zero pages is -EINVAL) until v6.18 (Dev Jain,
    #: b9f85966d1be "mm: enable khugepaged anonymous collapse on non-writable
    #: regions" and 65b08d362ba5 "mm: drop all references of writable and
    #: SCAN_PAGE_RO"); this machine's 6.18 collapses such a range.
    collapse_needs_writable: bool = True
    #: MADV_COLLAPSE of a file range with no PMD table allocates the tables and
    #: maps the huge PMD (v6.18, Kiryl Shutsemau, "mm/khugepaged: Do not fail
    #: collapse_pte_mapped_thp() on SCAN_PMD_NULL"); before, -EINVAL.
    collapse_installs_tables: bool = False
    #: mremap(MREMAP_FIXED) of an unchanged size moves every VMA in the range,
    #: gaps and all (v6.17, Lorenzo Stoakes, "mm/mremap: permit mremap() move of
    #: multiple VMAs"); before, the range had to be inside one VMA (-EFAULT).
    mremap_multi_vma: bool = False

    def replace(self, **changes: object) -> KernelConfig:
        """A variant of this configuration (``name`` says it differs)."""
        if "name" not in changes:
            changes["name"] = self.name + "+" + ",".join(f"{k}={v}" for k, v in changes.items())
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_V65 = KernelConfig(
    name="v6.5", mmu_gather_rcu_table_free=True, pt_reclaim=False, table_free_one="ipi",
    paravirt=True, tlb_flush="ipi", per_vma_lock=True, vma_refcount=False,
    dtor_at_free=False, retract_free="sync_one")

ERAS: dict[str, KernelConfig] = {
    # pte_offset_map() may fail (Hugh Dickins' series); per-VMA locks since v6.4.
    "v6.5": _V65,
    # pte_free_defer(), retract_page_tables() without mmap_lock.
    "v6.6": _V65.replace(name="v6.6", retract_free="defer"),
    # Last release whose single-table fallback is always the IPI.
    "v6.13": _V65.replace(name="v6.13", retract_free="defer"),
    # PT_RECLAIM on x86-64; __tlb_remove_table_one() by RCU; dtor at free time.
    "v6.14": _V65.replace(name="v6.14", retract_free="defer", pt_reclaim=True,
                          table_free_one="call_rcu",
                          dtor_at_free=True),
    # RCU table free unconditional on x86; vm_refcnt per-VMA locks.
    "v6.15": _V65.replace(name="v6.15", retract_free="defer", pt_reclaim=True,
                          table_free_one="call_rcu",
                          dtor_at_free=True, vma_refcount=True),
    # The kernel on this machine.
    "v6.18": _V65.replace(name="v6.18", retract_free="defer", pt_reclaim=True,
                          table_free_one="call_rcu",
                          dtor_at_free=True, vma_refcount=True,
                          collapse_needs_writable=False, collapse_installs_tables=True,
                          mremap_multi_vma=True),
    # 2026 mm-unstable: PT_RECLAIM def_bool y; synchronize_rcu() fallback without it.
    "2026": _V65.replace(name="2026", retract_free="defer", pt_reclaim=True,
                         table_free_one="call_rcu",
                         dtor_at_free=True, vma_refcount=True, reclaim_nonsplit_fix=True,
                         pt_reclaim_any_arch=True, table_free_fallback="synchronize_rcu",
                         collapse_needs_writable=False, collapse_installs_tables=True,
                         mremap_multi_vma=True),
}

DEFAULT_ERA = "v6.18"

