"""``ptlab simulate``: run a workload's operations one after another through the
model's kernel paths (no exploration) and report the counters after each step.

A workload is a TOML file (docs/workloads.md; schema in workload.schema.json):
named regions at fixed addresses, then steps.  Each step runs as one task on
CPU 0 of a sequential kernel (IPIs are taken at once); after it, a grace period
passes and the counters oracle checks every counter against the tables.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .arch.geometry import ARCHES, DEFAULT_ARCH, Geometry
from .config import DEFAULT_ERA, ERAS, KernelConfig
from .engine import Execution, ModelViolation
from .engine.ops import ops_inline
from .kernel import Kernel
from .kernel.rcu import rcu_sequential_gp
from .mm.fault import do_user_addr_fault
from .mm.oracle import census, check_mm_counters
from .mm.pgalloc import mm_alloc_pgd
from .mm.types import VM_READ, VM_SHARED, VM_WRITE, mm_struct
from .mm.vma import do_mmap, exit_mmap, madvise_dontneed, munmap

OPS = ("map", "touch", "madvise", "unmap", "exit")
NOT_YET = ("mprotect", "mremap", "collapse", "fork")
ADVICE = ("dontneed",)
_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TOP_KEYS = ("arch", "kernel", "description", "region", "step")
_REGION_KEYS = ("name", "start", "size", "kind", "shared")
_STEP_KEYS = {"map": ("op", "region"), "unmap": ("op", "region"), "exit": ("op",),
              "touch": ("op", "region", "offset", "length", "stride"),
              "madvise": ("op", "region", "advice", "offset", "length")}


class WorkloadError(Exception):
    """A workload that cannot be run: the message names the line."""


@dataclass
class Region:
    name: str
    start: int
    size: int
    anon: bool
    shared: bool


@dataclass
class Step:
    op: str
    line: int
    region: Region | None = None
    offset: int = 0
    length: int = 0
    stride: int = 0
    advice: str = ""


@dataclass
class Workload:
    path: str
    arch: str
    kernel: str
    regions: dict[str, Region]
    steps: list[Step]


@dataclass
class StepReport:
    index: int
    what: str
    vmpte_kib: int
    vmpte_delta_kib: int
    tables: dict[str, int]
    nr_pagetable: int
    rss_pages: int
    faults: int
    grace_periods: int
    ipis_sent: int
    deferred_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SimResult:
    workload: str
    arch: str
    kernel: str
    steps: list[StepReport] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"workload": self.workload, "arch": self.arch, "kernel": self.kernel,
                "steps": [s.as_dict() for s in self.steps]}


# -- parsing ----------------------------------------------------------------------------

def _size(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise WorkloadError(f"{where}: expected a size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*(B|KiB|MiB|GiB|TiB|K|M|G|T)?\s*", value)
        if m:
            return int(m.group(1), 0) * _UNITS[m.group(2) or ""]
    raise WorkloadError(f"{where}: {value!r} is not a size (examples: 4096, \"2MiB\", "
                        "\"16TiB\", \"0x1000\")")


def _header_lines(text: str, name: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1)
            if re.match(rf"\s*\[\[\s*{name}\s*\]\]", line)]


def _key_line(text: str, start: int, key: str) -> int:
    lines = text.splitlines()
    for n in range(start, len(lines) + 1):
        if n > start and re.match(r"\s*\[", lines[n - 1]):
            break
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[n - 1]):
            return n
    return start


def parse_workload(path: str, text: str) -> Workload:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise WorkloadError(f"{path}: not valid TOML: {e}") from None
    for key in data:
        if key not in _TOP_KEYS:
            raise WorkloadError(f"{path}:{_key_line(text, 1, key)}: unknown key {key!r} "
                                f"(valid: {', '.join(_TOP_KEYS)})")
    arch = data.get("arch", DEFAULT_ARCH)
    if arch not in ARCHES:
        raise WorkloadError(f"{path}:{_key_line(text, 1, 'arch')}: unknown arch {arch!r} "
                            f"(valid: {', '.join(ARCHES)})")
    kernel = data.get("kernel", DEFAULT_ERA)
    if kernel not in ERAS:
        raise WorkloadError(f"{path}:{_key_line(text, 1, 'kernel')}: unknown kernel "
                            f"{kernel!r} (valid: {', '.join(ERAS)})")
    regions: dict[str, Region] = {}
    rlines = _header_lines(text, "region")
    for i, r in enumerate(data.get("region", [])):
        line = rlines[i] if i < len(rlines) else 0
        where = f"{path}:{line}"
        for key in r:
            if key not in _REGION_KEYS:
                raise WorkloadError(f"{path}:{_key_line(text, line, key)}: unknown region key "
                                    f"{key!r} (valid: {', '.join(_REGION_KEYS)})")
        for key in ("name", "start", "size"):
            if key not in r:
                raise WorkloadError(f"{where}: region needs {key!r}")
        kind = r.get("kind", "anon")
        if kind not in ("anon", "file"):
            raise WorkloadError(f"{where}: region kind {kind!r} (valid: anon, file)")
        reg = Region(str(r["name"]), _size(r["start"], where), _size(r["size"], where),
                     kind == "anon", bool(r.get("shared", False)))
        if reg.name in regions:
            raise WorkloadError(f"{where}: region {reg.name!r} defined twice")
        regions[reg.name] = reg
    steps: list[Step] = []
    slines = _header_lines(text, "step")
    for i, s in enumerate(data.get("step", [])):
        line = slines[i] if i < len(slines) else 0
        where = f"{path}:{line}"
        op = s.get("op")
        if op in NOT_YET:
            raise WorkloadError(f"{where}: operation {op!r} is not modelled yet "
                                f"(valid: {', '.join(OPS)})")
        if op not in OPS:
            raise WorkloadError(f"{where}: unknown operation {op!r} (valid: {', '.join(OPS)})")
        for key in s:
            if key not in _STEP_KEYS[op]:
                raise WorkloadError(f"{path}:{_key_line(text, line, key)}: {op} takes no "
                                    f"{key!r} (valid: {', '.join(_STEP_KEYS[op])})")
        step = Step(op, line)
        if op != "exit":
            name = s.get("region")
            if name not in regions:
                raise WorkloadError(f"{where}: unknown region {name!r} "
                                    f"(defined: {', '.join(regions) or 'none'})")
            step.region = regions[name]
            step.offset = _size(s.get("offset", 0), where)
            step.length = _size(s.get("length", step.region.size - step.offset), where)
            if step.offset + step.length > step.region.size or step.length <= 0:
                raise WorkloadError(f"{where}: [{step.offset:#x}, +{step.length:#x}) is not "
                                    f"inside region {name!r} of size {step.region.size:#x}")
        if op == "touch":
            step.stride = _size(s.get("stride", 4096), where)
            if step.stride <= 0:
                raise WorkloadError(f"{where}: stride must be positive")
        if op == "madvise":
            step.advice = s.get("advice", "")
            if step.advice not in ADVICE:
                raise WorkloadError(f"{where}: advice {step.advice!r} (valid: "
                                    f"{', '.join(ADVICE)})")
        steps.append(step)
    return Workload(path, arch, kernel, regions, steps)


# -- running ------------------------------------------------------------------------------


class _Sequential:
    """The model an execution needs to exist; nothing is explored."""

    def build(self, ex: Execution) -> None:
        pass

    def finish(self, ex: Execution) -> None:
        pass


class Simulator:
    """One mm on a sequential kernel."""

    def __init__(self, geometry: Geometry, config: KernelConfig) -> None:
        self.ex = Execution(_Sequential())
        self.kernel = Kernel(None, 1, sequential=True)
        self.cpu = self.kernel.cpus[0]
        self.mm = mm_struct(geometry, config)
        self.faults = 0
        self.mapped: dict[str, bool] = {}
        self.run(mm_alloc_pgd(self.mm))

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        with ops_inline():
            return self.ex.run_sync(coro, self.cpu)

    def settle(self) -> None:
        """A grace period passes; then every counter must balance."""
        self.run(rcu_sequential_gp())
        check_mm_counters(self.kernel, [self.mm], settled=True)

    async def touch(self, start: int, length: int, stride: int) -> None:
        mm = self.mm
        addr, end = start, start + length
        while addr < end:
            if not await do_user_addr_fault(mm, addr):
                raise ModelViolation("segv", f"fault at {addr:#x} failed")
            self.faults += 1
            addr += stride

    def step(self, step: Step) -> None:
        mm, reg = self.mm, step.region
        if step.op == "exit":
            self.run(exit_mmap(mm))
            return
        assert reg is not None
        start = reg.start + step.offset
        if step.op == "map":
            if self.mapped.get(reg.name):
                raise WorkloadError(f"{step.line}: region {reg.name!r} is already mapped")
            flags = VM_READ | VM_WRITE | (VM_SHARED if reg.shared else 0)
            self.run(do_mmap(mm, reg.start, reg.size, flags, reg.anon,
                             None if reg.anon else reg.name))
            self.mapped[reg.name] = True
            return
        if not self.mapped.get(reg.name):
            raise WorkloadError(f"{step.line}: region {reg.name!r} is not mapped")
        if step.op == "touch":
            self.run(self.touch(start, step.length, step.stride))
        elif step.op == "madvise":
            self.run(madvise_dontneed(mm, start, step.length))
        elif step.op == "unmap":
            if step.offset or step.length != reg.size:
                raise WorkloadError(f"{step.line}: unmap takes a whole region (splitting "
                                    "VMAs is not modelled yet)")
            self.run(munmap(mm, reg.start, reg.size))
            self.mapped[reg.name] = False


def simulate(wl: Workload, arch: str | None = None, kernel: str | None = None) -> SimResult:
    """Run ``wl``; the counters are reported after each step (and its grace period)."""
    arch = arch or wl.arch
    kernel = kernel or wl.kernel
    sim = Simulator(ARCHES[arch], ERAS[kernel])
    out = SimResult(wl.path, arch, kernel)
    base = census(sim.mm).vmpte_kib
    levels = [lv.name for lv in sim.mm.geometry.levels]
    for n, step in enumerate(wl.steps):
        try:
            sim.step(step)
        except WorkloadError as e:
            raise WorkloadError(f"{wl.path}:{e}") from None
        deferred = sim.kernel.alloc.pt_bytes_deferred
        sim.settle()
        c = census(sim.mm)
        vmpte = sim.mm.pgtables_bytes.value >> 10
        what = step.op + ("" if step.region is None else " " + step.region.name)
        if step.op == "madvise":
            what += " " + step.advice
        out.steps.append(StepReport(
            n, what, vmpte, vmpte - base, dict(zip(levels, c.tables, strict=True)),
            sim.kernel.alloc.nr_pagetable, sim.mm.rss.value, sim.faults,
            sim.kernel.rcu.grace_periods, sim.kernel.smp.ipis_sent, deferred))
    return out
