"""Every design of seed 001 gets the verdict its scenario declares."""

from __future__ import annotations

import pytest

from ptlab.check import CheckSpec, run_check
from ptlab.engine import DPOR, Execution, SetupCache
from ptlab.scenarios import OK, SCENARIOS
from ptlab.scenarios import pte_free_defer_fragments as pfd

SC = SCENARIOS["pte-free-defer-fragments"]


@pytest.mark.parametrize("variant", [v.name for v in SC.variants])
def test_variant_gets_its_declared_verdict(variant: str) -> None:
    out = run_check(CheckSpec(SC.name, variant))
    assert out.matches, (out.expected, out.found, out.result.stats)
    if out.expected == OK:
        assert out.result.exhaustive and out.result.bound_hit is None
        # Not vacuous: the races the designs are about actually happened.
        assert "an RCU walker read a table already detached from its PMD" in out.result.reached
        assert "the fragment page was freed" in out.result.reached
    else:
        assert out.schedule is not None and out.trace is not None
        v = out.violation
        assert v is not None
        # Found at a step, or by the final checks once everything stopped.
        assert v.step == (len(out.trace) if v.thread == "<finish>" else out.trace[-1].index)


def test_rcu_head_per_table_is_caught_by_an_rcu_walker() -> None:
    out = run_check(CheckSpec(SC.name, "rcu-head-per-table"))
    assert out.violation is not None and out.violation.thread.startswith("walker/")
    assert "tlb_remove_table_smp_sync" in " ".join(s.op for s in out.trace or [])


def test_naive_reports_double_call_rcu_with_both_call_chains() -> None:
    out = run_check(CheckSpec(SC.name, "naive"))
    assert out.violation is not None
    assert "pte_free_defer_naive" in out.violation.report
    assert "First queued by task khugepaged/" in out.violation.report


def test_frag_refcount_with_three_fragments_and_no_walkers() -> None:
    out = run_check(CheckSpec(SC.name, "frag-refcount", {"fragments": 3, "rcu_walkers": 0,
                                                         "gup_walkers": 0}))
    assert out.result.verdict == "ok" and out.result.exhaustive


class ForgetfulDesign(pfd.PteFreeDeferModel):
    """A design that drops the fragment reference and never frees: the leak oracle
    must notice."""


async def _forget(mm: object, pgtable: object) -> None:
    return None


def test_the_leak_check_is_not_vacuous() -> None:
    design = pfd.Design(_forget)  # type: ignore[arg-type]
    params = SC.resolve("pg-active", {"rcu_walkers": 0, "gup_walkers": 0})
    r = DPOR(lambda: ForgetfulDesign(design, params)).run()
    assert r.violation is not None and r.violation.kind == "leak"


def test_accounting_is_checked_in_every_execution() -> None:
    seen: list[int] = []

    class Spy(pfd.PteFreeDeferModel):
        def finish(self, ex: Execution) -> None:
            super().finish(ex)
            seen.append(self.kernel.alloc.nr_pagetable)

    params = SC.resolve("pg-active", {"gup_walkers": 0})
    r = DPOR(lambda: Spy(pfd.DESIGNS["pg-active"], params)).run()
    assert r.exhaustive and len(seen) == r.executions and set(seen) == {0}


@pytest.mark.parametrize("variant", ["pg-active", "rcu-head-per-table"])
def test_cloned_set_up_explores_exactly_what_a_fresh_one_does(variant: str) -> None:
    """The search clones one snapshot of set-up per execution (SetupCache); building
    it afresh every time must give the same executions, in the same order."""
    params = SC.resolve(variant, {})
    design = pfd.DESIGNS[variant]

    def explore(cache: SetupCache[pfd.SetupState] | None) -> list[tuple[int, ...]]:
        labels: list[tuple[int, ...]] = []
        dpor = DPOR(lambda: pfd.PteFreeDeferModel(design, params, cache),
                    stop_on_violation=False, max_executions=400)
        dpor.on_execution = lambda ex: labels.append(tuple(ex.ev_label))
        dpor.run()
        return labels

    fresh = explore(None)
    assert len(fresh) > 50 and explore(SetupCache()) == fresh
