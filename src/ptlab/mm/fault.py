"""arch/x86/mm/fault.c: do_user_addr_fault(): try the per-VMA lock, fall back to
``mmap_lock`` (``lock_mm_and_find_vma()``), then ``handle_mm_fault()``."""

from __future__ import annotations

from .memory import handle_mm_fault
from .mmap_lock import find_vma, lock_vma_under_rcu, mmap_read_lock, mmap_read_unlock, vma_end_read
from .types import mm_struct


async def do_user_addr_fault(mm: mm_struct, addr: int, write: bool = True) -> bool:
    """A user page fault at ``addr``, a write (``FAULT_FLAG_WRITE``, from the error
    code's X86_PF_WRITE) or a read.  False: SIGSEGV (no VMA) or OOM."""
    if mm.config.per_vma_lock:
        vma = await lock_vma_under_rcu(mm, addr)
        if vma is not None:
            ok = await handle_mm_fault(mm, vma, addr, write)
            await vma_end_read(vma)
            return ok
    await mmap_read_lock(mm)                  # lock_mm_and_find_vma()
    found = await find_vma(mm, addr)
    if found is None:
        await mmap_read_unlock(mm)
        return False
    ok = await handle_mm_fault(mm, found, addr, write)
    await mmap_read_unlock(mm)
    return ok
