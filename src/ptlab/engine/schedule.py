"""Schedules: the sequence of scheduling choices that determines an execution.

A schedule is a list of labels, ``thread | choice << 16``.  Its printable form
is compact and run-length encoded: ``0*3.1.2:1.0*2`` means thread 0 three times,
thread 1, thread 2 taking choice 1, thread 0 twice.  Replaying a schedule
reproduces the execution step for step; shrinking looks for a schedule with
fewer context switches that still shows the same kind of violation.
"""

from __future__ import annotations

import re
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


def shrink(make_model: Callable[[], Model], labels: list[int], kind: str, *,
           max_runs: int = 300, max_steps: int = 10_000) -> list[int]:
    """Fewer context switches, same kind of violation: first the calmest schedule of
    the same trace, then greedy moves that may change the trace (bounded)."""
    from .dpor import dependent

    ex, out = run_schedule(make_model, Replay(labels), max_steps=max_steps)
    best = labels
    if out.violation is not None and out.violation.kind == kind:
        th, fps = ex.ev_thread, ex.ev_fp
        calm = calm_order(th, ex.ev_label,
                          lambda i, j: dependent(th[i], fps[i], th[j], fps[j]))
        _, out2 = run_schedule(make_model, Replay(calm), max_steps=max_steps)
        if out2.violation is not None and out2.violation.kind == kind and \
                context_switches(calm) < context_switches(best):
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
            if (out.violation is not None and out.violation.kind == kind
                    and context_switches(ex.ev_label) < context_switches(best)):
                best = list(ex.ev_label)
                improved = True
                break
            if runs >= max_runs:
                break
    return best
