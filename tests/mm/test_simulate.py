"""The sequential simulation: VmPTE figures, free_pgtables() floor and ceiling, and
the counters oracle."""

from __future__ import annotations

from typing import Any

import pytest

from ptlab.arch.geometry import ARCHES, X86_64
from ptlab.config import ERAS
from ptlab.engine import ModelViolation
from ptlab.mm.oracle import census, check_mm_counters
from ptlab.simulate import Simulator, WorkloadError, parse_workload, simulate

VMPTE = "workloads/vmpte-1g-at-16t.toml"
TIB = 1 << 40


def test_vmpte_deltas_match_the_host_kernel() -> None:
    """Issue 3: +2056 KiB (one PUD, one PMD, 512 PTE tables), +8 KiB after
    MADV_DONTNEED with PT_RECLAIM, 0 after munmap, on x86-64 v6.18."""
    with open(VMPTE, encoding="utf-8") as f:
        res = simulate(parse_workload(VMPTE, f.read()))
    assert [s.vmpte_delta_kib for s in res.steps] == [0, 2056, 8, 0]
    assert res.steps[1].tables == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 512}
    assert res.steps[1].faults == 512


def test_without_pt_reclaim_madvise_keeps_the_tables() -> None:
    with open(VMPTE, encoding="utf-8") as f:
        res = simulate(parse_workload(VMPTE, f.read()), kernel="v6.13")
    assert [s.vmpte_delta_kib for s in res.steps] == [0, 2056, 2056, 0]


def _sim(kernel: str = "v6.18") -> Simulator:
    return Simulator(X86_64, ERAS[kernel])


def test_free_pgtables_keeps_tables_a_neighbour_shares_then_frees_them() -> None:
    """mm/memory.c free_pgd_range(): floor/ceiling.  Two VMAs in one PMD table: unmapping
    one frees its PTE table only; unmapping the other then frees the PMD and PUD."""
    text = """
[[region]]
name = "a"
start = "16TiB"
size = "2MiB"
[[region]]
name = "b"
start = 0x100000400000
size = "2MiB"
[[step]]
op = "map"
region = "a"
[[step]]
op = "map"
region = "b"
[[step]]
op = "touch"
region = "a"
[[step]]
op = "touch"
region = "b"
[[step]]
op = "unmap"
region = "a"
[[step]]
op = "unmap"
region = "b"
"""
    res = simulate(parse_workload("t", text))
    tables = [s.tables for s in res.steps]
    assert tables[3] == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 2}
    assert tables[4] == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 1}   # b keeps the PMD table
    assert tables[5] == {"pgd": 1, "pud": 0, "pmd": 0, "pte": 0}   # now it goes
    assert [s.vmpte_kib for s in res.steps][3:] == [16, 12, 0]


@pytest.mark.parametrize("arch", ["x86-64", "x86-64-la57", "arm64", "s390"])
def test_every_page_table_architecture_balances(arch: str) -> None:
    with open(VMPTE, encoding="utf-8") as f:
        wl = parse_workload(VMPTE, f.read())
    wl.regions["big"].start = 1 << 36 if arch == "s390" else 16 * TIB
    res = simulate(wl, arch=arch)
    assert res.steps[-1].vmpte_kib == 0 and res.steps[1].faults == 512
    assert len(res.steps[1].tables) == len(ARCHES[arch].levels)


def test_the_oracle_catches_a_counter_drift() -> None:
    sim = _sim()
    sim.run(_noop())
    sim.mm.pgtables_bytes.value += 4096
    with pytest.raises(ModelViolation, match="pgtables_bytes"):
        check_mm_counters(sim.kernel, [sim.mm], settled=True)
    assert census(sim.mm).pgtables_bytes == 0


async def _noop() -> None:
    return None


@pytest.mark.parametrize("text, message", [
    ("bogus = 1\n", "unknown key 'bogus'"),
    ('[[step]]\nop = "explode"\n', "unknown operation 'explode'"),
    ('[[step]]\nop = "mremap"\n', "unknown region None"),
    ('[[region]]\nname = "a"\nstart = 0\nsize = 4096\n[[step]]\nop = "mremap"\nregion = "a"\n',
     "mremap needs 'to'"),
    ('[[region]]\nname = "a"\nstart = 0\nsize = 4096\n[[step]]\nop = "mprotect"\n'
     'region = "a"\nprot = "x"\n', "prot 'x' \\(valid: r, rw\\)"),
    ('[[region]]\nname = "a"\nstart = 0\nsize = 4096\n[[step]]\nop = "fork"\nregion = "a"\n',
     ":7: fork takes no 'region'"),
    ('[[region]]\nname = "a"\nstart = 0\nsize = "1Q"\n', "not a size"),
    ('[[step]]\nop = "map"\nregion = "nope"\n', "unknown region 'nope'"),
    ('[[region]]\nname = "a"\nstart = 0\nsize = 4096\ncolour = 1\n', ":5: unknown region key"),
    ("x = [", "not valid TOML"),
])
def test_bad_workloads_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        parse_workload("w.toml", text)


def test_the_json_schema_lists_what_the_parser_accepts() -> None:
    import json
    from pathlib import Path

    import ptlab
    from ptlab.simulate import OPS

    schema = json.loads((Path(ptlab.__file__).parent / "workload.schema.json").read_text())
    props = schema["properties"]
    assert props["arch"]["enum"] == list(ARCHES)
    assert props["kernel"]["enum"] == list(ERAS)
    assert props["step"]["items"]["properties"]["op"]["enum"] == list(OPS)
    from ptlab.simulate import _REGION_KEYS, _STEP_KEYS
    step_keys = {k for keys in _STEP_KEYS.values() for k in keys}
    assert set(props["step"]["items"]["properties"]) == step_keys
    assert set(props["region"]["items"]["properties"]) == set(_REGION_KEYS)


RICH = """
[[region]]
name = "a"
start = "16TiB"
size = "6MiB"
thp = true
[[region]]
name = "b"
start = "17TiB"
size = "6MiB"
[[region]]
name = "f"
start = "18TiB"
size = "4MiB"
kind = "file"
[[step]]
op = "map"
region = "a"
[[step]]
op = "map"
region = "f"
[[step]]
op = "touch"
region = "a"
offset = "2MiB"
stride = "12KiB"
[[step]]
op = "touch"
region = "f"
stride = "64KiB"
[[step]]
op = "mremap"
region = "a"
to = "b"
[[step]]
op = "mprotect"
region = "b"
offset = "1MiB"
length = "3MiB"
prot = "r"
[[step]]
op = "fork"
[[step]]
op = "madvise"
region = "b"
advice = "dontneed"
offset = "2MiB"
length = "2MiB"
[[step]]
op = "collapse"
region = "f"
mode = "khugepaged"
[[step]]
op = "exit"
mm = "child"
[[step]]
op = "unmap"
region = "b"
offset = "1MiB"
length = "1MiB"
[[step]]
op = "exit"
"""


@pytest.mark.parametrize("arch", ["x86-64", "ppc64-hash", "s390-v6.6"])
def test_the_sequential_fast_paths_change_nothing(
        arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a sequential run the hottest step builders do their step at once
    (engine.call(), DONE) instead of building an op: the same workload, with and
    without them, gives the same figures after every step."""
    wl = parse_workload("rich.toml", RICH)
    fast = simulate(wl, arch=arch).as_dict()

    def slow_run(self: Simulator, coro: Any) -> Any:
        return self.kernel.ex.run_sync(coro, self.cpu)   # every op built and awaited

    monkeypatch.setattr(Simulator, "run", slow_run)
    slow = simulate(wl, arch=arch).as_dict()
    assert fast == slow
    assert [s["what"] for s in fast["steps"]][-1].startswith("exit")


def test_mprotect_keeps_vm_account_apart() -> None:
    """mm/mprotect.c mprotect_fixup(): an anonymous VMA without anon_vma made
    read-only gives back its VM_ACCOUNT, one with an anon_vma cannot: the two
    then differ in flags and stay two VMAs (this machine's 6.18 does the same)."""
    from ptlab.mm.types import VM_ACCOUNT

    wl = parse_workload("acct", """
[[region]]
name = "a"
start = "16TiB"
size = "4MiB"
[[step]]
op = "map"
region = "a"
[[step]]
op = "mprotect"
region = "a"
length = "2MiB"
prot = "r"
[[step]]
op = "touch"
region = "a"
offset = "2MiB"
length = "4KiB"
[[step]]
op = "mprotect"
region = "a"
prot = "r"
""")
    sim = _sim()
    for step in wl.steps:
        sim.step(step)
    lo, hi = sim.mm.vmas
    assert not lo.vm_flags & VM_ACCOUNT and not lo.anon_vma
    assert hi.vm_flags & VM_ACCOUNT and hi.anon_vma
