"""Issue 3's checks on the x86-64 model: the pmd_install() race, and munmap racing
lockless walkers on v6.18, with the IPI-only fallback, and without RCU table free."""

from __future__ import annotations

import pytest

from ptlab.check import CheckOutcome, CheckSpec, run_check
from ptlab.scenarios import OK, SCENARIOS


def test_two_faults_race_to_populate_one_pmd() -> None:
    out = run_check(CheckSpec("fault-race", "v6.18"))
    assert out.result.verdict == "ok" and out.result.exhaustive
    assert "a fault lost the pmd_install() race and freed its table" in out.result.reached


@pytest.mark.parametrize("variant", [v.name for v in SCENARIOS["mmu-gather-table-free"].variants])
def test_mmu_gather_table_free(variant: str) -> None:
    """Each era's way of freeing an unlinked table, against the walkers it must
    wait for; the GUP-only variants run without the RCU walker."""
    out = run_check(CheckSpec("mmu-gather-table-free", variant))
    assert out.matches, (out.expected, out.found)
    gup_only = dict(SCENARIOS["mmu-gather-table-free"].variant(variant).params).get(
        "rcu_walkers") == 0
    if out.expected == OK:
        assert out.result.exhaustive
        if not gup_only:
            assert "an RCU walker read a PTE of the table being changed" in out.result.reached
        assert "GUP-fast pinned a page meanwhile" in out.result.reached
    else:
        v = out.violation
        assert v is not None, out
        if gup_only:
            assert v.thread.startswith("gup/") and "gup_fast" in v.report, v
        else:
            assert v.thread.startswith("walker/") and "pte_offset_map_walk" in v.report, v


def test_the_ipi_fallback_is_safe_for_gup_fast_alone() -> None:
    """The IPI does wait for IRQ-off walkers: without the RCU walker, no violation."""
    out = run_check(CheckSpec("mmu-gather-table-free", "pt-reclaim-ipi-fallback",
                              {"rcu_walkers": 0, "gup_walkers": 1}))
    assert out.result.verdict == "ok" and out.result.exhaustive


@pytest.mark.parametrize("variant", [v.name for v in SCENARIOS["retract-walkers"].variants])
def test_retract_walkers(variant: str) -> None:
    """pte_free_defer() (v6.6+) keeps a retracted table for RCU walkers; v6.5's IPI
    then pte_free() does not."""
    out = run_check(CheckSpec("retract-walkers", variant))
    assert out.matches, (out.expected, out.found)
    if out.expected == OK:
        assert out.result.exhaustive
        assert "an RCU walker read a PTE of the table being changed" in out.result.reached
    else:
        v = out.violation
        assert v is not None and v.thread.startswith("walker/"), v
        assert "retract_page_tables" in v.report


def checked(scenario: str, variant: str, reached: str | None = None) -> CheckOutcome:
    """The declared verdict; a safe one exhaustively (and, if named, non-vacuously)."""
    out = run_check(CheckSpec(scenario, variant))
    assert out.matches, (out.expected, out.found)
    if out.expected == OK:
        assert out.result.exhaustive
        assert reached is None or reached in out.result.reached
    return out


@pytest.mark.parametrize("variant", [v.name for v in SCENARIOS["mremap-walkers"].variants])
def test_mremap_walkers(variant: str) -> None:
    checked("mremap-walkers", variant, "an RCU walker read a PTE of the table being changed")


@pytest.mark.parametrize("variant", [v.name for v in SCENARIOS["khugepaged-gup-fast"].variants])
def test_khugepaged_gup_fast(variant: str) -> None:
    """Without the IPI after pmdp_collapse_flush(), and a flush that sends none,
    GUP-fast reads the freed table; tlb_remove_table_sync_one() or pte_free_defer()
    prevent it."""
    out = run_check(CheckSpec("khugepaged-gup-fast", variant))
    assert out.matches, (out.expected, out.found)
    if out.expected == OK:
        assert out.result.exhaustive
    else:
        v = out.violation
        assert v is not None and v.thread.startswith("gup/"), v


@pytest.mark.parametrize("variant", [v.name for v in SCENARIOS["pt-reclaim"].variants])
def test_pt_reclaim(variant: str) -> None:
    checked("pt-reclaim", variant)


def test_the_mid_scan_break_reaches_the_race_it_guards() -> None:
    """need_resched() is checked before each run of do_zap_pte_range(): the fixed
    kernel drops its lock after zapping the first page, a fault refills it, and the
    slow path keeps the table."""
    out = checked("pt-reclaim", "mid-scan-break")
    assert ("zap_pte_range() broke its scan, a fault refilled the table and reclaim kept "
            "it") in out.result.reached
    assert out.result.stats.executions < 5_000        # two choice points, not one per PTE
