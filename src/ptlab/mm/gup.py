"""mm/gup.c: GUP-fast, the IRQ-disabled lockless walker."""

from __future__ import annotations

from ..kernel import Field, local_irq_restore, local_irq_save


async def gup_fast_pte_range(pmdp: Field) -> bool:
    """gup_fast() down to gup_fast_pte_range() for one PMD: with interrupts off, read
    the PMD, then the PTE, "pin" it, and re-check both ("corresponds to
    pmdp_collapse_flush() in the THP collapse code path").  Returns True if a page
    was pinned."""
    flags = await local_irq_save()
    pinned = False
    pmd = await pmdp.load()  # pmdp_get_lockless()
    if pmd is not None:
        pte = await pmd.entries.load()  # ptep_get_lockless()
        # try_grab_folio_fast() would take a reference here.
        if await pmdp.load() is pmd and await pmd.entries.load() == pte:
            pinned = True
        # else gup_put_folio() and give up on this range
    await local_irq_restore(flags)
    return pinned
