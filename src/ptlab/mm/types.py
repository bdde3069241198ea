"""``struct mm_struct`` and page-table pages, as much as the paths modelled need.

A table page holds its entries as KASAN-checked fields and its split page-table
lock (``ptdesc->ptl``), so taking the lock of a freed table is caught too.
"""

from __future__ import annotations

from ..engine import ADD, Call, Op
from ..kernel import Field, KObject, Page, atomic_t, spinlock_t


class mm_context_t:
    """powerpc ``mm->context``: the current PTE fragment cache (``pte_frag``)."""

    def __init__(self, mm: mm_struct) -> None:
        self.pte_frag = Field(mm.obj, "mm->context.pte_frag", None)


class mm_struct:
    def __init__(self) -> None:
        self.obj = KObject("mm_struct", 1024)
        self.page_table_lock = spinlock_t("mm->page_table_lock", self.obj)
        self.nr_ptes = atomic_t(self.obj, "mm->pgtables_bytes", 0)
        self.context = mm_context_t(self)


class PmdTable:
    """A PMD table page: ``PTRS`` entries and its split PMD lock."""

    def __init__(self, page: Page, nr: int) -> None:
        self.page = page
        self.entries = [Field(page, f"pmd[{i}]", None) for i in range(nr)]
        self.ptl = spinlock_t(f"pmd_lock(pfn {page.pfn:#x})", page)


def pmd_lock(mm: mm_struct, table: PmdTable) -> spinlock_t:
    """include/linux/mm.h: pmd_lockptr(): the split lock in the PMD table's ptdesc."""
    return table.ptl


def _add(v: atomic_t, delta: int) -> None:
    v.owner.check(v.name, "Write")
    v.value += delta


def mm_dec_nr_ptes(mm: mm_struct) -> Op:
    """include/linux/mm.h: mm_dec_nr_ptes(): atomic_long_sub(PTRS_PER_PTE * 8, pgtables_bytes)."""
    return Call(mm.nr_ptes.fp(ADD), "mm_dec_nr_ptes(mm)", _add, mm.nr_ptes, -1)


def mm_inc_nr_ptes(mm: mm_struct) -> Op:
    return Call(mm.nr_ptes.fp(ADD), "mm_inc_nr_ptes(mm)", _add, mm.nr_ptes, 1)


