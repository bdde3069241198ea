"""Snapshots: a set-up taken once and cloned per execution must be a faithful,
independent copy, and must refuse what it cannot copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from ptlab.engine import Execution, ModelError, SetupCache, Snapshot
from ptlab.engine.coro import recording_stacks
from ptlab.engine.ops import CTX, new_loc


class Slotted:
    __slots__ = ("items", "loc", "peer", "value")

    def __init__(self, value: int) -> None:
        self.loc = new_loc()
        self.value = value
        self.items: list[Any] = []
        self.peer: Slotted | None = None


class Mixed(Slotted):
    """Slots from the base, a __dict__ from the subclass (like atomic_t(Field))."""

    def __init__(self, value: int) -> None:
        Slotted.__init__(self, value)
        self.extra = {"k": [value]}


@dataclass(frozen=True)
class Frozen:
    name: str
    parts: list[int]


class Shadowed:
    __slots__ = ("fp",)


class ShadowedChild(Shadowed):
    @property
    def fp(self) -> int:
        return 1


def _graph() -> dict[str, Any]:
    a, b = Slotted(1), Mixed(2)
    a.peer, b.peer = b, a                      # a cycle
    a.items = [b, b, (1, "x", (2,))]           # aliasing, and a tuple of atoms
    return {"a": a, "b": b, "shared": a.items, "frozen": Frozen("f", [3]), "fn": len}


def test_clone_is_deep_and_keeps_the_shape() -> None:
    g = _graph()
    c = Snapshot(g).clone()
    a, b = c["a"], c["b"]
    assert a is not g["a"] and b is not g["b"]
    assert type(b) is Mixed and b.value == 2 and b.extra == {"k": [2]}
    assert b.extra is not g["b"].extra and b.extra["k"] is not g["b"].extra["k"]
    assert a.peer is b and b.peer is a
    assert a.items[0] is b and a.items[1] is b and c["shared"] is a.items
    assert a.items[2] is g["a"].items[2]        # atoms are shared
    assert c["frozen"] == g["frozen"] and c["frozen"].parts is not g["frozen"].parts
    assert c["fn"] is len


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]


def test_frozen_dataclasses_of_atoms_are_shared() -> None:
    cfg = Config("v6.18", (4096, 8))
    c = Snapshot({"cfg": cfg, "f": Frozen("x", [1])}).clone()
    assert c["cfg"] is cfg
    assert c["f"] is not None and c["f"].parts == [1]


def test_tuples_of_mutable_objects_are_rebuilt_around_the_copies() -> None:
    a = Slotted(1)
    inner = (a, [a])
    g: dict[str, Any] = {"t": (inner, inner, a), "a": a}
    c = Snapshot(g).clone()
    t = c["t"]
    assert t[0] is t[1] and t[0] is not inner
    assert t[0][0] is c["a"] is t[2] and t[0][1][0] is c["a"]


def test_clones_are_independent_of_each_other_and_of_the_original() -> None:
    g = _graph()
    snap = Snapshot(g)
    g["a"].value = 99
    g["a"].items.append("late")
    one, two = snap.clone(), snap.clone()
    one["a"].value = 5
    one["b"].extra["k"].append(7)
    assert two["a"].value == 1 and two["b"].extra["k"] == [2]
    assert len(two["a"].items) == 3


def test_set_up_locations_continue_after_the_snapshot() -> None:
    CTX.thread = None
    CTX.setup_locs = 0
    snap = Snapshot([Slotted(0) for _ in range(3)])
    after = new_loc()
    CTX.setup_locs = 1000
    snap.clone()
    assert new_loc() == after


async def _coro() -> None:
    pass


@pytest.mark.parametrize("bad, what", [
    ("coroutine", "coroutine"),
    ("method", "method"),
    ("closure", "function"),
    ("shadowed", "hidden by a property"),
])
def test_refuses_what_it_cannot_copy(bad: str, what: str) -> None:
    obj = Slotted(0)
    value: Any
    if bad == "coroutine":
        value = _coro()
    elif bad == "method":
        value = obj.__repr__
    elif bad == "closure":
        value = lambda: obj.value  # noqa: E731
    else:
        value = ShadowedChild()
    with pytest.raises(ModelError, match=what):
        Snapshot({"x": value})
    if bad == "coroutine":
        value.close()


@pytest.fixture
def current_execution() -> Any:
    """An execution in progress, as a search has while it builds a model."""
    def enter(trace: bool) -> None:
        CTX.execution = Execution(object(), trace=trace)

    yield enter
    CTX.execution = None


def test_setup_cache_runs_set_up_once_and_clones(current_execution: Any) -> None:
    current_execution(False)
    calls: list[int] = []

    def setup() -> list[int]:
        calls.append(1)
        return [len(calls)]

    cache: SetupCache[list[int]] = SetupCache()
    first, second = cache.get(setup), cache.get(setup)
    assert calls == [1] and first == second == [1] and first is not second


def test_setup_cache_runs_set_up_for_real_when_call_chains_are_recorded(
        current_execution: Any) -> None:
    """A traced replay records where set-up allocated: no snapshot then."""
    current_execution(True)
    assert recording_stacks()
    calls: list[int] = []
    cache: SetupCache[list[int]] = SetupCache()

    def setup() -> list[int]:
        calls.append(1)
        return [1]

    cache.get(setup)
    cache.get(setup)
    assert calls == [1, 1]
