"""Page-table geometry of the modelled architectures.

A geometry lists the levels that exist (folded levels are left out, as the
kernel's ``pXd_offset()`` of a folded level returns the entry above), top first.
Each level says how much address one entry maps (``shift``), how many entries a
table has, how big a table is, and how many tables share one page (powerpc
fragments, s390 2K tables before v6.7).  ``accounted`` says whether the level is
counted in ``mm->pgtables_bytes`` (``mm_inc_nr_ptes/pmds/puds``; the top level is
not: ``pgd_alloc`` is not counted).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    name: str            # "pgd", "p4d", "pud", "pmd", "pte"
    shift: int           # log2 of the address range one entry maps
    entries: int         # PTRS_PER_*
    table_bytes: int     # bytes of one table (with its arch-private half, if any)
    per_page: int = 1    # tables sharing one page (fragments)
    page_order: int = 0  # order of the page(s) a table (or its fragments) lives in
    accounted: bool = True

    @property
    def span(self) -> int:
        """Address range one table maps."""
        return self.entries << self.shift

    @property
    def mask(self) -> int:
        """``*_MASK`` of the level above: aligns to this table's span."""
        return ~(self.span - 1)

    @property
    def size(self) -> int:
        """``*_SIZE``: the range one entry maps."""
        return 1 << self.shift

    @property
    def pgtables_bytes(self) -> int:
        """What ``mm_inc_nr_*()`` adds: ``PTRS_PER_* * sizeof(entry)``."""
        return self.entries * 8


@dataclass(frozen=True)
class Geometry:
    name: str
    summary: str
    page_shift: int
    levels: tuple[Level, ...]   # top (pgd) first, pte last
    #: How PTE tables are allocated: "page" (one per page), "powerpc-frag"
    #: (pte_fragment_alloc), "s390-2k" (v6.6 halves with AA/PP bits).
    pte_alloc: str = "page"
    #: Top of the user address space (TASK_SIZE_MAX).
    task_size: int = 1 << 47
    #: ARCH_SUPPORTS_PT_RECLAIM: only x86-64 selects it (v6.14 to v6.18).
    supports_pt_reclaim: bool = False
    #: HAVE_MOVE_PMD and arch_supports_page_table_move(): mremap may move a whole
    #: PTE table (x86, arm64, powerpc radix; not powerpc hash: ``return
    #: radix_enabled()``; s390 is not known to select HAVE_MOVE_PMD).
    supports_page_table_move: bool = True
    #: HAVE_MOVE_PUD: mremap may move a whole PMD table (x86, arm64, powerpc).
    supports_move_pud: bool = True
    #: arch_needs_pgtable_deposit(): a file huge PMD deposits a table too
    #: (powerpc hash, for its hash slot information).
    needs_pgtable_deposit: bool = False

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(name)

    def index(self, depth: int, addr: int) -> int:
        lv = self.levels[depth]
        return (addr >> lv.shift) & (lv.entries - 1)


def _lv(name: str, shift: int, entries: int, table_bytes: int, per_page: int = 1,
        order: int = 0, accounted: bool = True) -> Level:
    return Level(name, shift, entries, table_bytes, per_page, order, accounted)


X86_64 = Geometry(
    "x86-64", "x86-64, 4-level paging (48-bit VA); P4D folded", 12, (
        _lv("pgd", 39, 512, 4096, accounted=False),
        _lv("pud", 30, 512, 4096),
        _lv("pmd", 21, 512, 4096),
        _lv("pte", 12, 512, 4096),
    ), supports_pt_reclaim=True)

X86_64_LA57 = Geometry(
    "x86-64-la57", "x86-64, 5-level paging (57-bit VA, LA57)", 12, (
        _lv("pgd", 48, 512, 4096, accounted=False),
        _lv("p4d", 39, 512, 4096, accounted=False),  # no mm_inc_nr_p4ds()
        _lv("pud", 30, 512, 4096),
        _lv("pmd", 21, 512, 4096),
        _lv("pte", 12, 512, 4096),
    ), task_size=1 << 56, supports_pt_reclaim=True)

ARM64_4K = Geometry(
    "arm64", "arm64, 4K granule, 48-bit VA (4 levels)", 12, (
        _lv("pgd", 39, 512, 4096, accounted=False),
        _lv("pud", 30, 512, 4096),
        _lv("pmd", 21, 512, 4096),
        _lv("pte", 12, 512, 4096),
    ))

# arch/powerpc/include/asm/book3s/64/radix-64k.h: 13/9/9/5 index bits.
PPC64_RADIX_64K = Geometry(
    "ppc64-radix", "powerpc64 radix, 64K pages: 256 PTE and 16 PMD fragments a page", 16, (
        _lv("pgd", 39, 8192, 65536, accounted=False),
        _lv("pud", 30, 512, 4096),
        _lv("pmd", 21, 512, 4096, per_page=16),
        _lv("pte", 16, 32, 256, per_page=256),
    ), pte_alloc="powerpc-frag", task_size=1 << 52)

# arch/powerpc/include/asm/book3s/64/hash-64k.h: 8/10/10/8 index bits; a PTE
# fragment is 2K of PTEs plus 2K of hash slot information, a PMD fragment 8K plus
# 8K of deposited-table pointers.
PPC64_HASH_64K = Geometry(
    "ppc64-hash", "powerpc64 hash, 64K pages: 16 PTE and 4 PMD fragments a page", 16, (
        _lv("pgd", 44, 256, 2048, accounted=False),
        _lv("pud", 34, 1024, 8192),
        _lv("pmd", 24, 1024, 16384, per_page=4),
        _lv("pte", 16, 256, 4096, per_page=16),
    ), pte_alloc="powerpc-frag", task_size=1 << 52, supports_page_table_move=False,
    needs_pgtable_deposit=True)

# arch/s390: a user mm starts with 3 levels (region-third, segment, page table);
# CRST tables are order 2 (16K); PTE tables are 2K: two a page until v6.7.
S390_V66 = Geometry(
    "s390-v6.6", "s390, 2K PTE tables two to a 4K page (AA/PP bits, pgtable_list)", 12, (
        _lv("pud", 31, 2048, 16384, order=2, accounted=False),
        _lv("pmd", 20, 2048, 16384, order=2),
        _lv("pte", 12, 256, 2048, per_page=2),
    ), pte_alloc="s390-2k", task_size=1 << 42, supports_page_table_move=False,
    supports_move_pud=False)

S390 = Geometry(
    "s390", "s390 since v6.7: each 2K PTE table in its own 4K page (upper half PGSTE)", 12, (
        _lv("pud", 31, 2048, 16384, order=2, accounted=False),
        _lv("pmd", 20, 2048, 16384, order=2),
        _lv("pte", 12, 256, 4096),
    ), task_size=1 << 42, supports_page_table_move=False, supports_move_pud=False)

ARCHES: dict[str, Geometry] = {g.name: g for g in (
    X86_64, X86_64_LA57, ARM64_4K, PPC64_HASH_64K, PPC64_RADIX_64K, S390_V66, S390)}

DEFAULT_ARCH = "x86-64"

