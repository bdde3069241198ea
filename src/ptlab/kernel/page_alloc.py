"""Pages and small objects: ``struct page``/``struct ptdesc``, the page allocator,
kmalloc, and the NR_PAGETABLE statistic.

Freed memory is never handed out again (KASAN's quarantine, made total), so any
later access is caught.  Allocations with ``GFP_NOWAIT`` may fail when the
kernel's fault injection is on; the failure is a choice the checker explores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine import (
    ADD,
    READ,
    UPDATE,
    WRITE,
    Call,
    Choose,
    Footprint,
    ModelViolation,
    Op,
    new_loc,
)
from .atomic import atomic_t
from .current import current_kernel
from .memory import Field, KObject
from .rcu import rcu_head

GFP_KERNEL = 0x1
GFP_NOWAIT = 0x2
__GFP_NOWARN = 0x4
__GFP_ACCOUNT = 0x8
__GFP_ZERO = 0x10
GFP_PGTABLE_USER = GFP_KERNEL | __GFP_ACCOUNT | __GFP_ZERO

PG_active = 1 << 0
PG_table = 1 << 1
ROOT_MEMCG = "memcg"  # page_type PGTY_table in newer kernels
PG_reserved = 1 << 2


class Page(KObject):
    """``struct page`` with its ``struct ptdesc`` view.

    ``pt_rcu_head`` shares storage with ``pt_list`` and ``pmd_huge_pte`` (the union
    in ``struct ptdesc``), so the same location stands for all three;
    ``pt_frag_refcount`` is powerpc's fragment count.
    """

    __slots__ = (
        "_refcount",
        "flags",
        "memcg",
        "order",
        "payload",
        "pfn",
        "pmd_huge_pte",
        "private",
        "pt_frag_refcount",
        "pt_list",
        "pt_rcu_head",
    )

    def __init__(self, pfn: int, order: int = 0, memcg: str | None = None) -> None:
        KObject.__init__(self, "page", 4096 << order)
        self.pfn = pfn
        self.order = order
        self.flags = Field(self, "page->flags", 0)
        self._refcount = atomic_t(self, "page->_refcount", 1)
        self.pt_frag_refcount = atomic_t(self, "ptdesc->pt_frag_refcount", 0)
        ptdesc = f"ptdesc(pfn {pfn:#x})"
        self.pt_rcu_head = rcu_head(self, ptdesc + "->pt_rcu_head")
        self.pt_list = UnionView(self.pt_rcu_head, ptdesc + "->pt_list")
        self.pmd_huge_pte = UnionView(self.pt_rcu_head, ptdesc + "->pmd_huge_pte")
        self.memcg = memcg
        self.payload: Any = None   # what the page holds (a table's fragments)
        self.private: Any = None   # page->private


class UnionView:
    """Another member of the union that ``pt_rcu_head`` belongs to (``pt_list``,
    ``pmd_huge_pte``): the same storage, so using it while the head is queued for
    ``call_rcu()`` corrupts the callback list, and is reported."""

    __slots__ = ("head", "name", "value")

    def __init__(self, head: rcu_head, name: str) -> None:
        self.head = head
        self.name = name
        self.value: Any = None

    def _check(self, access: str) -> None:
        head = self.head
        head.owner.check(self.name, access)
        if head.queued:
            raise ModelViolation(
                "rcu-head-clobbered",
                f"{access.lower()} of {self.name} while {head.name}, which shares its storage, "
                "is queued for call_rcu()",
                f"list corruption: {self.name} overlays {head.name} (queued by "
                f"{' <- '.join(reversed(head.queued_stack))})")

    def _get(self) -> Any:
        self._check("Read")
        return self.value

    def _set(self, value: Any) -> None:
        self._check("Write")
        self.value = value

    def load(self) -> Op:
        return Call(((self.head.loc, READ), (self.head.owner.alive, READ)),
                    "READ({0.name})", UnionView._get, self)

    def store(self, value: Any) -> Op:
        return Call(((self.head.loc, WRITE), (self.head.owner.alive, READ)),
                    "WRITE({0.name}, {1!r})", UnionView._set, self, value)


class Allocator:
    """The buddy allocator and slab, reduced to counting and failing."""

    def __init__(self, fail_nowait: bool) -> None:
        self.fail_nowait = fail_nowait
        self.next_pfn = 0x1000
        self.pages: list[Page] = []
        self.objects: list[KObject] = []
        self.nr_pagetable_loc = new_loc()
        self.nr_pagetable = 0
        # memory.stat "pagetables" per memcg, in bytes: pages charged with
        # __GFP_ACCOUNT while they hold page tables (lruvec_stat_add_folio()).
        self.memcg_pagetables: dict[str, int] = {}
        # Page-table bytes unlinked and waiting to be freed (a grace period, an IPI).
        self.pt_bytes_deferred = 0
        self.failures = 0

    def _new_page(self, order: int, memcg: str | None) -> Page:
        # pfns are unique per execution; their order depends on interleaving, so
        # nothing in the model keys on them.
        self.next_pfn += 1
        page = Page(self.next_pfn, order, memcg)
        self.pages.append(page)
        return page


def _allocator() -> Allocator:
    return current_kernel().alloc


def _may_fail(gfp: int) -> bool:
    return bool(gfp & GFP_NOWAIT) and _allocator().fail_nowait


async def _alloc_choice(what: str) -> bool:
    """True when this allocation succeeds (choice 0), False when it fails."""
    a = _allocator()

    def outcome(k: int) -> bool:
        if k:
            a.failures += 1
        return k == 0

    return bool(await Choose((), what + " (GFP_NOWAIT: may fail)", lambda: 2, outcome))


async def alloc_pages(gfp: int, order: int = 0, memcg: str | None = None) -> Page | None:
    """mm/page_alloc.c: alloc_pages(); None when a GFP_NOWAIT allocation fails."""
    if _may_fail(gfp) and not await _alloc_choice(f"alloc_pages(order {order})"):
        return None
    if memcg is None and gfp & __GFP_ACCOUNT:
        memcg = ROOT_MEMCG   # the task's memcg: one per model
    return _allocator()._new_page(order, memcg)


async def kmalloc(kind: str, size: int, gfp: int,
                  make: Callable[[], KObject] | None = None) -> KObject | None:
    """mm/slub.c: kmalloc(); ``make`` builds a typed object in place of a bare one."""
    if _may_fail(gfp) and not await _alloc_choice(f"kmalloc({kind})"):
        return None
    obj = make() if make is not None else KObject(kind, size)
    _allocator().objects.append(obj)
    return obj


def _check_no_active_head(obj: KObject, head: rcu_head | None) -> None:
    if head is not None and head.queued:
        raise ModelViolation(
            "free-active-rcu-head",
            f"freeing {obj.kind} at {obj.addr:#x} while its {head.name} is queued for call_rcu()",
            f"ODEBUG: free active (active state 1) object type: rcu_head hint: "
            f"{getattr(head.func, '__name__', '?')}\n{head.name} was queued by "
            f"{' <- '.join(reversed(head.queued_stack))}")


def _free_page(page: Page) -> None:
    page.check("__free_page", "Write")
    page._refcount.value -= 1
    if page._refcount.value == 0:
        _check_no_active_head(page, page.pt_rcu_head)
        page.mark_freed("__free_page")


def __free_page(page: Page) -> Op:
    """mm/page_alloc.c: __free_page(): put_page_testzero() then free."""
    fp: Footprint = ((page.alive, WRITE), (page._refcount.loc, UPDATE))
    return Call(fp, "__free_page(pfn {0.pfn:#x})", _free_page, page)


def _kfree(obj: KObject, head: rcu_head | None) -> None:
    _check_no_active_head(obj, head)
    obj.mark_freed("kfree")


def kfree(obj: KObject, head: rcu_head | None = None) -> Op:
    """mm/slub.c: kfree()."""
    return Call(((obj.alive, WRITE),), "kfree(" + obj.kind + ")", _kfree, obj, head)


# -- page flags (include/linux/page-flags.h) ------------------------------------

def _set_flag(page: Page, bit: int) -> None:
    page.check("set_bit(page->flags)", "Write")
    page.flags.value |= bit


def _test_clear_flag(page: Page, bit: int) -> bool:
    page.check("test_and_clear_bit(page->flags)", "Write")
    old = page.flags.value
    page.flags.value = old & ~bit
    return bool(old & bit)


def _test_flag(page: Page, bit: int) -> bool:
    page.check("test_bit(page->flags)")
    return bool(page.flags.value & bit)


def SetPageActive(page: Page) -> Op:
    """set_bit(PG_active): an atomic RMW whose result nobody reads (commutes)."""
    return Call(page.flags.fp(ADD), "SetPageActive(page)", _set_flag, page, PG_active)


def TestClearPageActive(page: Page) -> Op:
    return Call(page.flags.fp(UPDATE), "TestClearPageActive(page)", _test_clear_flag, page,
                PG_active)


def PageActive(page: Page) -> Op:
    return Call(page.flags.fp(READ), "PageActive(page)", _test_flag, page, PG_active)


# -- NR_PAGETABLE (mm/vmstat.c) ---------------------------------------------------

def _mod_nr_pagetable(page: Page, delta: int) -> None:
    page.check("pgtable ctor/dtor", "Write")
    if delta < 0 and not page.flags.value & PG_table:
        raise ModelViolation("accounting", f"page-table dtor twice on pfn {page.pfn:#x}")
    a = _allocator()
    a.nr_pagetable += delta << page.order     # lruvec_stat_add_folio(): nr_pages
    if page.memcg is not None:
        a.memcg_pagetables[page.memcg] = (a.memcg_pagetables.get(page.memcg, 0)
                                          + delta * page.size)
    if delta > 0:
        page.flags.value |= PG_table
    else:
        page.flags.value &= ~PG_table


def mod_nr_pagetable(page: Page, delta: int, label: str) -> Op:
    """The step every page-table ctor/dtor takes: PG_table and NR_PAGETABLE
    (``label`` is formatted with ``page`` for traces)."""
    a = _allocator()
    fp: Footprint = ((page.flags.loc, ADD), (page.alive, READ), (a.nr_pagetable_loc, ADD))
    return Call(fp, label, _mod_nr_pagetable, page, delta)


def pgtable_pte_page_ctor(page: Page) -> Op:
    """include/linux/mm.h (v6.6): pgtable_pte_page_ctor(): ptlock_init,
    __SetPageTable, inc_lruvec_page_state(NR_PAGETABLE)."""
    return mod_nr_pagetable(page, 1, "pgtable_pte_page_ctor(page)")


def pgtable_pte_page_dtor(page: Page) -> Op:
    """include/linux/mm.h (v6.6): pgtable_pte_page_dtor(): ptlock_free,
    __ClearPageTable, dec_lruvec_page_state(NR_PAGETABLE)."""
    return mod_nr_pagetable(page, -1, "pgtable_pte_page_dtor(page)")
