"""engine.call(), DONE and done(): a step built as an op under a schedule, done at
once in a sequential run (ops_inline())."""

from __future__ import annotations

from typing import Any

from ptlab.engine import DONE, MODE, READ, Call, call, done
from ptlab.engine.ops import ops_inline


def _drive(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the coroutine suspended")


def test_call_builds_an_op_under_a_schedule() -> None:
    seen: list[int] = []
    op = call(((7, READ),), "f({0})", seen.append, 1)
    assert isinstance(op, Call) and op.fp == ((7, READ),) and op.describe() == "f(1)"
    assert seen == []                      # nothing ran: the engine runs it later


def test_call_runs_at_once_in_a_sequential_run() -> None:
    seen: list[int] = []

    async def body() -> tuple[Any, Any]:
        a = await call((), "append", seen.append, 1)
        b = await call((), "len", len, seen)
        return a, b

    assert not MODE.inline
    with ops_inline():
        assert MODE.inline
        assert _drive(body()) == (None, 1)
    assert not MODE.inline and seen == [1]


def test_done_and_DONE_complete_without_suspending() -> None:
    async def body() -> tuple[Any, Any]:
        return await DONE, await done(42)

    assert _drive(body()) == (None, 42)
