"""arch/powerpc/mm/pgtable-frag.c: page tables handled through page fragments.

``PTE_FRAG_NR`` PTE tables share one page (16 with hash and 64K pages, 256 with
radix; the model takes the number from the mm).  ``mm->context.pte_frag`` points at
the next unused fragment of the current page; a new page pre-charges
``pt_frag_refcount`` with every fragment; freed fragments are never reused, and the
page is freed when the count reaches zero.
"""

from __future__ import annotations

from ...engine import ModelViolation
from ...kernel import (
    __GFP_ACCOUNT,
    GFP_KERNEL,
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
    pgtable_pte_page_ctor,
    pgtable_pte_page_dtor,
    rcu_head,
    spin_lock,
    spin_unlock,
)
from ...mm.types import mm_struct

PGALLOC_GFP = GFP_KERNEL

# arch/powerpc/include/asm/book3s/64/{hash-64k,radix-64k}.h: PTE tables per 64K page.
H_PTE_FRAG_NR = 16      # 2K of PTEs + 2K of hash slot information, 4K a table
RADIX_PTE_FRAG_NR = 256  # 32 entries x 8 bytes, 256 bytes a table
# The model takes PTE_FRAG_NR from the scenario (2-4 keeps the search small); the
# protocol does not depend on the number.


class PteFragment:
    """One PTE table: fragment ``index`` of ``page`` (a ``pgtable_t``)."""

    __slots__ = ("entries", "index", "page")

    def __init__(self, page: Page, index: int) -> None:
        self.page = page
        self.index = index
        self.entries = Field(page, f"pte_table(pfn {page.pfn:#x}, frag {index})", 0)

    def __repr__(self) -> str:
        return f"pgtable(pfn {self.page.pfn:#x} frag {self.index})"


def _fragments(page: Page, nr: int) -> list[PteFragment]:
    if page.payload is None:
        page.payload = [PteFragment(page, i) for i in range(nr)]
    frags: list[PteFragment] = page.payload
    return frags


async def get_pte_from_cache(mm: mm_struct, frag_nr: int) -> PteFragment | None:
    """get_pte_from_cache(): take the next fragment of the cached page, if any."""
    if frag_nr == 1:
        return None
    await spin_lock(mm.page_table_lock)
    ret: PteFragment | None = await mm.context.pte_frag.load()
    if ret is not None:
        nxt = ret.index + 1
        # If we have taken up all the fragments mark PTE page NULL
        await mm.context.pte_frag.store(
            None if nxt == frag_nr else _fragments(ret.page, frag_nr)[nxt])
    await spin_unlock(mm.page_table_lock)
    return ret


async def __alloc_for_ptecache(mm: mm_struct, kernel: int, frag_nr: int) -> PteFragment | None:
    """__alloc_for_ptecache(): a fresh page; cache its other fragments if nobody did."""
    gfp = PGALLOC_GFP if kernel else PGALLOC_GFP | __GFP_ACCOUNT
    page = await alloc_pages(gfp, 0)
    if page is None:
        return None
    if not kernel:
        await pgtable_pte_page_ctor(page)
    await atomic_set(page.pt_frag_refcount, 1)
    frags = _fragments(page, frag_nr)
    ret = frags[0]
    if frag_nr == 1:
        return ret
    await spin_lock(mm.page_table_lock)
    # If we find pgtable_page set, we return the allocated page with single
    # fragment count.
    if await mm.context.pte_frag.load() is None:
        await atomic_set(page.pt_frag_refcount, frag_nr)
        await mm.context.pte_frag.store(frags[1])
    await spin_unlock(mm.page_table_lock)
    return ret


async def pte_fragment_alloc(mm: mm_struct, kernel: int, frag_nr: int) -> PteFragment | None:
    """pte_fragment_alloc()."""
    pte = await get_pte_from_cache(mm, frag_nr)
    if pte is not None:
        return pte
    return await __alloc_for_ptecache(mm, kernel, frag_nr)


async def pte_free_now(head: rcu_head) -> None:
    """pte_free_now() (v6.6): ``pagetable_pte_page_dtor(); __free_page()``."""
    page = head.owner
    assert isinstance(page, Page)
    await pgtable_pte_page_dtor(page)
    await __free_page(page)


async def _bug_on_refcount(page: Page) -> None:
    if await atomic_read(page.pt_frag_refcount) <= 0:
        raise ModelViolation("bug-on", "kernel BUG at arch/powerpc/mm/pgtable-frag.c: "
                             "BUG_ON(atomic_read(&ptdesc->pt_frag_refcount) <= 0)")


async def pte_fragment_free(table: PteFragment, kernel: int) -> None:
    """pte_fragment_free() since v6.6: the last reference frees the page, after a
    grace period if any fragment was freed by pte_free_defer() (PG_active)."""
    page = table.page
    await _bug_on_refcount(page)
    if await atomic_dec_and_test(page.pt_frag_refcount):
        if kernel or not await TestClearPageActive(page):
            await pte_free_now(page.pt_rcu_head)
        else:
            await call_rcu(page.pt_rcu_head, pte_free_now)


async def pte_free_defer(mm: mm_struct, pgtable: PteFragment) -> None:
    """pte_free_defer() (v6.6, "powerpc: add pte_free_defer() for pgtables sharing
    page"): mark the page PG_active and drop this fragment's reference."""
    await SetPageActive(pgtable.page)
    await pte_fragment_free(pgtable, 0)


async def pte_fragment_free_v65(table: PteFragment, kernel: int) -> None:
    """pte_fragment_free() before v6.6: no PG_active, the last reference frees at once."""
    page = table.page
    await _bug_on_refcount(page)
    if await atomic_dec_and_test(page.pt_frag_refcount):
        if not kernel:
            await pgtable_pte_page_dtor(page)
        await __free_page(page)


async def pte_frag_destroy(pte_frag: PteFragment, frag_nr: int) -> None:
    """pte_frag_destroy(): drop the references of fragments never handed out."""
    page = pte_frag.page
    count = pte_frag.index
    if await atomic_sub_and_test(frag_nr - count, page.pt_frag_refcount):
        await pgtable_pte_page_dtor(page)
        await __free_page(page)


