"""arch/x86/mm/tlb.c: flushing another CPU's TLB for an mm."""

from __future__ import annotations

from typing import Any

from ..kernel import smp_call_function
from .types import mm_struct


def flush_tlb_func(info: Any) -> None:
    """arch/x86/mm/tlb.c: flush_tlb_func(), run on each CPU the IPI reaches."""


async def flush_tlb_mm_range(mm: mm_struct) -> None:
    """arch/x86/mm/tlb.c: flush_tlb_mm_range() (``flush_tlb_range()``,
    ``flush_tlb_mm()``): on bare metal an IPI to every CPU that may cache the mm's
    translations, waited for; under a hypervisor (PARAVIRT with a hypercall flush)
    no IPI at all."""
    if mm.config.tlb_flush == "ipi":
        await smp_call_function(flush_tlb_func, None, 1)
