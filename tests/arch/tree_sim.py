"""A process on the sequential simulator for the tests of tables that share pages."""

from __future__ import annotations

from ptlab.arch.geometry import ARCHES
from ptlab.config import ERAS
from ptlab.mm.fault import do_user_addr_fault
from ptlab.mm.types import VM_READ, VM_WRITE, PageTable
from ptlab.mm.vma import do_mmap
from ptlab.simulate import Simulator

BASE = 16 << 40                   # 16 TiB: nothing else shares the upper tables


class Proc:
    """One mm on the sequential simulator, driven through the kernel paths."""

    def __init__(self, arch: str, kernel: str = "v6.18") -> None:
        self.sim = Simulator(ARCHES[arch], ERAS[kernel])
        self.mm = self.sim.mm
        self.geo = self.mm.geometry
        self.span = self.geo.levels[-2].size        # what one PTE table maps

    def map(self, size: int, start: int = BASE) -> None:
        self.sim.run(do_mmap(self.mm, start, size, VM_READ | VM_WRITE))

    def touch(self, *addrs: int) -> list[PageTable]:
        for a in addrs:
            assert self.sim.run(do_user_addr_fault(self.mm, a))
        return [self.table(a) for a in addrs]

    def table(self, addr: int, depth: int = -1) -> PageTable:
        """The table of level ``depth`` that maps ``addr``."""
        t = self.mm.pgd
        assert t is not None
        for d in range(len(self.geo.levels) + depth):
            t = t.entries[self.geo.index(d, addr)]
            assert isinstance(t, PageTable)
        return t

    @property
    def nr_pagetable(self) -> int:
        return self.sim.kernel.alloc.nr_pagetable
