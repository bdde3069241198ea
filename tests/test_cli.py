"""The command line: verdicts, exit codes, replay, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptlab.cli import main

SC = "pte-free-defer-fragments"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_parameters_variants_and_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    for word in ("fragments=2", "rcu_walkers=1", "gup_walkers=1", "naive", "double-call_rcu",
                 "pg-active", "rcu-head-per-table", "use-after-free"):
        assert word in out


def test_naive_exits_1_with_a_double_call_rcu(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", SC, "--variant", "naive")
    assert code == 1
    assert "verdict: violation double-call_rcu" in out
    assert "cpu0" in out and "cpu1" in out  # one column per CPU
    assert "pte_free_defer_naive: call_rcu(" in out


@pytest.mark.parametrize("variant", ["frag-refcount", "pending-mask-two-masks", "pg-active"])
def test_safe_designs_exit_0_exhaustively(capsys: pytest.CaptureFixture[str],
                                          variant: str) -> None:
    code, out, _ = run(capsys, "check", SC, "--variant", variant, "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["verdict"] == "ok" and doc["exhaustive"] is True and doc["executions"] > 1
    for key in ("scenario", "variant", "strategy", "verdict", "exhaustive", "executions",
                "violation", "schedule"):
        assert key in doc


def test_rcu_head_per_table_exits_1_with_a_walker_uaf(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", SC, "--variant", "rcu-head-per-table", "--json",
                       "--local-shrink")
    doc = json.loads(out)
    assert code == 1
    assert doc["violation"]["kind"] == "use-after-free"
    assert doc["violation"]["thread"].startswith("walker/")
    assert "BUG: KASAN: use-after-free" in doc["violation"]["report"]


def test_replay_reproduces_the_violation_step_for_step(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    code, out, _ = run(capsys, "check", SC, "--variant", "rcu-head-per-table",
                       "--trace-out", str(path), "--local-shrink")
    assert code == 1 and path.exists()
    checked = out[out.index("step "):out.index("=====")]
    code, replayed, _ = run(capsys, "replay", str(path))
    assert code == 1
    assert "same as recorded" in replayed
    assert checked in replayed  # the same table of steps


@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_same_seed_same_output(capsys: pytest.CaptureFixture[str], strategy: str) -> None:
    args = ("check", SC, "--variant", "naive", "--strategy", strategy, "--seed", "5",
            "--executions", "300")
    a = run(capsys, *args)
    b = run(capsys, *args)
    assert a == b


def test_dpor_output_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    a = run(capsys, "check", SC, "--variant", "pending-mask", "--json")
    b = run(capsys, "check", SC, "--variant", "pending-mask", "--json")
    assert a == b


def test_an_execution_budget_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", SC, "--variant", "pg-active", "--executions", "10",
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["exhaustive"] is False and doc["bound_hit"] == "executions"


def test_a_preemption_bound_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", SC, "--variant", "pg-active", "--preemptions", "1",
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["exhaustive"] is False and doc["bound_hit"] == "preemptions"


@pytest.mark.parametrize("argv, needle", [
    (("check", "no-such-scenario"), "unknown scenario 'no-such-scenario' (choose from: "),
    (("check", SC, "--variant", "nope"), "unknown variant 'nope'"),
    (("check", SC, "--set", "fragments"), "bad --set 'fragments'"),
    (("check", SC, "--set", "frags=2"), "unknown parameter 'frags'"),
    (("check", SC, "--set", "fragments=99"), "out of range"),
    (("check", SC, "--strategy", "bfs"), "invalid choice"),
    (("check", SC, "--executions", "0"), "--executions must be at least 1"),
    (("check", SC, "--strategy", "random", "--preemptions", "2"), "--preemptions applies"),
    (("check", "--bogus"), "unrecognized arguments"),
    (("frobnicate",), "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                          argv: tuple[str, ...], needle: str) -> None:
    with pytest.raises(SystemExit) as e:
        code = main(list(argv))
        raise SystemExit(code)
    _, err = capsys.readouterr()
    assert e.value.code == 2
    assert needle in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("content, needle", [
    ("{not json", "invalid JSON"),
    ('{"format": "other"}', "is not a ptlab trace"),
    ('{"format": "ptlab-trace/1", "scenario": "pte-free-defer-fragments"}', "field 'variant'"),
    ('{"format": "ptlab-trace/1", "scenario": "pte-free-defer-fragments", "variant": "naive",'
     ' "params": {}, "schedule": "0.x"}', "bad schedule token"),
    ('{"format": "ptlab-trace/1", "scenario": "pte-free-defer-fragments", "variant": "naive",'
     ' "params": {}, "schedule": "9*40"}', "does not replay"),
])
def test_malformed_trace_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, _, err = run(capsys, "replay", str(path))
    assert code == 2 and needle in err and err.count("\n") == 1


def test_missing_trace_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "replay", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read trace file" in err


def test_check_all_matches_every_expected_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--all")
    assert code == 0, out
    assert "MISMATCH" not in out
    assert "exhaustive" in out


def test_simulate_prints_the_vmpte_deltas(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "workloads/vmpte-1g-at-16t.toml", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [s["vmpte_delta_kib"] for s in doc["steps"]] == [0, 2056, 8, 0]


@pytest.mark.parametrize("argv, message", [
    (["simulate", "nope.toml"], "cannot read workload"),
    (["simulate", "workloads/vmpte-1g-at-16t.toml", "--arch", "vax"], "unknown --arch 'vax'"),
    (["simulate", "workloads/vmpte-1g-at-16t.toml", "--kernel", "v2.4"], "unknown --kernel"),
])
def test_simulate_bad_input(argv: list[str], message: str,
                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_deep_uses_the_heavier_bounds() -> None:
    from ptlab.check import CheckSpec, resolve

    _, params = resolve(CheckSpec("mremap-walkers", "v6.18", deep=True))
    assert params["gup_walkers"] == 1
    _, params = resolve(CheckSpec("mremap-walkers", "v6.18"))
    assert params["gup_walkers"] == 0
    # A variant's own values and the user's --set still win over --deep.
    _, params = resolve(CheckSpec("mmu-gather-table-free", "x86-paravirt", deep=True))
    assert params["rcu_walkers"] == 0
