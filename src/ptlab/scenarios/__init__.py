"""Scenarios: each a question from the seeds, with the designs it compares."""

from .base import OK, Param, Scenario, Variant
from .mm_races import FAULT_RACE, MREMAP_WALKERS, MUNMAP_WALKERS, RETRACT_WALKERS
from .pte_free_defer_fragments import SCENARIO as PTE_FREE_DEFER_FRAGMENTS

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    PTE_FREE_DEFER_FRAGMENTS, FAULT_RACE, MUNMAP_WALKERS, RETRACT_WALKERS, MREMAP_WALKERS)}

__all__ = ["OK", "SCENARIOS", "Param", "Scenario", "Variant"]
