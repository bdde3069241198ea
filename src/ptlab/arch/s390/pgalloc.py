"""arch/s390/mm/pgalloc.c as of v6.6: 2K PTE tables, two to a 4K page, with
8211dad62798 ("s390: add pte_free_defer() for pgtables sharing page", Hugh
Dickins, v6.6).  v6.7 (d08d4e7cd6bf, "s390/mm: use full 4KB page for 2KB PTE")
gave every table its own page and dropped all of this.

Following the comment block "A 2KB-pgtable is either upper or lower half of a
normal page" and the code under it:

* the upper byte of ``page->_refcount`` tracks the halves: AA bits (0x01: the
  first 2K, 0x02: the second) say a half is allocated, PP bits (0x10, 0x20) that
  it is pending removal through ``tlb_remove_table()``; AA and PP of one half are
  never both set.  The model keeps them in :attr:`Page._refcount`, so a page is
  freed (``_refcount`` 1 -> 0) only with every bit clear;
* ``mm->context.pgtable_list`` (under ``mm->context.lock``) lists the pages with
  one half allocated and the other free or pending; a page is linked through
  ``page->pt_list``, which overlays ``pt_rcu_head``;
* ``page_table_free()`` offers the freed half for reuse at once (head of the
  list); ``page_table_free_rcu()`` (an unlink through mmu_gather) puts the page at
  the tail, its half reusable once ``__tlb_remove_table()`` cleared the PP bit
  after the grace period (or the IPI);
* ``pte_free_defer()`` marks the page PageActive: it never goes back on the list,
  and the page is freed by ``call_rcu()`` once both halves are free;
* the ctor runs once per page (NR_PAGETABLE counts pages); both halves share the
  page's split lock.

``page.payload`` has two slots: a half's table while it may be used, None from
the moment the half may be handed out again (or the page is freed).  A table in a
reused half has the next generation, so a stale pointer to the old one is caught
as use-after-reuse; a table given to ``pte_free_defer()`` keeps its slot until the
page goes after the grace period.  PGSTE (KVM's 4K tables, ``gmap_unlink()``) is
not modelled.
"""

from __future__ import annotations

from ...engine import ADD, READ, UPDATE, WRITE, Call, ModelViolation, Op
from ...kernel import (
    GFP_KERNEL,
    Page,
    PageActive,
    SetPageActive,
    TestClearPageActive,
    __free_page,
    alloc_pages,
    atomic_read,
    atomic_t,
    call_rcu,
    current_kernel,
    rcu_head,
    spin_lock,
    spin_unlock,
    spinlock_t,
)
from ...kernel.page_alloc import mod_nr_pagetable
from ...mm.types import PageTable, mm_struct

AA = 0x01        # the first half is allocated (0x02: the second)
PP = 0x10        # the first half is pending removal (0x20: the second)
BITS = 24        # the bits live in the upper byte of page->_refcount


class HalfPage:
    """``page->private`` of a page of 2K tables (the word ``ptdesc->ptl``
    overlays): the split lock both halves share, and how many tables each half has
    held, which is the next one's generation."""

    __slots__ = ("handed_out", "ptl")

    def __init__(self, ptl: spinlock_t | None) -> None:
        self.ptl = ptl
        self.handed_out = [0, 0]


def _xor(v: atomic_t, bits: int, frees: PageTable | None) -> int:
    v.owner.check(v.name, "Write")
    v.value ^= bits
    if frees is not None:
        frees.page.payload[frees.frag] = None
    return int(v.value)


def atomic_xor_bits(v: atomic_t, bits: int, frees: PageTable | None = None) -> Op:
    """arch/s390/mm/pgalloc.c: atomic_xor_bits(): ``atomic_fetch_xor(bits, v) ^
    bits``, the new value.  ``frees``: the table whose half this step makes free for
    reuse (its last bit goes): the step empties its slot, and its footprint writes
    the table's location, so the explorer orders every stale access against it."""
    if frees is None:
        return Call(v.fp(UPDATE), "atomic_xor_bits(&{0.name}, {1:#x})", _xor, v, bits, None)
    return Call((*v.fp(UPDATE), (frees.loc, WRITE)),
                "atomic_xor_bits(&{0.name}, {1:#x}): {2!r} freed", _xor, v, bits, frees)


# -- mm->context.pgtable_list (include/linux/list.h on page->pt_list) ---------------------

def _list_update(mm: mm_struct, page: Page, where: str) -> None:
    lst = mm.context.pgtable_list
    lst.owner.check(lst.name, "Write")
    page.pt_list._set(where != "del")      # caught if pt_rcu_head is queued
    pages: tuple[Page, ...] = lst.value
    if where != "del" and page in pages:
        raise ModelViolation("list-corruption", f"list_add double add: pfn {page.pfn:#x} "
                             "is already on mm->context.pgtable_list")
    rest = tuple(p for p in pages if p is not page)
    lst.value = (page, *rest) if where == "head" else (*rest, page) if where == "tail" \
        else rest


def _list_op(mm: mm_struct, page: Page, where: str, label: str) -> Op:
    lst = mm.context.pgtable_list
    fp = ((lst.loc, UPDATE), (lst.owner.alive, READ), (page.pt_rcu_head.loc, WRITE),
          (page.alive, READ))
    return Call(fp, label, _list_update, mm, page, where)


def list_add(mm: mm_struct, page: Page) -> Op:
    """include/linux/list.h: list_add(&ptdesc->pt_list, &mm->context.pgtable_list):
    at the head, the first page page_table_alloc() looks at."""
    return _list_op(mm, page, "head", "list_add(&pt_list, &mm->context.pgtable_list)")


def list_add_tail(mm: mm_struct, page: Page) -> Op:
    """include/linux/list.h: list_add_tail(): at the end of the list."""
    return _list_op(mm, page, "tail", "list_add_tail(&pt_list, &mm->context.pgtable_list)")


def list_del_init(mm: mm_struct, page: Page) -> Op:
    """include/linux/list.h: list_del_init(&ptdesc->pt_list): off the list, if on it."""
    return _list_op(mm, page, "del", "list_del_init(&pt_list)")


# -- allocation -------------------------------------------------------------------------

def _hand_out(mm: mm_struct, page: Page, bit: int, addr: int) -> PageTable:
    """The 2K table at half ``bit`` of ``page``, in its slot, one generation on."""
    lv = mm.geometry.levels[-1]
    rec: HalfPage = page.private
    assert page.payload[bit] is None, "the bits said this half was free"
    table = PageTable(mm, page, len(mm.geometry.levels) - 1, lv.name, addr & lv.mask,
                      lv.table_bytes, bit, rec.ptl, rec.handed_out[bit])
    rec.handed_out[bit] += 1
    page.payload[bit] = table
    return table


async def page_table_alloc(mm: mm_struct, addr: int) -> PageTable | None:
    """arch/s390/mm/pgalloc.c: page_table_alloc() (``pte_alloc_one()``): a free
    half of the first page on ``pgtable_list``, else the first half of a fresh page,
    which goes on the list.  ``addr`` only names the table in reports."""
    # Try to get a fragment of a 4K page as a 2K page table
    table = None
    await spin_lock(mm.context.lock)
    pages = await mm.context.pgtable_list.load()
    if pages:
        page = pages[0]                                      # list_first_entry()
        mask = (await atomic_read(page._refcount)) >> BITS
        # The pending removal bits must also be checked.  Failure to do so might
        # lead to an impossible value of (i.e 0x13 or 0x23) written to _refcount.
        mask = (mask | (mask >> 4)) & 0x03
        if mask != 0x03:
            bit = mask & 1            # =1 -> second 2K
            await atomic_xor_bits(page._refcount, AA << (bit + BITS))
            await list_del_init(mm, page)
            table = _hand_out(mm, page, bit, addr)
    await spin_unlock(mm.context.lock)
    if table is not None:
        return table
    # Allocate a fresh page
    page = await alloc_pages(GFP_KERNEL, 0)                  # pagetable_alloc()
    if page is None:
        return None
    page.private = HalfPage(spinlock_t(f"pte ptl(pfn {page.pfn:#x})", page)
                            if mm.config.split_pte_ptlocks else None)
    page.payload = [None, None]
    await mod_nr_pagetable(page, 1, "pagetable_pte_ctor(pfn {0.pfn:#x})")
    # Return the first 2K fragment of the page
    await atomic_xor_bits(page._refcount, AA << BITS)
    table = _hand_out(mm, page, 0, addr)
    await spin_lock(mm.context.lock)
    await list_add(mm, page)
    await spin_unlock(mm.context.lock)
    return table


# -- freeing ----------------------------------------------------------------------------

async def page_table_release_check(page: Page, half: int, mask: int) -> None:
    """arch/s390/mm/pgalloc.c: page_table_release_check() (CONFIG_DEBUG_VM): a page
    released with bits still set, or still on a list, is dumped."""
    if not mask and not await page.pt_list.load():
        return
    raise ModelViolation("bad-page", f"Invalid pgtable pfn {page.pfn:#x} release half "
                         f"{half:#04x} mask {mask:#04x}")


def _deferred(nbytes: int) -> None:
    current_kernel().alloc.pt_bytes_deferred += nbytes


async def _deferred_stat(page: Page, sign: int) -> None:
    """The halves still in their slots when the page is released are the ones
    pte_free_defer() kept: they count as waiting for the grace period (the model's
    pt_bytes_deferred) from the call_rcu() to pte_free_now()."""
    nbytes = sum(t.size for t in page.payload if t is not None)
    if nbytes:
        await Call(((current_kernel().alloc.nr_pagetable_loc, ADD),),
                   "pt_bytes_deferred {0:+}", _deferred, sign * nbytes)


async def pte_free_now(head: rcu_head) -> None:
    """arch/s390/mm/pgalloc.c: pte_free_now() (v6.6): ``pagetable_pte_dtor();
    pagetable_free()``: both halves go."""
    page = head.owner
    assert isinstance(page, Page)
    await mod_nr_pagetable(page, -1, "pagetable_pte_dtor(pfn {0.pfn:#x})")
    await __free_page(page)
    await _deferred_stat(page, -1)
    page.payload[0] = page.payload[1] = None


async def _release(page: Page, half: int, mask: int) -> None:
    """The common tail of page_table_free() and __tlb_remove_table(): both halves
    are free; after a grace period if pte_free_defer() was used on either."""
    await page_table_release_check(page, half, mask)
    if await TestClearPageActive(page):
        await _deferred_stat(page, 1)
        await call_rcu(page.pt_rcu_head, pte_free_now)
    else:
        await pte_free_now(page.pt_rcu_head)


async def _mark_pending(mm: mm_struct, table: PageTable, tail: bool) -> None:
    """Under ``mm->context.lock``: AA -> PP for the half in one atomic xor, then put
    the page on the list if the other half is allocated and neither half has had
    its free deferred, else take it off."""
    page = table.page
    await spin_lock(mm.context.lock)
    # Mark the page for delayed release.  The actual release will happen outside
    # of the critical section from page_table_free() or __tlb_remove_table().
    mask = (await atomic_xor_bits(page._refcount, (AA | PP) << (table.frag + BITS))) >> BITS
    if (mask & 0x03) and not await PageActive(page):
        await (list_add_tail(mm, page) if tail else list_add(mm, page))
    else:
        # If page is on list, now remove it.
        await list_del_init(mm, page)
    await spin_unlock(mm.context.lock)


async def _page_table_free(mm: mm_struct, table: PageTable, keep_slot: bool) -> None:
    page, bit = table.page, table.frag
    # Add the page to the head of the list, to make this freed half available for
    # immediate reuse (once the pending bit is cleared, just below).
    await _mark_pending(mm, table, tail=False)
    # From here the half may be handed out again (but not one pte_free_defer() keeps).
    mask = (await atomic_xor_bits(page._refcount, PP << (bit + BITS),
                                  None if keep_slot else table)) >> BITS
    if mask != 0x00:
        return
    await _release(page, AA << bit, mask)


async def page_table_free(mm: mm_struct, table: PageTable) -> None:
    """arch/s390/mm/pgalloc.c: page_table_free() (``pte_free()``): free a half at
    once; the page goes when its other half is free too."""
    await _page_table_free(mm, table, keep_slot=False)


async def page_table_free_rcu(mm: mm_struct, table: PageTable) -> None:
    """arch/s390/mm/pgalloc.c: page_table_free_rcu() (``__pte_free_tlb()``) up to its
    ``tlb_remove_table(tlb, table | (0x01U << bit))``, which the caller then does:
    mark the half pending (PP) and add the page to the tail of the list, so the half
    is reused only after __tlb_remove_table() cleared the bit."""
    await _mark_pending(mm, table, tail=True)


async def __tlb_remove_table(table: PageTable) -> None:
    """arch/s390/mm/pgalloc.c: __tlb_remove_table() for a 2K half (the low bits of
    the pointer say which): clear its PP bit; the last bit to go frees the page."""
    page = table.page
    half = AA << table.frag
    # Its PP bit clear, the half may be handed out again.
    mask = (await atomic_xor_bits(page._refcount, half << (4 + BITS), table)) >> BITS
    if mask != 0x00:
        return
    await _release(page, half, mask)


async def pte_free_defer(mm: mm_struct, table: PageTable) -> None:
    """arch/s390/mm/pgalloc.c: pte_free_defer() (v6.6): ``SetPageActive(page);
    page_table_free(mm, pgtable)``: neither half is reused, and the page goes by
    RCU once both are free.  The table keeps its slot until then."""
    await SetPageActive(table.page)
    await _page_table_free(mm, table, keep_slot=True)
