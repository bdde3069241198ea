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
from ..engine import (
    ADD,
    DONE,
    MODE,
    READ,
    UPDATE,
    WRITE,
    Call,
    Footprint,
    ModelViolation,
    Op,
    Step,
    call,
    done,
    new_loc,
)
from ..kernel import Field, KObject, Page, atomic_t, spinlock_t
from ..kernel.rwsem import rw_semaphore

# -- page tables ----------------------------------------------------------------------


class PageTable:
    """One page table (``pgtable_t`` for PTE tables): ``level`` indexes the
    geometry's levels, top first."""

    __slots__ = ("_rfp", "_wfp", "deposit", "depth", "entries", "frag", "gen", "loc", "mm",
                 "name", "page", "ptl", "size", "start")

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
        # PMD tables: ``pmd_huge_pte``, the FIFO of PTE tables deposited for huge
        # PMDs (pgtable_trans_huge_deposit()); guarded by the PMD lock.
        self.deposit: list[PageTable] = []
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

    # NOTE: the accessors test the common case (live, slot still ours) inline and
    # call check() only to report: they run for every step of every fault.
    def _get(self, idx: int) -> Any:
        page = self.page
        if page.freed or page.payload[self.frag] is not self:
            self.check(self.name)
        return self.entries.get(idx)

    def _set(self, idx: int, value: Any) -> None:
        page = self.page
        if page.freed or page.payload[self.frag] is not self:
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
    # NOTE: load() and store() are most of a fault's steps; in a sequential run
    # they do the access at once (engine.call(), inlined).
    def load(self, idx: int) -> Step:
        """READ_ONCE(*pXdp) / pXdp_get_lockless()."""
        if MODE.inline:
            value = self._get(idx)
            return DONE if value is None else done(value)
        return Call(self._rfp, "READ_ONCE({0.name}[{1}])", PageTable._get, self, idx)

    def store(self, idx: int, value: Any) -> Step:
        """set_pXd() / pXd_populate() / pXd_clear()."""
        if MODE.inline:
            self._set(idx, value)
            return DONE
        return Call(self._wfp, "set({0.name}[{1}], {2!r})", PageTable._set, self, idx, value)

    def get_and_clear(self, idx: int) -> Op:
        """pXdp_get_and_clear(): atomic exchange with an empty entry."""
        return Call(((self.loc, UPDATE), (self.page.alive, READ)),
                    "get_and_clear({0.name}[{1}])", PageTable._xchg, self, idx)

    def count(self) -> Op:
        """Scan every entry (PT_RECLAIM's rescan for pte_none())."""
        return Call(self._rfp, "scan({0.name})", PageTable._count, self)


class Folio:
    """An anonymous THP, as far as a write fault asks: how many mms map it
    (``folio_mapcount()``); one means PageAnonExclusive, and a write fault to its
    write-protected huge PMD reuses it instead of splitting it."""

    __slots__ = ("loc", "mapcount")

    def __init__(self) -> None:
        self.loc = new_loc()
        self.mapcount = 1


def _folio_add(folio: Folio, n: int) -> None:
    folio.mapcount += n


def folio_mapcount_add(folio: Folio, n: int) -> Step:
    """folio_try_dup_anon_rmap_pmd() (fork, +1) / folio_remove_rmap_pmd() (zap, -1)."""
    return call(((folio.loc, UPDATE),), "folio_mapcount {1:+}", _folio_add, folio, n)


def _folio_exclusive(folio: Folio) -> bool:
    return folio.mapcount == 1


def folio_exclusive(folio: Folio) -> Step:
    """PageAnonExclusive() / ``folio_ref_count() == 1`` in do_huge_pmd_wp_page()."""
    return call(((folio.loc, READ),), "PageAnonExclusive()", _folio_exclusive, folio)


class Leaf:
    """A present leaf entry: a PTE mapping a page, or a huge PMD mapping ``nr``
    pages; ``writable`` is the entry's write permission (mprotect changes it).
    ``zero``: the shared zero page (or huge zero folio), mapped read-only by a
    read fault on private anonymous memory; not anonymous, not in RSS.
    ``folio``: an anonymous THP's :class:`Folio` (shared with a fork's child)."""

    __slots__ = ("anon", "folio", "huge", "nr", "writable", "zero")

    def __init__(self, anon: bool, huge: bool = False, nr: int = 1,
                 writable: bool = True, zero: bool = False,
                 folio: Folio | None = None) -> None:
        self.anon = anon
        self.huge = huge
        self.nr = nr
        self.writable = writable
        self.zero = zero
        self.folio = folio

    def __repr__(self) -> str:
        return ("huge " if self.huge else "") + \
            ("zero" if self.zero else "anon" if self.anon else "file") + \
            ("" if self.writable else " ro")

    @property
    def rss(self) -> int:
        """What the entry adds to RSS: the zero page is not counted."""
        return 0 if self.zero else self.nr

    def wr(self, writable: bool) -> Leaf:
        """The same mapping with another write permission."""
        return Leaf(self.anon, self.huge, self.nr, writable, self.zero, self.folio)


def can_change_writable(leaf: Leaf, shared: bool) -> bool:
    """mm/mprotect.c: can_change_pte_writable() / can_change_pmd_writable(), as
    far as the model goes: in a private mapping only an anonymous page may be
    made writable without a fault (never the zero page, never a file page,
    which must be COWed, never a THP a fork's child still maps: not
    PageAnonExclusive); in a shared one the page itself."""
    return not leaf.zero and (leaf.anon or shared) and (
        leaf.folio is None or leaf.folio.mapcount == 1)


# -- VMAs -------------------------------------------------------------------------------

VM_READ, VM_WRITE, VM_SHARED = 0x1, 0x2, 0x8
VM_HUGEPAGE = 0x20000000          # MADV_HUGEPAGE: THP wanted (THP "madvise" mode)
VM_ACCOUNT = 0x00100000           # the mapping's pages are charged to the commit (private writable)
VMA_LOCK_OFFSET = 0x40000000


class vm_area_struct(KObject):
    """A VMA: ``[vm_start, vm_end)``, flags, and its per-VMA lock state (v6.15:
    ``vm_refcnt``, 0 = detached; ``vm_lock_seq``)."""

    __slots__ = ("anon", "anon_vma", "file", "lock_loc", "vm_end", "vm_flags", "vm_lock_seq",
                 "vm_pgoff", "vm_refcnt", "vm_start")

    def __init__(self, start: int, end: int, flags: int, anon: bool = True,
                 file: str | None = None, pgoff: int = 0) -> None:
        KObject.__init__(self, "vm_area_struct", 184)
        self.vm_start = start
        self.vm_end = end
        self.vm_flags = flags
        self.vm_pgoff = pgoff             # in pages: offset into the file
        # vma->anon_vma: set by the first anonymous (or COW) fault
        # (anon_vma_prepare()), inherited by split, fork and mremap.
        self.anon_vma = False
        self.anon = anon
        self.file = file
        self.vm_refcnt = 0
        self.vm_lock_seq = -1
        self.lock_loc = new_loc()

    def __repr__(self) -> str:
        return f"vma[{self.vm_start:#x}-{self.vm_end:#x})"


# -- the mm -------------------------------------------------------------------------------


class mm_context_t:
    """``mm->context``, the union of what the modelled arches keep there: powerpc's
    fragment caches (``pte_frag``, ``pmd_frag``: the next unused fragment, under
    ``mm->page_table_lock``); s390 v6.6's ``pgtable_list`` of pages with a free 2K
    half (a tuple, head first) and the ``lock`` that guards it."""

    def __init__(self, mm: mm_struct) -> None:
        self.pte_frag = Field(mm.obj, "mm->context.pte_frag", None)
        self.pmd_frag = Field(mm.obj, "mm->context.pmd_frag", None)
        self.lock = spinlock_t("mm->context.lock", mm.obj)
        self.pgtable_list = Field(mm.obj, "mm->context.pgtable_list", ())


class address_space:
    """``struct address_space`` of a file: ``i_mmap_rwsem`` (the rmap lock) guards
    the file's VMA tree; khugepaged's retract takes it for read, and munmap
    (``free_pgtables()``: ``unlink_file_vma()``) and mremap (``take_rmap_locks()``)
    for write."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.i_mmap_rwsem = rw_semaphore(f"{name}->i_mmap_rwsem")
        # mapping->i_mmap, the interval tree of the VMAs mapping the file (with
        # their mm), read and written only under i_mmap_rwsem.
        self.i_mmap: list[tuple[mm_struct, vm_area_struct]] = []
        # mapping->i_pages, as much as page tables need: the page offsets a
        # fault has brought into the page cache, and the PMD-aligned offsets
        # whose pages collapse_file() replaced by one PMD-sized folio (which a
        # fault then maps by a huge PMD, finish_fault() -> do_set_pmd()).
        # Truncation is not modelled: pages stay cached once there.  (Dicts used
        # as sets: the checker's snapshots copy plain data only.)
        self.cached: dict[int, bool] = {}
        self.huge: dict[int, bool] = {}


class mm_struct:
    """An address space.  ``geometry`` and ``config`` say which architecture and
    kernel it runs on; ``pgd`` is set by ``mm_alloc_pgd()`` (ptlab.mm.pgalloc)."""

    def __init__(self, geometry: Geometry = X86_64, config: KernelConfig | None = None) -> None:
        self.geometry = geometry
        self.config = cfg = config or ERAS[DEFAULT_ERA]
        # What the arch and the configuration make of PT_RECLAIM, and so of the
        # single-table fallback (call_rcu on pt_rcu_head only under PT_RECLAIM).
        self.pt_reclaim = cfg.pt_reclaim and cfg.mmu_gather_rcu_table_free and (
            geometry.supports_pt_reclaim or cfg.pt_reclaim_any_arch)
        self.table_free_one = cfg.table_free_one
        if cfg.table_free_one == "call_rcu" and not self.pt_reclaim:
            self.table_free_one = cfg.table_free_fallback
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
        # How many PMD-sized folios the model lets this mm allocate
        # (vma_alloc_folio() for a THP fault, do_huge_zero_wp_pmd(), a
        # collapse); None: as many as asked.  At 0 the allocation fails:
        # VM_FAULT_FALLBACK (PTEs), SCAN_ALLOC_HUGE_PAGE_FAIL.
        self.thp_budget: int | None = None
        # The files this mm maps (shared with a fork child): name -> mapping.
        self.mappings: dict[str, address_space] = {}
        self.mm_users = 1
        self.mm_count = 1

    def mapping(self, file: str) -> address_space:
        """``vma->vm_file->f_mapping``."""
        m = self.mappings.get(file)
        if m is None:
            m = self.mappings[file] = address_space(file)
        return m

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


def _rss(mm: mm_struct, delta: int) -> None:
    mm.rss.value += delta


def mm_rss_add(mm: mm_struct, delta: int) -> Step:
    """include/linux/mm.h: add_mm_counter(mm, MM_ANONPAGES/MM_FILEPAGES, delta)."""
    return call(mm.rss.fp(ADD), "add_mm_counter({1:+})", _rss, mm, delta)


def _set_anon_vma(vma: vm_area_struct) -> None:
    vma.anon_vma = True


def vma_is_anonymous(vma: vm_area_struct) -> bool:
    """include/linux/mm.h: vma_is_anonymous(): no ``vm_ops``.  A shared anonymous
    mapping is shmem (``shmem_zero_setup()``): not anonymous."""
    return vma.anon and not vma.vm_flags & VM_SHARED


def anon_vma_prepare(vma: vm_area_struct) -> Op:
    """mm/rmap.c: anon_vma_prepare(): the VMA gets its ``anon_vma`` (read
    locklessly by khugepaged's retract and by fork's ``vma_needs_copy()``)."""
    return Call(((vma.lock_loc, WRITE),), "anon_vma_prepare({0!r})", _set_anon_vma, vma)


__all__ = [
    "VMA_LOCK_OFFSET",
    "VM_ACCOUNT",
    "VM_HUGEPAGE",
    "VM_READ",
    "VM_SHARED",
    "VM_WRITE",
    "Folio",
    "Leaf",
    "PageTable",
    "PmdTable",
    "address_space",
    "can_change_writable",
    "folio_exclusive",
    "folio_mapcount_add",
    "mm_context_t",
    "mm_dec_nr_ptes",
    "mm_inc_nr_ptes",
    "mm_pgtables_add",
    "mm_rss_add",
    "mm_struct",
    "pmd_lock",
    "vm_area_struct",
    "vma_is_anonymous",
]
