"""The lockless walkers: pte_offset_map() and GUP-fast, against a retractor."""

from __future__ import annotations

from ptlab.engine import DPOR, Execution
from ptlab.kernel import GFP_KERNEL, Field, Kernel, KObject, alloc_pages, spin_lock, spin_unlock
from ptlab.mm.gup import gup_fast_pte_range
from ptlab.mm.pgtable_generic import pmdp_huge_get_and_clear, pte_offset_map, pte_unmap, ptep_get
from ptlab.mm.types import PmdTable, mm_struct, pmd_lock


class Table(KObject):
    __slots__ = ("entries",)

    def __init__(self) -> None:
        KObject.__init__(self, "pte table", 4096)
        self.entries = Field(self, "pte", 7)


class Walk:
    """A walker against a CPU that clears the PMD (no free: only what walkers see)."""

    def __init__(self, gup: bool, results: list[object]) -> None:
        self.gup = gup
        self.results = results

    def build(self, ex: Execution) -> None:
        k = Kernel(ex, 2)
        mm = mm_struct()

        async def setup() -> PmdTable:
            page = await alloc_pages(GFP_KERNEL)
            assert page is not None
            t = PmdTable(page, 1)
            await t.entries[0].store(Table())
            return t

        pmdt: PmdTable = ex.run_sync(setup(), k.cpus[0])
        pmd = pmdt.entries[0]

        async def walker() -> None:
            if self.gup:
                self.results.append(await gup_fast_pte_range(pmd))
                return
            pte = await pte_offset_map(pmd)
            if pte is None:
                self.results.append(None)
                return
            self.results.append(await ptep_get(pte))
            await pte_unmap(pte)

        async def clearer() -> None:
            pml = pmd_lock(mm, pmdt)
            await spin_lock(pml)
            await pmdp_huge_get_and_clear(pmd)
            await spin_unlock(pml)

        k.run_on(0, "walker", walker())
        k.run_on(1, "clearer", clearer())

    def finish(self, ex: Execution) -> None:
        pass


def test_pte_offset_map_sees_the_table_or_nothing() -> None:
    results: list[object] = []
    r = DPOR(lambda: Walk(False, results)).run()
    assert r.exhaustive and set(results) == {7, None}


def test_gup_fast_pins_or_backs_off() -> None:
    results: list[object] = []
    r = DPOR(lambda: Walk(True, results)).run()
    assert r.exhaustive and set(results) == {True, False}
