"""``ptlab validate``: the model against this machine's kernel (Linux hosts only)."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import pytest

from ptlab import validate as v
from ptlab.cli import main
from ptlab.host import HostError, HostRun, host_supported, run_on_host
from ptlab.simulate import parse_workload

WHY = host_supported()
needs_host = pytest.mark.skipif(WHY is not None, reason=f"no VmPTE here: {WHY}")
REGRESSIONS = sorted(pathlib.Path(__file__).parent.joinpath("validate").glob("*.toml"))


@needs_host
def test_a_small_random_validation_agrees_with_the_host(tmp_path: pathlib.Path) -> None:
    rep = v.validate(3, 24, 1, [], save_dir=str(tmp_path))
    assert {r.name: r.error for r in rep.results if r.error} == {}
    assert [r.name for r in rep.mismatches] == []
    compared, _ = rep.counts()
    assert sum(compared.values()) == 3 * 24 - sum(
        1 for r in rep.results for s in r.steps if s.excluded)
    d = rep.as_dict()
    assert d["table_allocs"]["pte"] > 0 and d["table_frees"]["pte"] > 0
    assert list(tmp_path.iterdir()) == []           # nothing saved: nothing disagreed


@needs_host
@pytest.mark.parametrize("path", REGRESSIONS, ids=[p.stem for p in REGRESSIONS])
def test_regression_workload_agrees_with_the_host(path: pathlib.Path) -> None:
    """Each discrepancy found while building the validation, fixed in the model."""
    wl = parse_workload(str(path), path.read_text())
    res = v.check_workload(wl, v.detect_host())
    assert res.error == ""
    assert res.mismatch is None, (res.mismatch, [
        (s.what, s.host.delta, s.model_delta, s.host.errno, s.model_errno) for s in res.steps])


RECLAIM = """
[[region]]
name = "a"
start = "16TiB"
size = "4MiB"
[[region]]
name = "b"
start = 0x100040000000
size = "2MiB"
[[step]]
op = "map"
region = "b"
[[step]]
op = "map"
region = "a"
[[step]]
op = "touch"
region = "b"
stride = "64KiB"
[[step]]
op = "touch"
region = "a"
stride = "1MiB"
[[step]]
op = "mprotect"
region = "b"
prot = "r"
[[step]]
op = "madvise"
region = "a"
advice = "dontneed"
length = "2MiB"
[[step]]
op = "unmap"
region = "b"
"""


@needs_host
def test_a_model_that_disagrees_is_caught_shrunk_and_saved(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PT_RECLAIM in the model, MADV_DONTNEED of a whole PTE table frees
    nothing where the host frees it: the shrunk workload is map, touch, madvise."""
    real = v.detect_host

    def no_reclaim() -> v.HostKernel:
        hk = real()
        return dataclasses.replace(hk, config=hk.config.replace(pt_reclaim=False))

    monkeypatch.setattr(v, "detect_host", no_reclaim)
    rep = v.validate(1, 0, 0, [parse_workload("reclaim.toml", RECLAIM)],
                     save_dir=str(tmp_path))
    bad = rep.mismatches[0].mismatch
    assert bad is not None and bad.what == "madvise a"
    assert (bad.host.delta, bad.model_delta) == (-4, 0)
    [(path, small)] = rep.shrunk
    assert [s.op for s in small.steps] == ["map", "touch", "madvise"]
    again = parse_workload(path, pathlib.Path(path).read_text())
    assert [s.op for s in again.steps] == ["map", "touch", "madvise"]
    assert pathlib.Path(path).name == "validate-mismatch-reclaim.toml"


@needs_host
def test_a_crash_on_the_host_names_its_step() -> None:
    """A touch of an unmapped page kills the child, not the caller."""
    wl: dict[str, Any] = {
        "regions": [{"name": "a", "start": 16 << 40, "size": 1 << 21, "anon": True,
                     "shared": False, "thp": False}],
        "steps": [{"op": "map", "region": "a", "offset": 0, "length": 1 << 21},
                  {"op": "fork", "child": "child"},
                  {"op": "unmap", "region": "a", "offset": 0, "length": 1 << 21},
                  {"op": "touch", "region": "a", "offset": 0, "length": 4096,
                   "stride": 4096, "access": "write"}]}
    import time

    t0 = time.monotonic()
    with pytest.raises(HostError, match=r"died .*signal 11.* at step 3"):
        run_on_host(wl, timeout=30)
    # The forked worker dies with its driver (PR_SET_PDEATHSIG): no wait for the
    # timeout, nothing left running.
    assert time.monotonic() - t0 < 10


def test_a_taken_window_moves_the_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake(wl: dict[str, Any], timeout: float = 60.0) -> HostRun:
        calls.append(wl["regions"][0]["start"])
        return HostRun(conflicts=["100000000000-100000001000 rw-p 00000000 00:00 0"]) \
            if len(calls) == 1 else HostRun(steps=[])

    monkeypatch.setattr(v, "run_on_host", fake)
    wl = parse_workload("w", RECLAIM)
    rep = v.validate(1, 0, 0, [wl])
    assert calls == [16 << 40, (16 << 40) + (512 << 30)]
    assert any("moved 512 GiB up" in n for n in rep.host.notes)


def test_without_vmpte_validate_says_why_and_exits_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("ptlab.host.host_supported", lambda: "not Linux (this is darwin)")
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert err == "ptlab: error: cannot validate on this host: not Linux (this is darwin)\n"


def test_generated_workloads_are_seeded_and_safe_to_run() -> None:
    a = [v.generate(7, i, 30) for i in range(5)]
    assert a == [v.generate(7, i, 30) for i in range(5)] != [v.generate(8, i, 30)
                                                             for i in range(5)]
    ops = set()
    for text in a:
        wl = parse_workload("g", text)
        assert v.runnable(wl) and len(wl.steps) == 30
        ops |= {s.op for s in wl.steps}
    assert ops >= {"map", "touch", "unmap", "madvise", "mprotect", "mremap", "collapse",
                   "fork", "exit"}


def test_a_saved_workload_parses_back_whatever_its_name() -> None:
    from ptlab.simulate import workload_toml

    wl = parse_workload("w", RECLAIM)
    text = workload_toml(wl, "it's \"quoted\": a\\b")
    again = parse_workload("again", text)
    assert [(s.op, s.offset, s.length) for s in again.steps] == \
        [(s.op, s.offset, s.length) for s in wl.steps]


def test_runnable_refuses_what_would_fault_on_the_host() -> None:
    wl = parse_workload("w", RECLAIM)
    assert v.runnable(wl)
    assert not v.runnable(dataclasses.replace(wl, steps=wl.steps[2:]))      # not mapped
    ro = [s for s in wl.steps if s.op != "unmap"] + [dataclasses.replace(wl.steps[2])]
    assert not v.runnable(dataclasses.replace(wl, steps=ro))   # a write to read-only b


@needs_host
def test_the_cli_reports_what_it_compared(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["validate", "--workload", "workloads/vmpte-1g-at-16t.toml", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mismatches"] == [] and d["workloads"] == 1
    assert d["steps_compared"] == {"madvise-whole": 1, "map-anon": 1, "touch-write": 1,
                                   "unmap-whole": 1}
    # +2056 KiB: one PUD, one PMD and 512 PTE tables; PT_RECLAIM then frees 512 of them.
    assert d["table_allocs"] == {"pgd": 0, "pud": 1, "pmd": 1, "pte": 512}
    assert d["table_frees"] == {"pgd": 0, "pud": 1, "pmd": 1, "pte": 512}


def test_a_failed_huge_page_allocation_is_the_hosts_choice() -> None:
    """The host's smaps says how many huge pages a touch got; the model's faults
    may allocate that many (thp_budget), the rest fall back to PTE tables."""
    wl = parse_workload("thp", """
[[region]]
name = "t"
start = "16TiB"
size = "4MiB"
thp = true
[[step]]
op = "map"
region = "t"
[[step]]
op = "touch"
region = "t"
stride = "1MiB"
""")
    from ptlab.arch.geometry import X86_64
    from ptlab.config import ERAS
    from ptlab.host import HostStep

    for huge, tables in ((4096, 16), (2048, 16), (0, 16)):
        host = HostRun(steps=[HostStep("", 0, 0), HostStep("", 0, tables, huge_kib=huge)])
        res = v.run_model(wl, host, X86_64, ERAS["v6.18"])
        assert res.mismatch is None, (huge, res.steps[-1])
    sim = v.Simulator(X86_64, ERAS["v6.18"])
    sim.step(wl.steps[0])
    sim.step(wl.steps[1], thp_budget=1)
    assert sim.huge_kib("parent", 16 << 40, (16 << 40) + (4 << 20)) == 2048
