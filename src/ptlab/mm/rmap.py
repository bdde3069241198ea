"""The file rmap: ``mapping->i_mmap`` and ``i_mmap_rwsem`` (include/linux/fs.h,
mm/mmap.c, mm/vma.c).

A file VMA is linked into its mapping's ``i_mmap`` tree when it is created or
split and unlinked by ``free_pgtables()`` before its tables go.  khugepaged's
``retract_page_tables()`` finds VMAs only there, under ``i_mmap_lock_read()``:
that, not ``mmap_lock``, is what keeps it from racing munmap's table freeing.

The page cache (``mapping->i_pages``) is kept only as far as page tables need
it: which offsets are cached, and which PMD-aligned ranges one PMD-sized folio
holds (put there by ``collapse_file()``).  Its lookups are not steps: no
scenario changes the page cache while a fault runs (the kernel would have the
fault wait on the new folio's lock until ``collapse_file()`` is done).
"""

from __future__ import annotations

from ..kernel.rwsem import down_read, down_write, up_read, up_write
from .types import address_space, mm_struct, vm_area_struct


def linear_page_index(mm: mm_struct, vma: vm_area_struct, addr: int) -> int:
    """include/linux/pagemap.h: linear_page_index(): the file offset (in pages)
    that ``addr`` maps."""
    return vma.vm_pgoff + ((addr - vma.vm_start) >> mm.geometry.page_shift)


def pmd_nr(mm: mm_struct) -> int:
    """HPAGE_PMD_NR."""
    geo = mm.geometry
    return 1 << (geo.levels[-2].shift - geo.levels[-1].shift)


def filemap_add_folio(mm: mm_struct, vma: vm_area_struct, addr: int) -> None:
    """mm/filemap.c (shmem_get_folio() for shmem): the page a file fault found or
    allocated is in the page cache from now on."""
    if vma.file is not None:
        mm.mapping(vma.file).cached[linear_page_index(mm, vma, addr)] = True


def filemap_pmd_folio(mm: mm_struct, vma: vm_area_struct, addr: int) -> bool:
    """``folio_test_pmd_mappable()`` of the page-cache folio at ``addr``: the
    PMD-aligned range of offsets around it is one PMD-sized folio."""
    if vma.file is None:
        return False
    pgoff = linear_page_index(mm, vma, addr)
    return pgoff & ~(pmd_nr(mm) - 1) in mm.mapping(vma.file).huge


def filemap_set_pmd_folio(mapping: address_space, start: int, nr: int) -> None:
    """collapse_file(): ``xas_store()`` of the new PMD-sized folio over the
    ``nr`` offsets from ``start`` (the holes are filled: all are cached)."""
    mapping.huge[start] = True
    mapping.cached.update(dict.fromkeys(range(start, start + nr), True))


async def i_mmap_lock_write(mapping: address_space) -> None:
    await down_write(mapping.i_mmap_rwsem)


async def i_mmap_unlock_write(mapping: address_space) -> None:
    await up_write(mapping.i_mmap_rwsem)


async def i_mmap_lock_read(mapping: address_space) -> None:
    await down_read(mapping.i_mmap_rwsem)


async def i_mmap_unlock_read(mapping: address_space) -> None:
    await up_read(mapping.i_mmap_rwsem)


async def vma_link_file(mm: mm_struct, vma: vm_area_struct) -> None:
    """mm/vma.c: vma_link_file() (and the ``vma_interval_tree_insert`` of
    ``__split_vma()``, ``copy_vma()``, ``dup_mmap()``): under the write lock."""
    if vma.file is None:
        return
    mapping = mm.mapping(vma.file)
    await i_mmap_lock_write(mapping)
    mapping.i_mmap.append((mm, vma))
    await i_mmap_unlock_write(mapping)


async def unlink_file_vma(mm: mm_struct, vmas: list[vm_area_struct]) -> None:
    """mm/mmap.c: unlink_file_vma_batch_add()/_final(): take each file VMA out of
    its mapping's tree, under the write lock."""
    for vma in vmas:
        if vma.file is None:
            continue
        mapping = mm.mapping(vma.file)
        await i_mmap_lock_write(mapping)
        mapping.i_mmap.remove((mm, vma))
        await i_mmap_unlock_write(mapping)
