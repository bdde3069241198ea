"""The ways of freeing a powerpc fragment after a grace period that seed 001 discusses.

Only :func:`pgtable_frag.pte_free_defer` (PG_active) was merged (v6.6).  The others
are modelled from the mails that proposed them, line by line where code was posted.
Each takes ``(mm, pgtable)`` like ``pte_free_defer()``.
"""

from __future__ import annotations

from ...kernel import (
    __GFP_NOWARN,
    GFP_KERNEL,
    GFP_NOWAIT,
    Field,
    KObject,
    Page,
    __free_page,
    atomic_add_return,
    atomic_dec,
    atomic_fetch_or,
    atomic_sub_return,
    atomic_t,
    atomic_xchg,
    call_rcu,
    kfree,
    kmalloc,
    pgtable_pte_page_dtor,
    rcu_head,
    spin_lock,
    spin_unlock,
    spinlock_t,
)
from ...mm.mmu_gather import tlb_remove_table_sync_one
from ...mm.types import mm_struct
from .pgtable_frag import PteFragment, pte_fragment_free_v65

# -- naive: the generic pte_free_defer() of mm/pgtable-generic.c on powerpc -----------


async def pte_free_now_generic(head: rcu_head) -> None:
    """mm/pgtable-generic.c: pte_free_now(): ``pte_free(NULL, (pgtable_t)page)``; on
    powerpc ``pte_free()`` is ``pte_fragment_free(table, 0)``."""
    page = head.owner
    assert isinstance(page, Page)
    await pte_fragment_free_v65(page.payload[0], 0)


async def pte_free_defer_naive(mm: mm_struct, pgtable: PteFragment) -> None:
    """mm/pgtable-generic.c (v6.6 series, patch 04/12): ``call_rcu(&page->rcu_head,
    pte_free_now)``.  "This can't be safe (on ppc)": two fragments of one page
    deferred together queue the page's single rcu_head twice."""
    await call_rcu(pgtable.page.pt_rcu_head, pte_free_now_generic)


# -- frag-refcount: Hugh Dickins' [PATCH 05/12] v1/v2 (seed 001) -----------------------

PTE_FREE_DEFERRED = 0x10000  # beyond any PTE_FRAG_NR


async def pte_free_now_frag_refcount(head: rcu_head) -> None:
    """pte_free_now() of the posted patch: subtract our deferral; if more arrived
    during the grace period, fold them into one and defer once more."""
    page = head.owner
    assert isinstance(page, Page)
    refcount = await atomic_sub_return(PTE_FREE_DEFERRED - 1, page.pt_frag_refcount)
    if refcount < PTE_FREE_DEFERRED:
        await pte_fragment_free_v65(page.payload[0], 0)
        return
    # One page may be shared between PTE_FRAG_NR pagetables.  At least one more call
    # to pte_free_defer() came in while we were already deferring, so the free must
    # be deferred again; but just for one grace period, however many calls came in.
    while refcount >= PTE_FREE_DEFERRED + PTE_FREE_DEFERRED:
        refcount = await atomic_sub_return(PTE_FREE_DEFERRED, page.pt_frag_refcount)
    # Remove that refcount of 1 left for fragment freeing above
    await atomic_dec(page.pt_frag_refcount)
    await call_rcu(page.pt_rcu_head, pte_free_now_frag_refcount)


async def pte_free_defer_frag_refcount(mm: mm_struct, pgtable: PteFragment) -> None:
    """pte_free_defer() of the posted patch: convert our refcount of 1 to one of
    PTE_FREE_DEFERRED, and call_rcu() only when the rcu_head is not already in use."""
    page = pgtable.page
    if await atomic_add_return(PTE_FREE_DEFERRED - 1, page.pt_frag_refcount) < \
            PTE_FREE_DEFERRED + PTE_FREE_DEFERRED:
        await call_rcu(page.pt_rcu_head, pte_free_now_frag_refcount)


# -- a side structure with pending/free bitmasks (Jason Gunthorpe, seed 001) ----------


class Page64k(KObject):
    """``struct 64k_page { u8 free_pages; u8 pending_rcu_free_pages; struct rcu_head head; }``,
    allocated beside each fragmented page and found through ``page->private``."""

    __slots__ = (
        "cur",
        "free_pages",
        "head",
        "lock",
        "next",
        "nr",
        "page",
        "pending_rcu_free_pages",
    )

    def __init__(self, page: Page, nr: int) -> None:
        KObject.__init__(self, "struct 64k_page", 24)
        self.page = page
        self.nr = nr
        self.free_pages = Field(self, "64k_page->free_pages", 0)
        self.pending_rcu_free_pages = atomic_t(self, "64k_page->pending_rcu_free_pages", 0)
        self.head = rcu_head(self, "64k_page->head")
        # Used only by the two-mask design below.
        self.lock = spinlock_t("64k_page->lock", self)
        self.cur = Field(self, "64k_page->cur_rcu_free", 0)
        self.next = Field(self, "64k_page->next_rcu_free", 0)


async def alloc_page64k(page: Page, nr: int) -> None:
    """Allocate the side structure with the page (GFP_KERNEL: it cannot fail here)."""
    side = await kmalloc("struct 64k_page", 24, GFP_KERNEL, lambda: Page64k(page, nr))
    page.private = side


async def free_pgea(side: Page64k) -> None:
    """``free_pgea(64k_page)``: free the fragmented page and its side structure."""
    await pgtable_pte_page_dtor(side.page)
    await __free_page(side.page)
    await kfree(side, side.head)


async def rcu_func_as_written(head: rcu_head) -> None:
    """``rcu_func()``: ``free_pages |= atomic_xchg(0, &pending_rcu_free_pages)``;
    free the page once every fragment is free."""
    side = head.owner
    assert isinstance(side, Page64k)
    pending = await atomic_xchg(side.pending_rcu_free_pages, 0)
    free = await side.free_pages.load() | pending
    await side.free_pages.store(free)
    if free == (1 << side.nr) - 1:
        await free_pgea(side)


async def pte_free_defer_pending_mask_as_written(mm: mm_struct, pgtable: PteFragment) -> None:
    """``free_sub_page(sub_id)`` exactly as sketched in seed 001::

        if (atomic_fetch_or(1 << sub_id, &64k_page->pending_rcu_free_pages))
             call_rcu(&64k_page->head)

    The condition is inverted: the head is queued only when a free was *already*
    pending.  With two fragments that happens to work: the first free queues nothing,
    the second queues the head and the callback frees both.  With three (the
    variant's setting) a third free arriving after the callback ran queues nothing,
    and the page is never freed: the checker reports this leak first.  A third free
    arriving before the callback runs queues the head a second time (double
    call_rcu) instead; a single deferred fragment is never freed either.
    """
    side = pgtable.page.private
    assert isinstance(side, Page64k)
    if await atomic_fetch_or(1 << pgtable.index, side.pending_rcu_free_pages):
        await call_rcu(side.head, rcu_func_as_written)


async def pte_free_defer_pending_mask(mm: mm_struct, pgtable: PteFragment) -> None:
    """The sketch with its condition fixed: queue the head only when no free was
    pending (``if (!atomic_fetch_or(...)) call_rcu(...)``).

    Still unsafe.  A fragment whose free arrives while the head is queued sets its
    pending bit; the callback's ``atomic_xchg()`` collects that bit too and frees the
    page, but the grace period the callback waited for may have started *before*
    that fragment was unlinked, so an ``rcu_read_lock()`` walker that found the
    fragment after the grace period began can still be reading it: a use-after-free.
    Fixing the condition is not enough; bits that arrive during a grace period need
    a grace period of their own (see ``pending_mask_two_masks``).
    """
    side = pgtable.page.private
    assert isinstance(side, Page64k)
    if not await atomic_fetch_or(1 << pgtable.index, side.pending_rcu_free_pages):
        await call_rcu(side.head, rcu_func_as_written)


async def rcu_func_two_masks(head: rcu_head) -> None:
    """The callback of the two-mask design: the fragments queued for this grace
    period are free now; those that came in meanwhile get a grace period of their own."""
    side = head.owner
    assert isinstance(side, Page64k)
    await spin_lock(side.lock)
    free = await side.free_pages.load() | await side.cur.load()
    await side.free_pages.store(free)
    nxt = await side.next.load()
    await side.cur.store(nxt)
    await side.next.store(0)
    if nxt:
        await call_rcu(side.head, rcu_func_two_masks)
    await spin_unlock(side.lock)
    if free == (1 << side.nr) - 1:
        await free_pgea(side)


async def pte_free_defer_pending_mask_two_masks(mm: mm_struct, pgtable: PteFragment) -> None:
    """The side structure made correct with Jason Gunthorpe's refinement in seed 003:
    a "current RCU free" mask (non-zero: the head is queued) and a "next RCU free"
    mask accumulating fragments freed while it is, under a lock in the side structure."""
    side = pgtable.page.private
    assert isinstance(side, Page64k)
    bit = 1 << pgtable.index
    await spin_lock(side.lock)
    cur = await side.cur.load()
    if cur:
        await side.next.store(await side.next.load() | bit)
    else:
        await side.cur.store(bit)
        await call_rcu(side.head, rcu_func_two_masks)
    await spin_unlock(side.lock)


# -- one rcu_head per table, allocated when needed (seed 001) --------------------------


class PteRcu(KObject):
    """A separately allocated ``struct rcu_head`` for one table."""

    __slots__ = ("head", "table")

    def __init__(self, table: PteFragment) -> None:
        KObject.__init__(self, "struct pte_rcu", 24)
        self.table = table
        self.head = rcu_head(self, f"pte_rcu(frag {table.index})->head")


async def pte_free_now_per_table(head: rcu_head) -> None:
    obj = head.owner
    assert isinstance(obj, PteRcu)
    await pte_fragment_free_v65(obj.table, 0)
    await kfree(obj, obj.head)


async def pte_free_defer_rcu_head_per_table(mm: mm_struct, pgtable: PteFragment) -> None:
    """"Or simply allocate as many rcu_heads as page tables": allocate one with
    GFP_NOWAIT (pte_free_defer() runs where "allocating extra memory cannot be relied
    upon"), and when that fails fall back as ``tlb_remove_table_one()`` did: an IPI,
    then free at once.  The IPI waits for IRQ-disabled walkers only, so an
    ``rcu_read_lock()`` walker (``pte_offset_map()``) can still be reading the table."""
    obj = await kmalloc("struct pte_rcu", 24, GFP_NOWAIT | __GFP_NOWARN,
                        lambda: PteRcu(pgtable))
    if obj is None:
        await tlb_remove_table_sync_one()
        await pte_fragment_free_v65(pgtable, 0)
        return
    assert isinstance(obj, PteRcu)
    await call_rcu(obj.head, pte_free_now_per_table)
