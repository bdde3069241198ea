"""Scenarios on the x86-64 page-table model (issue 3's checks).

``fault-race``: two page faults in one VMA populate the same empty PMD entry.
Both allocate a PTE table; ``pmd_install()`` publishes one under the PMD lock and
the loser frees its unpublished table at once.  Nothing may leak, both pages must
end up mapped, every counter must balance.

``mmu-gather-table-free``: munmap of a populated VMA (a neighbour keeps the PMD table,
so one PTE table is freed) races a GUP-fast walker (IRQs off)
and a lockless ``pte_offset_map()`` walker (``rcu_read_lock()`` only).  The batch
page of ``tlb_remove_table()`` may fail to allocate (explored).  On v6.18 every
table is freed after a grace period; with the IPI-only single-table fallback
(``tlb_remove_table_sync_one()`` then free, as before v6.14 and without
PT_RECLAIM) the IPI does not wait for the RCU walker: a use-after-free (seed 002).
On v6.13 native x86 (no RCU table free) tables go with ``tlb_remove_page()`` after
the flush IPI, which again holds back only IRQ-off walkers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..arch.geometry import S390, S390_V66, X86_64, Geometry
from ..config import ERAS, KernelConfig
from ..engine import Execution, Model, ModelViolation, SetupCache
from ..kernel import Kernel, rcu_barrier, rcu_read_lock, rcu_read_unlock
from ..mm.fault import do_user_addr_fault
from ..mm.fork import dup_mm
from ..mm.gup import gup_fast
from ..mm.khugepaged import retract_page_tables
from ..mm.memory import __pte_offset_map, handle_mm_fault
from ..mm.mmap_lock import find_vma
from ..mm.mremap import mremap
from ..mm.oracle import anon_pages_without_anon_vma, census, check_mm_counters
from ..mm.pgalloc import mm_alloc_pgd
from ..mm.pgtable import pmd_offset_lockless
from ..mm.pgtable_generic import pte_offset_map_walk
from ..mm.types import VM_READ, VM_SHARED, VM_WRITE, Leaf, PageTable, mm_struct
from ..mm.vma import do_mmap, madvise_dontneed, munmap
from .base import OK, Param, Scenario, Variant

BASE = 16 << 40          # 16 TiB: nothing else shares the upper tables
PMD_SIZE = 2 << 20


@dataclass
class World:
    kernel: Kernel
    mm: mm_struct


class _MmModel:
    """Common shape: set-up (cloned per execution), threads, then the oracle after
    ``rcu_barrier()``."""

    def __init__(self, config: KernelConfig, params: dict[str, int],
                 cache: SetupCache[World] | None, geometry: Geometry = X86_64) -> None:
        self.config = config
        self.params = params
        self.cache = cache
        self.geometry = geometry

    #: Explore GFP_NOWAIT allocations failing (the mmu_gather batch page).
    fail_nowait = True
    #: How many times need_resched() may say yes on a CPU (loops that drop their
    #: lock mid-way); explored.
    resched = 0

    def ncpus(self) -> int:
        raise NotImplementedError

    def prepare(self, ex: Execution, w: World) -> None:
        """Set-up steps after boot (run once, then cloned)."""

    def spawn(self, ex: Execution, w: World) -> None:
        raise NotImplementedError

    def _setup(self, ex: Execution) -> World:
        """Boot (GFP_NOWAIT allocations may fail: explored), an mm with its PGD,
        then the scenario's own set-up."""
        k = Kernel(None, self.ncpus(), fail_nowait=self.fail_nowait, ipis=True,
                   resched=self.resched)
        w = World(k, mm_struct(self.geometry, self.config))
        ex.run_sync(mm_alloc_pgd(w.mm), k.cpus[0])
        self.prepare(ex, w)
        return w

    def build(self, ex: Execution) -> None:
        w = self.cache.get(lambda: self._setup(ex)) if self.cache else self._setup(ex)
        self.w = w
        w.kernel.boot(ex)
        self.spawn(ex, w)

    def finish(self, ex: Execution) -> None:
        w = self.w
        ex.run_sync(rcu_barrier(), w.kernel.cpus[0])
        check_mm_counters(w.kernel, [w.mm], settled=True)
        self.final_checks(ex, w)

    def final_checks(self, ex: Execution, w: World) -> None:
        pass


def map_and_touch(ex: Execution, w: World, length: int, file: str | None = None) -> None:
    """Set-up: map ``length`` bytes at BASE (anonymous private, or the shared file
    ``file``) and fault in its first page."""
    flags = VM_READ | VM_WRITE | (VM_SHARED if file is not None else 0)

    async def setup() -> None:
        await do_mmap(w.mm, BASE, length, flags, anon=file is None, file=file)
        await do_user_addr_fault(w.mm, BASE)
    ex.run_sync(setup(), w.kernel.cpus[0])


class FaultRace(_MmModel):
    def ncpus(self) -> int:
        return 2

    def prepare(self, ex: Execution, w: World) -> None:
        async def setup() -> None:
            await do_mmap(w.mm, BASE, 2 * PMD_SIZE, VM_READ | VM_WRITE)
            # Populate the PUD and PMD tables through a fault in the other 2 MiB.
            await do_user_addr_fault(w.mm, BASE + PMD_SIZE)
        ex.run_sync(setup(), w.kernel.cpus[0])

    def spawn(self, ex: Execution, w: World) -> None:
        for cpu in range(2):
            w.kernel.run_on(cpu, f"fault/{cpu}", do_user_addr_fault(w.mm, BASE + cpu * 4096))

    def final_checks(self, ex: Execution, w: World) -> None:
        c = census(w.mm)
        if c.tables[-1] != 2 or c.leaves != 3:
            raise ModelViolation("lost-fault", f"{c.tables[-1]} PTE tables and {c.leaves} "
                                 "PTEs after both faults (want 2 and 3)")
        if any(p.freed for p in w.kernel.alloc.pages if p.payload is not None):
            ex.sometimes("a fault lost the pmd_install() race and freed its table")


class _WalkersModel(_MmModel):
    """One CPU changes the tables (``main()``); the others walk them locklessly at
    ``BASE``: RCU ``pte_offset_map()`` walkers, then GUP-fast walkers."""

    def ncpus(self) -> int:
        return 1 + self.params["rcu_walkers"] + self.params["gup_walkers"]

    def main(self, w: World) -> tuple[str, Coroutine[Any, Any, Any]]:
        raise NotImplementedError

    def spawn(self, ex: Execution, w: World) -> None:
        k = w.kernel
        k.run_on(0, *self.main(w))
        n = 1
        for i in range(self.params["rcu_walkers"]):
            k.run_on(n, f"walker/{i}", self._rcu_walker(ex, w))
            n += 1
        for i in range(self.params["gup_walkers"]):
            k.run_on(n, f"gup/{i}", self._gup_walker(ex, w))
            n += 1

    async def _rcu_walker(self, ex: Execution, w: World) -> None:
        if isinstance(await pte_offset_map_walk(w.mm, BASE), Leaf):
            ex.sometimes("an RCU walker read a PTE of the table being changed")

    async def _gup_walker(self, ex: Execution, w: World) -> None:
        if await gup_fast(w.mm, BASE):
            ex.sometimes("GUP-fast pinned a page meanwhile")


class MunmapWalkers(_WalkersModel):
    def prepare(self, ex: Execution, w: World) -> None:
        async def setup() -> None:
            await do_mmap(w.mm, BASE, PMD_SIZE, VM_READ | VM_WRITE)
            await do_user_addr_fault(w.mm, BASE)
            # A neighbour within the same PMD table keeps the upper tables
            # (free_pgtables()' ceiling): munmap frees the one PTE table.
            await do_mmap(w.mm, BASE + 2 * PMD_SIZE, PMD_SIZE, VM_READ | VM_WRITE)
        ex.run_sync(setup(), w.kernel.cpus[0])

    def main(self, w: World) -> tuple[str, Coroutine[Any, Any, Any]]:
        return "munmap", munmap(w.mm, BASE, PMD_SIZE)


class RetractWalkers(_WalkersModel):
    """khugepaged retracts the PTE table of a file range (collapse_file() ->
    retract_page_tables()) while lockless walkers look at it."""

    def prepare(self, ex: Execution, w: World) -> None:
        map_and_touch(ex, w, PMD_SIZE, file="f")

    def main(self, w: World) -> tuple[str, Coroutine[Any, Any, Any]]:
        return "khugepaged", retract_page_tables(w.mm.mapping("f"), 0)


class MremapWalkers(_WalkersModel):
    """mremap moves a PMD-aligned 2 MiB mapping 512 GiB up (``move_normal_pmd()``
    moves the PTE table itself) while lockless walkers look at the old address;
    the old range's upper tables are then freed like munmap's."""

    def prepare(self, ex: Execution, w: World) -> None:
        map_and_touch(ex, w, PMD_SIZE)

    def main(self, w: World) -> tuple[str, Coroutine[Any, Any, Any]]:
        return "mremap", mremap(w.mm, BASE, PMD_SIZE, BASE + (1 << 39))

    def final_checks(self, ex: Execution, w: World) -> None:
        c = census(w.mm)
        if c.leaves != 1 or c.tables[-1] != 1:
            raise ModelViolation("lost-page", f"{c.leaves} PTEs in {c.tables[-1]} tables "
                                 "after mremap (want the one page, in its moved table)")


async def speculative_fault(mm: mm_struct, addr: int) -> bool:
    """Seed 004's first idea: a fault that looks the VMA up and allocates the
    missing tables under ``rcu_read_lock()`` alone (no VMA lock, no mmap_lock)."""
    await rcu_read_lock()
    vma = await find_vma(mm, addr)
    ok = vma is not None and await handle_mm_fault(mm, vma, addr)
    await rcu_read_unlock()
    return ok


class SpeculativeFault(_MmModel):
    """munmap of a 4 MiB VMA (its PUD, PMD and PTE tables go) against a fault in its
    second 2 MiB, which needs a new PTE table."""

    fail_nowait = False          # the batch page is beside the point here

    def ncpus(self) -> int:
        return 2

    def prepare(self, ex: Execution, w: World) -> None:
        map_and_touch(ex, w, 2 * PMD_SIZE)

    def spawn(self, ex: Execution, w: World) -> None:
        k = w.kernel
        k.run_on(0, "munmap", munmap(w.mm, BASE, 2 * PMD_SIZE))
        fault = speculative_fault if self.params["rcu_only"] else do_user_addr_fault
        k.run_on(1, "fault", fault(w.mm, BASE + PMD_SIZE))


class ReclaimVsRetract(_MmModel):
    """MADV_DONTNEED with PT_RECLAIM empties and frees the PTE table of a shared
    file range while khugepaged retracts the same table (``retract``) and a fault
    refills its first page (``faults``); with ``breaks`` the zap may drop its lock
    mid-scan (``need_resched()``)."""

    fail_nowait = False          # the batch page is beside the point here

    def ncpus(self) -> int:
        return 1 + self.params["retract"] + self.params["faults"]

    def _setup(self, ex: Execution) -> World:
        self.resched = self.params["breaks"]
        return super()._setup(ex)

    def prepare(self, ex: Execution, w: World) -> None:
        map_and_touch(ex, w, PMD_SIZE, file="f")

    def spawn(self, ex: Execution, w: World) -> None:
        k = w.kernel
        k.run_on(0, "madvise", madvise_dontneed(w.mm, BASE, PMD_SIZE))
        cpu = 1
        if self.params["retract"]:
            k.run_on(cpu, "khugepaged", retract_page_tables(w.mm.mapping("f"), 0))
            cpu += 1
        if self.params["faults"]:
            k.run_on(cpu, "fault", do_user_addr_fault(w.mm, BASE))

    def final_checks(self, ex: Execution, w: World) -> None:
        table = _pte_table(w.mm, BASE)
        # Locations made in set-up have ids below 1 << 24 (engine.new_loc()).
        if table is not None and table.loc < 1 << 24 and table.entries \
                and self.params["breaks"] and not w.kernel.cpus[0].resched_left:
            ex.sometimes("zap_pte_range() broke its scan, a fault refilled the table "
                         "and reclaim kept it")


class ForkVsFault(_MmModel):
    """fork copies a private file mapping (file pages mapped, no anon_vma yet)
    while a write fault in the parent, under its per-VMA lock, makes a COW page
    (``anon_vma_prepare()``)."""

    fail_nowait = False

    def ncpus(self) -> int:
        return 2

    def prepare(self, ex: Execution, w: World) -> None:
        async def setup() -> None:
            # Shared, so the set-up fault maps a file page; then made private
            # (MAP_PRIVATE of the same file) for the race.
            vma = await do_mmap(w.mm, BASE, PMD_SIZE, VM_READ | VM_WRITE | VM_SHARED,
                                anon=False, file="f")
            await do_user_addr_fault(w.mm, BASE)
            vma.vm_flags = VM_READ | VM_WRITE
        ex.run_sync(setup(), w.kernel.cpus[0])

    def spawn(self, ex: Execution, w: World) -> None:
        k = w.kernel

        async def fork() -> None:
            self.child = await dup_mm(w.mm)
        k.run_on(0, "fork", fork())
        k.run_on(1, "fault", do_user_addr_fault(w.mm, BASE + 4096))

    def finish(self, ex: Execution) -> None:
        w = self.w
        ex.run_sync(rcu_barrier(), w.kernel.cpus[0])
        assert self.child is not None
        check_mm_counters(w.kernel, [w.mm, self.child], settled=True)
        for name, mm in (("child", self.child), ("parent", w.mm)):
            lost = anon_pages_without_anon_vma(mm)
            if lost:
                raise ModelViolation("anon-rmap", f"the {name} maps anonymous page(s) at "
                                     f"{', '.join(hex(a) for a in lost)} in a VMA without "
                                     "anon_vma: the rmap cannot find them")


S390_BASE = 1 << 36          # inside s390's 4 TiB user space
S390_SEG = 1 << 20           # what one s390 PTE table maps


class S390Halves(_MmModel):
    """Two 2K PTE tables to a 4K page (s390 before v6.7): a shared file range holds
    the first half, so the page sits on ``mm->context.pgtable_list`` with its other
    half free.  khugepaged retracts the file's table (``pte_free_defer()``) while a
    fault in an anonymous range allocates a table (taking a free half from the
    list) and an RCU walker reads the retracted table."""

    fail_nowait = False

    def ncpus(self) -> int:
        return 2 + self.params["rcu_walkers"]

    def prepare(self, ex: Execution, w: World) -> None:
        async def setup() -> None:
            await do_mmap(w.mm, S390_BASE, S390_SEG, VM_READ | VM_WRITE | VM_SHARED,
                          anon=False, file="f")
            await do_mmap(w.mm, S390_BASE + 2 * S390_SEG, S390_SEG, VM_READ | VM_WRITE)
            await do_user_addr_fault(w.mm, S390_BASE)
        ex.run_sync(setup(), w.kernel.cpus[0])

    def spawn(self, ex: Execution, w: World) -> None:
        k = w.kernel
        k.run_on(0, "khugepaged", retract_page_tables(w.mm.mapping("f"), 0))
        k.run_on(1, "fault", do_user_addr_fault(w.mm, S390_BASE + 2 * S390_SEG))
        for i in range(self.params["rcu_walkers"]):
            k.run_on(2 + i, f"walker/{i}", pte_offset_map_walk(w.mm, S390_BASE))


def _pte_table(mm: mm_struct, addr: int) -> PageTable | None:
    """The PTE table mapping ``addr``, read off the tree between steps."""
    t = mm.pgd
    last = len(mm.geometry.levels) - 1
    while isinstance(t, PageTable) and t.depth < last:
        t = t.entries.get(mm.geometry.index(t.depth, addr))
    return t if isinstance(t, PageTable) else None


class S390RetractHalves(_MmModel):
    """``pte-free-defer-fragments`` on s390 v6.6: a shared file mapped over two
    segments holds both 2K halves of one 4K page (the second fault took the free
    half from ``pgtable_list``).  One retractor per half frees its table with
    s390's ``pte_free_defer()`` while an RCU walker reads the first half and
    GUP-fast the second.  ``fragments`` is two by construction."""

    fail_nowait = False

    def ncpus(self) -> int:
        return 2 + self.params["rcu_walkers"] + self.params["gup_walkers"]

    def prepare(self, ex: Execution, w: World) -> None:
        async def setup() -> None:
            await do_mmap(w.mm, S390_BASE, 2 * S390_SEG, VM_READ | VM_WRITE | VM_SHARED,
                          anon=False, file="f")
            await do_user_addr_fault(w.mm, S390_BASE)
            await do_user_addr_fault(w.mm, S390_BASE + S390_SEG)
        ex.run_sync(setup(), w.kernel.cpus[0])
        first, second = (_pte_table(w.mm, S390_BASE + h * S390_SEG) for h in range(2))
        if first is None or second is None or first.page is not second.page:
            raise ModelViolation("model-limit", "the two PTE tables are not the halves "
                                 "of one page")

    def spawn(self, ex: Execution, w: World) -> None:
        k, f = w.kernel, w.mm.mapping("f")
        for half in range(2):
            k.run_on(half, f"khugepaged/{half}",
                     retract_page_tables(f, half * (S390_SEG >> 12)))
        cpu = 2
        for i in range(self.params["rcu_walkers"]):
            k.run_on(cpu, f"walker/{i}", _detached_table_walker(ex, w.mm, S390_BASE))
            cpu += 1
        for i in range(self.params["gup_walkers"]):
            k.run_on(cpu, f"gup/{i}", gup_fast(w.mm, S390_BASE + S390_SEG))
            cpu += 1

    def final_checks(self, ex: Execution, w: World) -> None:
        if any(p.freed and isinstance(p.payload, list) for p in w.kernel.alloc.pages):
            ex.sometimes("the fragment page was freed")


async def _detached_table_walker(ex: Execution, mm: mm_struct, addr: int) -> None:
    """pte_offset_map_walk() that, before unmapping, looks whether the PMD still
    points to the table it read (the non-vacuity check of pte-free-defer-fragments'
    walkers)."""
    geo = mm.geometry
    await rcu_read_lock()
    pmdt = await pmd_offset_lockless(mm, addr)
    if pmdt is not None:
        idx = geo.index(pmdt.depth, addr)
        pte = await __pte_offset_map(pmdt, idx)
        if pte is not None:
            await pte.load(geo.index(pte.depth, addr))
            if await pmdt.load(idx) is not pte:
                ex.sometimes("an RCU walker read a table already detached from its PMD")
            await rcu_read_unlock()                    # pte_unmap()
    await rcu_read_unlock()


def _v618_ipi() -> KernelConfig:
    return ERAS["v6.18"].replace(name="v6.18+ipi-fallback", table_free_one="ipi")


def _v613_native() -> KernelConfig:
    return ERAS["v6.13"].replace(name="v6.13-native", paravirt=False,
                                 mmu_gather_rcu_table_free=False)


def _v613_hypercall_no_rcu_free() -> KernelConfig:
    return ERAS["v6.13"].replace(name="v6.13-hypercall-no-rcu-free", tlb_flush="hypercall",
                                 mmu_gather_rcu_table_free=False)


_CONFIGS: dict[str, Callable[[], KernelConfig]] = {
    # mmu-gather-table-free
    "v6.18": lambda: ERAS["v6.18"],
    "pt-reclaim-ipi-fallback": _v618_ipi,
    "ipi": lambda: ERAS["v6.13"],
    "call_rcu": lambda: ERAS["v6.18"],
    "synchronize_rcu": lambda: ERAS["2026"].replace(name="2026-no-pt-reclaim",
                                                    pt_reclaim=False),
    "v6.13-native": _v613_native,
    "x86-native": _v613_native,
    "x86-native-gup-only": _v613_native,
    "x86-paravirt": lambda: ERAS["v6.13"].replace(name="v6.13-paravirt-hypercall",
                                                  tlb_flush="hypercall"),
    "x86-hypercall-no-rcu-free": _v613_hypercall_no_rcu_free,
    # khugepaged-gup-fast
    # The flush sends no IPI (x86 PARAVIRT's hypercall; arm64 broadcasts TLBI):
    # where Jann Horn's race lives.
    "no-ipi": lambda: ERAS["v6.5"].replace(name="v6.0-hypercall", retract_free="free",
                                           tlb_flush="hypercall"),
    "sync-one": lambda: ERAS["v6.5"].replace(name="v6.5-hypercall", tlb_flush="hypercall"),
    "pte-free-defer": lambda: ERAS["v6.18"].replace(name="v6.18-hypercall",
                                                    tlb_flush="hypercall"),
    # speculative-fault: the fault path is the scenario's own parameter
    "rcu-only": lambda: ERAS["v6.18"],
    "vma-lock": lambda: ERAS["v6.18"],
    "mmap-lock": lambda: ERAS["v6.18"].replace(name="v6.18-no-per-vma-lock",
                                               per_vma_lock=False),
    # s390-fragment-halves
    "naive-call-rcu": lambda: ERAS["v6.6"].replace(name="v6.6-generic-pte_free_defer",
                                                   arch_pte_free_defer=False),
    "v6.6-page-active": lambda: ERAS["v6.6"],
    "v6.7-one-table-per-page": lambda: ERAS["v6.6"].replace(name="v6.7"),
    # fork-vs-vma-fault
    "unlocked-fork": lambda: ERAS["v6.18"].replace(name="v6.4.0", fork_locks_vmas=False),
    "locked-fork": lambda: ERAS["v6.18"],
    # pt-reclaim
    "no-pmd-recheck": lambda: ERAS["v6.18"].replace(name="v6.18-no-check_pmd_state",
                                                    retract_check_pmd=False),
    "mid-scan-break": lambda: ERAS["v6.18"],
    "no-break-fix": lambda: ERAS["v6.18"].replace(name="v6.14-rc1", zap_break_fix=False),
}


def _maker(model: type[_MmModel], configs: Callable[[str], KernelConfig],
           geometries: Callable[[str], Geometry] = lambda _: X86_64,
           ) -> Callable[[str, dict[str, int]], Callable[[], Model]]:
    """A scenario's ``make``: one set-up cache per (variant, parameters)."""
    def make(variant: str, params: dict[str, int]) -> Callable[[], Model]:
        cfg = configs(variant)
        geo = geometries(variant)
        cache: SetupCache[World] = SetupCache()
        return lambda: model(cfg, params, cache, geo)
    return make


def _era(variant: str) -> KernelConfig:
    return ERAS[variant]


def _configured(variant: str) -> KernelConfig:
    return _CONFIGS[variant]()


_WALKER_PARAMS = (
    Param("rcu_walkers", 1, "CPUs walking with pte_offset_map() under RCU", 0, 2, deep=2),
    Param("gup_walkers", 1, "CPUs walking with GUP-fast, IRQs off", 0, 2),
)

RETRACT_WALKERS = Scenario(
    name="retract-walkers",
    title="khugepaged retracts a file range's PTE table while lockless walkers run",
    source="seed 000 (pte_free_defer() for retract_page_tables() without mmap_lock); "
           "mm/khugepaged.c retract_page_tables(); reference §5.1",
    params=_WALKER_PARAMS,
    variants=(
        Variant("v6.18", "pte_free_defer(): the table outlives every RCU reader", OK),
        Variant("v6.6", "the first release with pte_free_defer()", OK),
        Variant("v6.5", "tlb_remove_table_sync_one() then pte_free(): the IPI does not "
                "wait for an rcu_read_lock() walker", "use-after-free"),
    ),
    make=_maker(RetractWalkers, _era),
    notes=["""A shared file mapping of 2 MiB with one page mapped; khugepaged's
`collapse_file()` -> `retract_page_tables()` (under `i_mmap_lock_read()` only, since
v6.6) unmaps the page and unlinks the PTE table while an RCU `pte_offset_map()`
walker and GUP-fast look at it.  v6.5 sent `tlb_remove_table_sync_one()` and freed
at once: the IPI waits for the IRQ-off walker, not for the RCU one."""],
)

MREMAP_WALKERS = Scenario(
    name="mremap-walkers",
    title="mremap moves a whole PTE table while lockless walkers look at the old address",
    source="mm/mremap.c move_normal_pmd(); free_pgtables() of the old range",
    # A GUP-fast walker too takes the exhaustive search from ~6,000 to ~114,000
    # executions (about 100 s); --set gup_walkers=1 asks for it.
    params=(_WALKER_PARAMS[0],
            Param("gup_walkers", 0, "CPUs walking with GUP-fast, IRQs off", 0, 2, deep=1)),
    variants=(
        Variant("v6.18", "the moved table is never freed; the old upper tables wait "
                "for a grace period", OK),
        Variant("v6.13-native", "no RCU table free: the old PMD table goes by "
                "tlb_remove_page() after the flush IPI", "use-after-free"),
    ),
    make=_maker(MremapWalkers, _configured),
    notes=["""mremap moves a PMD-aligned 2 MiB mapping 512 GiB up: `move_normal_pmd()`
moves the PTE table itself, and the old range's upper tables are freed by the
unmap that ends `move_vma()`, while walkers look at the old address."""],
)

SPECULATIVE_FAULT = Scenario(
    name="speculative-fault",
    title="a page fault allocating page tables races munmap freeing them",
    source="seed 004 (linux-mm, May 2022: speculative page faults; Michel Lespinasse, "
           "Matthew Wilcox)",
    params=(Param("rcu_only", 0, "1: the fault holds only rcu_read_lock()", 0, 1),),
    variants=(
        Variant("rcu-only", "VMA lookup and table allocation under rcu_read_lock() alone",
                "leak", params=(("rcu_only", 1),)),
        Variant("vma-lock", "the agreed design: VMA found under RCU, vma_start_read(), "
                "fallback to mmap_lock; munmap write-locks the VMA first", OK),
        Variant("mmap-lock", "no per-VMA locks: the fault holds mmap_lock for read", OK),
    ),
    make=_maker(SpeculativeFault, _configured),
    notes=["""CPU 0 looks the VMA up and allocates PUD/PMD/PTE tables under
`rcu_read_lock()`; CPU 1 munmaps the VMA, freeing its tables after a grace period.
"...and now CPU 0 has stored a newly allocated PMD into a PUD that will be freed by
RCU" (Matthew Wilcox): the new table is left in a tree no VMA covers, never freed.
With the per-VMA lock the teardown waits for the fault (`vma_start_write()`), and
a fault that loses the race finds no VMA."""],
)

PT_RECLAIM = Scenario(
    name="pt-reclaim",
    title="MADV_DONTNEED frees an emptied PTE table (PT_RECLAIM) while khugepaged "
          "retracts it",
    source="seed 002 (PT_RECLAIM, Qi Zheng, Oct 2024); v6.14 check_pmd_state() in "
           "retract_page_tables()",
    params=(Param("retract", 1, "khugepaged retracts the table meanwhile", 0, 1),
            Param("faults", 0, "CPUs faulting the first page back in meanwhile", 0, 1),
            Param("breaks", 0, "1: zap_pte_range() may drop its lock mid-scan "
                  "(need_resched())", 0, 1)),
    variants=(
        Variant("v6.18", "retract re-checks the PMD under its lock (check_pmd_state())", OK),
        Variant("no-pmd-recheck", "retract takes the PTE lock of the table it saw before "
                "the PMD lock: PT_RECLAIM has freed it", "use-after-free"),
        Variant("mid-scan-break", "v6.18 where zap_pte_range() drops its lock mid-scan "
                "while a fault refills the table: the slow path rescans", OK,
                params=(("retract", 0), ("faults", 1), ("breaks", 1))),
        Variant("no-break-fix", "before the February 2025 fix: the fast path frees the "
                "refilled table", "page-table-check",
                params=(("retract", 0), ("faults", 1), ("breaks", 1))),
    ),
    make=_maker(ReclaimVsRetract, _configured),
    notes=["""A shared file range of one PTE table.  MADV_DONTNEED (per-VMA read lock)
zaps it and, with PT_RECLAIM, frees the empty table (fast path: PMD trylock under
the PTE lock; slow path: rescan under both); khugepaged's `retract_page_tables()`
(no mmap or VMA lock) retracts the same table.  v6.14 added `check_pmd_state()`
under the PMD lock before `pte_lockptr()`; without it the PTE lock is taken in a
table that reclaim has freed.  The February 2025 mid-scan break fix is
modelled by `need_resched()`, a choice the checker explores (`breaks` is how many
times it may say yes on a CPU; it is checked, as in the kernel, before each run of
`do_zap_pte_range()`, which skips consecutive none PTEs): without the fix the
fast path after a dropped lock frees a table a fault has refilled, which the
model's page-table check refuses; with it (`mid-scan-break`) the slow path
rescans and keeps the table.  All three threads at once (`--set retract=1 --set
faults=1 --set breaks=1`) is beyond the default budget of 200,000 executions."""],
)

S390_FRAGMENT_HALVES = Scenario(
    name="s390-fragment-halves",
    title="s390 2K page tables, two to a 4K page: pte_free_defer() while the other "
          "half is on the mm's pgtable_list",
    source="seeds 000 and 003; 8211dad62798 \"s390: add pte_free_defer() for pgtables "
           "sharing page\" (v6.6); d08d4e7cd6bf \"s390/mm: use full 4KB page for 2KB PTE\" "
           "(v6.7)",
    params=(Param("rcu_walkers", 1, "CPUs walking the retracted table under RCU", 0, 1),),
    variants=(
        Variant("naive-call-rcu", "the generic pte_free_defer(): call_rcu() on the page's "
                "pt_rcu_head, which shares storage with pt_list, while the other half keeps "
                "the page on pgtable_list", "rcu-head-clobbered"),
        Variant("v6.6-page-active", "merged in v6.6: PageActive keeps the page off the "
                "list; the page goes by call_rcu() once both halves are free", OK),
        Variant("v6.7-one-table-per-page", "v6.7: a 2K table in its own 4K page, nothing "
                "shared", OK),
    ),
    make=_maker(S390Halves, _configured,
                lambda v: S390 if v.startswith("v6.7") else S390_V66),
    notes=["""`pt_rcu_head` overlays `pt_list` (and `pmd_huge_pte`) in `struct ptdesc`: a
page may use its RCU head only once it is off every list.  On s390 before v6.7 a
page with one free 2K half sits on `mm->context.pgtable_list` for the next
allocation to take; queuing the page's head while it is listed corrupts the list
the moment the allocator unlinks it."""],
)

FORK_VS_VMA_FAULT = Scenario(
    name="fork-vs-vma-fault",
    title="fork copies page tables while a per-VMA-locked fault changes them",
    source="fb49c455323f \"fork: lock VMAs of the parent process when forking\" "
           "(Suren Baghdasaryan, 6.5-rc1 and 6.4.y; per-VMA locks came in 6.4)",
    params=(),
    variants=(
        Variant("unlocked-fork", "6.4.0: dup_mmap() does not write-lock the parent's "
                "VMAs", "anon-rmap"),
        Variant("locked-fork", "vma_start_write() on each parent VMA before it is "
                "copied: the fault falls back to mmap_lock and waits", OK),
    ),
    make=_maker(ForkVsFault, _configured),
    notes=["""The commit's example: "A concurrent page fault on a page newly marked
read-only by the page copy might trigger wp_page_copy() and a anon_vma_prepare(vma)
on the source vma, defeating the anon_vma_clone() that wasn't done because the
parent vma originally didn't have an anon_vma, but we now might end up copying a
pte entry for a page that has one."  Here the parent's private file mapping has
no anon_vma when fork duplicates the VMA; a write fault then gives it one and a
COW page, and the copy that follows takes that page into a child VMA without an
anon_vma."""],
)

FAULT_RACE = Scenario(
    name="fault-race",
    title="two page faults populate one empty PMD entry (pmd_install)",
    source="mm/memory.c __pte_alloc()/pmd_install(); reference §6",
    params=(),
    variants=(
        Variant("v6.18", "x86-64, the kernel on this machine: the loser frees its table", OK),
    ),
    make=_maker(FaultRace, _era),
    notes=["""Two page faults in one VMA populate the same empty PMD entry.  Both allocate
a PTE table; `pmd_install()` publishes one under the PMD lock and the loser frees
its unpublished table at once.  Nothing may leak, both pages must end up mapped,
every counter must balance."""],
)

MMU_GATHER_TABLE_FREE = Scenario(
    name="mmu-gather-table-free",
    title="munmap frees a page table through mmu_gather while GUP-fast and an RCU "
          "pte_offset_map() walker run",
    source="seed 000 (what MMU_GATHER_RCU_TABLE_FREE promises); seed 002 (PT_RECLAIM: "
           "the IPI does not wait for rcu_read_lock() walkers); mm/mmu_gather.c",
    params=_WALKER_PARAMS,
    variants=(
        Variant("v6.18", "batch by call_rcu; fallback call_rcu on pt_rcu_head", OK),
        Variant("pt-reclaim-ipi-fallback", "v6.18 with the IPI-only single-table fallback",
                "use-after-free"),
        Variant("ipi", "v6.13: the fallback is tlb_remove_table_sync_one() then free",
                "use-after-free"),
        Variant("call_rcu", "v6.14+ with PT_RECLAIM: the fallback queues pt_rcu_head", OK),
        Variant("synchronize_rcu", "2026 without PT_RECLAIM: the fallback waits for a "
                "grace period", OK),
        Variant("v6.13-native", "no RCU table free: tlb_remove_page() after the flush IPI",
                "use-after-free"),
        Variant("x86-native", "the same, as the issue names it", "use-after-free"),
        Variant("x86-native-gup-only", "no RCU table free, GUP-fast only: the flush IPI "
                "waits for IRQ-off walkers", OK, params=(("rcu_walkers", 0),)),
        Variant("x86-paravirt", "v6.13 PARAVIRT: hypercall flush, RCU table free, IPI "
                "fallback; GUP-fast only", OK, params=(("rcu_walkers", 0),)),
        Variant("x86-hypercall-no-rcu-free", "a hypercall flush sends no IPI: without RCU "
                "table free nothing holds back GUP-fast", "use-after-free",
                params=(("rcu_walkers", 0),)),
    ),
    make=_maker(MunmapWalkers, _configured),
    notes=["""munmap of a populated VMA (a neighbour keeps the PMD table, so one PTE table
is freed) races a GUP-fast walker (IRQs off) and a lockless `pte_offset_map()`
walker (`rcu_read_lock()` only).  The batch page of `tlb_remove_table()` may fail to
allocate (explored), so each era's single-table fallback is exercised: the IPI of
`tlb_remove_table_sync_one()` waits for IRQ-off walkers only; `call_rcu` and
`synchronize_rcu` wait for both.  Without RCU table free x86 frees tables like
pages after the TLB flush, which is an IPI on bare metal and a hypercall (no IPI at
all) under a hypervisor."""],
)

KHUGEPAGED_GUP_FAST = Scenario(
    name="khugepaged-gup-fast",
    title="khugepaged retracts a PTE table while GUP-fast walks it (IRQs off)",
    source="Jann Horn 2022 (v6.1), \"mm/khugepaged: fix GUP-fast interaction by sending "
           "IPI\": tlb_remove_table_sync_one() after pmdp_collapse_flush()",
    params=(Param("rcu_walkers", 0, "CPUs walking with pte_offset_map() under RCU", 0, 2),
            Param("gup_walkers", 1, "CPUs walking with GUP-fast, IRQs off", 0, 2)),
    variants=(
        Variant("no-ipi", "before v6.1: pmdp_collapse_flush() then pte_free(); the TLB "
                "flush sends no IPI (PARAVIRT hypercall, arm64 TLBI)", "use-after-free"),
        Variant("sync-one", "v6.1-v6.5: tlb_remove_table_sync_one() before pte_free()", OK),
        Variant("pte-free-defer", "v6.6+: pte_free_defer() after a grace period", OK),
    ),
    make=_maker(RetractWalkers, _configured),
    notes=["""The same retraction as `retract-walkers`, against GUP-fast alone, on a TLB
flush that sends no IPI (x86 PARAVIRT's hypercall, arm64's broadcast TLBI): without
`tlb_remove_table_sync_one()` nothing holds the table for an IRQ-off walker."""],
)
