"""Shrinking to the fewest context switches: calmest_order() is exact within a
trace, shrink_exhaustive() over all traces; checked against brute force."""

from __future__ import annotations

import itertools

from ptlab.check import CheckSpec, run_check
from ptlab.engine import context_switches
from ptlab.engine.schedule import calm_order, calmest_order


def _brute_min(threads: list[int], dep: set[tuple[int, int]]) -> int:
    """Every linearization of the partial order (program order + dep), last last."""
    n = len(threads)
    best = n
    for perm in itertools.permutations(range(n - 1)):
        order = [*perm, n - 1]
        at = {e: k for k, e in enumerate(order)}
        if any(at[i] > at[j] for i in range(n) for j in range(i + 1, n)
               if threads[i] == threads[j] or (i, j) in dep):
            continue
        best = min(best, sum(threads[a] != threads[b] for a, b in itertools.pairwise(order)))
    return best


def test_calmest_order_is_exact_where_the_greedy_one_is_not() -> None:
    # Thread 0: a0 a1; thread 1: b0 b1; thread 2: c0 (the violation) needs a1 and b0;
    # a1 needs b0.  Greedy runs a0 first, then must switch to b0 and back.
    threads = [0, 1, 0, 1, 2]
    dep = {(2, 1), (1, 4), (2, 4)}

    def dependent(i: int, j: int) -> bool:
        return threads[i] == threads[j] or (i, j) in dep or (j, i) in dep

    labels = [0, 1, 0, 1, 2]   # thread ids as labels
    exact = calmest_order(threads, labels, dependent)
    assert exact is not None
    assert context_switches(exact) == _brute_min(threads, {(1, 2), (1, 4), (2, 4)})
    assert context_switches(exact) <= context_switches(calm_order(threads, labels, dependent))


def test_every_order_it_returns_is_a_linearization() -> None:
    threads = [0, 1, 2, 0, 1, 2, 0, 1]
    dep = {(0, 4), (1, 5), (3, 7), (2, 6)}

    def dependent(i: int, j: int) -> bool:
        return threads[i] == threads[j] or (min(i, j), max(i, j)) in dep

    order = calmest_order(threads, list(range(8)), dependent)
    assert order is not None and order[-1] == 7 and sorted(order) == list(range(8))
    assert context_switches([threads[e] for e in order]) == _brute_min(threads, dep)


def test_minimal_counterexamples_are_minimal_over_all_traces() -> None:
    """pt-reclaim/no-pmd-recheck: the local search stops at 12 switches; every
    trace explored gives 7."""
    local = run_check(CheckSpec("pt-reclaim", "no-pmd-recheck"))
    best = run_check(CheckSpec("pt-reclaim", "no-pmd-recheck", minimal=True))
    assert best.violation is not None and best.violation.kind == "use-after-free"
    assert best.schedule is not None and local.schedule is not None
    assert context_switches(best.schedule) == 7 < context_switches(local.schedule)
    assert best.shrunk.startswith("the fewest of any use-after-free (all traces:")
