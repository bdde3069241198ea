"""Unit tests of one execution and of the strategies around it: model errors
(missing ``await``), deadlock and livelock reports, schedules (encode/decode,
replay) and the seeded samplers."""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptlab.engine import (
    ACQUIRE,
    DPOR,
    PCT,
    READ,
    RELEASE,
    Call,
    Choose,
    Execution,
    ModelError,
    ModelViolation,
    RandomWalk,
    Replay,
    ScheduleError,
    Var,
    WaitUntil,
    decode,
    encode,
    new_loc,
)
from ptlab.engine.execution import CHOICE_SHIFT, THREAD_MASK, catching_unawaited
from ptlab.engine.schedule import run_schedule

ThreadFn = Callable[["Shared"], Coroutine[Any, Any, None]]


class Shared:
    """Shared state of the small models below: variables and locks by name."""

    def __init__(self, nvars: int = 2, nlocks: int = 2) -> None:
        self.x = [Var(0, f"x{i}") for i in range(nvars)]
        self.lock_loc = [new_loc() for _ in range(nlocks)]
        self.holder: list[str | None] = [None] * nlocks

    async def lock(self, k: int, who: str) -> None:
        def take() -> None:
            self.holder[k] = who

        await WaitUntil(((self.lock_loc[k], ACQUIRE),), f"lock(L{k})",
                        lambda: self.holder[k] is None, take)

    async def unlock(self, k: int) -> None:
        def give() -> None:
            self.holder[k] = None

        await Call(((self.lock_loc[k], RELEASE),), f"unlock(L{k})", give)


class FnModel:
    """A model made of thread functions over one :class:`Shared`."""

    def __init__(self, *threads: ThreadFn, check: Callable[[Shared], None] | None = None) -> None:
        self.threads = threads
        self.check = check
        self.s: Shared | None = None
        self.ex: Execution | None = None

    def build(self, ex: Execution) -> None:
        self.ex = ex
        self.s = Shared()
        for k, fn in enumerate(self.threads):
            ex.spawn(f"t{k}", fn(self.s))

    def finish(self, ex: Execution) -> None:
        if self.check is not None:
            assert self.s is not None
            self.check(self.s)

    def state(self) -> tuple[Any, ...]:
        assert self.s is not None
        return tuple(v.value for v in self.s.x), tuple(self.s.holder)


def explore(*threads: ThreadFn, **kw: Any) -> Any:
    return DPOR(lambda: FnModel(*threads), **kw).run()


# -- model errors ------------------------------------------------------------------


def test_forgotten_await_on_an_op_is_a_model_error() -> None:
    async def t0(s: Shared) -> None:
        s.x[0].store(1)  # the bug under test
        await s.x[1].load()

    with pytest.raises(ModelError, match="never awaited"):
        explore(t0)


def test_forgotten_await_on_the_last_op_is_a_model_error() -> None:
    async def t0(s: Shared) -> None:
        await s.x[1].load()
        s.x[0].store(1)

    with pytest.raises(ModelError, match="never awaited"):
        explore(t0)


async def _helper(s: Shared) -> None:
    await s.x[0].store(1)


@pytest.mark.filterwarnings("ignore:coroutine '_helper' was never awaited:RuntimeWarning")
def test_unawaited_async_helper_is_a_model_error() -> None:
    """Calling an ``async def`` without ``await`` runs nothing, so no op count is off;
    only Python's "never awaited" warning shows it.  DPOR.run turns it into a
    ModelError by running under ``catching_unawaited``."""

    async def t0(s: Shared) -> None:
        _helper(s)  # type: ignore[unused-coroutine]  # the bug under test
        await s.x[1].load()

    with pytest.raises(ModelError, match="_helper' was never awaited"):
        explore(t0)
    # The same model under RandomWalk and PCT.
    for sampler in (RandomWalk, PCT):
        with pytest.raises(ModelError, match="never awaited"):
            sampler(lambda: FnModel(t0), max_executions=1).run()
    # And under an explicit catching_unawaited around a bare execution.
    with catching_unawaited(), pytest.raises(ModelError, match="never awaited"):
        Execution(FnModel(t0)).run(Replay([0]))


@pytest.mark.filterwarnings("ignore:coroutine '_helper' was never awaited:RuntimeWarning")
def test_unawaited_async_helper_at_the_end_of_a_thread_is_a_model_error() -> None:
    async def t0(s: Shared) -> None:
        await s.x[1].load()
        _helper(s)  # type: ignore[unused-coroutine]  # the bug under test

    with pytest.raises(ModelError, match="never awaited"):
        explore(t0)


@pytest.mark.filterwarnings("ignore:coroutine '_helper' was never awaited:RuntimeWarning")
def test_unawaited_async_helper_is_blamed_on_its_thread() -> None:
    async def t0(s: Shared) -> None:
        await s.x[1].load()
        _helper(s)  # type: ignore[unused-coroutine]  # the bug under test

    async def t1(s: Shared) -> None:
        await s.x[1].load()
        await s.x[1].load()

    with pytest.raises(ModelError, match=r"^t0: "):
        DPOR(lambda: FnModel(t0, t1)).run()


# -- deadlock and livelock ---------------------------------------------------------------


def test_locks_in_opposite_orders_deadlock() -> None:
    async def t0(s: Shared) -> None:
        await s.lock(0, "t0")
        await s.lock(1, "t0")
        await s.unlock(1)
        await s.unlock(0)

    async def t1(s: Shared) -> None:
        await s.lock(1, "t1")
        await s.lock(0, "t1")
        await s.unlock(0)
        await s.unlock(1)

    res = explore(t0, t1)
    assert res.verdict == "violation"
    assert res.violation is not None
    assert res.violation.kind == "deadlock"
    assert "t0" in res.violation.message and "t1" in res.violation.message
    # The schedule it reports leads there again.
    assert res.schedule is not None
    _, out = run_schedule(lambda: FnModel(t0, t1), Replay(res.schedule))
    assert out.violation is not None and out.violation.kind == "deadlock"
    # Same order in both threads: no deadlock, and every execution is complete.
    res = explore(t0, t0)
    assert res.verdict == "ok" and res.exhaustive


def test_daemon_thread_blocked_forever_is_not_a_deadlock() -> None:
    class M(FnModel):
        def build(self, ex: Execution) -> None:
            super().build(ex)
            assert self.s is not None
            ex.spawn("waiter", waiter(self.s), daemon=True)

    async def waiter(s: Shared) -> None:
        await WaitUntil(((s.x[0].loc, READ),), "never", lambda: False)

    async def t0(s: Shared) -> None:
        await s.x[1].store(1)

    assert DPOR(lambda: M(t0)).run().verdict == "ok"


def test_thread_looping_forever_is_a_livelock() -> None:
    async def spin(s: Shared) -> None:
        while await s.x[0].load() == 0:
            pass

    res = explore(spin, max_steps=50)
    assert res.verdict == "violation"
    assert res.violation is not None
    assert res.violation.kind == "livelock"
    assert "50" in res.violation.message
    assert res.violation.thread == "t0"
    assert res.schedule is not None and len(res.schedule) == 51


def test_violation_found_with_stop_on_violation_false() -> None:
    """Without stopping, DPOR goes on after a violating execution (on_execution sees it)."""

    def check(s: Shared) -> None:
        if s.x[0].value == 1:
            raise ModelViolation("one", "x0 == 1")

    async def t0(s: Shared) -> None:
        await s.x[0].store(1)

    async def t1(s: Shared) -> None:
        await s.x[0].store(2)

    seen: list[str | None] = []
    dpor = DPOR(lambda: FnModel(t0, t1, check=check), stop_on_violation=False)
    dpor.on_execution = lambda ex: seen.append(ex.violation.kind if ex.violation else None)
    res = dpor.run()
    assert res.stats.executions == 2
    assert sorted(seen, key=str) == [None, "one"]


def test_result_reports_violation_with_stop_on_violation_false() -> None:
    async def t0(s: Shared) -> None:
        await s.x[0].store(1)

    def check(s: Shared) -> None:
        raise ModelViolation("always", "always")

    res = DPOR(lambda: FnModel(t0, check=check), stop_on_violation=False).run()
    assert res.verdict == "violation"
    assert res.violation is not None


# -- schedules ------------------------------------------------------------------------------

_labels = st.lists(st.builds(lambda t, c: t | (c << CHOICE_SHIFT),
                             st.integers(0, THREAD_MASK), st.integers(0, 5)),
                   max_size=40)


@given(_labels)
def test_schedule_encode_decode_round_trip(labels: list[int]) -> None:
    text = encode(labels)
    assert decode(text) == labels
    assert encode(decode(text)) == text


def test_schedule_encoding_example() -> None:
    labels = [0, 0, 0, 1, 2 | (1 << CHOICE_SHIFT), 0, 0]
    assert encode(labels) == "0*3.1.2:1.0*2"
    assert decode("0*3.1.2:1.0*2") == labels
    assert decode("") == [] and decode("  ") == []


@pytest.mark.parametrize("text", [
    "a", "0.", ".0", "0..1", "-1", "1:", ":1", "1*", "1*0", "1**2", "1:2:3", "0 1", "0,1",
    str(THREAD_MASK + 1),
])
def test_schedule_bad_tokens_raise(text: str) -> None:
    with pytest.raises(ScheduleError):
        decode(text)


async def _writer(s: Shared) -> None:
    for v in (1, 2):
        await s.x[0].store(v)
    await s.x[1].store(await s.x[0].load())


async def _reader(s: Shared) -> None:
    a: int = await s.x[0].load()

    def pick(k: int) -> int:
        return k + a

    b = await Choose(((s.x[0].loc, READ),), "pick", lambda: 3, pick)
    await s.lock(0, "reader")
    await s.x[1].store(a + b)
    await s.unlock(0)


async def _adder(s: Shared) -> None:
    await s.lock(0, "adder")
    await s.x[1].store(await s.x[1].load() + 10)
    await s.unlock(0)


class _RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, ex: Execution, enabled: list[int]) -> int:
        t = self.rng.choice(enabled)
        op = ex.threads[t].pending
        assert op is not None
        n = op.nchoices() if op.choice else 1
        return t | (self.rng.randrange(n) << CHOICE_SHIFT)


@pytest.mark.parametrize("seed", range(20))
def test_replay_reproduces_an_execution_step_for_step(seed: int) -> None:
    def make() -> FnModel:
        return FnModel(_writer, _reader, _adder)

    first = make()
    ex = Execution(first, trace=True)
    out = ex.run(_RandomChooser(seed))
    assert not out.aborted
    labels = list(ex.ev_label)
    second = make()
    replayed, out2 = run_schedule(lambda: second, Replay(decode(encode(labels))), trace=True)
    assert not out2.aborted
    assert replayed.ev_label == labels
    assert replayed.ev_thread == ex.ev_thread
    assert replayed.ev_fp == ex.ev_fp
    assert replayed.ev_nchoices == ex.ev_nchoices
    assert replayed.steps == ex.steps  # thread, stack, op, choice, result of every step
    assert second.state() == first.state()
    assert out2.violation == out.violation


def test_replay_reproduces_a_violation() -> None:
    def check(s: Shared) -> None:
        if s.x[1].value == 13:
            raise ModelViolation("thirteen", "x1 == 13")

    def make() -> FnModel:
        return FnModel(_writer, _reader, _adder, check=check)

    res = DPOR(make).run()
    assert res.verdict == "violation" and res.schedule is not None
    ex, out = run_schedule(make, Replay(res.schedule))
    assert out.violation == res.violation
    assert ex.ev_label == res.schedule


def test_replay_errors() -> None:
    def make() -> FnModel:
        return FnModel(_writer, _reader)

    rep = Replay([0])
    _, out = run_schedule(make, rep)
    assert out.aborted and rep.error is not None and "ends after 1 steps" in rep.error
    rep = Replay([5])
    _, out = run_schedule(make, rep)
    assert out.aborted and rep.error is not None and "#5 cannot run" in rep.error
    rep = Replay([1, 1 | (7 << CHOICE_SHIFT)])
    _, out = run_schedule(make, rep)
    assert out.aborted and rep.error is not None and "has no choice 7" in rep.error


# -- seeded samplers -------------------------------------------------------------------------


def _schedules(sampler: type[RandomWalk] | type[PCT], seed: int, **kw: int) -> list[list[int]]:
    models: list[FnModel] = []

    def make() -> FnModel:
        m = FnModel(_writer, _reader, _adder)
        models.append(m)
        return m

    res = sampler(make, seed=seed, max_executions=30, **kw).run()
    assert res.verdict == "ok" and res.seed == seed
    assert res.stats.executions == len(models) == 30
    return [list(m.ex.ev_label) for m in models if m.ex is not None]


@pytest.mark.parametrize("sampler", [RandomWalk, PCT])
def test_samplers_are_deterministic_given_the_seed(sampler: type[RandomWalk] | type[PCT]) -> None:
    a = _schedules(sampler, 7)
    assert a == _schedules(sampler, 7)
    assert a != _schedules(sampler, 8)
    assert len({encode(s) for s in a}) > 1  # it does sample different schedules


def test_pct_depth_is_part_of_the_seeded_run() -> None:
    assert _schedules(PCT, 3, depth=2) == _schedules(PCT, 3, depth=2)
