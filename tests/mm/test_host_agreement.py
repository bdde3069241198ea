"""The model against a real Linux 6.18 x86-64 (THP enabled=madvise,
shmem_enabled=never, use_zero_page=1, CONFIG_PT_RECLAIM=y): read faults and the
zero pages, THP allocation failure, shared anonymous memory (shmem), file THPs
mapped by do_set_pmd(), and MADV_COLLAPSE's return value.

The VmPTE figures (kB, after each step, less the process's own baseline) are
the host's, measured by the probe in /tmp/hostprobe (results.txt, cases/*.toml);
the steps are run here on the model directly, through its public functions, one
after another on a sequential kernel, with a grace period and the counters
oracle after each."""

from __future__ import annotations

import errno
from collections.abc import Coroutine
from typing import Any

import pytest

from ptlab.arch.geometry import X86_64
from ptlab.config import ERAS
from ptlab.kernel import Kernel
from ptlab.kernel.rcu import rcu_sequential_gp
from ptlab.mm.fault import do_user_addr_fault
from ptlab.mm.fork import dup_mm, mmput
from ptlab.mm.khugepaged import madvise_collapse
from ptlab.mm.oracle import census, check_mm_counters
from ptlab.mm.pgalloc import mm_alloc_pgd
from ptlab.mm.types import (
    VM_HUGEPAGE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    Leaf,
    PageTable,
    mm_struct,
    vm_area_struct,
)
from ptlab.mm.vma import do_mmap, madvise_dontneed, munmap

KIB = 1 << 10
MIB = 1 << 20
BASE = 16 << 40                      # 16 TiB, where the probe maps its regions


class Host:
    """Processes on one sequential kernel, as the probe runs them: each step,
    then a grace period and the counters oracle."""

    def __init__(self, era: str = "v6.18") -> None:
        self.kernel = Kernel(None, 1, sequential=True)
        self.mm = mm_struct(X86_64, ERAS[era])
        self.mms: dict[str, mm_struct] = {"parent": self.mm}
        self.run(mm_alloc_pgd(self.mm))

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        out = self.kernel.run(coro)
        self.settle()
        return out

    def settle(self) -> None:
        self.kernel.run(rcu_sequential_gp())
        check_mm_counters(self.kernel, list(self.mms.values()), settled=True)

    def vmpte(self, name: str = "parent") -> int:
        return self.mms[name].pgtables_bytes.value >> 10

    def map(self, start: int, size: int, *, shared: bool = False, file: str | None = None,
            thp: bool = False) -> vm_area_struct:
        flags = VM_READ | VM_WRITE | (VM_SHARED if shared else 0) | \
            (VM_HUGEPAGE if thp else 0)
        vma: vm_area_struct = self.run(do_mmap(self.mm, start, size, flags, file is None,
                                               file))
        return vma

    def touch(self, start: int, length: int, stride: int = 4 * KIB, write: bool = True,
              mm: str = "parent") -> None:
        async def faults() -> None:
            for addr in range(start, start + length, stride):
                assert await do_user_addr_fault(self.mms[mm], addr, write)
        self.run(faults())

    def fork(self) -> None:
        child = self.kernel.run(dup_mm(self.mm))
        assert child is not None
        self.mms["child"] = child
        self.settle()

    def exit(self, name: str = "child") -> None:
        mm = self.mms.pop(name)
        self.run(mmput(mm))

    def dontneed(self, start: int, length: int) -> None:
        assert self.run(madvise_dontneed(self.mm, start, length))

    def unmap(self, start: int, length: int) -> None:
        self.run(munmap(self.mm, start, length))

    def collapse(self, start: int, length: int) -> int:
        err: int = self.run(madvise_collapse(self.mm, start, length))
        return err

    def pmd_entry(self, addr: int, name: str = "parent") -> object:
        geo = self.mms[name].geometry
        t: object = self.mms[name].pgd
        while isinstance(t, PageTable) and t.depth < len(geo.levels) - 2:
            t = t.entries.get(geo.index(t.depth, addr))
        return t.entries.get(geo.index(t.depth, addr)) if isinstance(t, PageTable) else None

    def pte(self, addr: int, name: str = "parent") -> object:
        t = self.pmd_entry(addr, name)
        if not isinstance(t, PageTable):
            return None
        return t.entries.get(self.mms[name].geometry.index(t.depth, addr))


# -- 1. read faults -----------------------------------------------------------------------


def test_d3_read_faults_map_the_huge_zero_page_and_the_zero_page() -> None:
    """cases/d3-thp-read: a THP region read-faulted maps the huge zero folio with a
    deposited table each (do_huge_pmd_anonymous_page()); writing it allocates a
    THP in place (do_huge_zero_wp_pmd(): the deposit stays); a plain anonymous
    region read-faulted maps the zero page in PTE tables.  Host: 0 16 16 16 28 16 0."""
    h, z = BASE, 0x100040000000
    host = Host()
    seen = []
    vma = host.map(h, 4 * MIB, thp=True)
    seen.append(host.vmpte())
    host.touch(h, 4 * MIB, 2 * MIB, write=False)
    seen.append(host.vmpte())
    zero = host.pmd_entry(h)
    assert isinstance(zero, Leaf) and zero.zero and zero.huge and not zero.writable
    assert host.mm.rss.value == 0                  # the huge zero folio is not in RSS
    assert vma.anon_vma                            # vmf_anon_prepare() came first
    host.touch(h, 4 * MIB, 2 * MIB)
    seen.append(host.vmpte())
    thp = host.pmd_entry(h)
    assert isinstance(thp, Leaf) and thp.anon and thp.huge and thp.writable
    assert host.mm.rss.value == 2 * 512            # AnonHugePages 4096 kB
    zvma = host.map(z, 4 * MIB)
    seen.append(host.vmpte())
    host.touch(z, 4 * MIB, write=False)
    seen.append(host.vmpte())
    zpte = host.pte(z)
    assert isinstance(zpte, Leaf) and zpte.zero
    assert not zvma.anon_vma and host.mm.rss.value == 2 * 512
    host.unmap(h, 4 * MIB)
    seen.append(host.vmpte())
    host.unmap(z, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, 16, 16, 16, 28, 16, 0]


def test_a_zero_page_read_gives_no_anon_vma_so_fork_copies_nothing_until_a_write() -> None:
    """do_anonymous_page()'s read branch takes no anon_vma, so dup_mmap()'s
    vma_needs_copy() skips the VMA; a later write COWs the zero page
    (wp_page_copy(): vmf_anon_prepare()), and the next fork copies the tables."""
    host = Host()
    vma = host.map(BASE, 4 * MIB)
    host.touch(BASE, 4 * MIB, write=False)
    assert host.vmpte() == 16 and host.mm.rss.value == 0 and not vma.anon_vma
    host.fork()
    assert host.vmpte("child") == 0
    host.exit()
    host.touch(BASE, 4 * KIB)                      # one write: COW of the zero page
    leaf = host.pte(BASE)
    assert isinstance(leaf, Leaf) and leaf.anon and leaf.writable and not leaf.zero
    assert vma.anon_vma and host.mm.rss.value == 1 and host.vmpte() == 16
    host.fork()
    assert host.vmpte("child") == 16               # both PTE tables copied
    assert census(host.mms["child"]).leaves == 1   # the zero-page PTEs are not RSS
    host.exit()
    host.unmap(BASE, 4 * MIB)
    assert host.vmpte() == 0


def test_a_private_file_read_maps_the_file_page_and_a_write_cows_it() -> None:
    """do_read_fault() maps the file's page read-only, no anon_vma; a write then
    goes to do_wp_page() -> wp_page_copy(), which gives the VMA its anon_vma."""
    host = Host()
    vma = host.map(BASE, 2 * MIB, file="f")
    host.touch(BASE, 2 * MIB, write=False)
    leaf = host.pte(BASE)
    assert isinstance(leaf, Leaf) and not leaf.anon and not leaf.writable
    assert not vma.anon_vma and host.mm.rss.value == 512
    host.fork()
    assert host.vmpte("child") == 0                # refaulted by the child
    host.exit()
    host.touch(BASE, 4 * KIB)
    leaf = host.pte(BASE)
    assert isinstance(leaf, Leaf) and leaf.anon and leaf.writable
    assert vma.anon_vma and host.mm.rss.value == 512


def test_a_shared_read_maps_the_page_writable_and_takes_no_anon_vma() -> None:
    """shmem's vm_page_prot is writable for a shared writable mapping; a read never
    takes an anon_vma, so fork does not copy the tables."""
    host = Host()
    vma = host.map(BASE, 2 * MIB, shared=True, file="f")
    host.touch(BASE, 2 * MIB, write=False)
    host.touch(BASE, 2 * MIB)
    leaf = host.pte(BASE)
    assert isinstance(leaf, Leaf) and not leaf.anon and leaf.writable and not vma.anon_vma
    host.fork()
    assert host.vmpte("child") == 0


# -- 2. THP allocation failure ------------------------------------------------------------


def test_no_huge_folio_falls_back_to_ptes_and_a_huge_zero_write_splits() -> None:
    """thp_budget: do_huge_pmd_anonymous_page() with no folio returns
    VM_FAULT_FALLBACK (PTE tables); do_huge_zero_wp_pmd() without one falls back
    to splitting the huge zero PMD, its deposit becoming the PTE table; the
    huge zero folio itself needs no allocation."""
    host = Host()
    host.map(BASE, 4 * MIB, thp=True)
    host.mm.thp_budget = 1
    host.touch(BASE, 4 * MIB)                      # one THP, then PTEs
    assert host.mm.thp_budget == 0
    assert isinstance(host.pmd_entry(BASE), Leaf)
    assert isinstance(host.pmd_entry(BASE + 2 * MIB), PageTable)
    assert host.vmpte() == 16 and census(host.mm).tables[-1] == 2
    host.mm.thp_budget = None
    host.unmap(BASE, 4 * MIB)

    host.map(BASE, 4 * MIB, thp=True)
    host.mm.thp_budget = 0
    host.touch(BASE, 4 * MIB, 2 * MIB, write=False)     # huge zero: no folio needed
    assert all(isinstance(e, Leaf) and e.zero
               for e in (host.pmd_entry(BASE), host.pmd_entry(BASE + 2 * MIB)))
    host.touch(BASE, 4 * KIB)
    table = host.pmd_entry(BASE)
    assert isinstance(table, PageTable) and len(table.entries) == 512
    first, second = table.entries[0], table.entries[1]
    assert first.anon and first.writable and second.zero and not second.writable
    assert host.vmpte() == 16 and host.mm.rss.value == 1
    host.mm.thp_budget = None
    host.unmap(BASE, 4 * MIB)
    assert host.vmpte() == 0


def test_the_default_budget_is_unlimited() -> None:
    assert mm_struct().thp_budget is None


# -- 3. shared anonymous memory is shmem -------------------------------------------------


def test_h6_shared_anonymous_with_madv_hugepage_stays_pte_mapped() -> None:
    """cases/h6-shared-anon-thp: shmem_enabled=never: no huge PMD on fault even
    with MADV_HUGEPAGE, no anon_vma, and fork copies nothing.
    Host: 0 16, fork {16, child 0}, 16 16 0."""
    host = Host()
    seen = [host.vmpte()]
    vma = host.map(BASE, 4 * MIB, shared=True, thp=True)
    host.touch(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert not vma.anon_vma and not any(
        isinstance(host.pmd_entry(BASE + i * 2 * MIB), Leaf) for i in range(2))
    host.fork()
    seen.append((host.vmpte(), host.vmpte("child")))
    host.exit()
    seen.append(host.vmpte())
    host.dontneed(BASE, MIB)
    seen.append(host.vmpte())
    host.unmap(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, 16, (16, 0), 16, 16, 0]


def test_h4_fork_skips_shmem_and_copies_the_written_private_file_vma() -> None:
    """cases/h4-shared-anon-fork.  Host: 0 0 16 24, fork {24, child 16}, 24 16 0."""
    host = Host()
    s, p = BASE, 0x100000400000
    host.map(s, 4 * MIB, shared=True)
    host.map(p, 4 * MIB, file="p")
    seen = [host.vmpte()]
    host.touch(s, 4 * MIB)
    seen.append(host.vmpte())
    host.touch(p, 4 * MIB)
    seen.append(host.vmpte())
    host.fork()
    seen.append((host.vmpte(), host.vmpte("child")))
    host.exit()
    host.unmap(s, 4 * MIB)
    seen.append(host.vmpte())
    host.unmap(p, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, 16, 24, (24, 16), 16, 0]


# -- 4. file THPs in the page cache ----------------------------------------------------------


def test_h3_a_collapsed_shmem_folio_is_mapped_by_do_set_pmd_without_a_table() -> None:
    """cases/h3-shmem-collapse-then: after MADV_COLLAPSE the page cache holds two
    PMD-sized folios: the child's faults and the parent's after MADV_DONTNEED map
    them with huge PMDs (no PTE table); munmap of 1 MiB clears (splits) the other
    huge PMD, and the VMA left there is too small for one, so it refaults by PTEs.
    Host: 0 16 8, fork {8, child 0}, child touch {8, 8}, 8 8 8 8 12 0."""
    host = Host()
    host.map(BASE, 4 * MIB, shared=True, file="f")
    seen: list[object] = [host.vmpte()]
    host.touch(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert host.collapse(BASE, 4 * MIB) == 0
    seen.append(host.vmpte())
    host.fork()
    seen.append((host.vmpte(), host.vmpte("child")))
    host.touch(BASE, 4 * MIB, mm="child")
    seen.append((host.vmpte(), host.vmpte("child")))
    assert isinstance(host.pmd_entry(BASE, "child"), Leaf)
    host.exit()
    seen.append(host.vmpte())
    host.dontneed(BASE, 2 * MIB)
    seen.append(host.vmpte())
    host.touch(BASE, 2 * MIB)
    seen.append(host.vmpte())
    leaf = host.pmd_entry(BASE)
    assert isinstance(leaf, Leaf) and leaf.huge and not leaf.anon and leaf.writable
    host.unmap(BASE + 2 * MIB, MIB)
    seen.append(host.vmpte())
    assert host.pmd_entry(BASE + 2 * MIB) is None           # cleared, no deposit
    host.touch(BASE + 3 * MIB, MIB)
    seen.append(host.vmpte())
    host.unmap(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, 16, 8, (8, 0), (8, 8), 8, 8, 8, 8, 12, 0]


def test_a_private_mapping_reads_the_file_thp_by_pmd_and_a_write_splits_it() -> None:
    """finish_fault() maps the PMD-sized folio for a read of a private mapping too
    (read-only); a write goes to wp_huge_pmd(), which splits (clears) the file
    PMD, and the write is a COW at PTE level (do_cow_fault(), an anon_vma)."""
    host = Host()
    host.map(BASE, 2 * MIB, shared=True, file="f")
    host.touch(BASE, 2 * MIB)
    assert host.collapse(BASE, 2 * MIB) == 0
    pvma = host.map(BASE + 2 * MIB, 2 * MIB, file="f")       # the same file offset 0
    host.touch(BASE + 2 * MIB, 2 * MIB, 2 * MIB, write=False)
    leaf = host.pmd_entry(BASE + 2 * MIB)
    assert isinstance(leaf, Leaf) and leaf.huge and not leaf.writable
    assert not pvma.anon_vma and host.vmpte() == 8
    host.touch(BASE + 2 * MIB, 4 * KIB)
    assert isinstance(host.pmd_entry(BASE + 2 * MIB), PageTable)
    assert pvma.anon_vma and host.vmpte() == 12
    assert host.mm.rss.value == 512 + 1


def test_a_file_thp_moves_with_mremap_without_a_deposit() -> None:
    from ptlab.mm.mremap import mremap

    host = Host()
    host.map(BASE, 2 * MIB, shared=True, file="f")
    host.touch(BASE, 2 * MIB)
    assert host.collapse(BASE, 2 * MIB) == 0
    assert host.run(mremap(host.mm, BASE, 2 * MIB, BASE + (1 << 30)))
    leaf = host.pmd_entry(BASE + (1 << 30))
    assert isinstance(leaf, Leaf) and leaf.huge and not leaf.anon
    assert host.vmpte() == 8                                 # PUD + the new PMD table


# -- 5. MADV_COLLAPSE's return value ---------------------------------------------------------


@pytest.mark.parametrize(("shared", "expect"), [(True, [0, 16, (0, 8), 0]),
                                               (False, [0, 16, (-errno.EINVAL, 16), 0])],
                         ids=["e1-shared", "e2-private"])
def test_e1_e2_memfd_collapse(shared: bool, expect: list[object]) -> None:
    """cases/e1-memfd-shared-collapse: the tables go (host: 0 16, collapse 8 (0), 0).
    cases/e2-memfd-private-collapse: the page cache is collapsed, but the PTEs of
    a written private mapping map anonymous COW pages: collapse_pte_mapped_thp()
    aborts (SCAN_FAIL, which stops the walk) -> -EINVAL (host: 0 16, collapse 16
    (EINVAL), 0)."""
    host = Host()
    host.map(BASE, 4 * MIB, shared=shared, file="f")
    seen: list[object] = [host.vmpte()]
    host.touch(BASE, 4 * MIB)
    seen.append(host.vmpte())
    seen.append((host.collapse(BASE, 4 * MIB), host.vmpte()))
    host.unmap(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == expect


def test_e3_anonymous_collapse_deposits_the_table() -> None:
    """cases/e3-anon-collapse (no MADV_HUGEPAGE: MADV_COLLAPSE ignores the sysfs
    setting).  Host: 0 16, collapse 16 (0), dontneed 2 MiB 12, 0."""
    host = Host()
    host.map(BASE, 4 * MIB)
    seen: list[object] = [host.vmpte()]
    host.touch(BASE, 4 * MIB)
    seen.append(host.vmpte())
    seen.append((host.collapse(BASE, 4 * MIB), host.vmpte()))
    assert all(isinstance(host.pmd_entry(BASE + i * 2 * MIB), Leaf) for i in range(2))
    host.dontneed(BASE, 2 * MIB)
    seen.append(host.vmpte())
    host.unmap(BASE, 4 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, 16, (0, 16), 12, 0]


def test_h5_untouched_anonymous_collapse_is_einval() -> None:
    """cases/h5-untouched-collapse-and-boundaries: no PMD table (SCAN_PMD_NULL)
    -> -EINVAL; then a region across a 1 GiB boundary needs two PMD tables, and
    a neighbour in the same PMD table keeps it at munmap.
    Host: 0, collapse 0 (EINVAL), 12 12 24 12 0."""
    n, x = 0x100000000000, 0x10003FE00000
    host = Host()
    host.map(n, 2 * MIB)
    seen: list[object] = [host.vmpte()]
    seen.append((host.collapse(n, 2 * MIB), host.vmpte()))
    host.touch(n, 2 * MIB, 2 * MIB)
    seen.append(host.vmpte())
    host.map(x, 4 * MIB)
    seen.append(host.vmpte())
    host.touch(x, 4 * MIB, 2 * MIB)
    seen.append(host.vmpte())
    host.unmap(x, 4 * MIB)
    seen.append(host.vmpte())
    host.unmap(n, 2 * MIB)
    seen.append(host.vmpte())
    assert seen == [0, (-errno.EINVAL, 0), 12, 12, 24, 12, 0]


def test_madvise_collapse_results_the_probe_did_not_measure() -> None:
    """From the kernel's rules: a huge PMD already there counts as done
    (SCAN_PMD_MAPPED); a PTE table with nothing writable in it (empty, or only
    zero pages) is SCAN_PAGE_RO -> -EINVAL; a PMD table without the range's
    entry is SCAN_PMD_NONE, which stops the walk (-EINVAL) and leaves the ranges
    after it alone; no huge folio is SCAN_ALLOC_HUGE_PAGE_FAIL -> -ENOMEM; a
    range holding no whole PMD range is 0 if it starts PMD-aligned (none to
    do), -EINVAL if not (``hend < hstart``); a hole is -ENOMEM."""
    host = Host()
    host.map(BASE, 4 * MIB, thp=True)
    host.touch(BASE, 4 * MIB, 2 * MIB)
    assert host.collapse(BASE, 4 * MIB) == 0                 # both already huge
    host.unmap(BASE, 4 * MIB)

    # v6.18 dropped SCAN_PAGE_RO (b9f85966d1be, 65b08d362ba5): an empty PTE table,
    # or one of zero pages only, collapses (this machine: 0, and 2 MiB of
    # AnonHugePages); before, -EINVAL.
    for era, expect in (("v6.18", 0), ("v6.13", -errno.EINVAL)):
        host = Host(era)
        host.map(BASE, 4 * MIB)
        host.touch(BASE, 4 * KIB)
        host.dontneed(BASE, 4 * KIB)                         # an empty PTE table
        assert host.collapse(BASE, 2 * MIB) == expect
        host.touch(BASE + 2 * MIB, 4 * MIB - 2 * MIB, write=False)   # zero pages only
        assert host.collapse(BASE + 2 * MIB, 2 * MIB) == expect
        host.unmap(BASE, 4 * MIB)

    host.map(BASE, 4 * MIB)
    host.touch(BASE + 2 * MIB, 4 * KIB)                      # only the second range
    assert host.collapse(BASE, 4 * MIB) == -errno.EINVAL     # stops at the first
    assert isinstance(host.pmd_entry(BASE + 2 * MIB), PageTable)
    assert host.collapse(BASE + 2 * MIB, 2 * MIB) == 0
    host.mm.thp_budget = 0
    host.touch(BASE, 4 * KIB)
    assert host.collapse(BASE, 2 * MIB) == -errno.ENOMEM
    host.mm.thp_budget = None
    assert host.collapse(BASE + 2 * MIB, MIB) == 0           # hend == hstart
    assert host.collapse(BASE + 4 * KIB, MIB) == -errno.EINVAL   # hend < hstart
    assert host.collapse(BASE, 8 * MIB) == -errno.ENOMEM     # [4, 8) MiB unmapped


def test_fork_copies_a_private_file_vma_but_not_its_file_thp() -> None:
    """copy_huge_pmd(): "Skip if can be re-fill on fault" (!vma_is_anonymous()):
    a VMA with an anon_vma has its PTE tables copied, its file huge PMD not."""
    host = Host()
    host.map(BASE, 2 * MIB, shared=True, file="f")
    host.touch(BASE, 2 * MIB)
    assert host.collapse(BASE, 2 * MIB) == 0
    host.unmap(BASE, 2 * MIB)
    pvma = host.map(BASE, 4 * MIB, file="f")
    host.touch(BASE, 2 * MIB, 2 * MIB, write=False)             # the file THP
    host.touch(BASE + 2 * MIB, 4 * KIB)                          # a COW page
    assert pvma.anon_vma and isinstance(host.pmd_entry(BASE), Leaf)
    assert host.vmpte() == 12
    host.fork()
    assert host.pmd_entry(BASE, "child") is None
    assert isinstance(host.pmd_entry(BASE + 2 * MIB, "child"), PageTable)
    assert host.vmpte("child") == 12
    assert census(host.mms["child"]).leaves == 1
