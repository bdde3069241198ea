"""The file rmap: ``mapping->i_mmap`` and ``i_mmap_rwsem`` (include/linux/fs.h,
mm/mmap.c, mm/vma.c).

A file VMA is linked into its mapping's ``i_mmap`` tree when it is created or
split and unlinked by ``free_pgtables()`` before its tables go.  khugepaged's
``retract_page_tables()`` finds VMAs only there, under ``i_mmap_lock_read()``:
that, not ``mmap_lock``, is what keeps it from racing munmap's table freeing.
"""

from __future__ import annotations

from ..kernel.rwsem import down_read, down_write, up_read, up_write
from .types import address_space, mm_struct, vm_area_struct


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
