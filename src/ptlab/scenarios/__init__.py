"""Scenarios: each a question from the seeds, with the designs it compares."""

from .base import OK, Param, Scenario, Variant
from .fragment_reuse_rcu import SCENARIO as FRAGMENT_REUSE_RCU
from .mm_races import (
    FAULT_RACE,
    FORK_VS_VMA_FAULT,
    KHUGEPAGED_GUP_FAST,
    MMU_GATHER_TABLE_FREE,
    MREMAP_WALKERS,
    PT_RECLAIM,
    RETRACT_WALKERS,
    S390_FRAGMENT_HALVES,
    SPECULATIVE_FAULT,
)
from .pte_free_defer_fragments import SCENARIO as PTE_FREE_DEFER_FRAGMENTS
from .rcu_callback_order import SCENARIO as RCU_CALLBACK_ORDER

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    PTE_FREE_DEFER_FRAGMENTS, S390_FRAGMENT_HALVES, FRAGMENT_REUSE_RCU, RCU_CALLBACK_ORDER,
    FAULT_RACE,
    MMU_GATHER_TABLE_FREE, RETRACT_WALKERS, KHUGEPAGED_GUP_FAST, MREMAP_WALKERS,
    SPECULATIVE_FAULT, PT_RECLAIM, FORK_VS_VMA_FAULT)}

__all__ = ["OK", "SCENARIOS", "Param", "Scenario", "Variant"]
