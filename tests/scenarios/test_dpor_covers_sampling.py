"""On the real kernel model, every trace a long random walk finds is one DPOR
explored, and DPOR explores no trace twice.  (The engine's brute-force tests use
small synthetic programs; this checks the blocking, handshake and state-dependent
footprints the kernel model uses.)"""

from __future__ import annotations

import pytest

from ptlab.engine import DPOR, Execution, RandomWalk
from ptlab.engine.execution import catching_unawaited, trace_signature
from ptlab.scenarios import SCENARIOS

SC = SCENARIOS["pte-free-defer-fragments"]


@pytest.mark.parametrize("variant, overrides", [
    ("pg-active", {}),
    ("frag-refcount", {"gup_walkers": 0}),
    ("rcu-head-per-table", {"rcu_walkers": 0, "gup_walkers": 0}),
])
def test_random_walks_find_no_trace_dpor_missed(variant: str,
                                                overrides: dict[str, int]) -> None:
    make = SC.make(variant, SC.resolve(variant, overrides))
    seen: list[object] = []

    def keep(ex: Execution) -> None:
        if not ex.aborted and ex.violation is None:
            seen.append(trace_signature(ex))

    d = DPOR(make, stop_on_violation=False)
    d.on_execution = keep
    r = d.run()
    assert r.exhaustive
    dpor = set(seen)
    assert len(dpor) == len(seen), "DPOR explored a trace twice"
    walker = RandomWalk(make, seed=11)
    with catching_unawaited():
        for _ in range(1500):
            ex = Execution(make())
            ex.run(walker)
            if ex.violation is None:
                assert trace_signature(ex) in dpor
