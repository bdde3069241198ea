"""include/linux/pgtable.h: walking down to a table without allocating."""

from __future__ import annotations

from .types import PageTable, mm_struct


async def pmd_offset_lockless(mm: mm_struct, addr: int, depth: int = -2) -> PageTable | None:
    """``pgd_offset() ... pud_offset()`` with ``READ_ONCE()`` at each level and no
    allocation: the PMD table for ``addr`` (or the table at ``depth``, a list
    index: -3 is the PUD table), or None where an entry is empty."""
    geo = mm.geometry
    table = mm.pgd
    assert table is not None
    last = depth % len(geo.levels)
    while table.depth < last:
        nxt = await table.load(geo.index(table.depth, addr))
        if not isinstance(nxt, PageTable):
            return None
        table = nxt
    return table
