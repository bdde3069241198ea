"""Scenario ``fragment-reuse-rcu`` (seed 003, June 2023): Jason Gunthorpe's design
for reusing freed page-table fragments through RCU, so that powerpc need not leak
fragments and s390 need not put a page on two lists at once.

A page of fragments is in one of three states: all fragments free (back to the
allocator), at least one free (on the mm's list), all used (on no list).  A freed
fragment waits for a grace period before it counts as free; the page's one
``rcu_head`` is always available, because the mm's list is linked through a
fragment already freed by RCU, not through the page.  The struct page keeps:

* ``rcu_todo``: the fragments the running RCU callback will free (non-zero means
  a callback is queued);
* ``next_todo``: fragments freed while it is queued, for the next grace period;
* ``free``: the fragments free now (only the callback sets bits);
* the mm, so the callback can put the page on the mm's list or take it off.

Variants: every update under the mm's spinlock; the same with atomics only (the
callback, without the lock, frees a page the allocator is taking a fragment from;
the "RCU already triggered?" test also races the hand-over of ``next_todo``);
and one that puts a freed fragment back on the list at once, without waiting for
the grace period.  Fragments carry a generation: a walker holding a fragment that
was freed and handed out again is caught as ``use-after-reuse``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..arch.powerpc.pgtable_frag import (
    H_PTE_FRAG_NR,
    PteFragment,
    pte_frag_destroy,
    pte_fragment_alloc,
    pte_free_defer,
)
from ..engine import UPDATE, Call, Execution, Model, ModelViolation, Op
from ..kernel import (
    GFP_PGTABLE_USER,
    Field,
    Kernel,
    KObject,
    Page,
    alloc_pages,
    call_rcu,
    rcu_barrier,
    rcu_head,
    rcu_read_lock,
    rcu_read_unlock,
    spin_lock,
    spin_unlock,
    spinlock_t,
)
from ..kernel import __free_page as free_page  # a method body would mangle __free_page
from ..kernel.atomic import atomic_fetch_or, atomic_or, atomic_read, atomic_t, atomic_xchg
from ..kernel.rcu import RcuCallback, rcu_sequential_gp
from ..mm.pgtable_generic import pmdp_collapse_flush
from ..mm.types import mm_struct
from .base import OK, Param, Scenario, Variant


class Frag:
    """A fragment handed out: the page, its index, and its generation."""

    __slots__ = ("gen", "index", "page")

    def __init__(self, page: Page, index: int, gen: int) -> None:
        self.page = page
        self.index = index
        self.gen = gen

    def __repr__(self) -> str:
        return f"frag {self.index} (gen {self.gen}) of pfn {self.page.pfn:#x}"


class FragPage:
    """The struct page fields of the design."""

    def __init__(self, page: Page, nfrags: int) -> None:
        self.page = page
        self.all = (1 << nfrags) - 1
        self.rcu_todo = atomic_t(page, "page->rcu_todo", 0)
        self.next_todo = atomic_t(page, "page->next_todo", 0)
        self.free = atomic_t(page, "page->free", 0)
        self.used = 0                      # bits handed out (the model's bookkeeping)
        self.gens = [0] * nfrags
        self.rcu = page.pt_rcu_head


class Mm:
    def __init__(self) -> None:
        self.obj = KObject("mm_struct", 1024)
        self.lock = spinlock_t("mm->context.lock", self.obj)
        self.list = Field(self.obj, "mm->context.frag_list", ())   # pages, some free


class Design:
    def __init__(self, name: str, nfrags: int) -> None:
        self.name = name
        self.nfrags = nfrags
        self.locked = name != "atomics-only"
        self.pages: list[FragPage] = []
        self.by_page: dict[int, FragPage] = {}

    # -- the callback ------------------------------------------------------------

    async def frag_rcu_cb(self, mm: Mm, fp: FragPage) -> None:
        """The RCU callback: the fragments of this grace period become free; a batch
        freed meanwhile is queued for the next; the page moves between states."""
        if self.locked:
            await spin_lock(mm.lock)
        done = await atomic_xchg(fp.rcu_todo, 0)
        await atomic_or(done, fp.free)
        nxt = await atomic_xchg(fp.next_todo, 0)
        if nxt:
            await atomic_fetch_or(nxt, fp.rcu_todo)
            await call_rcu(fp.rcu, self._cb(mm, fp))
        await self._place(mm, fp, done)
        if self.locked:
            await spin_unlock(mm.lock)

    def _cb(self, mm: Mm, fp: FragPage) -> RcuCallback:
        async def cb(head: rcu_head) -> None:
            await self.frag_rcu_cb(mm, fp)
        return cb

    async def _place(self, mm: Mm, fp: FragPage, freed: int) -> None:
        """all used -> some free: onto the mm's list (the list link lives in a freed
        fragment); some free -> all free, nothing pending: off the list, and the
        page goes back to the allocator (its last fragments' grace period is
        over: this runs in their callback)."""
        if not freed:
            return
        pages = await mm.list.load()
        free = await atomic_read(fp.free)
        pending = await atomic_read(fp.rcu_todo)
        if free == fp.all and not pending and not fp.used:
            await mm.list.store(tuple(p for p in pages if p is not fp))
            fp.page.payload = [None] * self.nfrags
            await free_page(fp.page)
        elif fp not in pages:
            await mm.list.store((*pages, fp))

    # -- freeing ---------------------------------------------------------------

    async def pte_free_defer(self, mm: Mm, frag: Frag) -> None:
        fp = self.by_page[frag.page.alive]
        bit = 1 << frag.index
        fp.used &= ~bit
        if self.name == "no-grace-period":
            # Back on the list at once: the next allocation may hand it out while
            # a walker that found it before the unlink still reads it.
            await spin_lock(mm.lock)
            await atomic_or(bit, fp.free)
            pages = await mm.list.load()
            if fp not in pages:
                await mm.list.store((*pages, fp))
            await spin_unlock(mm.lock)
            return
        if self.locked:
            await spin_lock(mm.lock)
        # "if non-zero then a RCU is already triggered": accumulate for the next.
        if await atomic_read(fp.rcu_todo):
            await atomic_or(bit, fp.next_todo)
        else:
            await atomic_fetch_or(bit, fp.rcu_todo)
            await call_rcu(fp.rcu, self._cb(mm, fp))
        if self.locked:
            await spin_unlock(mm.lock)

    # -- allocation ------------------------------------------------------------

    async def alloc(self, mm: Mm) -> Frag:
        """Take a free fragment from a page on the mm's list, else a new page."""
        await spin_lock(mm.lock)
        pages = await mm.list.load()
        frag: Frag | None = None
        if pages:
            fp = pages[0]
            free = await atomic_xchg(fp.free, 0)
            low = free & -free
            idx = low.bit_length() - 1
            if free & ~low:
                await atomic_or(free & ~low, fp.free)
            else:
                await mm.list.store(pages[1:])            # all used: off the list
            fp.used |= low
            fp.gens[idx] += 1
            frag = Frag(fp.page, idx, fp.gens[idx])
            await _publish(fp, frag)
        await spin_unlock(mm.lock)
        if frag is None:
            frag = await self.new_page(mm, 0, all_used=False)
            # Some free: the rest of the page goes on the mm's list.
            await spin_lock(mm.lock)
            pages = await mm.list.load()
            await mm.list.store((*pages, self.by_page[frag.page.alive]))
            await spin_unlock(mm.lock)
        return frag

    async def new_page(self, mm: Mm, index: int, all_used: bool = True) -> Frag:
        """A new page of fragments; ``all_used``: the set-up hands out every one, else
        only fragment ``index`` is used and the others are free."""
        page = await alloc_pages(GFP_PGTABLE_USER)
        assert page is not None
        fp = FragPage(page, self.nfrags)
        self.pages.append(fp)
        self.by_page[page.alive] = fp
        page.payload = [None] * self.nfrags
        fp.used = fp.all if all_used else 1 << index
        fp.free.value = fp.all & ~fp.used
        frags = [Frag(page, i, 0) for i in range(self.nfrags)]
        for f in frags:
            page.payload[f.index] = f
        return frags[index]


def _set_slot(fp: FragPage, frag: Frag) -> None:
    fp.page.check("fragment", "Write")
    fp.page.payload[frag.index] = frag


def _publish(fp: FragPage, frag: Frag) -> Op:
    """The reused fragment is initialised: whoever holds the old one now reads the
    new table's memory."""
    return Call(((fp.page.alive, UPDATE),), "init {1!r}", _set_slot, fp, frag)


def _check_frag(frag: Frag) -> None:
    slots = frag.page.payload
    frag.page.check("fragment")
    if slots[frag.index] is not frag:
        raise ModelViolation("use-after-reuse", f"{frag!r} was freed and handed out again "
                             f"as {slots[frag.index]!r} while a walker still read it")


class FragmentReuse:
    def __init__(self, design: str, params: dict[str, int]) -> None:
        self.d = Design(design, params["fragments"])

    def build(self, ex: Execution) -> None:
        k = self.kernel = Kernel(ex, 3)
        mm = self.mm = Mm()
        # Two PMD entries map fragments 0 and 1 of one page.
        self.pmd = [Field(mm.obj, f"pmd[{i}]", None) for i in range(2)]

        async def setup() -> None:
            f0 = await self.d.new_page(mm, 0)
            self.pmd[0].value = f0
            self.pmd[1].value = f0.page.payload[1]
        ex.run_sync(setup(), k.cpus[0])
        k.run_on(0, "khugepaged", self.retract())
        k.run_on(1, "fault", self.fault())
        k.run_on(2, "walker", self.walker())

    async def retract(self) -> None:
        """Unlink and pte_free_defer() both fragments, one after the other."""
        for i in range(2):
            frag = await pmdp_collapse_flush(self.pmd[i])
            assert isinstance(frag, Frag)
            await self.d.pte_free_defer(self.mm, frag)

    async def fault(self) -> None:
        frag = await self.d.alloc(self.mm)
        self.new = frag

    async def walker(self) -> None:
        """pte_offset_map() of pmd[0] under RCU, then a read of the table."""
        await rcu_read_lock()
        frag = await self.pmd[0].load()
        if isinstance(frag, Frag):
            await Call(((frag.page.alive, UPDATE),), "READ({0!r})", _check_frag, frag)
        await rcu_read_unlock()

    def finish(self, ex: Execution) -> None:
        ex.run_sync(rcu_barrier(), self.kernel.cpus[0])
        ex.run_sync(rcu_barrier(), self.kernel.cpus[0])   # a re-queued batch
        for fp in self.d.pages:
            if fp.page.freed:
                continue
            if fp.rcu_todo.value or fp.next_todo.value:
                raise ModelViolation("leak", f"pfn {fp.page.pfn:#x}: fragments "
                                     f"{fp.rcu_todo.value | fp.next_todo.value:#x} still "
                                     "wait for a callback that will never come")
            lost = fp.all & ~(fp.free.value | fp.used)
            if lost:
                raise ModelViolation("leak", f"pfn {fp.page.pfn:#x}: fragments {lost:#x} "
                                     "are neither free nor in use")


# -- memory: the design against powerpc's never-reuse ---------------------------------


@dataclass(frozen=True)
class MemoryComparison:
    """Pages of fragments held over one churn of allocations and frees, sampled after
    each round's grace period: the seed-003 design (spinlock variant) and powerpc's
    ``pte_fragment_alloc()``, which never hands out a freed fragment again."""

    fragments: int
    rounds: int
    seed: int
    tables: int                  # tables allocated over the churn
    design: tuple[float, int]    # (mean, peak) pages held
    powerpc: tuple[float, int]

    def lines(self) -> list[str]:
        (dm, dp), (pm, pp) = self.design, self.powerpc
        saved = 100 * (1 - dm / pm) if pm else 0.0
        return [f"memory: {self.rounds} rounds of seeded churn (seed {self.seed}, "
                f"{self.tables} tables, {self.fragments} fragments a 64 KiB page): the "
                f"design holds {dm:.1f} pages on average (peak {dp}), powerpc's never-reuse "
                f"{pm:.1f} (peak {pp}): {saved:.0f}% less memory, "
                f"{(pm - dm) * 64:.0f} KiB on average"]


def churn(fragments: int, rounds: int, seed: int) -> list[tuple[int, list[int]]]:
    """Per round: how many tables to allocate, then which live tables to free (by
    position in the live list), drawn from ``random.Random(seed)``.  The working set
    hovers around four pages' worth."""
    rng = random.Random(seed)
    live = 0
    out: list[tuple[int, list[int]]] = []
    for _ in range(rounds):
        n = rng.randint(0, fragments if live < 4 * fragments else fragments // 2)
        live += n
        frees = sorted(rng.sample(range(live), rng.randint(0, min(live, fragments))),
                       reverse=True)
        live -= len(frees)
        out.append((n, frees))
    return out


async def _churn(plan: list[tuple[int, list[int]]], alloc: Callable[[], Awaitable[Any]],
                 free: Callable[[Any], Awaitable[None]], k: Kernel) -> list[int]:
    live: list[Any] = []
    held: list[int] = []
    for n, frees in plan:
        for _ in range(n):
            live.append(await alloc())
        for i in frees:
            await free(live.pop(i))
        await rcu_sequential_gp()
        held.append(sum(1 for p in k.alloc.pages if not p.freed))
    for t in live:
        await free(t)
    await rcu_sequential_gp()
    return held


Held = tuple[Kernel, list[int]]


def _design_held(plan: list[tuple[int, list[int]]], fragments: int) -> Held:
    k = Kernel(None, 1, sequential=True)
    d, mm = Design("spinlock", fragments), Mm()
    return k, k.run(_churn(plan, lambda: d.alloc(mm), lambda f: d.pte_free_defer(mm, f), k))


def _powerpc_held(plan: list[tuple[int, list[int]]], fragments: int) -> Held:
    k = Kernel(None, 1, sequential=True)
    mm = mm_struct()

    async def alloc() -> PteFragment:
        frag = await pte_fragment_alloc(mm, 0, fragments)
        assert frag is not None
        return frag

    held: list[int] = k.run(_churn(plan, alloc, lambda f: pte_free_defer(mm, f), k))
    cached = mm.context.pte_frag.value
    if cached is not None:                 # the mm's cached page, as at exit
        k.run(pte_frag_destroy(cached, fragments))
    return k, held


def compare_memory(fragments: int = H_PTE_FRAG_NR, rounds: int = 200,
                   seed: int = 1) -> MemoryComparison:
    """Run one churn through both allocators on a sequential kernel; both must give
    every page back at the end."""
    plan = churn(fragments, rounds, seed)
    stats: list[tuple[float, int]] = []
    for which, run in (("design", _design_held), ("powerpc", _powerpc_held)):
        k, held = run(plan, fragments)
        left = [p for p in k.alloc.pages if not p.freed]
        if left:
            raise ModelViolation("leak", f"{which}: {len(left)} page(s) of fragments "
                                 "never freed after the churn")
        stats.append((sum(held) / len(held), max(held)))
    return MemoryComparison(fragments, rounds, seed, sum(n for n, _ in plan),
                            stats[0], stats[1])


def _measure() -> list[str]:
    return compare_memory().lines()


def _make(variant: str, params: dict[str, int]) -> Callable[[], Model]:
    return lambda: FragmentReuse(variant, params)


SCENARIO = Scenario(
    name="fragment-reuse-rcu",
    title="reusing freed page-table fragments through RCU (three page states, two "
          "bitmasks, the list link inside a freed fragment)",
    source="seed 003 (linux-mm, June 2023: Jason Gunthorpe, answering Hugh Dickins)",
    params=(Param("fragments", 2, "fragments per page", 2, 4, deep=3),),
    variants=(
        Variant("spinlock", "every mask and list update under mm->context.lock", OK),
        Variant("atomics-only", "masks by atomics, the callback without the mm's lock: "
                "it frees the all-free page while an allocation takes a fragment from it "
                "(a free that sees a callback queued can also strand its bit in next_todo)",
                "use-after-free"),
        Variant("no-grace-period", "a freed fragment goes back on the list at once",
                "use-after-reuse"),
    ),
    make=_make,
    measure=_measure,
    notes=["""khugepaged unlinks and frees two fragments of one page with
`pte_free_defer()`; a fault allocates a fragment (reusing one from the mm's list
when the design allows); a walker reads the first fragment under `rcu_read_lock()`.
The checked design reuses a freed fragment one grace period after its free, where
powerpc never reuses one (a page goes only when all its fragments are freed)."""],
)
