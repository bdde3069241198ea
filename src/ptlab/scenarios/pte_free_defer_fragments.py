"""Scenario ``pte-free-defer-fragments`` (seed 001, June 2023).

On powerpc up to 16 PTE tables share one 64K page and that page's single
``rcu_head``.  khugepaged's ``retract_page_tables()`` detaches tables one by one
and frees each with ``pte_free_defer()``; a naive ``call_rcu()`` per table queues
the same head twice when two fragments of one page go together.

The model: one mm whose PTE tables are the ``fragments`` fragments of one page
(``PTE_FRAG_NR`` = ``fragments``), each mapped by its own PMD entry.  One
khugepaged-style retractor per fragment, each on its own CPU, clears its PMD entry
under the PMD lock and calls ``pte_free_defer()``; ``rcu_walkers`` CPUs walk a table
with ``pte_offset_map()`` under ``rcu_read_lock()`` and ``gup_walkers`` with GUP-fast
(IRQs off).  When every CPU is done and RCU is idle, ``rcu_barrier()``, then the
leak check: every page-table page freed exactly once, ``pt_frag_refcount`` (for the
designs that use it) and NR_PAGETABLE back to zero, every side allocation freed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..arch.geometry import S390_V66
from ..arch.powerpc.pgtable_frag import (
    PteFragment,
    pte_frag_destroy,
    pte_fragment_alloc,
    pte_free_defer,
)
from ..arch.powerpc.pte_free_defer_designs import (
    alloc_page64k,
    pte_free_defer_frag_refcount,
    pte_free_defer_naive,
    pte_free_defer_pending_mask,
    pte_free_defer_pending_mask_as_written,
    pte_free_defer_pending_mask_two_masks,
    pte_free_defer_rcu_head_per_table,
)
from ..arch.s390.pgalloc import pte_free_defer as s390_pte_free_defer
from ..config import ERAS
from ..engine import Execution, Model, ModelViolation, SetupCache
from ..kernel import GFP_KERNEL, Kernel, alloc_pages, rcu_barrier, spin_lock, spin_unlock
from ..kernel.memory import Field
from ..mm.gup import gup_fast_pte_range
from ..mm.pgtable_generic import pmdp_collapse_flush, pte_offset_map, pte_unmap, ptep_get
from ..mm.types import PmdTable, mm_dec_nr_ptes, mm_inc_nr_ptes, mm_struct, pmd_lock
from .base import OK, Param, Scenario, Variant
from .mm_races import S390RetractHalves, World

Defer = Callable[[mm_struct, PteFragment], Awaitable[None]]


@dataclass(frozen=True)
class Design:
    defer: Defer
    uses_frag_refcount: bool = True
    side_structure: bool = False
    may_fail: bool = False


DESIGNS: dict[str, Design] = {
    "naive": Design(pte_free_defer_naive),
    "frag-refcount": Design(pte_free_defer_frag_refcount),
    "pending-mask-as-written": Design(pte_free_defer_pending_mask_as_written,
                                      uses_frag_refcount=False, side_structure=True),
    "pending-mask": Design(pte_free_defer_pending_mask, uses_frag_refcount=False,
                           side_structure=True),
    "pending-mask-two-masks": Design(pte_free_defer_pending_mask_two_masks,
                                     uses_frag_refcount=False, side_structure=True),
    "rcu-head-per-table": Design(pte_free_defer_rcu_head_per_table, may_fail=True),
    "pg-active": Design(pte_free_defer),
}


async def retract_page_table(mm: mm_struct, pmdt: PmdTable, i: int, design: Design) -> None:
    """The core of mm/khugepaged.c: retract_page_tables() (v6.6) for one table:
    clear the PMD under the PMD lock, then ``pte_free_defer()``."""
    pml = pmd_lock(mm, pmdt)
    await spin_lock(pml)
    pgt_pmd = await pmdp_collapse_flush(pmdt.entries[i])
    assert isinstance(pgt_pmd, PteFragment)
    await spin_unlock(pml)
    await mm_dec_nr_ptes(mm)
    await design.defer(mm, pgt_pmd)


async def rcu_walker(pmd: Field, ex: Execution) -> None:
    """A ``pte_offset_map()`` user: map, read an entry, unmap."""
    pte = await pte_offset_map(pmd)
    if pte is None:
        return
    await ptep_get(pte)
    if await pmd.load() is not pte:
        ex.sometimes("an RCU walker read a table already detached from its PMD")
    await pte_unmap(pte)


async def gup_walker(pmd: Field, ex: Execution) -> None:
    if not await gup_fast_pte_range(pmd):
        ex.sometimes("GUP-fast found its table gone and backed off")


@dataclass
class SetupState:
    """What set-up leaves behind: the same for every execution of a search."""

    kernel: Kernel
    mm: mm_struct
    pmdt: PmdTable
    tables: list[PteFragment]


class PteFreeDeferModel:
    def __init__(self, design: Design, params: dict[str, int],
                 cache: SetupCache[SetupState] | None = None) -> None:
        self.design = design
        self.nfrag = params["fragments"]
        self.nrcu = params["rcu_walkers"]
        self.ngup = params["gup_walkers"]
        self.cache = cache

    def setup(self, ex: Execution) -> SetupState:
        """One mm, a PMD table, and ``fragments`` PTE tables from pte_fragment_alloc(),
        each installed in its own PMD entry (pmd_populate())."""
        nfrag, design = self.nfrag, self.design
        k = Kernel(None, nfrag + self.nrcu + self.ngup, fail_nowait=design.may_fail,
                   ipis=design.may_fail)
        mm = mm_struct()

        async def setup() -> SetupState:
            pmd_page = await alloc_pages(GFP_KERNEL)
            assert pmd_page is not None
            pmdt = PmdTable(pmd_page, nfrag)
            tables = []
            for i in range(nfrag):
                pte = await pte_fragment_alloc(mm, 0, nfrag)
                assert pte is not None
                if design.side_structure and pte.index == 0:
                    await alloc_page64k(pte.page, nfrag)
                await pmdt.entries[i].store(pte)  # pmd_populate()
                await mm_inc_nr_ptes(mm)
                tables.append(pte)
            return SetupState(k, mm, pmdt, tables)

        state: SetupState = ex.run_sync(setup(), k.cpus[0])
        return state

    def build(self, ex: Execution) -> None:
        nfrag, design = self.nfrag, self.design
        st = self.cache.get(lambda: self.setup(ex)) if self.cache else self.setup(ex)
        self.kernel = k = st.kernel
        self.mm = mm = st.mm
        self.pmdt = st.pmdt
        self.tables = st.tables
        self.pmd_page = self.pmdt.page
        k.boot(ex)
        for i in range(nfrag):
            k.run_on(i, f"khugepaged/{i}", retract_page_table(mm, self.pmdt, i, design))
        for w in range(self.nrcu):
            k.run_on(nfrag + w, f"walker/{w}", rcu_walker(self.pmdt.entries[w % nfrag], ex))
        for g in range(self.ngup):
            k.run_on(nfrag + self.nrcu + g, f"gup/{g}",
                     gup_walker(self.pmdt.entries[(nfrag - 1 - g) % nfrag], ex))

    def finish(self, ex: Execution) -> None:
        k, mm = self.kernel, self.mm

        async def teardown() -> None:
            cached = mm.context.pte_frag.value
            if cached is not None:
                await pte_frag_destroy(cached, self.nfrag)
            await rcu_barrier()

        ex.run_sync(teardown(), k.cpus[0])
        leaked = [p for p in k.alloc.pages if not p.freed and p is not self.pmd_page]
        leaked += [o for o in k.alloc.objects if not o.freed]  # type: ignore[misc]
        if leaked:
            raise ModelViolation("leak", f"{len(leaked)} object(s) never freed: "
                                 + ", ".join(f"{o.kind} at {o.addr:#x}" for o in leaked),
                                 "\n".join(o.kmemleak_report() for o in leaked))
        if self.design.uses_frag_refcount:
            for p in k.alloc.pages:
                if p is not self.pmd_page and p.pt_frag_refcount.value != 0:
                    raise ModelViolation("accounting", f"pt_frag_refcount of pfn {p.pfn:#x} "
                                         f"is {p.pt_frag_refcount.value:#x} after its free")
        live_tables = sum(1 for p in k.alloc.pages if not p.freed and p.flags.value & 2)
        if k.alloc.nr_pagetable != live_tables:
            raise ModelViolation("accounting", f"NR_PAGETABLE is {k.alloc.nr_pagetable} but "
                                 f"{live_tables} page-table pages are live")
        if mm.pgtables_bytes.value != 0:
            raise ModelViolation("accounting", f"mm->pgtables_bytes is "
                                 f"{mm.pgtables_bytes.value}, not 0")
        if any(p.freed for p in k.alloc.pages if p.payload is not None):
            ex.sometimes("the fragment page was freed")


def _make(variant: str, params: dict[str, int]) -> Callable[[], Model]:
    if variant == "s390-v6.6":
        if params["fragments"] != 2:
            raise ValueError(f"fragments={params['fragments']} is not possible: s390 "
                             "has two 2K PTE tables to a 4K page (fragments=2)")
        s390: SetupCache[World] = SetupCache()
        return lambda: S390RetractHalves(ERAS["v6.6"], params, s390, S390_V66)
    design = DESIGNS[variant]
    cache: SetupCache[SetupState] = SetupCache()
    return lambda: PteFreeDeferModel(design, params, cache)


def _doc(fn: Callable[..., object]) -> str:
    return " ".join((fn.__doc__ or "").split())


SCENARIO = Scenario(
    name="pte-free-defer-fragments",
    title="pte_free_defer() for page tables that share a page and its rcu_head",
    source="seed 001 (linux-mm, June 2023: [PATCH 05/12] powerpc: add pte_free_defer() "
           "for pgtables sharing page)",
    params=(
        Param("fragments", 2, "PTE tables per page (PTE_FRAG_NR); one retractor each", 2, 4,
              deep=3),
        Param("rcu_walkers", 1, "CPUs walking a table with pte_offset_map() under RCU", 0, 3),
        Param("gup_walkers", 1, "CPUs walking a table with GUP-fast, IRQs off", 0, 3),
    ),
    variants=(
        Variant("naive", "generic call_rcu(&page->rcu_head) per table", "double-call_rcu",
                _doc(pte_free_defer_naive)),
        Variant("frag-refcount", "posted patch: PTE_FREE_DEFERRED in pt_frag_refcount, "
                "re-defer once", OK, _doc(pte_free_defer_frag_refcount)),
        Variant("pending-mask-as-written", "side structure, fetch_or condition as sketched",
                "leak", _doc(pte_free_defer_pending_mask_as_written),
                (("fragments", 3),)),
        Variant("pending-mask", "side structure, queue only when nothing was pending",
                "use-after-free", _doc(pte_free_defer_pending_mask)),
        Variant("pending-mask-two-masks", "side structure with current/next masks (seed 003)",
                OK, _doc(pte_free_defer_pending_mask_two_masks)),
        Variant("rcu-head-per-table", "kmalloc(GFP_NOWAIT) head per table, IPI fallback",
                "use-after-free", _doc(pte_free_defer_rcu_head_per_table)),
        Variant("pg-active", "merged in v6.6: PG_active, last fragment frees via call_rcu",
                OK, _doc(pte_free_defer)),
        Variant("s390-v6.6", "s390 as merged in v6.6: two 2K tables to a 4K page, "
                "PageActive and the AA/PP bits, on the mm model", OK,
                _doc(s390_pte_free_defer)),
    ),
    make=_make,
    notes=[
        """On powerpc up to 16 PTE tables (fragments) share one 64K page and its single
`rcu_head`.  khugepaged detaches tables one at a time and frees each with
`pte_free_defer()`; walkers may still be reading them under `rcu_read_lock()`
(`pte_offset_map()`) or with interrupts off (GUP-fast).""",
        """`pending-mask` is worth a look: fixing the sketch's inverted condition is not
enough.  A fragment freed while the head is queued sets its pending bit, and the
callback's `atomic_xchg()` collects that bit too — but the grace period it waited
for may have begun before that fragment was unlinked, so a walker that found the
fragment afterwards is still reading it when the page is freed.""",
        """```python
from ptlab.check import CheckSpec, run_check

out = run_check(CheckSpec("pte-free-defer-fragments", "pending-mask"))
print(out.found, "found by", out.violation.thread)
assert out.found == "use-after-free"
```""",
    ],
)
