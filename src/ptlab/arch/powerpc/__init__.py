"""powerpc book3s64: page tables that are fragments of a 64K page.

pgtable_frag.py models the fragments on bare fields (the pte-free-defer-fragments
scenario); pgalloc.py serves PTE and PMD tables of the page-table tree (ptlab.mm)."""

from .pgtable_frag import (
    PteFragment,
    pte_frag_destroy,
    pte_fragment_alloc,
    pte_fragment_free,
    pte_fragment_free_v65,
    pte_free_defer,
    pte_free_now,
)

__all__ = [
    "PteFragment", "pte_frag_destroy", "pte_fragment_alloc", "pte_fragment_free",
    "pte_fragment_free_v65", "pte_free_defer", "pte_free_now",
]
