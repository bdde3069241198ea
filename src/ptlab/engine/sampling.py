"""Sampling strategies: seeded random walks and PCT.

Both draw every random number from one ``random.Random`` seeded once per
exploration, so the same seed gives the same executions in the same order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from .execution import CHOICE_SHIFT, Execution, Model, exploring
from .result import Result, Stats


class _Sampler:
    name = "sample"

    def __init__(self, make_model: Callable[[], Model], *, seed: int = 0,
                 max_executions: int = 1000, max_steps: int = 10_000) -> None:
        self.make_model = make_model
        self.seed = seed
        self.rng = random.Random(seed)
        self.max_executions = max_executions
        self.max_steps = max_steps
        self.stats = Stats()

    def begin(self) -> None:
        """Called before each execution."""

    def pick_thread(self, ex: Execution, enabled: list[int]) -> int:
        raise NotImplementedError

    def pick(self, ex: Execution, enabled: list[int]) -> int:
        t = self.pick_thread(ex, enabled)
        op = ex.threads[t].pending
        assert op is not None
        if op.choice:
            n = op.nchoices()
            if n > 1:
                return t | (self.rng.randrange(n) << CHOICE_SHIFT)
        return t

    def run(self) -> Result:
        with exploring():
            return self._run()

    def _run(self) -> Result:
        t0 = time.perf_counter()
        reached: dict[str, None] = {}
        violation = None
        schedule = None
        for _ in range(self.max_executions):
            self.begin()
            ex = Execution(self.make_model(), max_steps=self.max_steps)
            out = ex.run(self)
            self.stats.executions += 1
            self.stats.steps += len(ex.ev_thread)
            for r in out.reached:
                reached[r] = None
            if out.violation is not None:
                violation = out.violation
                schedule = list(ex.ev_label)
                break
        self.stats.seconds = time.perf_counter() - t0
        return Result(self.name, "violation" if violation else "ok", False,
                      None if violation else "executions", self.stats, violation, schedule,
                      None, list(reached), seed=self.seed)


class RandomWalk(_Sampler):
    """Each step, a uniformly random enabled thread (and random choice)."""

    name = "random"

    def pick_thread(self, ex: Execution, enabled: list[int]) -> int:
        return enabled[self.rng.randrange(len(enabled))]


class PCT(_Sampler):
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

    Random distinct priorities per thread; ``depth - 1`` change points drawn
    uniformly over the expected execution length; the highest-priority enabled
    thread runs; at the i-th change point the running thread drops to priority i.
    A bug of depth d is found in each execution with probability >= 1/(n k^(d-1)).
    """

    name = "pct"

    def __init__(self, make_model: Callable[[], Model], *, depth: int = 3, **kw: int) -> None:
        super().__init__(make_model, **kw)
        self.depth = depth
        self.length = 50
        self.prio: list[int] = []
        self.changes: dict[int, int] = {}

    def begin(self) -> None:
        self.prio = []
        k = max(self.length, 1)
        pts = self.rng.sample(range(1, k + 1), min(self.depth - 1, k))
        self.changes = {p: i for i, p in enumerate(sorted(pts))}

    def pick_thread(self, ex: Execution, enabled: list[int]) -> int:
        n = len(ex.threads)
        if len(self.prio) < n:
            base = list(range(self.depth, self.depth + n))
            self.rng.shuffle(base)
            self.prio = base
        best = max(enabled, key=lambda t: self.prio[t])
        step = len(ex.ev_thread) + 1
        ch = self.changes.get(step)
        if ch is not None:
            self.prio[best] = ch
            best = max(enabled, key=lambda t: self.prio[t])
        if step > self.length:
            self.length = step
        return best
