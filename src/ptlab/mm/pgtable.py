"""include/linux/pgtable.h: walking down to a table without allocating."""

from __future__ import annotations

from .types import PageTable, mm_struct


async def pmd_offset_lockless(mm: mm_struct, addr: int) -> PageTable | None:
    """``pgd_offset() ... pud_offset()`` with ``READ_ONCE()`` at each level and no
    allocation: the PMD table for ``addr``, or None where an entry is empty."""
    geo = mm.geometry
    table = mm.pgd
    assert table is not None
    while table.depth < len(geo.levels) - 2:
        nxt = await table.load(geo.index(table.depth, addr))
        if not isinstance(nxt, PageTable):
            return None
        table = nxt
    return table
