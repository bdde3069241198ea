"""The exploration engine: model threads as coroutines, and the strategies that
schedule them.  It knows nothing of page tables."""

from .dpor import DPOR
from .execution import Execution, ExecutionOutcome, Model, Thread, TraceStep, Violation, current_stack
from .ops import (
    ACQUIRE, ADD, AWAIT, CONSUME, PEEK, PROBE, READ, RELEASE, SIGNAL, UPDATE, WRITE, Call, Choose, Footprint,
    ModelError, ModelViolation, Op, TRY, Var, WaitUntil, current_thread, new_loc,
)
from .result import Result, Stats
from .sampling import PCT, RandomWalk
from .schedule import Guided, Replay, ScheduleError, context_switches, decode, encode, shrink

__all__ = [
    "ACQUIRE", "ADD", "AWAIT", "CONSUME", "DPOR", "PCT", "PEEK", "PROBE", "READ", "RELEASE", "UPDATE", "WRITE",
    "Call", "Choose", "Execution", "ExecutionOutcome", "Footprint", "Guided", "Model",
    "ModelError", "ModelViolation", "Op", "RandomWalk", "Replay", "Result", "SIGNAL", "ScheduleError",
    "Stats", "TRY", "Thread", "TraceStep", "Var", "Violation", "WaitUntil", "context_switches",
    "current_stack", "current_thread", "decode", "encode", "new_loc", "shrink",
]
