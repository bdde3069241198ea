"""Tables that share a page, explored: two faults racing for one PMD entry, and
munmap racing a lockless pte_offset_map() walker, are clean on powerpc and s390
v6.6; and an s390 that made an unlinked half reusable before the grace period is
caught by the generation check."""

from __future__ import annotations

import pytest

from ptlab.arch.geometry import ARCHES
from ptlab.arch.s390 import pgalloc as s390
from ptlab.config import ERAS
from ptlab.engine import DPOR, Execution, ModelError
from ptlab.kernel import Kernel, rcu_barrier
from ptlab.mm import mmu_gather
from ptlab.mm.fault import do_user_addr_fault
from ptlab.mm.oracle import census, check_mm_counters
from ptlab.mm.pgalloc import mm_alloc_pgd
from ptlab.mm.pgtable_generic import pte_offset_map_walk
from ptlab.mm.types import VM_READ, VM_WRITE, PageTable, mm_struct
from ptlab.mm.vma import do_mmap, munmap

ARCHS = ["ppc64-hash", "ppc64-radix", "s390-v6.6"]


class Race:
    """One mm with a table at ``base`` and one at ``base + span`` (span: what one
    PTE table maps); then, on two CPUs, either two faults in the empty third span
    (``pmd_install()``: the loser frees its unpublished table), or munmap of the
    first span against an RCU walker of it.  Finally ``rcu_barrier()`` and the
    counters oracle."""

    def __init__(self, arch: str, race: str) -> None:
        self.geometry = ARCHES[arch]
        self.race = race

    def build(self, ex: Execution) -> None:
        k = self.kernel = Kernel(ex, 2)
        mm = self.mm = mm_struct(self.geometry, ERAS["v6.18"])
        span = self.geometry.levels[-2].size
        base = 1 << 36 if self.geometry.name.startswith("s390") else 16 << 40

        async def setup() -> None:
            await mm_alloc_pgd(mm)
            await do_mmap(mm, base, span, VM_READ | VM_WRITE)
            await do_mmap(mm, base + span, 2 * span, VM_READ | VM_WRITE)
            await do_user_addr_fault(mm, base)
            await do_user_addr_fault(mm, base + span)

        ex.run_sync(setup(), k.cpus[0])
        if self.race == "faults":
            page = self.geometry.page_size
            for cpu in range(2):
                k.run_on(cpu, f"fault/{cpu}",
                         do_user_addr_fault(mm, base + 2 * span + cpu * page))
        else:
            k.run_on(0, "munmap", munmap(mm, base, span))
            k.run_on(1, "walker", pte_offset_map_walk(mm, base))

    def finish(self, ex: Execution) -> None:
        ex.run_sync(rcu_barrier(), self.kernel.cpus[0])
        check_mm_counters(self.kernel, [self.mm], settled=True)


@pytest.mark.parametrize("race", ["faults", "munmap"])
@pytest.mark.parametrize("arch", ARCHS)
def test_races_on_shared_table_pages_are_clean(arch: str, race: str) -> None:
    r = DPOR(lambda: Race(arch, race)).run()
    assert r.verdict == "ok" and r.exhaustive, r.violation


def test_an_s390_half_reused_before_the_grace_period_is_caught(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken page_table_free_rcu() that frees the half at once (as
    page_table_free() does) instead of leaving it pending until
    __tlb_remove_table(): the RCU walker reads a table whose half is free."""

    async def free_at_once(table: PageTable) -> None:
        if table.mm.geometry.pte_alloc == "s390-2k" and table.name == "pte":
            await s390.page_table_free(table.mm, table)

    async def nothing_left(table: PageTable) -> None:
        return None

    monkeypatch.setattr(mmu_gather, "pte_free_tlb_arch", free_at_once)
    monkeypatch.setattr(mmu_gather, "arch_tlb_remove_table", nothing_left)
    r = DPOR(lambda: Race("s390-v6.6", "munmap")).run()
    assert r.violation is not None and r.violation.kind == "use-after-reuse"
    assert r.violation.thread == "walker"


def test_s390_fault_race_shares_a_fresh_page_or_frees_the_losers() -> None:
    """Both faults find pgtable_list empty and allocate a page each (the loser's
    page_table_free() then frees its page), or the second takes the first's free
    half (the loser frees just that half): both are explored, and every execution
    ends with the three tables linked."""
    seen: set[tuple[int, bool]] = set()

    class Counted(Race):
        def finish(self, ex: Execution) -> None:
            super().finish(ex)
            pages = self.kernel.alloc.pages
            seen.add((census(self.mm).tables[-1], any(p.freed for p in pages)))

    r = DPOR(lambda: Counted("s390-v6.6", "faults")).run()
    assert r.verdict == "ok" and seen == {(3, False), (3, True)}


def test_a_free_path_the_arch_never_takes_is_refused() -> None:
    """The v6.14 single-table fallback queues the page's one pt_rcu_head: x86-only
    (PT_RECLAIM), so with GFP_NOWAIT failures explored it is refused up front."""

    class Failing(Race):
        def build(self, ex: Execution) -> None:
            super().build(ex)
            self.kernel.alloc.fail_nowait = True

    with pytest.raises(ModelError, match="table_free_one='ipi'"):
        DPOR(lambda: Failing("ppc64-hash", "munmap")).run()
