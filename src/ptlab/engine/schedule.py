"""Schedules: the sequence of scheduling choices that determines an execution.

A schedule is a list of labels, ``thread | choice << 16``.  Its printable form
is compact and run-length encoded: ``0*3.1.2:1.0*2`` means thread 0 three times,
thread 1, thread 2 taking choice 1, thread 0 twice.  Replaying a schedule
reproduces the execution step for step; shrinking looks for a schedule with
fewer context switches that still shows the same kind of violation.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from .execution import (
    CHOICE_SHIFT,
    THREAD_MASK,
    Execution,
    ExecutionOutcome,
    Model,
    catching_unawaited,
)

_TOKEN = re.compile(r"^(\d+)(?::(\d+))?(?:\*(\d+))?$")


class ScheduleError(ValueError):
    """A schedule string or replay that does not fit the model."""


def encode(labels: list[int]) -> str:
    out: list[str] = []
    i = 0
    while i < len(labels):
        lab = labels[i]
        j = i
        while j < len(labels) and labels[j] == lab:
            j += 1
        t, c = lab & THREAD_MASK, lab >> CHOICE_SHIFT
        tok = str(t) + (f":{c}" if c else "")
        out.append(tok + (f"*{j - i}" if j - i > 1 else ""))
        i = j
    return ".".join(out)


def decode(text: str) -> list[int]:
    text = text.strip()
    if not text:
        return []
    labels: list[int] = []
    for tok in text.split("."):
        m = _TOKEN.match(tok)
        if not m:
            raise ScheduleError(f"bad schedule token {tok!r} (expected THREAD[:CHOICE][*COUNT])")
        t, c, n = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 1)
        if t > THREAD_MASK or n < 1:
            raise ScheduleError(f"bad schedule token {tok!r}")
        labels.extend([t | (c << CHOICE_SHIFT)] * n)
    return labels


def context_switches(labels: list[int]) -> int:
    return sum(1 for a, b in zip(labels, labels[1:], strict=False) if (a ^ b) & THREAD_MASK)


class Replay:
    """Follow a schedule exactly; a step that cannot be taken is an error."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels
        self.error: str | None = None

    def pick(self, ex: Execution, enabled: list[int]) -> int:
        d = len(ex.ev_thread)
        if d >= len(self.labels):
            self.error = (f"the schedule ends after {d} steps but threads "
                          f"{', '.join(ex.threads[t].name for t in enabled)} can still run")
            return -1
        lab = self.labels[d]
        t = lab & THREAD_MASK
        if t not in enabled:
            name = ex.threads[t].name if t < len(ex.threads) else f"#{t}"
            self.error = f"step {d}: thread {name} cannot run here"
            return -1
        op = ex.threads[t].pending
        assert op is not None
        if (lab >> CHOICE_SHIFT) >= (op.nchoices() if op.choice else 1):
            self.error = (f"step {d}: thread {ex.threads[t].name} has no choice "
                          f"{lab >> CHOICE_SHIFT}")
            return -1
        return lab


class Guided:
    """Follow a list of preferred labels loosely: take the first one that can run
    now (removing it), else keep running the current thread, else the lowest."""

    def __init__(self, prefix: list[int], rest: list[int]) -> None:
        self.prefix = prefix
        self.rest = list(rest)

    def pick(self, ex: Execution, enabled: list[int]) -> int:
        d = len(ex.ev_thread)
        if d < len(self.prefix):
            lab = self.prefix[d]
            return lab if (lab & THREAD_MASK) in enabled else -1
        for k, lab in enumerate(self.rest):
            t = lab & THREAD_MASK
            if t in enabled:
                op = ex.threads[t].pending
                assert op is not None
                if (lab >> CHOICE_SHIFT) < (op.nchoices() if op.choice else 1):
                    del self.rest[k]
                    return lab
        return ex.last if ex.last in enabled else enabled[0]


def run_schedule(make_model: Callable[[], Model], chooser: Replay | Guided, *,
                 trace: bool = False,
                 max_steps: int = 10_000) -> tuple[Execution, ExecutionOutcome]:
    ex = Execution(make_model(), trace=trace, max_steps=max_steps)
    with catching_unawaited():
        out = ex.run(chooser)
    return ex, out


def calm_order(ev_thread: list[int], ev_label: list[int],
               dependent: Callable[[int, int], bool]) -> list[int]:
    """An equivalent schedule (same Mazurkiewicz trace) with few context switches.

    Greedy topological order of the happens-before relation: keep running the
    current thread while its next step has all its predecessors done, otherwise
    switch to the earliest step that can run.  The last step (the violation) stays
    last.  Equivalent schedules reach the same state, so the violation is kept.
    """
    n = len(ev_thread)
    preds: list[list[int]] = [[] for _ in range(n)]
    for j in range(n):
        for i in range(j):
            if ev_thread[i] == ev_thread[j] or dependent(i, j):
                preds[j].append(i)
    done = [False] * n
    order: list[int] = []
    cur = -1
    for _ in range(n):
        ready = [j for j in range(n) if not done[j] and all(done[i] for i in preds[j])]
        if len(ready) > 1 and n - 1 in ready:
            ready.remove(n - 1)
        pick = next((j for j in ready if ev_thread[j] == cur), ready[0])
        done[pick] = True
        order.append(pick)
        cur = ev_thread[pick]
    return [ev_label[j] for j in order]


def calmest_order(ev_thread: list[int], ev_label: list[int],
                  dependent: Callable[[int, int], bool],
                  max_states: int = 200_000) -> list[int] | None:
    """The schedule of the same Mazurkiewicz trace with the fewest context
    switches, or None if the search would visit more than ``max_states`` states.

    Each thread's steps form a chain; a step may run once its thread has done
    the steps before it and every earlier step it depends on has run.  A state
    is how far each thread has got plus which thread ran last; running the same
    thread again costs nothing, another costs one switch: a 0-1 breadth-first
    search finds the cheapest order.  The last step (the violation) stays last.
    """
    n = len(ev_thread)
    threads = sorted(set(ev_thread))
    slot = {t: k for k, t in enumerate(threads)}
    chains: list[list[int]] = [[] for _ in threads]
    pos = [0] * n
    for j in range(n):
        chain = chains[slot[ev_thread[j]]]
        pos[j] = len(chain)
        chain.append(j)
    # need[j][k]: how far thread k must have got before step j may run.
    need = [[0] * len(threads) for _ in range(n)]
    for j in range(n):
        row = need[j]
        for i in range(j):
            if dependent(i, j):
                k = slot[ev_thread[i]]
                row[k] = max(row[k], pos[i] + 1)
    last = n - 1
    start = (tuple(0 for _ in threads), -1)
    goal = tuple(len(c) for c in chains)
    dist: dict[tuple[tuple[int, ...], int], int] = {start: 0}
    parent: dict[tuple[tuple[int, ...], int], tuple[tuple[tuple[int, ...], int], int]] = {}
    queue: deque[tuple[tuple[int, ...], int]] = deque([start])
    while queue:
        state = queue.popleft()
        at, cur = state
        if at == goal:
            order: list[int] = []
            while state != start:
                state, step = parent[state]
                order.append(step)
            return [ev_label[j] for j in reversed(order)]
        d = dist[state]
        done_others = sum(at) == n - 1
        for k, chain in enumerate(chains):
            if at[k] == len(chain):
                continue
            j = chain[at[k]]
            if j == last and not done_others:
                continue
            if any(at[m] < need[j][m] for m in range(len(chains))):
                continue
            nxt = (at[:k] + (at[k] + 1,) + at[k + 1:], k)
            cost = d + (0 if k == cur or cur < 0 else 1)
            if cost < dist.get(nxt, cost + 1):
                dist[nxt] = cost
                parent[nxt] = (state, j)
                if len(dist) > max_states:
                    return None
                # NOTE: 0-1 BFS: a free step goes to the front of the queue.
                if cost == d:
                    queue.appendleft(nxt)
                else:
                    queue.append(nxt)
    return None


def shrink(make_model: Callable[[], Model], labels: list[int], kind: str, *,
           max_runs: int = 300, max_steps: int = 10_000) -> list[int]:
    """Fewer context switches, same kind of violation: the calmest schedule of the
    same trace (:func:`calmest_order`, exact), then greedy moves that may change
    the trace (bounded by ``max_runs``), each new trace calmed again.  Minimal
    within every trace it reaches; across traces it is a local search."""
    from .dpor import dependent

    def calmest(ex: Execution) -> list[int]:
        th, fps = ex.ev_thread, ex.ev_fp

        def dep(i: int, j: int) -> bool:
            return th[i] == th[j] or dependent(th[i], fps[i], th[j], fps[j])

        return calmest_order(th, ex.ev_label, dep) or calm_order(th, ex.ev_label, dep)

    def better(cand: list[int], than: list[int]) -> bool:
        if context_switches(cand) >= context_switches(than):
            return False
        _, out = run_schedule(make_model, Replay(cand), max_steps=max_steps)
        return out.violation is not None and out.violation.kind == kind

    ex, out = run_schedule(make_model, Replay(labels), max_steps=max_steps)
    best = labels
    if out.violation is not None and out.violation.kind == kind:
        calm = calmest(ex)
        if better(calm, best):
            best = calm
    runs = 2
    improved = True
    while improved and runs < max_runs:
        improved = False
        for i in range(1, len(best)):
            if not (best[i] ^ best[i - 1]) & THREAD_MASK:
                continue
            prev = best[i - 1] & THREAD_MASK
            # Move the previous thread's next step up to i (extend its run).
            k = next((k for k in range(i, len(best)) if best[k] & THREAD_MASK == prev), -1)
            if k < 0:
                continue
            cand_rest = best[i:k] + best[k + 1:]
            ex, out = run_schedule(make_model, Guided(best[:i] + [best[k]], cand_rest),
                                   max_steps=max_steps)
            runs += 1
            if out.violation is not None and out.violation.kind == kind \
                    and context_switches(ex.ev_label) < context_switches(best):
                best = list(ex.ev_label)
                calm = calmest(ex)
                runs += 1
                if better(calm, best):
                    best = calm
                improved = True
                break
            if runs >= max_runs:
                break
    return best


def shrink_exhaustive(make_model: Callable[[], Model], kind: str, *,
                      max_executions: int = 20_000,
                      max_steps: int = 10_000) -> tuple[list[int] | None, int]:
    """The violating schedule of ``kind`` with the fewest context switches of all:
    explore every Mazurkiewicz trace (optimal DPOR, going on after violations) and
    take the calmest schedule (:func:`calmest_order`) of each violating one.
    Returns it and the executions explored, or ``(None, n)`` when the exploration
    needed more than ``max_executions``."""
    from .dpor import DPOR, dependent

    best: list[int] | None = None

    def seen(ex: Execution) -> None:
        nonlocal best
        if ex.violation is None or ex.violation.kind != kind:
            return
        th, fps = ex.ev_thread, ex.ev_fp

        def dep(i: int, j: int) -> bool:
            return th[i] == th[j] or dependent(th[i], fps[i], th[j], fps[j])

        order = calmest_order(th, ex.ev_label, dep) or list(ex.ev_label)
        if best is None or context_switches(order) < context_switches(best):
            best = order

    search = DPOR(make_model, max_executions=max_executions, max_steps=max_steps,
                  stop_on_violation=False)
    search.on_execution = seen
    result = search.run()
    if not result.exhaustive or best is None:
        return None, result.stats.executions
    _, out = run_schedule(make_model, Replay(best), max_steps=max_steps)
    if out.violation is None or out.violation.kind != kind:
        return None, result.stats.executions      # pragma: no cover - calm keeps the trace
    return best, result.stats.executions
