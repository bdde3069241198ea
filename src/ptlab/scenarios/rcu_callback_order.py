"""Scenario ``rcu-callback-order`` (seed 000, June 2023).

"RCU callbacks are not ordered": a design that returns a freed page-table
fragment to its mm's pool from an RCU callback reaches back to the mm, and the mm
itself may be freed by an earlier-running callback.  Freeing the mm with
``call_rcu()`` does not order it after the fragment callbacks; ``rcu_barrier()``
first does.  A global per-CPU pool has no mm back-pointer, but then a fragment
freed by one mm is handed to another: one page's fragments end up used by two
memcgs, while the page is charged to one (the memcg oracle).

The model: mm A (memcg "a") frees a fragment with ``pte_free_defer()`` and exits;
mm B (memcg "b") allocates a fragment meanwhile.  Each fragment has its own
``rcu_head`` (kept in the freed fragment's memory, seed 003), so the heads are
never shared; what is at stake is only the order of the callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..engine import Execution, Model, ModelViolation
from ..kernel import (
    GFP_PGTABLE_USER,
    Field,
    Kernel,
    KObject,
    Page,
    alloc_pages,
    call_rcu,
    kfree,
    rcu_barrier,
    rcu_head,
    spin_lock,
    spin_unlock,
    spinlock_t,
)
from .base import OK, Param, Scenario, Variant

FRAGS = 2          # fragments per page (the protocol does not depend on the number)


class Fragment(KObject):
    """One page-table fragment; its ``rcu_head`` lives in the fragment itself."""

    __slots__ = ("index", "page", "rcu")

    def __init__(self, page: Page, index: int) -> None:
        KObject.__init__(self, "pte fragment", 4096 // FRAGS)
        self.page = page
        self.index = index
        self.rcu = rcu_head(self, f"fragment {index} rcu_head")


@dataclass
class Mm:
    """The part of ``mm_struct`` the pools need: its memcg, its lock, its pool."""

    obj: KObject
    memcg: str
    lock: spinlock_t
    pool: Field            # a tuple of free fragments
    used: list[Fragment]


class Pools:
    """Where freed fragments go: the mm's own pool (per-mm designs) or one global
    per-CPU pool (no back-pointer)."""

    def __init__(self, design: str) -> None:
        self.design = design
        self.owner = KObject("percpu pte_frag pool", 64)
        self.global_pool = Field(self.owner, "this_cpu(pte_frag_pool)", ())
        self.back: dict[int, Mm] = {}       # fragment -> mm (the back-pointer)


def _new_mm(name: str, memcg: str) -> Mm:
    obj = KObject("mm_struct", 1024)
    return Mm(obj, memcg, spinlock_t(f"{name}->context.lock", obj),
              Field(obj, f"{name}->context.frag_pool", ()), [])


async def _push(pool: Field, frag: Fragment) -> None:
    await pool.store((*await pool.load(), frag))


async def pte_free_defer_cb_mm(head: rcu_head, pools: Pools) -> None:
    """Per-mm pool: the callback returns the fragment to its mm's pool, under the
    mm's lock -- it reaches back to the mm."""
    frag = head.owner
    assert isinstance(frag, Fragment)
    mm = pools.back[frag.alive]
    await spin_lock(mm.lock)
    await _push(mm.pool, frag)
    await spin_unlock(mm.lock)


async def pte_free_defer_cb_global(head: rcu_head, pools: Pools) -> None:
    """Global per-CPU pool: no mm to reach back to."""
    frag = head.owner
    assert isinstance(frag, Fragment)
    await _push(pools.global_pool, frag)


async def alloc_fragment(mm: Mm, pools: Pools) -> Fragment:
    """Take a free fragment from the pool the design uses, else a new page charged
    to the mm's memcg."""
    pool = pools.global_pool if pools.design == "global-pool" else mm.pool
    if pools.design != "global-pool":
        await spin_lock(mm.lock)
    free = await pool.load()
    frag: Fragment | None = None
    if free:
        frag = free[0]
        await pool.store(free[1:])
    if pools.design != "global-pool":
        await spin_unlock(mm.lock)
    if frag is None:
        page = await alloc_pages(GFP_PGTABLE_USER, 0, memcg=mm.memcg)
        assert page is not None
        frags = [Fragment(page, i) for i in range(FRAGS)]
        page.payload = frags
        frag = frags[0]
        await _push(pool, frags[1])
    pools.back[frag.alive] = mm
    mm.used.append(frag)
    return frag


async def free_mm_rcu(head: rcu_head) -> None:
    await kfree(head.owner, head)


class RcuCallbackOrder:
    def __init__(self, design: str, params: dict[str, int]) -> None:
        self.design = design
        self.params = params

    def build(self, ex: Execution) -> None:
        k = self.kernel = Kernel(ex, 2)
        pools = self.pools = Pools(self.design)
        a = self.a = _new_mm("mmA", "a")
        self.b = _new_mm("mmB", "b")
        self.mm_rcu = rcu_head(a.obj, "mmA->rcu")
        self.frag: Fragment | None = None

        async def setup() -> None:
            self.frag = await alloc_fragment(a, pools)
        ex.run_sync(setup(), k.cpus[0])
        k.run_on(0, "exit/mmA", self.exit_a())
        k.run_on(1, "fault/mmB", self.fault_b())

    async def exit_a(self) -> None:
        """mm A's last table goes by pte_free_defer(), then the mm itself."""
        frag = self.frag
        assert frag is not None
        self.a.used.remove(frag)
        cb: Callable[[rcu_head], object]
        if self.design == "global-pool":
            async def cb(head: rcu_head) -> None:
                await pte_free_defer_cb_global(head, self.pools)
        else:
            async def cb(head: rcu_head) -> None:
                await pte_free_defer_cb_mm(head, self.pools)
        await call_rcu(frag.rcu, cb)
        if self.design == "rcu-barrier":
            await rcu_barrier()                  # every callback queued so far has run
            await kfree(self.a.obj)
        else:
            await call_rcu(self.mm_rcu, free_mm_rcu)

    async def fault_b(self) -> None:
        for _ in range(self.params["allocs"]):
            await alloc_fragment(self.b, self.pools)

    def finish(self, ex: Execution) -> None:
        ex.run_sync(rcu_barrier(), self.kernel.cpus[0])
        # The memcg oracle: a page's fragments in use belong to the page's memcg.
        for mm in (self.a, self.b):
            for frag in mm.used:
                if frag.page.memcg != mm.memcg:
                    raise ModelViolation(
                        "memcg-mixed", f"a fragment of pfn {frag.page.pfn:#x}, charged to "
                        f"memcg {frag.page.memcg!r}, is a page table of memcg {mm.memcg!r}")


def _make(variant: str, params: dict[str, int]) -> Callable[[], Model]:
    return lambda: RcuCallbackOrder(variant, params)


SCENARIO = Scenario(
    name="rcu-callback-order",
    title="an mm freed by RCU while fragment callbacks still reach back to it",
    source="seed 000 (linux-mm, June 2023: RCU callbacks are not ordered; per-CPU "
           "fragment pools and memcg accounting)",
    params=(Param("allocs", 2, "fragments mm B allocates meanwhile", 1, 3, deep=3),),
    variants=(
        Variant("call-rcu-mm", "per-mm pool; the mm freed with call_rcu(): callbacks "
                "run in any order", "use-after-free"),
        Variant("rcu-barrier", "per-mm pool; rcu_barrier() before the mm is freed", OK),
        Variant("global-pool", "a global per-CPU pool, no mm back-pointer: fragments of "
                "one page reach two memcgs", "memcg-mixed"),
    ),
    make=_make,
    notes=["""Per-mm pools need the mm alive when a fragment's callback runs; RCU does not
order callbacks, so `call_rcu()` of the mm may run first.  `rcu_barrier()` waits
for every callback queued before it.  A global pool needs no mm, but then a
fragment of a page charged to one memcg becomes a page table of another."""],
)
