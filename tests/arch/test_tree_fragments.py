"""powerpc's fragment allocators on the page-table tree (ptlab.arch.powerpc.pgalloc),
and the dispatch in ptlab.mm.pgalloc: several tables share a page, NR_PAGETABLE
counts pages, fragments are never reused, the caches hold a page until
destroy_context(), pte_free_defer() frees the page a grace period after its last
fragment; the VmPTE workload balances on every arch with shared table pages."""

from __future__ import annotations

import pytest
from tree_sim import BASE, Proc

from ptlab.arch.powerpc.pgalloc import FragCursor
from ptlab.cli import main
from ptlab.engine import ModelViolation
from ptlab.kernel import PG_active
from ptlab.kernel.rcu import rcu_sequential_gp
from ptlab.mm.oracle import census
from ptlab.mm.pgalloc import (
    destroy_context,
    mm_free_pgd,
    pagetable_alloc,
    pgtable_allocator,
    pte_free,
    pte_free_defer,
)
from ptlab.mm.vma import exit_mmap, madvise_dontneed, munmap
from ptlab.simulate import parse_workload, simulate

PPC = ["ppc64-hash", "ppc64-radix"]
VMPTE = "workloads/vmpte-1g-at-16t.toml"


@pytest.mark.parametrize("arch", PPC)
def test_pte_tables_are_fragments_of_one_page_and_nr_pagetable_counts_pages(arch: str) -> None:
    p = Proc(arch)
    nr = p.geo.levels[-1].per_page                  # PTE_FRAG_NR: 16 hash, 256 radix
    p.map((nr + 1) * p.span)
    tables = p.touch(*(BASE + i * p.span for i in range(nr + 1)))
    first, extra = tables[:nr], tables[nr]
    page = first[0].page
    assert all(t.page is page for t in first) and [t.frag for t in first] == list(range(nr))
    assert page.pt_frag_refcount.value == nr and page.flags.value & PG_active == 0
    assert extra.page is not page and extra.frag == 0
    cur = p.mm.context.pte_frag.value
    assert isinstance(cur, FragCursor) and cur.page is extra.page and cur.index == 1
    assert census(p.mm).tables[-1] == nr + 1
    assert p.nr_pagetable == 1 + 1 + 1 + 2              # pgd, pud, PMD page, 2 PTE pages
    p.sim.settle()                                      # the counters oracle agrees


@pytest.mark.parametrize("arch", PPC)
def test_pmd_tables_are_fragments_too(arch: str) -> None:
    p = Proc(arch)
    pmd_span = p.geo.levels[-3].size                    # what one PMD table maps
    p.map(2 * pmd_span)
    a, b = p.touch(BASE, BASE + pmd_span)
    pa, pb = p.table(BASE, -2), p.table(BASE + pmd_span, -2)
    assert pgtable_allocator(p.mm, pa.depth) == "powerpc-frag"
    assert pa.page is pb.page and (pa.frag, pb.frag) == (0, 1)
    assert pa.ptl is pb.ptl is not None                 # pmd_lockptr(): the page's lock
    assert a.page is b.page and a.ptl is b.ptl          # PTE fragments share one too
    assert p.nr_pagetable == 4
    p.sim.settle()


@pytest.mark.parametrize("arch", PPC)
def test_freed_fragments_are_never_handed_out_again(arch: str) -> None:
    p = Proc(arch, "2026")                     # PT_RECLAIM on powerpc: 2026 onwards
    nr = p.geo.levels[-1].per_page
    p.map(2 * p.span)
    t0, _ = p.touch(BASE, BASE + p.span)
    page = t0.page
    assert p.sim.run(madvise_dontneed(p.mm, BASE, p.span))      # PT_RECLAIM frees t0
    p.sim.settle()
    assert not page.freed and page.pt_frag_refcount.value == nr - 1
    (again,) = p.touch(BASE)
    assert again.page is page and again.frag == 2 and again.gen == 0   # the next one
    # A stale pointer reads dead but stable memory while the page lives ...
    assert page.payload[0] is t0
    t0.check("stale pte table")
    # ... and is a use-after-free once the page goes with its last reference.
    p.sim.run(munmap(p.mm, BASE, 2 * p.span))
    p.sim.run(destroy_context(p.mm))
    p.sim.settle()
    assert page.freed and page.payload == [None] * nr
    with pytest.raises(ModelViolation) as e:
        t0.check("stale pte table")
    assert e.value.kind == "use-after-free"


@pytest.mark.parametrize("arch", PPC)
def test_munmap_and_exit_free_the_tables_the_caches_keep_their_page(arch: str) -> None:
    p = Proc(arch)
    p.map(3 * p.span)
    p.touch(BASE, BASE + p.span, BASE + 2 * p.span)
    assert p.sim.run(munmap(p.mm, BASE, 3 * p.span)) == 1
    p.sim.settle()
    # Only the pgd is linked; the PTE and PMD pages stay in the caches.
    assert census(p.mm).tables[1:] == [0] * (len(p.geo.levels) - 1)
    assert p.nr_pagetable == 3
    p.map(p.span, BASE + 8 * p.span)
    p.touch(BASE + 8 * p.span)
    p.sim.run(exit_mmap(p.mm))
    p.sim.settle()
    assert p.nr_pagetable == 3
    p.sim.run(mm_free_pgd(p.mm))
    p.sim.run(destroy_context(p.mm))       # pte_frag_destroy(), pmd_frag_destroy()
    assert p.nr_pagetable == 0
    assert all(pg.freed for pg in p.sim.kernel.alloc.pages)


@pytest.mark.parametrize("arch", PPC)
def test_pte_free_defer_frees_the_page_a_grace_period_after_its_last_fragment(
        arch: str) -> None:
    p = Proc(arch)
    nr = p.geo.levels[-1].per_page
    pte = len(p.geo.levels) - 1
    a, *rest = (p.sim.run(pagetable_alloc(p.mm, pte, BASE)) for _ in range(nr))
    page = a.page
    assert p.mm.context.pte_frag.value is None          # every fragment handed out
    p.sim.run(pte_free_defer(p.mm, a))
    assert page.flags.value & PG_active and page.pt_frag_refcount.value == nr - 1
    a.check("deferred table")              # still readable: RCU walkers may hold it
    for t in rest:
        p.sim.run(pte_free(p.mm, t))       # the last one queues the page for RCU
    alloc = p.sim.kernel.alloc
    assert page.pt_rcu_head.queued and not page.freed and not page.flags.value & PG_active
    assert alloc.pt_bytes_deferred == nr * a.size      # the page's tables wait with it
    a.check("deferred table")
    p.sim.run(rcu_sequential_gp())
    assert page.freed and alloc.pt_bytes_deferred == 0 and p.nr_pagetable == 1
    with pytest.raises(ModelViolation) as e:
        a.check("deferred table")
    assert e.value.kind == "use-after-free"
    p.sim.settle()


@pytest.mark.parametrize("arch", PPC)
def test_pte_frag_destroy_frees_the_cached_page_at_once_even_after_pte_free_defer(
        arch: str) -> None:
    """v6.6 as written: pte_frag_destroy() drops the cache's references and frees
    the page without looking at PG_active, so a table of the cached page given to
    pte_free_defer() gets no grace period, and the page goes with PG_active set
    (which free_pages_prepare() checks with PAGE_FLAGS_CHECK_AT_FREE)."""
    p = Proc(arch)
    a = p.sim.run(pagetable_alloc(p.mm, len(p.geo.levels) - 1, BASE))
    p.sim.run(pte_free_defer(p.mm, a))
    p.sim.run(destroy_context(p.mm))
    assert a.page.freed and not a.page.pt_rcu_head.queued
    assert a.page.flags.value & PG_active and p.sim.kernel.alloc.pt_bytes_deferred == 0


def test_the_generic_pte_free_defer_waits_for_a_grace_period() -> None:
    p = Proc("x86-64")
    t = p.sim.run(pagetable_alloc(p.mm, len(p.geo.levels) - 1, BASE))
    p.sim.run(pte_free_defer(p.mm, t))
    assert t.page.pt_rcu_head.queued and p.sim.kernel.alloc.pt_bytes_deferred == 4096
    p.sim.run(rcu_sequential_gp())
    assert t.page.freed and p.nr_pagetable == 1
    p.sim.settle()


@pytest.mark.parametrize("arch, pte_tables, nr_pagetable", [
    ("ppc64-hash", 64, 1 + 1 + 1 + 4),       # 16 PTE fragments a page
    ("ppc64-radix", 512, 1 + 1 + 1 + 2),     # 256 a page
    ("s390-v6.6", 512, 4 + 4 + 256),         # CRST tables are order 2; two 2K halves a page
])
def test_the_vmpte_workload_balances_where_tables_share_pages(
        arch: str, pte_tables: int, nr_pagetable: int) -> None:
    with open(VMPTE, encoding="utf-8") as f:
        res = simulate(parse_workload(VMPTE, f.read()), arch=arch)   # the oracle, each step
    touched = res.steps[1]
    assert touched.tables["pte"] == pte_tables and touched.nr_pagetable == nr_pagetable
    # v6.18 builds PT_RECLAIM only on x86-64 (ARCH_SUPPORTS_PT_RECLAIM).
    assert res.steps[2].tables["pte"] == pte_tables
    assert res.steps[-1].vmpte_kib == 0 and res.steps[-1].tables["pte"] == 0
    with open(VMPTE, encoding="utf-8") as f:
        res = simulate(parse_workload(VMPTE, f.read()), arch=arch, kernel="2026")
    assert res.steps[2].tables["pte"] == 0              # PT_RECLAIM freed them
    assert main(["simulate", VMPTE, "--arch", arch]) == 0


@pytest.mark.parametrize("arch", [*PPC, "s390-v6.6"])
def test_exit_frees_every_table(arch: str) -> None:
    start = BASE if arch in PPC else 1 << 36
    text = f"""
[[region]]
name = "a"
start = {start}
size = "64MiB"
[[step]]
op = "map"
region = "a"
[[step]]
op = "touch"
region = "a"
stride = "1MiB"
[[step]]
op = "madvise"
region = "a"
advice = "dontneed"
length = "16MiB"
[[step]]
op = "exit"
"""
    res = simulate(parse_workload("t", text), arch=arch)
    assert res.steps[1].tables["pte"] > 0
    assert res.steps[-1].tables["pte"] == 0 and res.steps[-1].rss_pages == 0
