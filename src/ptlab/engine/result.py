"""What an exploration reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .execution import TraceStep, Violation


@dataclass
class Stats:
    """Counters of one exploration."""

    executions: int = 0          # complete executions (ran to the end or to a violation)
    sleep_blocked: int = 0       # abandoned: every enabled thread was asleep (redundant work)
    infeasible: int = 0          # wakeup sequences that could not be followed
    pruned: int = 0              # branches cut by the preemption bound
    violations: int = 0          # executions that ended in a violation
    steps: int = 0               # steps executed in total, replays included
    seconds: float = 0.0


@dataclass
class Result:
    """The verdict of one exploration, and what it covered."""

    strategy: str
    verdict: str                 # "ok" or "violation"
    exhaustive: bool
    bound_hit: str | None        # "executions", "preemptions", or None
    stats: Stats
    violation: Violation | None = None
    schedule: list[int] | None = None
    trace: list[TraceStep] | None = None
    reached: list[str] = field(default_factory=list)
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def executions(self) -> int:
        return self.stats.executions
