"""The counters oracle: every counter a user reads must agree with the page
tables that exist.  Scenarios call it in ``finish()``, the simulator after every
step; a disagreement is an ``accounting`` violation, never a silent drift.

* ``mm->pgtables_bytes`` (VmPTE) = the sum over the tables linked in the tree,
  below the top level, of ``PTRS_PER_* * sizeof(entry)`` of their level;
* NR_PAGETABLE = the base pages of the table pages (of every order) allocated
  and not yet freed (less those whose dtor already ran, before v6.14); the memcg
  "pagetables" charge = the bytes of those allocated ``__GFP_ACCOUNT``;
* RSS = the leaf entries present, but for the zero page (and huge zero folio);
* once settled (a grace period passed, no gather open): nothing is waiting to be
  freed, and every live table page is linked in some mm's tree or held by its
  fragment cache (powerpc's ``mm->context.pte_frag``/``pmd_frag`` keep a page
  whose tables were all freed until destroy_context()).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import ModelViolation
from ..kernel import Kernel
from ..kernel.page_alloc import PG_table
from .pgalloc import pgtable_cache_pages
from .types import Leaf, PageTable, mm_struct


@dataclass
class Census:
    tables: list[int]          # linked tables per level, top first
    pgtables_bytes: int        # what VmPTE should say, in bytes
    leaves: int

    @property
    def vmpte_kib(self) -> int:
        return self.pgtables_bytes >> 10


def census(mm: mm_struct) -> Census:
    """Count what the tree holds (no ops: the oracle runs between steps)."""
    geo = mm.geometry
    tables = [0] * len(geo.levels)
    nbytes = leaves = 0
    stack = [mm.pgd] if mm.pgd is not None else []
    while stack:
        t = stack.pop()
        assert t is not None
        tables[t.depth] += 1
        lv = geo.levels[t.depth]
        if t.depth and lv.accounted:
            nbytes += lv.pgtables_bytes
        for v in t.entries.values():
            if isinstance(v, PageTable):
                stack.append(v)
            elif isinstance(v, Leaf):
                leaves += v.rss            # the zero page is not in RSS
        # Deposited tables (huge PMDs) are counted in nr_ptes like linked ones.
        stack.extend(t.deposit)
    return Census(tables, nbytes, leaves)


def linked_pages(mm: mm_struct) -> set[int]:
    out: set[int] = set()
    stack = [mm.pgd] if mm.pgd is not None else []
    while stack:
        t = stack.pop()
        assert t is not None
        out.add(t.page.alive)
        stack.extend(v for v in t.entries.values() if isinstance(v, PageTable))
        stack.extend(t.deposit)
    return out


def check_mm_counters(kernel: Kernel, mms: list[mm_struct], settled: bool) -> None:
    """Raise ModelViolation("leak") for a table page nobody can reach (once
    settled), else ("accounting") if a counter disagrees with the tables.  The leak
    comes first: it is the cause, a counter off by the leaked table the symptom."""
    a = kernel.alloc
    linked: set[int] = set()
    for mm in mms:
        linked |= linked_pages(mm)
        linked.update(p.alive for p in pgtable_cache_pages(mm))
    if settled:
        stray = [p for p in a.pages if not p.freed and p.payload is not None
                 and p.alive not in linked]
        if stray:
            raise ModelViolation("leak", f"{len(stray)} page-table page(s) neither linked "
                                 "nor freed: " + ", ".join(f"pfn {p.pfn:#x}" for p in stray))
        if a.pt_bytes_deferred:
            raise ModelViolation("accounting", f"{a.pt_bytes_deferred} bytes of page tables "
                                 "still wait to be freed after a grace period")
    for mm in mms:
        c = census(mm)
        if mm.pgtables_bytes.value != c.pgtables_bytes:
            raise ModelViolation("accounting", f"mm->pgtables_bytes is "
                                 f"{mm.pgtables_bytes.value} but the linked tables make "
                                 f"{c.pgtables_bytes}")
        if mm.rss.value != c.leaves:
            raise ModelViolation("accounting", f"RSS is {mm.rss.value} but {c.leaves} PTEs "
                                 "are present")
    live = [p for p in a.pages if not p.freed and p.flags.value & PG_table]
    nr_live = sum(1 << p.order for p in live)
    if a.nr_pagetable != nr_live:
        raise ModelViolation("accounting", f"NR_PAGETABLE is {a.nr_pagetable} but "
                             f"{nr_live} pages of tables are live")
    charged = sum(p.size for p in live if p.memcg is not None)
    if sum(a.memcg_pagetables.values()) != charged:
        raise ModelViolation("accounting", f"memcg pagetables is "
                             f"{sum(a.memcg_pagetables.values())} bytes but the live "
                             f"__GFP_ACCOUNT table pages make {charged}")


def anon_pages_without_anon_vma(mm: mm_struct) -> list[int]:
    """Addresses of anonymous pages mapped in a VMA that has no ``anon_vma``: the
    rmap cannot find them (what fork racing a per-VMA-locked fault left behind in
    6.4).  Walks the tables directly: for the end of a scenario."""
    geo = mm.geometry
    out: list[int] = []
    for vma in mm.vmas:
        if vma.anon_vma:
            continue
        table = mm.pgd
        addr = vma.vm_start
        while table is not None and addr < vma.vm_end:
            t: object = table
            while isinstance(t, PageTable) and t.depth < len(geo.levels) - 1:
                t = t.entries.get(geo.index(t.depth, addr))
            if isinstance(t, PageTable):
                leaf = t.entries.get(geo.index(t.depth, addr))
                if isinstance(leaf, Leaf) and leaf.anon:
                    out.append(addr)
            addr += geo.levels[-1].size
    return out
