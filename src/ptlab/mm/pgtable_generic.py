"""mm/pgtable-generic.c: mapping a PTE table without its lock (since v6.5)."""

from __future__ import annotations

from typing import Any

from ..engine import UPDATE, Call
from ..kernel import Field, rcu_read_lock, rcu_read_unlock
from .memory import __pte_offset_map
from .pgtable import pmd_offset_lockless
from .types import mm_struct


def _get_and_clear(pmd: Field) -> Any:
    pmd.owner.check(pmd.name, "Write")
    old = pmd.value
    pmd.value = None
    return old


async def pmdp_huge_get_and_clear(pmd: Field) -> Any:
    """pmdp_huge_get_and_clear(): atomically clear the PMD, returning what it held."""
    return await Call(pmd.fp(UPDATE), "pmdp_huge_get_and_clear(" + pmd.name + ")",
                      _get_and_clear, pmd)


async def pmdp_collapse_flush(pmd: Field) -> Any:
    """pmdp_collapse_flush(): pmdp_huge_get_and_clear() and a TLB flush of the range
    (radix tlbie on powerpc; not modelled)."""
    return await pmdp_huge_get_and_clear(pmd)


async def pte_offset_map(pmd: Field) -> Any:
    """___pte_offset_map(): ``rcu_read_lock()``, read the PMD locklessly, and return
    the table it points to, or None (after ``rcu_read_unlock()``) if there is none.
    The table stays valid memory until :func:`pte_unmap`, though it may be emptied
    and disconnected meanwhile."""
    await rcu_read_lock()
    pmdval = await pmd.load()  # pmdp_get_lockless()
    if pmdval is None:  # pmd_none(): nomap
        await rcu_read_unlock()
        return None
    return pmdval


async def pte_unmap(pte: Any) -> None:
    """include/linux/pgtable.h: pte_unmap(): ``rcu_read_unlock()``."""
    await rcu_read_unlock()


async def ptep_get(pte: Any) -> Any:
    """Read an entry of a mapped PTE table."""
    return await pte.entries.load()


async def pte_offset_map_walk(mm: mm_struct, addr: int) -> Any:
    """A lockless ``pte_offset_map()`` user (the pattern of page-table walkers that
    hold neither mmap_lock nor the VMA lock, and of PT_RECLAIM's concern in seed
    002): under ``rcu_read_lock()``, walk down to the PMD, map the PTE table, read
    the entry, unmap.  Returns the entry read, or None."""
    geo = mm.geometry
    await rcu_read_lock()
    entry: Any = None
    table = await pmd_offset_lockless(mm, addr)
    if table is not None:
        pte = await __pte_offset_map(table, geo.index(table.depth, addr))
        if pte is not None:
            entry = await pte.load(geo.index(pte.depth, addr))
            await rcu_read_unlock()                    # pte_unmap()
    await rcu_read_unlock()
    return entry
