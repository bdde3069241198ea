"""powerpc book3s64 (v6.6) page tables on the page-table tree (ptlab.mm): PTE
tables from arch/powerpc/mm/pgtable-frag.c, PMD tables from
arch/powerpc/mm/book3s64/pgtable.c, the caches dropped by
arch/powerpc/mm/book3s64/mmu_context.c.

The protocol of pgtable_frag.py (which the pte-free-defer-fragments scenario runs
on bare fields), handing out :class:`~ptlab.mm.types.PageTable` objects instead:

* ``PTE_FRAG_NR`` / ``PMD_FRAG_NR`` are the geometry's ``Level.per_page`` (hash
  64K: 16 and 4; radix 64K: 256 and 16);
* ``mm->context.pte_frag`` / ``pmd_frag`` hold a :class:`FragCursor`, the next
  unused fragment of the cached page, under ``mm->page_table_lock``;
* a fresh page pre-charges ``pt_frag_refcount`` with every fragment; fragments are
  never handed out again; the page (its ctor ran once, so NR_PAGETABLE counts
  pages) is freed when the count reaches 0, after a grace period if
  ``pte_free_defer()`` set PG_active;
* ``page.payload`` has one slot per fragment, holding the table handed out there
  until the page is freed: a fragment is never handed out again, so a stale
  pointer to a released fragment reads dead but stable memory (what
  ``pte_free_defer()`` relies on) until the page goes, and is then a
  use-after-free;
* the split lock is the page's, shared by its fragments (``pte_lockptr()`` is
  ``ptlock_ptr(page_ptdesc(pmd_page(*pmd)))``): it lives in ``page.private``, the
  word ``ptdesc->ptl`` overlays.
"""

from __future__ import annotations

from ...engine import ADD, Call, ModelViolation
from ...kernel import (
    GFP_PGTABLE_USER,
    Field,
    Page,
    SetPageActive,
    TestClearPageActive,
    __free_page,
    alloc_pages,
    atomic_dec_and_test,
    atomic_read,
    atomic_set,
    atomic_sub_and_test,
    call_rcu,
    current_kernel,
    rcu_head,
    spin_lock,
    spin_unlock,
    spinlock_t,
)
from ...kernel.page_alloc import mod_nr_pagetable
from ...mm.types import PageTable, mm_struct


class FragCursor:
    """What ``mm->context.pte_frag`` / ``pmd_frag`` point to: fragment ``index`` of
    ``page``, the next one to hand out (never changed in place)."""

    __slots__ = ("index", "page")

    def __init__(self, page: Page, index: int) -> None:
        self.page = page
        self.index = index

    def __repr__(self) -> str:
        return f"frag(pfn {self.page.pfn:#x}, {self.index})"


def _pte_depth(mm: mm_struct) -> int:
    return len(mm.geometry.levels) - 1


def _cache(mm: mm_struct, depth: int) -> Field:
    return mm.context.pte_frag if depth == _pte_depth(mm) else mm.context.pmd_frag


def _frag_nr(mm: mm_struct, depth: int) -> int:
    return mm.geometry.levels[depth].per_page


def _init_ptdesc(mm: mm_struct, page: Page, depth: int) -> None:
    """A fresh page's split lock (``ptlock_init()`` in its ctor) and empty slots."""
    lv = mm.geometry.levels[depth]
    split = mm.config.split_pte_ptlocks if lv.name == "pte" else mm.config.split_pmd_ptlocks
    page.private = spinlock_t(f"{lv.name} ptl(pfn {page.pfn:#x})", page) if split else None
    page.payload = [None] * lv.per_page


def _hand_out(mm: mm_struct, page: Page, index: int, depth: int, addr: int) -> PageTable:
    lv = mm.geometry.levels[depth]
    table = PageTable(mm, page, depth, lv.name, addr & lv.mask, lv.table_bytes, index,
                      page.private)
    page.payload[index] = table
    return table


async def _get_from_cache(mm: mm_struct, depth: int) -> FragCursor | None:
    nr = _frag_nr(mm, depth)
    if nr == 1:
        return None
    cache = _cache(mm, depth)
    await spin_lock(mm.page_table_lock)
    ret: FragCursor | None = await cache.load()
    if ret is not None:
        nxt = ret.index + 1
        # If we have taken up all the fragments mark PTE page NULL
        await cache.store(None if nxt == nr else FragCursor(ret.page, nxt))
    await spin_unlock(mm.page_table_lock)
    return ret


async def get_pte_from_cache(mm: mm_struct) -> FragCursor | None:
    """arch/powerpc/mm/pgtable-frag.c: get_pte_from_cache(): take the next fragment
    of the cached page, if any."""
    return await _get_from_cache(mm, _pte_depth(mm))


async def get_pmd_from_cache(mm: mm_struct) -> FragCursor | None:
    """arch/powerpc/mm/book3s64/pgtable.c: get_pmd_from_cache()."""
    return await _get_from_cache(mm, _pte_depth(mm) - 1)


async def _alloc_for_cache(mm: mm_struct, depth: int) -> Page | None:
    nr = _frag_nr(mm, depth)
    page = await alloc_pages(GFP_PGTABLE_USER, 0)   # PGALLOC_GFP | __GFP_ACCOUNT
    if page is None:
        return None
    _init_ptdesc(mm, page, depth)
    label = "pagetable_" + mm.geometry.levels[depth].name + "_ctor(pfn {0.pfn:#x})"
    await mod_nr_pagetable(page, 1, label)
    await atomic_set(page.pt_frag_refcount, 1)
    # if we support only one fragment just return the allocated page.
    if nr == 1:
        return page
    cache = _cache(mm, depth)
    await spin_lock(mm.page_table_lock)
    # If we find the cache set, we return the allocated page with single fragment
    # count: its other fragments are never used.
    if await cache.load() is None:
        await atomic_set(page.pt_frag_refcount, nr)
        await cache.store(FragCursor(page, 1))
    await spin_unlock(mm.page_table_lock)
    return page


async def __alloc_for_ptecache(mm: mm_struct) -> Page | None:
    """arch/powerpc/mm/pgtable-frag.c: __alloc_for_ptecache(mm, 0): a fresh page;
    cache its other fragments unless another thread filled the cache meanwhile."""
    return await _alloc_for_cache(mm, _pte_depth(mm))


async def __alloc_for_pmdcache(mm: mm_struct) -> Page | None:
    """arch/powerpc/mm/book3s64/pgtable.c: __alloc_for_pmdcache()."""
    return await _alloc_for_cache(mm, _pte_depth(mm) - 1)


async def _fragment_alloc(mm: mm_struct, depth: int, addr: int) -> PageTable | None:
    cur = await _get_from_cache(mm, depth)
    if cur is not None:
        return _hand_out(mm, cur.page, cur.index, depth, addr)
    page = await _alloc_for_cache(mm, depth)
    return None if page is None else _hand_out(mm, page, 0, depth, addr)


async def pte_fragment_alloc(mm: mm_struct, addr: int) -> PageTable | None:
    """arch/powerpc/mm/pgtable-frag.c: pte_fragment_alloc(mm, 0) (``pte_alloc_one()``);
    ``addr`` only names the table in reports."""
    return await _fragment_alloc(mm, _pte_depth(mm), addr)


async def pmd_fragment_alloc(mm: mm_struct, addr: int) -> PageTable | None:
    """arch/powerpc/mm/book3s64/pgtable.c: pmd_fragment_alloc(mm, vmaddr)
    (``pmd_alloc_one()``)."""
    return await _fragment_alloc(mm, _pte_depth(mm) - 1, addr)


def _deferred(nbytes: int) -> None:
    current_kernel().alloc.pt_bytes_deferred += nbytes


async def _deferred_stat(page: Page, sign: int) -> None:
    """A page that goes by RCU takes its handed-out tables with it: their bytes
    wait for the grace period (the model's pt_bytes_deferred) from the call_rcu()
    to pte_free_now()."""
    nbytes = sum(t.size for t in page.payload if t is not None)
    if nbytes:
        await Call(((current_kernel().alloc.nr_pagetable_loc, ADD),),
                   "pt_bytes_deferred {0:+}", _deferred, sign * nbytes)


async def _free_page(page: Page, level: str) -> None:
    """``pagetable_{pte,pmd}_dtor(); pagetable_free()``: every fragment goes."""
    await mod_nr_pagetable(page, -1, "pagetable_" + level + "_dtor(pfn {0.pfn:#x})")
    await __free_page(page)
    slots: list[PageTable | None] = page.payload
    for i in range(len(slots)):
        slots[i] = None


async def _fragment_put(table: PageTable) -> bool:
    """``BUG_ON(atomic_read(&pt_frag_refcount) <= 0); atomic_dec_and_test()``: True
    when this was the page's last reference."""
    page = table.page
    if await atomic_read(page.pt_frag_refcount) <= 0:
        raise ModelViolation("bug-on", "kernel BUG at arch/powerpc/mm/pgtable-frag.c: "
                             "BUG_ON(atomic_read(&ptdesc->pt_frag_refcount) <= 0)")
    return bool(await atomic_dec_and_test(page.pt_frag_refcount))


async def pte_free_now(head: rcu_head) -> None:
    """arch/powerpc/mm/pgtable-frag.c: pte_free_now() (v6.6), as the RCU callback:
    ``pagetable_pte_dtor(); pagetable_free()`` (called directly, it is
    ``_free_page()``, with nothing deferred to account)."""
    page = head.owner
    assert isinstance(page, Page)
    await _deferred_stat(page, -1)        # before _free_page() empties the slots
    await _free_page(page, "pte")


async def pte_fragment_free(table: PageTable, kernel: int) -> None:
    """arch/powerpc/mm/pgtable-frag.c: pte_fragment_free() (v6.6): drop this
    fragment's reference; the last one frees the page, after a grace period if any
    fragment of it went through pte_free_defer() (PG_active)."""
    page = table.page
    if await _fragment_put(table):
        if kernel or not await TestClearPageActive(page):
            await _free_page(page, "pte")          # pte_free_now(&ptdesc->pt_rcu_head)
        else:
            await _deferred_stat(page, 1)
            await call_rcu(page.pt_rcu_head, pte_free_now)


async def pte_free_defer(mm: mm_struct, table: PageTable) -> None:
    """arch/powerpc/mm/pgtable-frag.c: pte_free_defer() (v6.6, "powerpc: add
    pte_free_defer() for pgtables sharing page"): ``SetPageActive(page);
    pte_fragment_free(pgtable, 0)``: whoever drops the page's last reference frees
    it a grace period later, and the fragment, never reused, stays readable."""
    await SetPageActive(table.page)
    await pte_fragment_free(table, 0)


async def pmd_fragment_free(table: PageTable) -> None:
    """arch/powerpc/mm/book3s64/pgtable.c: pmd_fragment_free() (``pmd_free()``): the
    last reference frees the page at once (no PG_active for PMD tables)."""
    if await _fragment_put(table):
        await _free_page(table.page, "pmd")


async def pgtable_free(table: PageTable) -> None:
    """arch/powerpc/mm/book3s64/pgtable.c: pgtable_free(table, index), reached from
    ``__tlb_remove_table()`` with the index ``pgtable_free_tlb()`` encoded in the
    table pointer's low bits: PTE_INDEX -> pte_fragment_free(table, 0), PMD_INDEX ->
    pmd_fragment_free().  (PUD tables come from a kmem_cache upstream; the model
    gives them pages, freed by the generic path.)"""
    if table.depth == _pte_depth(table.mm):
        await pte_fragment_free(table, 0)
    else:
        await pmd_fragment_free(table)


async def __tlb_remove_table(table: PageTable) -> None:
    """arch/powerpc/mm/book3s64/pgtable.c: __tlb_remove_table(): split the index
    off the pointer and ``pgtable_free(table, index)``."""
    await pgtable_free(table)


async def _frag_destroy(mm: mm_struct, cur: FragCursor, depth: int) -> None:
    page = cur.page
    # drop all the pending references
    if await atomic_sub_and_test(_frag_nr(mm, depth) - cur.index, page.pt_frag_refcount):
        await _free_page(page, mm.geometry.levels[depth].name)


async def pte_frag_destroy(mm: mm_struct, pte_frag: FragCursor) -> None:
    """arch/powerpc/mm/pgtable-frag.c: pte_frag_destroy(): drop the references of
    the cached page's fragments never handed out (``PTE_FRAG_NR - count``)."""
    await _frag_destroy(mm, pte_frag, _pte_depth(mm))


async def pmd_frag_destroy(mm: mm_struct, pmd_frag: FragCursor) -> None:
    """arch/powerpc/mm/book3s64/mmu_context.c: pmd_frag_destroy()."""
    await _frag_destroy(mm, pmd_frag, _pte_depth(mm) - 1)


async def destroy_pagetable_cache(mm: mm_struct) -> None:
    """arch/powerpc/mm/book3s64/mmu_context.c: destroy_pagetable_cache()."""
    frag = await mm.context.pte_frag.load()
    if frag is not None:
        await pte_frag_destroy(mm, frag)
    frag = await mm.context.pmd_frag.load()
    if frag is not None:
        await pmd_frag_destroy(mm, frag)


async def destroy_context(mm: mm_struct) -> None:
    """arch/powerpc/mm/book3s64/mmu_context.c: destroy_context() (from
    ``__mmdrop()``), as far as page tables go: ``destroy_pagetable_cache()``."""
    await destroy_pagetable_cache(mm)


def cached_pages(mm: mm_struct) -> list[Page]:
    """The pages the mm's fragment caches hold (no step: for the oracle).  They are
    the mm's until destroy_context(), even when none of their tables is linked."""
    return [c.page for c in (mm.context.pte_frag.value, mm.context.pmd_frag.value)
            if isinstance(c, FragCursor)]
