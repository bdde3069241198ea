"""``ptlab validate``: the x86-64 model against the running kernel, step by step.

Each workload (generated from a seed, or read from a ``simulate`` TOML file) runs
on the host in a child process (:mod:`ptlab.host`) and in the model configured
like the host (:func:`detect_host`).  After every step the change of ``VmPTE`` of
the process that acted must agree, and so must the ``errno`` of a call that
failed; a ``fork`` also compares the page tables the child got.  What the model
cannot know is read from the host and given to the model as that step's choice:
how many huge pages a fault could allocate (``/proc/self/smaps``).

On a mismatch the workload is shrunk to the fewest steps that still disagree and
saved as a workload file.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import os
import platform
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .arch.geometry import ARCHES, Geometry
from .check import write_atomic
from .config import ERAS, KernelConfig
from .engine import ModelViolation
from .host import PUD_SPAN, HostError, HostRun, HostStep, run_on_host
from .mm.oracle import census
from .simulate import (
    MAIN_MM,
    Simulator,
    Step,
    StepFailed,
    Workload,
    WorkloadError,
    parse_workload,
    workload_toml,
)

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PAGE = 4 * KIB
PMD = 2 * MIB
WINDOW = 16 * TIB          # 512 GiB aligned: nothing else shares the upper tables

# -- the host's kernel ---------------------------------------------------------------------


@dataclass
class HostKernel:
    release: str
    arch: str
    config: KernelConfig
    notes: list[str] = field(default_factory=list)


_ERA_VERSIONS = sorted((tuple(int(x) for x in name[1:].split(".")), name)
                       for name in ERAS if name.startswith("v"))


def _read_config(release: str) -> tuple[dict[str, str], str]:
    for path, opener in (("/proc/config.gz", gzip.open), (f"/boot/config-{release}", open)):
        try:
            with opener(path, "rt") as f:
                text = f.read()
        except OSError:
            continue
        opts = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                opts[k] = v
        return opts, path
    return {}, ""


def _sysfs(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return ""
    chosen = [w[1:-1] for w in text.split() if w.startswith("[")]
    return chosen[0] if chosen else text


def detect_host() -> HostKernel:
    """The model's configuration for this machine: the era preset at or below
    ``uname -r``, then what the kernel's own config says."""
    release = platform.release()
    try:
        version = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        version = (0, 0)
    notes = []
    below = [name for v, name in _ERA_VERSIONS if v <= version]
    era = below[-1] if below else _ERA_VERSIONS[0][1]
    exact = bool(below) and _ERA_VERSIONS[[n for _, n in _ERA_VERSIONS].index(era)][0] == version
    if not exact:
        notes.append(f"no preset for {release}: using the closest, {era}")
    cfg = ERAS[era]
    opts, source = _read_config(release)
    if source:
        def on(name: str) -> bool:
            return opts.get(name) == "y"
        changes: dict[str, object] = {}
        for field_name, option in (("pt_reclaim", "CONFIG_PT_RECLAIM"),
                                   ("per_vma_lock", "CONFIG_PER_VMA_LOCK"),
                                   ("mmu_gather_rcu_table_free",
                                    "CONFIG_MMU_GATHER_RCU_TABLE_FREE"),
                                   ("paravirt", "CONFIG_PARAVIRT"),
                                   ("split_pte_ptlocks", "CONFIG_SPLIT_PTE_PTLOCKS"),
                                   ("split_pmd_ptlocks", "CONFIG_SPLIT_PMD_PTLOCKS")):
            if getattr(cfg, field_name) != on(option):
                changes[field_name] = on(option)
        if changes:
            cfg = cfg.replace(**changes)
        notes.append(f"configuration from {source}" + (
            ": " + ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else
            f" (as the {era} preset)"))
    else:
        notes.append(f"no /proc/config.gz or /boot/config-{release}: the {era} preset as is")
    arch = "x86-64"
    if platform.machine() != "x86_64":
        notes.append(f"this is {platform.machine()}: only the x86-64 model is validated")
    else:
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
                flags = next((ln for ln in f if ln.startswith("flags")), "")
        except OSError:
            flags = ""
        if " la57" in flags and opts.get("CONFIG_PGTABLE_LEVELS") == "5":
            arch = "x86-64-la57"
    thp = _sysfs("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp and thp != "madvise":
        notes.append(f"THP is {thp!r} here; the model grants huge pages to MADV_HUGEPAGE "
                     "regions only (madvise mode)")
    return HostKernel(release, arch, cfg, notes)


# -- random workloads ------------------------------------------------------------------------


class _Layout:
    """What the generator knows of one process's mappings: per region, per page,
    None (unmapped) or whether it is writable."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.pages: dict[str, list[bool | None]] = {
            name: [None] * (size // PAGE) for name, size in sizes.items()}

    def copy(self) -> _Layout:
        out = _Layout({})
        out.pages = {k: list(v) for k, v in self.pages.items()}
        return out

    def mapped(self, name: str, lo: int = 0, hi: int | None = None) -> bool:
        return all(p is not None for p in self.pages[name][lo:hi])

    def unmapped(self, name: str) -> bool:
        return all(p is None for p in self.pages[name])

    def writable(self, name: str, lo: int, hi: int) -> bool:
        return all(self.pages[name][lo:hi])

    def unmapped_range(self, name: str, lo: int, hi: int) -> bool:
        return all(p is None for p in self.pages[name][lo:hi])

    def mprotect(self, name: str, lo: int, hi: int, rw: bool) -> None:
        """As do_mprotect_pkey(): from ``lo`` up to the first hole, if ``lo`` is
        mapped (a range that starts in a hole changes nothing)."""
        pages = self.pages[name]
        i = lo
        while i < hi and pages[i] is not None:
            pages[i] = rw
            i += 1

    def mremap(self, name: str, to: str, multi_vma: bool) -> bool:
        """As mremap(MREMAP_FIXED) of the whole region: whether it moves (see
        ``mm.mremap.mremap``: one VMA, or since v6.17 any VMAs but no gap first)."""
        pages = self.pages[name]
        if not self.unmapped(to) or pages[0] is None or not (
                multi_vma or self.one_vma(name)):
            return False
        self.pages[to], self.pages[name] = pages, [None] * len(pages)
        return True

    def one_vma(self, name: str) -> bool:
        pages = self.pages[name]
        return pages[0] is not None and all(p == pages[0] for p in pages)


@dataclass
class _Reg:
    name: str
    start: int
    size: int
    kind: str
    shared: bool
    thp: bool
    peer: str = ""            # the mremap destination paired with it (same size)


def _regions(rng: random.Random, base: int) -> list[_Reg]:
    """Four regions and a same-size mremap destination for each, every one in its own
    1 GiB slot of the window (so only the PMD tables are per region)."""
    out: list[_Reg] = []
    for i in range(4):
        size = rng.choice((64 * KIB, 1 * MIB, 2 * MIB, 3 * MIB, 4 * MIB, 6 * MIB))
        off = rng.choice((0, 0, PAGE, 3 * PAGE, MIB))
        kind = rng.choice(("anon", "anon", "file"))
        shared = rng.random() < 0.3
        thp = kind == "anon" and not shared and rng.random() < 0.5
        name, dest = f"r{i}", f"d{i}"
        doff = rng.choice((0, off, PAGE, 5 * PAGE))
        out.append(_Reg(name, base + (2 * i) * GIB + off, size, kind, shared, thp, dest))
        out.append(_Reg(dest, base + (2 * i + 1) * GIB + doff, size, kind, shared, thp, name))
    return out


def _subrange(rng: random.Random, size: int) -> tuple[int, int]:
    """A page-aligned [offset, offset + length), often PMD-aligned."""
    n = size // PAGE
    if rng.random() < 0.3:
        return 0, size
    lo = rng.randrange(n)
    hi = rng.randrange(lo + 1, n + 1)
    if rng.random() < 0.3:
        lo = lo * PAGE // PMD * PMD // PAGE
        hi = max(lo + 1, min(n, -(-hi * PAGE // PMD) * PMD // PAGE))
    return lo * PAGE, (hi - lo) * PAGE


def generate(seed: int, index: int, nops: int, base: int = WINDOW,
             multi_vma_mremap: bool = True) -> str:
    """Workload ``index`` of ``seed``: ``nops`` steps that are valid on the host by
    construction (no touch of an unmapped page, no write to a read-only one), as
    ``simulate`` TOML.  ``multi_vma_mremap``: the host's mremap() moves several
    VMAs at once (v6.17+), which decides where a region's pages are after one."""
    rng = random.Random(f"{seed}/{index}")
    regs = _regions(rng, base)
    by_name = {r.name: r for r in regs}
    lay = _Layout({r.name: r.size for r in regs})
    steps: list[dict[str, Any]] = []
    while len(steps) < nops:
        mapped = [r for r in regs if not lay.unmapped(r.name)]
        homes = [r for r in regs if r.name.startswith("r") and lay.unmapped(r.name)
                 and lay.unmapped(r.peer)]
        kinds: list[tuple[str, float]] = []
        if homes:
            kinds.append(("map", 2 if not mapped else 0.5))
        if mapped:
            kinds += [("touch", 4), ("madvise", 1), ("mprotect", 1), ("unmap", 1),
                      ("collapse", 0.7), ("mremap", 0.7), ("fails", 0.3)]
            if len(steps) + 2 <= nops:
                kinds.append(("fork", 0.5))
        kind = rng.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        step: dict[str, Any] | None
        if kind == "map":
            step = _op_map(rng, homes, lay)
        elif kind == "touch":
            step = _op_touch(rng, mapped, lay)
        elif kind == "mremap":
            step = _op_mremap(rng, mapped, by_name, lay, multi_vma_mremap)
        elif kind == "fork":
            step = {"op": "fork"}
        elif kind == "fails":
            step = _op_failing(rng, mapped, by_name, lay, multi_vma_mremap)
        else:
            step = _op_range(rng, mapped, lay, kind)
        if step is None:
            continue
        steps.append(step)
        if step["op"] == "fork":
            steps.append({"op": "exit", "mm": "child"})
    lines = [f"description = \"ptlab validate: seed {seed}, workload {index}\""]
    for r in regs:
        lines += ["", "[[region]]", f'name = "{r.name}"', f"start = {r.start:#x}",
                  f"size = {r.size:#x}", f'kind = "{r.kind}"',
                  f"shared = {str(r.shared).lower()}", f"thp = {str(r.thp).lower()}"]
    for s in steps:
        lines += ["", "[[step]]"] + [f"{k} = " + (f'"{v}"' if isinstance(v, str) else f"{v:#x}"
                                                  if k in ("offset", "length", "stride")
                                                  else str(v)) for k, v in s.items()]
    return "\n".join(lines) + "\n"


def _op_map(rng: random.Random, homes: list[_Reg], lay: _Layout) -> dict[str, Any]:
    r = rng.choice(homes)
    lay.pages[r.name] = [True] * (r.size // PAGE)
    return {"op": "map", "region": r.name}


def _op_touch(rng: random.Random, mapped: list[_Reg], lay: _Layout) -> dict[str, Any] | None:
    r = rng.choice(mapped)
    off, length = _subrange(rng, r.size)
    lo, hi = off // PAGE, (off + length) // PAGE
    if not lay.mapped(r.name, lo, hi):
        return None
    stride = rng.choice((PAGE, PAGE, 64 * KIB, PMD, MIB + PAGE))
    write = lay.writable(r.name, lo, hi) and rng.random() < 0.75
    return {"op": "touch", "region": r.name, "offset": off, "length": length,
            "stride": stride, "access": "write" if write else "read"}


def _op_range(rng: random.Random, mapped: list[_Reg], lay: _Layout,
              op: str) -> dict[str, Any] | None:
    r = rng.choice(mapped)
    off, length = _subrange(rng, r.size)
    lo, hi = off // PAGE, (off + length) // PAGE
    if not lay.mapped(r.name, lo, hi):
        return None
    step: dict[str, Any] = {"op": op, "region": r.name, "offset": off, "length": length}
    if op == "madvise":
        step["advice"] = "dontneed"
    elif op == "mprotect":
        rw = rng.random() < 0.5
        step["prot"] = "rw" if rw else "r"
        lay.mprotect(r.name, lo, hi, rw)
    elif op == "unmap":
        lay.pages[r.name][lo:hi] = [None] * (hi - lo)
    return step


def _op_failing(rng: random.Random, mapped: list[_Reg], by_name: dict[str, _Reg],
                lay: _Layout, multi_vma: bool) -> dict[str, Any] | None:
    """A call that meets holes or VMA boundaries: madvise, mprotect or
    MADV_COLLAPSE over a range with a hole (-ENOMEM; the mapped part before the
    hole is still done), or mremap of a region that is no longer one VMA (since
    v6.17 it moves unless a hole opens it; before, -EFAULT)."""
    holey = [r for r in mapped if not lay.mapped(r.name)]
    split = [r for r in mapped if not lay.one_vma(r.name) and lay.unmapped(r.peer)]
    if split and (not holey or rng.random() < 0.3):
        r = rng.choice(split)
        lay.mremap(r.name, r.peer, multi_vma)
        return {"op": "mremap", "region": r.name, "to": by_name[r.peer].name}
    if not holey:
        return None
    r = rng.choice(holey)
    off, length = _subrange(rng, r.size)
    lo, hi = off // PAGE, (off + length) // PAGE
    if lay.mapped(r.name, lo, hi) or lay.unmapped_range(r.name, lo, hi):
        return None
    op = rng.choice(("madvise", "mprotect", "collapse"))
    step: dict[str, Any] = {"op": op, "region": r.name, "offset": off, "length": length}
    if op == "madvise":
        step["advice"] = "dontneed"
    elif op == "mprotect":
        step["prot"] = rng.choice(("r", "rw"))
        lay.mprotect(r.name, lo, hi, step["prot"] == "rw")
    return step


def _op_mremap(rng: random.Random, mapped: list[_Reg], by_name: dict[str, _Reg],
               lay: _Layout, multi_vma: bool) -> dict[str, Any] | None:
    movable = [r for r in mapped if lay.one_vma(r.name) and lay.unmapped(r.peer)]
    if not movable:
        return None
    r = rng.choice(movable)
    lay.mremap(r.name, r.peer, multi_vma)
    return {"op": "mremap", "region": r.name, "to": by_name[r.peer].name}


# -- comparing ------------------------------------------------------------------------------


@dataclass
class StepResult:
    index: int
    what: str
    kind: str                        # the op kind counted in the report
    host: HostStep
    model_errno: str
    model_delta: int
    model_child: int | None = None
    model_huge: int | None = None    # KiB of the region the model maps by huge PMDs
    excluded: str = ""               # why the step was not compared

    @property
    def agrees(self) -> bool:
        return bool(self.excluded) or (
            self.host.errno == self.model_errno and self.host.delta == self.model_delta
            and (self.host.child_kib is None or self.host.child_kib == self.model_child)
            and (self.host.huge_kib is None or self.host.huge_kib == self.model_huge))


@dataclass
class WorkloadResult:
    workload: Workload
    steps: list[StepResult]
    allocs: Counter[str]
    frees: Counter[str]
    error: str = ""                  # the host could not run it

    @property
    def name(self) -> str:
        return self.workload.path

    @property
    def mismatch(self) -> StepResult | None:
        return next((s for s in self.steps if not s.agrees), None)


def _kind(step: Step) -> str:
    reg = step.region
    if step.op == "touch":
        return f"touch-{step.access}" + ("-thp" if reg is not None and reg.thp else "")
    if step.op in ("unmap", "madvise", "mprotect", "collapse") and reg is not None:
        whole = step.offset == 0 and step.length == reg.size
        aligned = step.offset % PMD == 0 and step.length % PMD == 0 and \
            (reg.start + step.offset) % PMD == 0
        return f"{step.op}-" + ("whole" if whole else "pmd-aligned" if aligned else "partial")
    if step.op == "mremap" and reg is not None and step.to is not None:
        same = (reg.start - step.to.start) % PMD == 0
        return "mremap-" + ("same-pmd-offset" if same else "unaligned")
    if step.op == "map" and reg is not None:
        return "map-" + ("anon" if reg.anon else "file") + ("-shared" if reg.shared else "")
    return step.op


def _host_json(wl: Workload) -> dict[str, Any]:
    regions = [{"name": r.name, "start": r.start, "size": r.size, "anon": r.anon,
                "shared": r.shared, "thp": r.thp} for r in wl.regions.values()]
    steps = []
    for s in wl.steps:
        d: dict[str, Any] = {"op": s.op, "mm": s.mm}
        if s.region is not None:
            d.update(region=s.region.name, offset=s.offset, length=s.length)
        if s.op == "touch":
            d.update(stride=s.stride, access=s.access)
        if s.op == "mprotect":
            d["prot"] = s.prot
        if s.to is not None:
            d["to"] = s.to.name
        if s.op == "fork":
            d["child"] = s.child
        steps.append(d)
    return {"regions": regions, "steps": steps}


def run_model(wl: Workload, host: HostRun, geometry: Geometry,
              config: KernelConfig) -> WorkloadResult:
    """Replay ``wl`` in the model, step by step beside what the host did."""
    sim = Simulator(geometry, config)
    levels = [lv.name for lv in geometry.levels]
    allocs: Counter[str] = Counter()
    frees: Counter[str] = Counter()
    out: list[StepResult] = []
    collapsed = host.khugepaged_before
    for i, (step, h) in enumerate(zip(wl.steps, host.steps, strict=False)):
        mm = sim.mms.get(step.mm)
        before = mm.pgtables_bytes.value >> 10 if mm is not None else 0
        tables_before = _tables(sim, levels)
        pages_before = len(sim.kernel.alloc.pages)
        budget = None
        reg = step.to if step.op == "mremap" else step.region
        if step.op == "touch" and reg is not None and reg.thp and h.huge_kib is not None:
            # How many huge pages the host's faults got: the model may allocate
            # as many (the rest fall back to PTE tables).
            budget = max(0, (h.huge_kib - sim.huge_kib(step.mm, reg.start,
                                                       reg.start + reg.size)) // (PMD // KIB))
        err = ""
        try:
            sim.step(step, thp_budget=budget)
        except StepFailed as e:
            err = e.errno
        except (WorkloadError, ModelViolation) as e:
            # The model refuses a step the host ran, or breaks a rule on it: a
            # disagreement, and the end of this workload's comparison.
            why = e.message if isinstance(e, ModelViolation) else str(e)
            out.append(StepResult(i, step.op, _kind(step), h, f"refused ({why})", 0))
            break
        try:
            sim.settle()
        except ModelViolation as e:
            out.append(StepResult(i, step.op, _kind(step), h, f"broke a rule ({e.message})", 0))
            break
        mm = sim.mms.get(step.mm)
        after = mm.pgtables_bytes.value >> 10 if mm is not None else 0
        if step.op == "exit" and step.mm != MAIN_MM:
            after = before = 0           # the host cannot see a process that is gone
        child = None
        if step.op == "fork" and step.child in sim.mms:
            child = sim.mms[step.child].pgtables_bytes.value >> 10
        tables_after = _tables(sim, levels)
        new = Counter(_levels_of(sim, pages_before))
        for lv in levels:
            allocs[lv] += new[lv]
            frees[lv] += new[lv] - (tables_after[lv] - tables_before[lv])
        what = step.op + ("" if step.region is None else " " + step.region.name) + \
            ("" if step.mm == MAIN_MM else f" ({step.mm})")
        excluded = ""
        huge = sim.huge_kib(step.mm, reg.start, reg.start + reg.size) \
            if reg is not None and step.mm in sim.mms else None
        if h.errno in ("ENOMEM", "EAGAIN", "EBUSY") and step.op == "collapse" \
                and not err and mm is not None and step.region is not None \
                and _covered(mm, step.region.start + step.offset, step.length):
            # The model collapsed a range with no hole; the host ran out of
            # huge pages or met a busy page: transient, and the host is left
            # with less than the model, so the rest is not compared.
            out.append(StepResult(i, what, _kind(step), h, err, after - before, child, None,
                                  f"MADV_COLLAPSE failed on the host with {h.errno}, a "
                                  "transient the model does not predict: the rest of "
                                  "the workload is not compared"))
            break
        if h.khugepaged != collapsed and h.huge_kib is not None and huge is not None \
                and h.huge_kib > huge:
            # khugepaged collapsed something meanwhile (maybe ours): what the
            # model was not told of, it cannot follow.
            out.append(StepResult(i, what, _kind(step), h, err, after - before, child, huge,
                                  "khugepaged made huge pages during this step: the "
                                  "rest of the workload is not compared"))
            break
        collapsed = h.khugepaged
        out.append(StepResult(i, what, _kind(step), h, err, after - before, child, huge,
                              excluded))
    return WorkloadResult(wl, out, allocs, frees)


def _covered(mm: Any, start: int, length: int) -> bool:
    """Whether the mm's VMAs cover ``[start, start + length)`` without a hole."""
    at = start
    for v in mm.vmas:
        if v.vm_end <= at:
            continue
        if v.vm_start > at:
            return False
        at = v.vm_end
        if at >= start + length:
            return True
    return at >= start + length


def _tables(sim: Simulator, levels: list[str]) -> dict[str, int]:
    total = dict.fromkeys(levels, 0)
    for mm in sim.mms.values():
        for lv, n in zip(levels, census(mm).tables, strict=True):
            total[lv] += n
    return total


def _levels_of(sim: Simulator, since: int) -> list[str]:
    """The level of every page-table page allocated since index ``since``."""
    out = []
    levels = sim.mm.geometry.levels
    for page in sim.kernel.alloc.pages[since:]:
        slots = page.payload if isinstance(page.payload, list) else [page.payload]
        out += [levels[t.depth].name for t in slots if hasattr(t, "depth")]
    return out


def check_workload(wl: Workload, hk: HostKernel) -> WorkloadResult:
    """Run one workload on the host and in the model."""
    try:
        host = run_on_host(_host_json(wl))
    except HostError as e:
        return WorkloadResult(wl, [], Counter(), Counter(), str(e))
    if host.conflicts:
        return WorkloadResult(wl, [], Counter(), Counter(),
                              "window taken: " + "; ".join(host.conflicts[:3]))
    return run_model(wl, host, ARCHES[hk.arch], hk.config)


# -- shrinking ----------------------------------------------------------------------------


def _still_wrong(wl: Workload, hk: HostKernel, op: str) -> bool:
    """Whether ``wl`` still disagrees, first at a step of the same operation as
    the original mismatch (so the shrinker keeps to one kind of disagreement)."""
    res = check_workload(wl, hk)
    bad = res.mismatch
    return not res.error and bad is not None and wl.steps[bad.index].op == op


def shrink_workload(wl: Workload, hk: HostKernel, max_runs: int = 200) -> Workload:
    """Drop steps (halves, then quarters, ... then one at a time) while the host and
    the model still disagree, first at the same operation as before.  A candidate
    that is not safe to run on the host (a touch of a page no longer mapped, a
    child's step without its fork) is never run: :func:`runnable` refuses it."""
    first = check_workload(wl, hk).mismatch
    if first is None:
        return wl
    op = wl.steps[first.index].op
    steps = list(wl.steps)
    runs = 0
    chunk = max(1, len(steps) // 2)
    while chunk >= 1 and runs < max_runs:
        i, changed = 0, False
        while i < len(steps) and runs < max_runs:
            cand = dataclasses.replace(wl, steps=steps[:i] + steps[i + chunk:])
            if cand.steps and runnable(cand, hk.config.mremap_multi_vma):
                runs += 1
                if _still_wrong(cand, hk, op):
                    steps, changed = cand.steps, True
                    continue
            i += chunk
        if not changed:
            chunk //= 2
    return dataclasses.replace(wl, steps=steps)


def runnable(wl: Workload, multi_vma_mremap: bool = True) -> bool:
    """Whether ``wl`` is safe to run on the host: every touched page mapped, every
    write to a writable one, every region mapped once, a child's steps after its
    fork, mremap to an unmapped region (of a region that is one VMA, or it fails)."""
    lays: dict[str, _Layout] = {MAIN_MM: _Layout({r.name: r.size for r in wl.regions.values()})}
    for s in wl.steps:
        lay = lays.get(s.mm)
        if lay is None:
            return False
        if s.op == "fork":
            if s.child in lays:
                return False
            lays[s.child] = lay.copy()
            continue
        if s.op == "exit":
            del lays[s.mm]
            continue
        assert s.region is not None
        name, lo, hi = s.region.name, s.offset // PAGE, (s.offset + s.length) // PAGE
        if s.op == "map":
            if not lay.unmapped(name):
                return False
            lay.pages[name] = [True] * (s.region.size // PAGE)
        elif lay.unmapped(name):
            return False                     # the model wants some of it mapped
        elif s.op == "touch":
            if not lay.mapped(name, lo, hi) or (s.access == "write"
                                               and not lay.writable(name, lo, hi)):
                return False
        elif s.op == "mprotect":
            lay.mprotect(name, lo, hi, s.prot == "rw")
        elif s.op == "unmap":
            lay.pages[name][lo:hi] = [None] * (hi - lo)
        elif s.op == "mremap" and s.to is not None:
            if not lay.unmapped(s.to.name):
                return False
            lay.mremap(name, s.to.name, multi_vma_mremap)   # or -EFAULT: nothing moves
    return True


# -- the run ------------------------------------------------------------------------------


@dataclass
class Report:
    host: HostKernel
    results: list[WorkloadResult]
    shrunk: list[tuple[str, Workload]] = field(default_factory=list)   # saved files

    @property
    def mismatches(self) -> list[WorkloadResult]:
        return [r for r in self.results if r.mismatch is not None]

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        compared: Counter[str] = Counter()
        excluded: Counter[str] = Counter()
        for r in self.results:
            for s in r.steps:
                (excluded if s.excluded else compared)[s.kind] += 1
        return compared, excluded

    def as_dict(self) -> dict[str, Any]:
        compared, excluded = self.counts()
        allocs: Counter[str] = Counter()
        frees: Counter[str] = Counter()
        for r in self.results:
            allocs.update(r.allocs)
            frees.update(r.frees)
        return {
            "kernel": self.host.release, "arch": self.host.arch,
            "config": self.host.config.name, "notes": self.host.notes,
            "workloads": len(self.results),
            "host_errors": {r.name: r.error for r in self.results if r.error},
            "steps_compared": dict(sorted(compared.items())),
            "steps_excluded": dict(sorted(excluded.items())),
            "errors_compared": dict(sorted(Counter(
                s.host.errno for r in self.results for s in r.steps
                if s.host.errno and not s.excluded).items())),
            "exclusions": sorted({s.excluded for r in self.results for s in r.steps
                                  if s.excluded}),
            "table_allocs": dict(allocs), "table_frees": dict(frees),
            "mismatches": [{"workload": r.name, "step": m.index, "what": m.what,
                            "host": {"errno": m.host.errno, "delta_kib": m.host.delta,
                                     "child_kib": m.host.child_kib,
                                     "huge_kib": m.host.huge_kib},
                            "model": {"errno": m.model_errno, "delta_kib": m.model_delta,
                                      "child_kib": m.model_child,
                                      "huge_kib": m.model_huge}}
                           for r in self.mismatches if (m := r.mismatch) is not None],
            "saved": [p for p, _ in self.shrunk],
        }


def validate(workloads: int, ops: int, seed: int, files: list[Workload],
             save_dir: str = ".", shrink: bool = True,
             progress: Callable[[str], None] | None = None) -> Report:
    """Generated workloads (``workloads`` of ``ops`` steps from ``seed``), or the
    given ones, each on the host and in the model."""
    hk = detect_host()
    multi = hk.config.mremap_multi_vma
    items = list(files) or [
        parse_workload(f"seed-{seed}-{i}", generate(seed, i, ops, multi_vma_mremap=multi))
        for i in range(workloads)]
    report = Report(hk, [])
    for wl in items:
        if any(s.op == "collapse" and s.mode != "madv_collapse" for s in wl.steps):
            raise WorkloadError(f"{wl.path}: collapse mode 'khugepaged' cannot be asked of "
                                "the host (only madv_collapse)")
        if not runnable(wl, multi):
            raise WorkloadError(f"{wl.path}: not safe to run on the host (a touch of an "
                                "unmapped or read-only page, or a step of a process "
                                "that does not exist)")
        res = check_workload(wl, hk)
        tries = 0
        while res.error.startswith("window taken") and tries < 8:
            tries += 1
            hk.notes.append(f"{wl.path}: {res.error.split(';')[0]}; moved "
                            f"{tries * 512} GiB up")
            res = check_workload(_relocate(wl, tries), hk)
        report.results.append(res)
        if progress is not None:
            progress(f"{wl.path}: " + ("host error: " + res.error if res.error else
                                       "MISMATCH" if res.mismatch else "ok"))
        if res.mismatch is not None and shrink:
            small = shrink_workload(res.workload, hk)
            name = os.path.basename(wl.path).removesuffix(".toml")
            path = os.path.join(save_dir, f"validate-mismatch-{name}.toml")
            write_atomic(path, workload_toml(small, f"ptlab validate: {wl.path}, shrunk"))
            report.shrunk.append((path, small))
    return report


def _relocate(wl: Workload, tries: int) -> Workload:
    """The same workload ``tries`` windows (512 GiB each) higher."""
    moved = copy.deepcopy(wl)
    for r in moved.regions.values():
        r.start += tries * PUD_SPAN
    return moved
