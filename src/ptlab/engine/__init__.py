"""The exploration engine: model threads as coroutines, and the strategies that
schedule them.  It knows nothing of page tables."""

from . import dpor as _dpor
from .dpor import DPOR
from .execution import (
    Execution,
    ExecutionOutcome,
    Model,
    Thread,
    TraceStep,
    Violation,
    current_stack,
)
from .ops import (
    ACQUIRE,
    ADD,
    AWAIT,
    CONSUME,
    HELD,
    PEEK,
    PROBE,
    READ,
    RELEASE,
    SIGNAL,
    TRY,
    UPDATE,
    WRITE,
    Call,
    Choose,
    DynamicOp,
    Footprint,
    ModelError,
    ModelViolation,
    Op,
    Var,
    WaitUntil,
    current_thread,
    new_loc,
)
from .result import Result, Stats
from .sampling import PCT, RandomWalk
from .schedule import Guided, Replay, ScheduleError, context_switches, decode, encode, shrink
from .snapshot import SetupCache, Snapshot

__all__ = [
    "ACQUIRE",
    "ADD",
    "AWAIT",
    "BUILD",
    "CONSUME",
    "DPOR",
    "HELD",
    "PCT",
    "PEEK",
    "PROBE",
    "READ",
    "RELEASE",
    "SIGNAL",
    "TRY",
    "UPDATE",
    "WRITE",
    "Call",
    "Choose",
    "DynamicOp",
    "Execution",
    "ExecutionOutcome",
    "Footprint",
    "Guided",
    "Model",
    "ModelError",
    "ModelViolation",
    "Op",
    "RandomWalk",
    "Replay",
    "Result",
    "ScheduleError",
    "SetupCache",
    "Snapshot",
    "Stats",
    "Thread",
    "TraceStep",
    "Var",
    "Violation",
    "WaitUntil",
    "context_switches",
    "current_stack",
    "current_thread",
    "decode",
    "encode",
    "new_loc",
    "shrink",
]

# "mypyc" when the wheel was built with the compiled search loop (hatch_build.py),
# "python" otherwise; both behave the same, the compiled one is about 1.6x faster.
BUILD = "python" if _dpor.__file__.endswith(".py") else "mypyc"
