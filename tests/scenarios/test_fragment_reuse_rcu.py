"""Seed 003's fragment-reuse design: its verdicts, and the memory it saves against
powerpc's never-reuse."""

from __future__ import annotations

import pytest
from test_mm_races import checked

from ptlab.scenarios import SCENARIOS
from ptlab.scenarios.fragment_reuse_rcu import (
    _design_held,
    _powerpc_held,
    churn,
    compare_memory,
)

SC = SCENARIOS["fragment-reuse-rcu"]


@pytest.mark.parametrize("variant", [v.name for v in SC.variants])
def test_variant_gets_its_declared_verdict(variant: str) -> None:
    checked(SC.name, variant)


def test_reuse_saves_memory_against_never_reuse() -> None:
    m = compare_memory()
    (dm, dp), (pm, pp) = m.design, m.powerpc
    assert m.fragments == 16 and m.tables > 1000
    assert dm < pm and dp <= pp
    assert "less memory" in m.lines()[0]


def test_without_frees_there_is_nothing_to_reuse() -> None:
    """Four pages' worth of tables and no frees: both allocators hold four pages."""
    plan = [(16, [])] * 4
    assert _design_held(plan, 16)[1] == _powerpc_held(plan, 16)[1] == [1, 2, 3, 4]


def test_the_churn_is_seeded() -> None:
    assert churn(16, 50, 7) == churn(16, 50, 7) != churn(16, 50, 8)
