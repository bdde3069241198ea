"""``ptlab simulate``: run a workload's operations one after another through the
model's kernel paths (no exploration) and report the counters after each step.

A workload is a TOML file (docs/workloads.md; schema in workload.schema.json):
named regions at fixed addresses, then steps.  Each step runs as one task on
CPU 0 of a sequential kernel (IPIs are taken at once); after it, a grace period
passes and the counters oracle checks every counter against the tables.
"""

from __future__ import annotations

import errno
import json
import re
import tomllib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from .arch.geometry import ARCHES, DEFAULT_ARCH, Geometry
from .config import DEFAULT_ERA, ERAS, KernelConfig
from .engine import ModelViolation
from .kernel import Kernel
from .kernel.rcu import rcu_sequential_gp
from .mm.fault import do_user_addr_fault
from .mm.fork import dup_mm, mmput
from .mm.khugepaged import (
    collapse_file,
    collapse_huge_page,
    collapse_pte_mapped_thp,
    madvise_collapse,
)
from .mm.mprotect import do_mprotect_pkey
from .mm.mremap import mremap
from .mm.oracle import census, check_mm_counters
from .mm.pgalloc import mm_alloc_pgd
from .mm.types import VM_HUGEPAGE, VM_READ, VM_SHARED, VM_WRITE, Leaf, PageTable, mm_struct
from .mm.vma import do_mmap, madvise_dontneed, munmap

OPS = ("map", "touch", "madvise", "mprotect", "mremap", "collapse", "fork", "unmap", "exit")
ADVICE = ("dontneed",)
ACCESS = ("write", "read")
PROT = ("r", "rw")
COLLAPSE_MODES = ("madv_collapse", "khugepaged")
MAIN_MM = "parent"
_UNITS = {"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
          "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TOP_KEYS = ("arch", "kernel", "description", "region", "step")
_REGION_KEYS = ("name", "start", "size", "kind", "shared", "thp")
_RANGE = ("region", "offset", "length", "mm")
_STEP_KEYS = {"map": ("op", "region", "mm"), "unmap": ("op", *_RANGE),
              "exit": ("op", "mm"), "fork": ("op", "child", "mm"),
              "touch": ("op", *_RANGE, "stride", "access"),
              "madvise": ("op", *_RANGE, "advice"),
              "mprotect": ("op", *_RANGE, "prot"),
              "mremap": ("op", "region", "to", "mm"),
              "collapse": ("op", *_RANGE, "mode")}


class WorkloadError(Exception):
    """A workload that cannot be run: the message names the line."""


class StepFailed(WorkloadError):
    """A step whose system call fails (``errno``, e.g. "EFAULT"): an error for
    ``simulate``, a prediction for ``validate``."""

    def __init__(self, message: str, errno: str) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass
class Region:
    name: str
    start: int
    size: int
    anon: bool
    shared: bool
    thp: bool = False


@dataclass
class Step:
    op: str
    line: int
    region: Region | None = None
    offset: int = 0
    length: int = 0
    stride: int = 0
    access: str = "write"
    advice: str = ""
    mm: str = MAIN_MM
    child: str = ""
    to: Region | None = None
    prot: str = ""
    mode: str = ""


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
    mms: dict[str, int]
    grace_periods: int
    ipis_sent: int
    ipis_delayed: int
    deferred_bytes: int
    memcg_pagetables_kib: int

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
                     kind == "anon", bool(r.get("shared", False)), bool(r.get("thp", False)))
        if reg.name in regions:
            raise WorkloadError(f"{where}: region {reg.name!r} defined twice")
        regions[reg.name] = reg
    steps: list[Step] = []
    slines = _header_lines(text, "step")
    for i, s in enumerate(data.get("step", [])):
        line = slines[i] if i < len(slines) else 0
        where = f"{path}:{line}"
        op = s.get("op")
        if op not in OPS:
            raise WorkloadError(f"{where}: unknown operation {op!r} (valid: {', '.join(OPS)})")
        for key in s:
            if key not in _STEP_KEYS[op]:
                raise WorkloadError(f"{path}:{_key_line(text, line, key)}: {op} takes no "
                                    f"{key!r} (valid: {', '.join(_STEP_KEYS[op])})")
        step = Step(op, line)
        step.mm = str(s.get("mm", MAIN_MM))
        if op == "fork":
            step.child = str(s.get("child", "child"))
        if op not in ("exit", "fork"):
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
            step.access = s.get("access", "write")
            if step.access not in ACCESS:
                raise WorkloadError(f"{where}: access {step.access!r} (valid: "
                                    f"{', '.join(ACCESS)})")
        if op == "madvise":
            step.advice = s.get("advice", "")
            if step.advice not in ADVICE:
                raise WorkloadError(f"{where}: advice {step.advice!r} (valid: "
                                    f"{', '.join(ADVICE)})")
        if op == "mprotect":
            step.prot = s.get("prot", "")
            if step.prot not in PROT:
                raise WorkloadError(f"{where}: prot {step.prot!r} (valid: {', '.join(PROT)})")
        if op == "collapse":
            step.mode = s.get("mode", COLLAPSE_MODES[0])
            if step.mode not in COLLAPSE_MODES:
                raise WorkloadError(f"{where}: mode {step.mode!r} (valid: "
                                    f"{', '.join(COLLAPSE_MODES)})")
        if op == "mremap":
            to = s.get("to")
            if to not in regions:
                raise WorkloadError(f"{where}: mremap needs 'to', a region (defined: "
                                    f"{', '.join(regions)})")
            step.to = regions[to]
            assert step.region is not None
            if step.to.size != step.region.size or step.to is step.region:
                raise WorkloadError(f"{where}: mremap moves a whole region to another "
                                    "region of the same size")
        steps.append(step)
    return Workload(path, arch, kernel, regions, steps)


def workload_toml(wl: Workload, description: str = "") -> str:
    """``wl`` as a workload file that parses back to it."""
    lines = [f"description = {json.dumps(description)}"] if description else []
    lines += [f'arch = "{wl.arch}"', f'kernel = "{wl.kernel}"']
    for r in wl.regions.values():
        lines += ["", "[[region]]", f'name = "{r.name}"', f"start = {r.start:#x}",
                  f"size = {r.size:#x}", f'kind = "{"anon" if r.anon else "file"}"',
                  f"shared = {str(r.shared).lower()}", f"thp = {str(r.thp).lower()}"]
    for s in wl.steps:
        lines += ["", "[[step]]", f'op = "{s.op}"']
        if s.mm != MAIN_MM:
            lines.append(f'mm = "{s.mm}"')
        if s.region is not None:
            lines.append(f'region = "{s.region.name}"')
            if s.op not in ("map", "mremap"):
                lines += [f"offset = {s.offset:#x}", f"length = {s.length:#x}"]
        extra = {"touch": (("stride", s.stride), ("access", s.access)),
                 "madvise": (("advice", s.advice),), "mprotect": (("prot", s.prot),),
                 "collapse": (("mode", s.mode),), "fork": (("child", s.child),),
                 "mremap": (("to", s.to.name if s.to else ""),)}.get(s.op, ())
        lines += [f"{k} = {v:#x}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in extra]
    return "\n".join(lines) + "\n"


# -- running ------------------------------------------------------------------------------


class Simulator:
    """Processes (named mms, ``parent`` first) on one sequential kernel."""

    def __init__(self, geometry: Geometry, config: KernelConfig) -> None:
        self.kernel = Kernel(None, 1, sequential=True)
        self.cpu = self.kernel.cpus[0]
        self.mm = mm_struct(geometry, config)
        self.mms: dict[str, mm_struct] = {MAIN_MM: self.mm}
        self.faults = 0
        self.shmem_objects = 0
        self.run(mm_alloc_pgd(self.mm))

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.kernel.run(coro)

    def settle(self) -> None:
        """A grace period passes; then every counter must balance."""
        self.run(rcu_sequential_gp())
        check_mm_counters(self.kernel, list(self.mms.values()), settled=True)

    async def touch(self, mm: mm_struct, start: int, length: int, stride: int,
                    write: bool = True) -> None:
        addr, end = start, start + length
        while addr < end:
            if not await do_user_addr_fault(mm, addr, write=write):
                raise ModelViolation("segv", f"fault at {addr:#x} failed")
            self.faults += 1
            addr += stride

    async def collapse(self, mm: mm_struct, reg: Region, start: int, length: int,
                       mode: str) -> None:
        """khugepaged / MADV_COLLAPSE over each whole PMD range of ``[start, +len)``."""
        pmd = mm.geometry.levels[-2].size
        addr = (start + pmd - 1) & ~(pmd - 1)
        while addr + pmd <= start + length:
            if reg.anon and not reg.shared:
                await collapse_huge_page(mm, addr)
            elif mode == "khugepaged":
                # collapse_file(): the page cache gets the huge folio, then every
                # mm mapping the range has its table retracted.
                vma = next((v for v in mm.vmas if v.vm_start <= addr < v.vm_end), None)
                if vma is not None and vma.file is not None:
                    await collapse_file(mm, mm.mapping(vma.file),
                                        vma.vm_pgoff + ((addr - vma.vm_start)
                                                        >> mm.geometry.page_shift))
            else:
                await collapse_pte_mapped_thp(mm, addr, install_pmd=True)
            addr += pmd

    def _need(self, step: Step, reg: Region, mapped: bool) -> None:
        """The region must be mapped (some of it) or, for map and an mremap's
        destination, not at all: the process's VMAs say."""
        mm = self.mms[step.mm]
        now = any(v.vm_start < reg.start + reg.size and v.vm_end > reg.start
                  for v in mm.vmas)
        if now != mapped:
            raise WorkloadError(f"{step.line}: region {reg.name!r} is "
                                f"{'not ' if mapped else 'already '}mapped in {step.mm!r}")

    def huge_kib(self, mm_name: str, lo: int, hi: int) -> int:
        """KiB of ``[lo, hi)`` that ``mm_name`` maps with huge PMDs (what smaps calls
        AnonHugePages, ShmemPmdMapped and FilePmdMapped: the huge zero folio is
        none of them)."""
        mm = self.mms.get(mm_name)
        if mm is None or mm.pgd is None:
            return 0
        geo = mm.geometry
        pmd = geo.levels[-2].size
        total = 0
        addr = lo & ~(pmd - 1)
        while addr < hi:
            t: Any = mm.pgd
            while isinstance(t, PageTable) and t.depth < len(geo.levels) - 2:
                t = t.entries.get(geo.index(t.depth, addr))
            if isinstance(t, PageTable):
                leaf = t.entries.get(geo.index(t.depth, addr))
                if isinstance(leaf, Leaf) and leaf.huge and not leaf.zero and addr >= lo:
                    total += pmd >> 10
            addr += pmd
        return total

    def step(self, step: Step, thp_budget: int | None = None) -> None:
        """Run one step.  ``thp_budget``: how many huge pages its faults may
        allocate (None: as many as they want); the rest fall back to PTEs."""
        mm = self.mms.get(step.mm)
        if mm is not None:
            mm.thp_budget = thp_budget
        try:
            self._step(step)
        finally:
            if mm is not None:
                mm.thp_budget = None

    def _step(self, step: Step) -> None:
        mm = self.mms.get(step.mm)
        if mm is None:
            raise WorkloadError(f"{step.line}: no process {step.mm!r} (live: "
                                f"{', '.join(self.mms)})")
        reg = step.region
        if step.op == "exit":
            self.run(mmput(mm))
            del self.mms[step.mm]
            return
        if step.op == "fork":
            if step.child in self.mms:
                raise WorkloadError(f"{step.line}: process {step.child!r} already exists")
            child = self.run(dup_mm(mm))
            if child is None:
                raise ModelViolation("oom", "fork failed: -ENOMEM")
            self.mms[step.child] = child
            return
        assert reg is not None
        start = reg.start + step.offset
        if step.op == "map":
            self._need(step, reg, False)
            flags = VM_READ | VM_WRITE | (VM_SHARED if reg.shared else 0) | \
                (VM_HUGEPAGE if reg.thp else 0)
            # MAP_SHARED|MAP_ANONYMOUS is shmem: mmap_region()'s shmem_zero_setup()
            # gives the VMA a file of its own ("/dev/zero (deleted)").
            # Each such mmap() is a new object; a fork shares it.
            anon = reg.anon and not reg.shared
            if anon:
                file = None
            elif reg.anon:
                self.shmem_objects += 1
                file = f"{reg.name}:shmem{self.shmem_objects}"
            else:
                file = reg.name
            self.run(do_mmap(mm, reg.start, reg.size, flags, anon, file))
            return
        self._need(step, reg, True)
        if step.op == "touch":
            self.run(self.touch(mm, start, step.length, step.stride, step.access == "write"))
        elif step.op == "madvise":
            if not self.run(madvise_dontneed(mm, start, step.length)):
                raise StepFailed(f"{step.line}: madvise of {reg.name!r} failed (-ENOMEM: "
                                 "part of the range is unmapped)", "ENOMEM")
        elif step.op == "mprotect":
            if not self.run(do_mprotect_pkey(mm, start, step.length, step.prot == "rw")):
                raise StepFailed(f"{step.line}: mprotect of {reg.name!r} failed (-ENOMEM: "
                                 "part of the range is unmapped)", "ENOMEM")
        elif step.op == "collapse":
            if step.mode == "madv_collapse":
                err = self.run(madvise_collapse(mm, start, step.length))
                if err:
                    name = errno.errorcode.get(-err, str(err))
                    raise StepFailed(f"{step.line}: MADV_COLLAPSE of {reg.name!r} failed "
                                     f"(-{name})", name)
            else:
                self.run(self.collapse(mm, reg, start, step.length, step.mode))
        elif step.op == "mremap":
            assert step.to is not None
            self._need(step, step.to, False)
            if not self.run(mremap(mm, reg.start, reg.size, step.to.start)):
                raise StepFailed(f"{step.line}: mremap of {reg.name!r} failed (-EFAULT)",
                                 "EFAULT")
        elif step.op == "unmap":
            self.run(munmap(mm, start, step.length))


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
        what = step.op + ("" if step.region is None else " " + step.region.name) + \
            ("" if step.mm == MAIN_MM else f" ({step.mm})")
        if step.op == "madvise":
            what += " " + step.advice
        out.steps.append(StepReport(
            n, what, vmpte, vmpte - base, dict(zip(levels, c.tables, strict=True)),
            sim.kernel.alloc.nr_pagetable, sim.mm.rss.value, sim.faults,
            {name: m.pgtables_bytes.value >> 10 for name, m in sim.mms.items()},
            sim.kernel.rcu.grace_periods, sim.kernel.smp.ipis_sent,
            sim.kernel.smp.ipis_delayed, deferred,
            sum(sim.kernel.alloc.memcg_pagetables.values()) >> 10))
    return out
