"""``struct mm_struct``, ``struct vm_area_struct`` and page tables
(include/linux/mm_types.h), as much as the paths modelled need.

A page table is a :class:`PageTable`: a level, the page (and fragment) it lives
in, its entries, its split lock (``ptdesc->ptl``) and a generation number.
Entries are read and written through awaited ops whose footprint carries the
table's entry location and its page's liveness, so an access to a freed table is
a KASAN use-after-free; a table whose slot was freed *and handed out again* (s390
2K halves) is caught by the generation check.

Counters a user reads: ``mm->pgtables_bytes`` (``VmPTE``), RSS.  The model's own:
bytes of tables unlinked but not yet freed (waiting for a grace period or an IPI).
"""

from __future__ import annotations

from typing import Any

from ..arch.geometry import X86_64, Geometry
from ..config import DEFAULT_ERA, ERAS, KernelConfig
from ..engine import ADD, READ, UPDATE, WRITE, Call, Footprint, ModelViolation, Op, new_loc
from ..kernel import Field, KObject, Page, atomic_t, spinlock_t
from ..kernel.rwsem import rw_semaphore

# -- page tables ----------------------------------------------------------------------


class PageTable:
    """One page table (``pgtable_t`` for PTE tables): ``level`` indexes the
    geometry's levels, top first."""

    __slots__ = ("_rfp", "_wfp", "depth", "entries", "frag", "gen", "loc", "mm", "name",
                 "page", "ptl", "size", "start")

    def __init__(self, mm: mm_struct, page: Page, depth: int, name: str, start: int,
                 size: int, frag: int = 0, ptl: spinlock_t | None = None,
                 gen: int = 0) -> None:
        self.mm = mm
        self.page = page
        self.size = size
        self.depth = depth
        self.frag = frag
        self.name = name
        self.start = start              # first address the table maps (for reports)
        self.entries: dict[int, Any] = {}
        self.loc = new_loc()
        self.ptl = ptl
        self.gen = gen
        self._rfp: Footprint = ((self.loc, READ), (page.alive, READ))
        self._wfp: Footprint = ((self.loc, WRITE), (page.alive, READ))

    def __repr__(self) -> str:
        return f"{self.name}@{self.start:#x}"

    def check(self, what: str, access: str = "Read") -> None:
        """KASAN, then the generation: a freed-and-reused slot is another table."""
        self.page.check(what, access)
        slots = self.page.payload
        if isinstance(slots, list) and slots[self.frag] is not self:
            raise ModelViolation(
                "use-after-reuse", f"{what}: {self!r} (generation {self.gen}) was freed and "
                f"its slot now holds {slots[self.frag]!r}")

    def _get(self, idx: int) -> Any:
        self.check(self.name)
        return self.entries.get(idx)

    def _set(self, idx: int, value: Any) -> None:
        self.check(self.name, "Write")
        if value is None:
            self.entries.pop(idx, None)
        else:
            self.entries[idx] = value

    def _xchg(self, idx: int) -> Any:
        self.check(self.name, "Write")
        return self.entries.pop(idx, None)

    def _count(self) -> int:
        self.check(self.name)
        return len(self.entries)

    # NOTE: label templates, formatted only for traces.
    def load(self, idx: int) -> Op:
        """READ_ONCE(*pXdp) / pXdp_get_lockless()."""
        return Call(self._rfp, "READ_ONCE({0.name}[{1}])", PageTable._get, self, idx)

    def store(self, idx: int, value: Any) -> Op:
        """set_pXd() / pXd_populate() / pXd_clear()."""
        return Call(self._wfp, "set({0.name}[{1}], {2!r})", PageTable._set, self, idx, value)

    def get_and_clear(self, idx: int) -> Op:
        """pXdp_get_and_clear(): atomic exchange with an empty entry."""
        return Call(((self.loc, UPDATE), (self.page.alive, READ)),
                    "get_and_clear({0.name}[{1}])", PageTable._xchg, self, idx)

    def count(self) -> Op:
        """Scan every entry (PT_RECLAIM's rescan for pte_none())."""
        return Call(self._rfp, "scan({0.name})", PageTable._count, self)


class Leaf:
    """A present leaf entry: a PTE mapping a page, or a huge PMD."""

    __slots__ = ("anon", "huge")

    def __init__(self, anon: bool, huge: bool = False) -> None:
        self.anon = anon
        self.huge = huge

    def __repr__(self) -> str:
        return ("huge " if self.huge else "") + ("anon" if self.anon else "file")


# -- VMAs -------------------------------------------------------------------------------

VM_READ, VM_WRITE, VM_SHARED = 0x1, 0x2, 0x8
VMA_LOCK_OFFSET = 0x40000000


class vm_area_struct(KObject):
    """A VMA: ``[vm_start, vm_end)``, flags, and its per-VMA lock state (v6.15:
    ``vm_refcnt``, 0 = detached; ``vm_lock_seq``)."""

    __slots__ = ("anon", "file", "lock_loc", "vm_end", "vm_flags", "vm_lock_seq", "vm_refcnt",
                 "vm_start")

    def __init__(self, start: int, end: int, flags: int, anon: bool = True,
                 file: str | None = None) -> None:
        KObject.__init__(self, "vm_area_struct", 184)
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.anon = anon
        self.file = file
        self.vm_refcnt = 0
        self.vm_lock_seq = -1
        self.lock_loc = new_loc()

    def __repr__(self) -> str:
        return f"vma[{self.vm_start:#x}-{self.vm_end:#x})"


# -- the mm -------------------------------------------------------------------------------


class mm_context_t:
    """powerpc ``mm->context``: the current PTE fragment cache (``pte_frag``)."""

    def __init__(self, mm: mm_struct) -> None:
        self.pte_frag = Field(mm.obj, "mm->context.pte_frag", None)


class mm_struct:
    """An address space.  ``geometry`` and ``config`` say which architecture and
    kernel it runs on; ``pgd`` is set by ``mm_alloc_pgd()`` (ptlab.mm.pgalloc)."""

    def __init__(self, geometry: Geometry = X86_64, config: KernelConfig | None = None) -> None:
        self.geometry = geometry
        self.config = config or ERAS[DEFAULT_ERA]
        self.obj = KObject("mm_struct", 1024)
        self.page_table_lock = spinlock_t("mm->page_table_lock", self.obj)
        # mm_pgtables_bytes(): VmPTE in /proc/PID/status is this >> 10.
        self.pgtables_bytes = atomic_t(self.obj, "mm->pgtables_bytes", 0)
        self.context = mm_context_t(self)
        self.pgd: PageTable | None = None
        self.mmap_lock = rw_semaphore("mm->mmap_lock")
        self.mm_lock_seq = 0
        self.seq_loc = new_loc()
        # The VMA tree (a maple tree upstream), in address order.
        self.vmas: list[vm_area_struct] = []
        self.vma_loc = new_loc()
        self.rss = atomic_t(self.obj, "mm->rss_stat", 0)
        self.mm_users = 1

    def find_vma_index(self, addr: int) -> int:
        """Index of the first VMA ending above ``addr`` (find_vma())."""
        for i, vma in enumerate(self.vmas):
            if addr < vma.vm_end:
                return i
        return len(self.vmas)


class PmdTable:
    """A PMD table page of the fragment scenario: ``nr`` entries and its split PMD
    lock."""

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


def mm_pgtables_add(mm: mm_struct, depth: int, sign: int) -> Op:
    """include/linux/mm.h: mm_inc/dec_nr_{ptes,pmds,puds}():
    ``atomic_long_add(PTRS_PER_* * sizeof(entry), &mm->pgtables_bytes)``."""
    lv = mm.geometry.levels[depth]
    delta = sign * lv.pgtables_bytes if lv.accounted else 0
    label = ("mm_inc_nr_" if sign > 0 else "mm_dec_nr_") + lv.name + "s(mm)"
    return Call(mm.pgtables_bytes.fp(ADD), label, _add, mm.pgtables_bytes, delta)


def mm_dec_nr_ptes(mm: mm_struct) -> Op:
    """include/linux/mm.h: mm_dec_nr_ptes()."""
    return mm_pgtables_add(mm, len(mm.geometry.levels) - 1, -1)


def mm_inc_nr_ptes(mm: mm_struct) -> Op:
    """include/linux/mm.h: mm_inc_nr_ptes()."""
    return mm_pgtables_add(mm, len(mm.geometry.levels) - 1, 1)


__all__ = ["VMA_LOCK_OFFSET", "VM_READ", "VM_SHARED", "VM_WRITE", "Leaf", "PageTable",
           "PmdTable", "mm_context_t", "mm_dec_nr_ptes", "mm_inc_nr_ptes", "mm_pgtables_add",
           "mm_struct", "pmd_lock", "vm_area_struct"]
