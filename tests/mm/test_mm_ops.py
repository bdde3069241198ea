"""mprotect, mremap, THP with deposited tables, khugepaged, fork and mmdrop, run
sequentially through the model and checked against the kernel's own rules."""

from __future__ import annotations

from ptlab.arch.geometry import X86_64
from ptlab.config import ERAS
from ptlab.mm.oracle import census
from ptlab.mm.types import PageTable
from ptlab.simulate import Simulator, parse_workload, simulate

MIB = 1 << 20
BASE = 16 << 40


def _wl(regions: str, steps: list[str]) -> str:
    return regions + "".join(f"[[step]]\n{s}\n" for s in steps)


A8 = '[[region]]\nname = "a"\nstart = "16TiB"\nsize = "8MiB"\n'


def _run(text: str, kernel: str = "v6.18") -> Simulator:
    wl = parse_workload("t", text)
    sim = Simulator(X86_64, ERAS[kernel])
    for step in wl.steps:
        sim.step(step)
        sim.settle()
    return sim


def _ranges(sim: Simulator) -> list[tuple[int, int, int]]:
    return [(v.vm_start - BASE, v.vm_end - BASE, v.vm_flags) for v in sim.mm.vmas]


def _pte_table(sim: Simulator, addr: int) -> PageTable:
    geo = sim.mm.geometry
    t = sim.mm.pgd
    assert t is not None
    while t.depth < len(geo.levels) - 1:
        nxt = t.entries[geo.index(t.depth, addr)]
        assert isinstance(nxt, PageTable)
        t = nxt
    return t


def test_mprotect_splits_then_merges_back() -> None:
    sim = _run(_wl(A8, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"',
                        'op = "mprotect"\nregion = "a"\noffset = "1MiB"\nlength = "2MiB"\n'
                        'prot = "r"']))
    assert [(s, e) for s, e, _ in _ranges(sim)] == [(0, MIB), (MIB, 3 * MIB),
                                                    (3 * MIB, 8 * MIB)]
    geo = sim.mm.geometry
    pte = _pte_table(sim, BASE)
    assert pte.entries[geo.index(pte.depth, BASE)].writable
    assert not pte.entries[geo.index(pte.depth, BASE + MIB)].writable
    assert census(sim.mm).tables[-1] == 4                 # no table is freed or made
    sim2 = _run(_wl(A8, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"',
                         'op = "mprotect"\nregion = "a"\noffset = "1MiB"\nlength = "2MiB"\n'
                         'prot = "r"',
                         'op = "mprotect"\nregion = "a"\noffset = "1MiB"\nlength = "2MiB"\n'
                         'prot = "rw"']))
    assert [(s, e) for s, e, _ in _ranges(sim2)] == [(0, 8 * MIB)]
    assert _ranges(sim2)[0][2] & 0x2                           # VM_WRITE again


def test_munmap_in_the_middle_splits_and_frees_only_whole_tables() -> None:
    """free_pgtables(floor = prev->vm_end, ceiling = next->vm_start): unmapping
    [1 MiB, 5 MiB) frees the one PTE table wholly inside, [2 MiB, 4 MiB)."""
    res = simulate(parse_workload("t", _wl(A8, [
        'op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"',
        'op = "unmap"\nregion = "a"\noffset = "1MiB"\nlength = "4MiB"'])))
    assert [s.tables["pte"] for s in res.steps] == [0, 4, 3]
    assert res.steps[2].rss_pages == 2048 - 1024


def test_mremap_aligned_moves_whole_tables() -> None:
    text = A8 + '[[region]]\nname = "b"\nstart = "17TiB"\nsize = "8MiB"\n'
    sim = _run(_wl(text, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"']))
    before = [_pte_table(sim, BASE + i * 2 * MIB) for i in range(4)]
    sim.step(parse_workload("t", _wl(text, ['op = "mremap"\nregion = "a"\nto = "b"'])).steps[0])
    sim.settle()
    after = [_pte_table(sim, (17 << 40) + i * 2 * MIB) for i in range(4)]
    assert after == before                        # the same tables, moved (move_normal_pmd)
    assert census(sim.mm).leaves == 2048


def test_mremap_unaligned_moves_ptes_into_new_tables() -> None:
    text = (A8 + '[[region]]\nname = "b"\nstart = 0x110000001000\nsize = "8MiB"\n')
    sim = _run(_wl(text, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"',
                          'op = "mremap"\nregion = "a"\nto = "b"']))
    c = census(sim.mm)
    assert c.leaves == 2048
    assert c.tables[-1] == 5                      # 8 MiB at a 4 KiB offset spans 5 tables
    assert sim.mm.vmas[0].vm_start == 0x110000001000


def test_thp_fault_deposits_a_counted_table_freed_at_once_by_zap() -> None:
    """do_huge_pmd_anonymous_page(): mm_inc_nr_ptes() for the deposit; zap_huge_pmd()
    -> zap_deposited_table(): pte_free() at once, no grace period."""
    thp = A8.replace('size = "8MiB"\n', 'size = "8MiB"\nthp = true\n')
    res = simulate(parse_workload("t", _wl(thp, [
        'op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\nstride = "2MiB"',
        'op = "madvise"\nregion = "a"\nadvice = "dontneed"\nlength = "2MiB"',
        'op = "madvise"\nregion = "a"\nadvice = "dontneed"\noffset = "3MiB"\nlength = "1MiB"'
    ])))
    s = res.steps
    assert s[1].vmpte_kib == 8 + 4 * 4 and s[1].rss_pages == 4 * 512
    assert s[1].tables["pte"] == 4                 # deposited, counted
    assert s[2].vmpte_kib == 8 + 3 * 4 and s[2].deferred_bytes == 0
    # A partial zap splits the huge PMD into its deposited table.
    assert s[3].rss_pages == 2 * 512 + 256 and s[3].tables["pte"] == 3


def test_khugepaged_anon_collapse_deposits_the_old_table_after_an_ipi() -> None:
    thp = A8.replace('size = "8MiB"\n', 'size = "8MiB"\nthp = true\n')
    res = simulate(parse_workload("t", _wl(thp, [
        'op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\nlength = "4KiB"',
        'op = "mprotect"\nregion = "a"\noffset = "4KiB"\nlength = "4KiB"\nprot = "r"',
        'op = "mprotect"\nregion = "a"\noffset = "4KiB"\nlength = "4KiB"\nprot = "rw"',
        # Only the first 2 MiB has a PTE table: the others would make
        # MADV_COLLAPSE fail (SCAN_PMD_NONE, -EINVAL).
        'op = "collapse"\nregion = "a"\nlength = "2MiB"'])))
    before, after = res.steps[-2], res.steps[-1]
    assert after.vmpte_kib == before.vmpte_kib     # deposited, not freed
    assert after.rss_pages == 512
    assert after.ipis_sent > before.ipis_sent      # tlb_remove_table_sync_one()


def test_file_collapse_frees_the_table_by_pte_free_defer() -> None:
    f = ('[[region]]\nname = "f"\nstart = "16TiB"\nsize = "4MiB"\nkind = "file"\n'
         'shared = true\n')
    for mode, rss in (("madv_collapse", 1024), ("khugepaged", 0)):
        res = simulate(parse_workload("t", _wl(f, [
            'op = "map"\nregion = "f"', 'op = "touch"\nregion = "f"',
            f'op = "collapse"\nregion = "f"\nmode = "{mode}"'])))
        last = res.steps[-1]
        assert last.tables["pte"] == 0 and last.rss_pages == rss
        assert last.deferred_bytes == 2 * 4096     # waited for a grace period
        assert last.grace_periods > res.steps[-2].grace_periods


def test_fork_copies_tables_even_empty_ones_and_both_exit_cleanly() -> None:
    sim = _run(_wl(A8, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\n'
                        'stride = "2MiB"',
                        'op = "madvise"\nregion = "a"\nadvice = "dontneed"\nlength = "1MiB"',
                        'op = "fork"']), kernel="v6.13")
    parent, child = sim.mms["parent"], sim.mms["child"]
    assert census(child).tables == census(parent).tables   # the emptied table too
    assert census(child).leaves == 3
    pte = _pte_table(sim, BASE + 2 * MIB)
    assert not next(iter(pte.entries.values())).writable    # COW: write-protected
    nr = sim.kernel.alloc.nr_pagetable
    steps = parse_workload("t", _wl(A8, ['op = "exit"\nmm = "child"', 'op = "exit"'])).steps
    sim.step(steps[0])
    sim.settle()
    assert sim.kernel.alloc.nr_pagetable == nr - 1 - sum(census(parent).tables[1:])
    sim.step(steps[1])
    sim.settle()
    assert sim.kernel.alloc.nr_pagetable == 0               # mmdrop freed the PGDs
    assert sim.mms == {}


def test_a_written_private_file_mapping_has_an_anon_vma_and_is_not_collapsed() -> None:
    """Writes to MAP_PRIVATE file pages are COW (anonymous pages, an anon_vma):
    retract_page_tables() skips such a VMA, and fork copies its tables."""
    f = '[[region]]\nname = "f"\nstart = "16TiB"\nsize = "2MiB"\nkind = "file"\n'
    sim = _run(_wl(f, ['op = "map"\nregion = "f"', 'op = "touch"\nregion = "f"',
                       'op = "collapse"\nregion = "f"\nmode = "khugepaged"', 'op = "fork"']))
    assert sim.mm.vmas[0].anon_vma
    assert census(sim.mm).tables[-1] == 1 and census(sim.mm).leaves == 512
    assert census(sim.mms["child"]).leaves == 512


def test_a_write_to_a_forked_thp_splits_it_into_its_deposited_table() -> None:
    """do_huge_pmd_wp_page() fallback: the write-protected huge PMD is split and
    the deposited table becomes a linked PTE table (VmPTE unchanged)."""
    thp = A8.replace('size = "8MiB"\n', 'size = "2MiB"\nthp = true\n')
    sim = _run(_wl(thp, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\n'
                         'length = "4KiB"', 'op = "fork"']))
    pmd = sim.mm.pgd
    for _ in range(2):
        assert pmd is not None
        pmd = pmd.entries[sim.mm.geometry.index(pmd.depth, BASE)]
    assert isinstance(pmd, PageTable) and len(pmd.deposit) == 1
    vmpte = sim.mm.pgtables_bytes.value
    sim.step(parse_workload("t", _wl(thp, ['op = "touch"\nregion = "a"\nlength = "4KiB"']))
             .steps[0])
    sim.settle()
    assert pmd.deposit == [] and isinstance(_pte_table(sim, BASE), PageTable)
    assert sim.mm.pgtables_bytes.value == vmpte


def test_powerpc_hash_moves_ptes_not_tables_and_deposits_for_file_thps() -> None:
    """arch_supports_page_table_move() is radix_enabled(); hash needs a deposited
    table under every huge PMD (arch_needs_pgtable_deposit())."""
    from ptlab.arch.geometry import ARCHES

    text = ('[[region]]\nname = "a"\nstart = "16TiB"\nsize = "16MiB"\n'
            '[[region]]\nname = "b"\nstart = "17TiB"\nsize = "16MiB"\n'
            '[[region]]\nname = "f"\nstart = "18TiB"\nsize = "16MiB"\nkind = "file"\n'
            'shared = true\n')
    steps = parse_workload("t", _wl(text, [
        'op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\nstride = "1MiB"',
        'op = "mremap"\nregion = "a"\nto = "b"', 'op = "map"\nregion = "f"',
        'op = "touch"\nregion = "f"\nstride = "1MiB"',
        'op = "collapse"\nregion = "f"'])).steps
    for arch in ("ppc64-radix", "ppc64-hash"):
        sim = Simulator(ARCHES[arch], ERAS["v6.18"])
        for step in steps[:2]:
            sim.step(step)
            sim.settle()
        old = _pte_table(sim, BASE)
        sim.step(steps[2])
        sim.settle()
        new = _pte_table(sim, 17 << 40)
        assert (new is old) is (arch == "ppc64-radix")     # move_normal_pmd() or not
        assert census(sim.mm).leaves == 16
        for step in steps[3:5]:
            sim.step(step)
            sim.settle()
        before = sim.mm.pgtables_bytes.value
        sim.step(steps[5])
        sim.settle()
        geo = sim.mm.geometry
        ranges = (16 << 20) // geo.levels[-2].size          # 8 on radix, 1 on hash
        retracted = ranges * geo.levels[-1].pgtables_bytes
        deposited = retracted if arch == "ppc64-hash" else 0
        assert sim.mm.pgtables_bytes.value == before - retracted + deposited


def test_madvise_across_split_vmas_zaps_them_all_under_mmap_lock() -> None:
    res = simulate(parse_workload("t", _wl(A8, [
        'op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"',
        'op = "mprotect"\nregion = "a"\noffset = "3MiB"\nlength = "2MiB"\nprot = "r"',
        'op = "madvise"\nregion = "a"\nadvice = "dontneed"'])))
    # Each VMA is zapped on its own (zap_page_range_single()): PT_RECLAIM frees
    # only the tables one zap covers whole; [2, 4) and [4, 6) MiB straddle the
    # VMA boundaries at 3 and 5 MiB, so they stay, empty.
    assert res.steps[-1].rss_pages == 0 and res.steps[-1].tables["pte"] == 2


def test_an_impossible_step_is_an_error_naming_its_line() -> None:
    import pytest

    from ptlab.simulate import WorkloadError
    text = _wl(A8, ['op = "map"\nregion = "a"',
                    'op = "unmap"\nregion = "a"\noffset = "2MiB"\nlength = "2MiB"',
                    'op = "madvise"\nregion = "a"\nadvice = "dontneed"'])
    with pytest.raises(WorkloadError, match=r"t:13: madvise of 'a' failed"):
        simulate(parse_workload("t", text))


def test_mremap_of_an_aligned_gib_moves_the_whole_pmd_table() -> None:
    """move_normal_pud() (HAVE_MOVE_PUD): the PMD table moves with its 512 PTE
    tables; the old PUD table is freed by the unmap of the old range."""
    text = ('[[region]]\nname = "a"\nstart = "16TiB"\nsize = "1GiB"\n'
            '[[region]]\nname = "b"\nstart = "17TiB"\nsize = "1GiB"\n')
    sim = _run(_wl(text, ['op = "map"\nregion = "a"', 'op = "touch"\nregion = "a"\n'
                          'stride = "2MiB"']))
    pud = sim.mm.pgd
    assert pud is not None
    pud = pud.entries[sim.mm.geometry.index(0, BASE)]
    pmd = pud.entries[sim.mm.geometry.index(1, BASE)]
    nr = sim.kernel.alloc.nr_pagetable
    sim.step(parse_workload("t", _wl(text, ['op = "mremap"\nregion = "a"\nto = "b"']))
             .steps[0])
    sim.settle()
    new_pud = sim.mm.pgd.entries[sim.mm.geometry.index(0, 17 << 40)]
    assert new_pud.entries[sim.mm.geometry.index(1, 17 << 40)] is pmd
    assert pud.page.freed and sim.kernel.alloc.nr_pagetable == nr   # one PUD for another
    assert census(sim.mm).tables == [1, 1, 1, 512] and census(sim.mm).leaves == 512
