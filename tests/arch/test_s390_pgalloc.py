"""s390 v6.6's 2K PTE tables (ptlab.arch.s390.pgalloc) on the page-table tree: two
halves a page tracked by the AA/PP bits of page->_refcount, pgtable_list, reuse of
a freed half (a new generation: a stale pointer is use-after-reuse), and
pte_free_defer()'s PageActive rule."""

from __future__ import annotations

import pytest
from tree_sim import Proc

from ptlab.engine import ModelViolation
from ptlab.kernel import Page, PG_active
from ptlab.kernel.rcu import rcu_sequential_gp
from ptlab.mm.pgalloc import pagetable_alloc, pte_free, pte_free_defer
from ptlab.mm.types import PageTable
from ptlab.mm.vma import madvise_dontneed

BASE = 1 << 36                      # below s390's 4 TiB (3-level) user space
SEG = 1 << 20                       # what one PTE table maps


def bits(page: Page) -> int:
    """The upper byte of page->_refcount: PP (0x10, 0x20) and AA (0x01, 0x02)."""
    return page._refcount.value >> 24


def pgtable_list(p: Proc) -> tuple[Page, ...]:
    value: tuple[Page, ...] = p.mm.context.pgtable_list.value
    return value


def alloc(p: Proc) -> PageTable:
    t = p.sim.run(pagetable_alloc(p.mm, len(p.geo.levels) - 1, BASE))
    assert isinstance(t, PageTable)
    return t


def test_two_tables_share_a_page_and_nr_pagetable_counts_pages() -> None:
    p = Proc("s390-v6.6")
    p.map(3 * SEG, BASE)
    t0, t1, t2 = p.touch(BASE, BASE + SEG, BASE + 2 * SEG)
    assert t0.page is t1.page and (t0.frag, t1.frag) == (0, 1) and t0.ptl is t1.ptl
    assert bits(t0.page) == 0x03 and bits(t2.page) == 0x01
    assert pgtable_list(p) == (t2.page,)       # only the page with a free half
    assert p.nr_pagetable == 4 + 4 + 2     # region-third, segment (order 2), 2 PTE pages
    p.sim.settle()


def test_a_half_unlinked_by_mmu_gather_is_reused_after_the_grace_period() -> None:
    p = Proc("s390-v6.6", "2026")              # PT_RECLAIM unlinks it: 2026 onwards
    p.map(4 * SEG, BASE)
    t0, t1 = p.touch(BASE, BASE + SEG)
    page = t0.page
    assert p.sim.run(madvise_dontneed(p.mm, BASE, SEG))    # PT_RECLAIM: pte_free_tlb()
    # page_table_free_rcu(): AA -> PP, the page at the tail of the list; the half
    # waits for __tlb_remove_table() after the grace period.
    assert bits(page) == 0x12 and pgtable_list(p) == (page,)
    assert page.payload[0] is t0
    (fresh,) = p.touch(BASE + 2 * SEG)
    assert fresh.page is not page                          # not the pending half
    p.sim.settle()                                         # __tlb_remove_table()
    assert bits(page) == 0x02 and page.payload[0] is None
    assert pgtable_list(p) == (fresh.page, page)           # a fresh page goes first
    # The fresh page's free half goes first, then the freed half, one generation on.
    q1, again = p.touch(BASE, BASE + 3 * SEG)
    assert q1.page is fresh.page and q1.frag == 1
    assert again.page is page and again.frag == 0 and again.gen == t0.gen + 1
    assert bits(page) == 0x03 and pgtable_list(p) == ()
    with pytest.raises(ModelViolation) as e:
        t0.check("stale pte table")
    assert e.value.kind == "use-after-reuse" and "generation 0" in str(e.value)
    t1.check("live neighbour")
    p.sim.settle()


def test_a_half_freed_at_once_is_reused_at_once() -> None:
    p = Proc("s390-v6.6")
    t0, t1 = alloc(p), alloc(p)
    page = t0.page
    p.sim.run(pte_free(p.mm, t0))                          # page_table_free()
    assert bits(page) == 0x02 and pgtable_list(p) == (page,)
    t2 = alloc(p)
    assert t2.page is page and t2.frag == 0 and t2.gen == 1
    with pytest.raises(ModelViolation) as e:
        t0.check("stale pte table")
    assert e.value.kind == "use-after-reuse"
    p.sim.run(pte_free(p.mm, t1))
    p.sim.run(pte_free(p.mm, t2))
    assert page.freed and bits(page) == 0 and pgtable_list(p) == ()
    p.sim.settle()


def test_pte_free_defer_keeps_the_page_off_the_list_and_frees_it_by_rcu() -> None:
    p = Proc("s390-v6.6")
    t0, t1 = alloc(p), alloc(p)
    page = t0.page
    p.sim.run(pte_free_defer(p.mm, t0))
    assert page.flags.value & PG_active and bits(page) == 0x02
    assert pgtable_list(p) == ()                 # neither half is reused
    t0.check("deferred table")                   # RCU walkers may still read it
    other = alloc(p)
    assert other.page is not page
    p.sim.run(pte_free(p.mm, t1))                # both halves free: call_rcu()
    alloc_ = p.sim.kernel.alloc
    assert page.pt_rcu_head.queued and not page.freed
    assert alloc_.pt_bytes_deferred == t0.size and not page.flags.value & PG_active
    p.sim.run(rcu_sequential_gp())
    assert page.freed and alloc_.pt_bytes_deferred == 0
    with pytest.raises(ModelViolation) as e:
        t0.check("deferred table")
    assert e.value.kind == "use-after-free"
    p.sim.run(pte_free(p.mm, other))
    assert p.nr_pagetable == 4               # the region-third table (order 2) remains
    p.sim.settle()
