"""Snapshots of model state: set up once per search, clone for every execution.

A stateless search rebuilds the model from scratch for every execution, and a
faithful set-up (allocating page tables through the real allocation paths) can
cost as much as the steps explored after it.  Set-up is deterministic and runs
before any thread, so its result is the same for every execution: a search takes
it once, as a :class:`Snapshot`, and gives each execution its own copy.

A snapshot holds plain Python objects: instances with ``__slots__`` or a
``__dict__``, lists, tuples, dicts, and *atoms* shared by every copy (None,
numbers, strings, classes, functions that close over atoms only, tuples of atoms,
and frozen dataclasses of atoms).  Anything else (a coroutine, an execution, a
bound method, a closure over model state) cannot be copied faithfully and is
refused with :class:`~ptlab.engine.ModelError` when the snapshot
is taken, not discovered later as state leaking from one execution into the next.

Cloning follows a plan made once: every object of the graph is numbered, and the
copy is built by allocating them all, then filling each slot with the recorded
atom or the copy of the object it pointed to.
"""

from __future__ import annotations

from collections.abc import Callable
from types import BuiltinFunctionType, FunctionType
from typing import Any, Generic, TypeVar

from .coro import recording_stacks
from .ops import CTX, ModelError

T = TypeVar("T")

_ATOM_TYPES = (type(None), bool, int, float, complex, str, bytes, BuiltinFunctionType, type,
               range)
# Objects whose class has its own __setattr__ (a frozen dataclass) are filled in
# with object.__setattr__, the others with setattr.
_OBJ, _FROZEN_OBJ, _LIST, _DICT, _TUPLE = range(5)


def _is_atom(value: object) -> bool:
    if isinstance(value, _ATOM_TYPES):
        return True
    if isinstance(value, FunctionType):
        # A closure over mutable state would be shared by every copy.
        return all(_is_atom(c.cell_contents) for c in value.__closure__ or ())
    if type(value) is tuple or type(value) is frozenset:
        return all(_is_atom(v) for v in value)
    params = getattr(type(value), "__dataclass_params__", None)
    if params is not None and params.frozen:
        # A frozen dataclass of atoms (a configuration, a geometry) never changes.
        return all(_is_atom(v) for v in vars(value).values())
    return False


def _slots(cls: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name in ("__weakref__", "__dict__") or name in names:
                continue
            if getattr(cls, name) is not klass.__dict__[name]:
                raise ModelError(f"cannot snapshot a {cls.__name__}: its slot {name} is "
                                 "hidden by a property")
            names.append(name)
    return names


class Snapshot(Generic[T]):
    """A frozen copy of the object graph reachable from ``root``."""

    def __init__(self, root: T) -> None:
        self.setup_locs = CTX.setup_locs
        index: dict[int, int] = {}
        nodes: list[Any] = []
        self._kinds: list[int] = []
        self._classes: list[type] = []
        # Per node: the attribute names (objects) or keys (dicts), and per value
        # either an atom (ref -1) or the number of the node it points to.
        self._names: list[list[Any]] = []
        self._values: list[list[Any]] = []
        self._refs: list[list[int]] = []

        def number(value: Any, where: str) -> int:
            if _is_atom(value):
                return -1
            n = index.get(id(value))
            if n is not None:
                return n
            cls = type(value)
            if cls is list:
                kind = _LIST
            elif cls is tuple:
                kind = _TUPLE
            elif cls is dict:
                kind = _DICT
            elif cls.__module__ != "builtins" and (hasattr(value, "__dict__") or _slots(cls)):
                own = any("__setattr__" in k.__dict__ for k in cls.__mro__[:-1])
                kind = _FROZEN_OBJ if own else _OBJ
            else:
                raise ModelError(f"cannot snapshot {where}: a {cls.__name__} is neither "
                                 "plain data nor an atom")
            n = len(nodes)
            index[id(value)] = n
            nodes.append(value)
            self._kinds.append(kind)
            self._classes.append(cls)
            self._names.append([])
            self._values.append([])
            self._refs.append([])
            return n

        self._root = number(root, "the root")
        done = 0
        while done < len(nodes):
            n, value = done, nodes[done]
            done += 1
            kind = self._kinds[n]
            items: list[tuple[Any, Any]]
            if kind == _LIST or kind == _TUPLE:
                items = list(enumerate(value))
            elif kind == _DICT:
                items = list(value.items())
                for key, _ in items:
                    if not _is_atom(key):
                        raise ModelError(f"cannot snapshot a dict keyed by {key!r}")
            else:
                items = [(s, getattr(value, s)) for s in _slots(self._classes[n])
                         if hasattr(value, s)]
                if hasattr(value, "__dict__"):
                    items += vars(value).items()
            for name, v in items:
                ref = number(v, f"{type(value).__name__}.{name}")
                self._names[n].append(name)
                self._values[n].append(v if ref < 0 else None)
                self._refs[n].append(ref)
        # A tuple is made from its items, so after the objects it holds exist and
        # after the tuples it holds (tuples alone cannot form a cycle).
        self._tuples: list[int] = []

        def order(n: int) -> None:
            if n in self._tuples:
                return
            for r in self._refs[n]:
                if r >= 0 and self._kinds[r] == _TUPLE:
                    order(r)
            self._tuples.append(n)

        for n in range(len(nodes)):
            if self._kinds[n] == _TUPLE:
                order(n)

    def clone(self) -> T:
        """A fresh copy; set-up locations created after it continue where the
        snapshot's set-up left off."""
        kinds, classes = self._kinds, self._classes
        names, values, refs = self._names, self._values, self._refs
        new: list[Any] = []
        for n in range(len(kinds)):
            kind = kinds[n]
            if kind == _LIST:
                new.append([])
            elif kind == _DICT:
                new.append({})
            elif kind == _TUPLE:
                new.append(None)
            else:
                cls = classes[n]
                new.append(object.__new__(cls))
        for n in self._tuples:
            vs, rs = values[n], refs[n]
            new[n] = tuple([vs[k] if rs[k] < 0 else new[rs[k]] for k in range(len(rs))])
        for n in range(len(kinds)):
            kind = kinds[n]
            obj = new[n]
            nm, vs, rs = names[n], values[n], refs[n]
            if kind == _LIST:
                for k in range(len(rs)):
                    r = rs[k]
                    obj.append(vs[k] if r < 0 else new[r])
            elif kind == _OBJ:
                for k in range(len(rs)):
                    r = rs[k]
                    setattr(obj, nm[k], vs[k] if r < 0 else new[r])
            elif kind == _DICT:
                for k in range(len(rs)):
                    r = rs[k]
                    obj[nm[k]] = vs[k] if r < 0 else new[r]
            elif kind == _FROZEN_OBJ:
                for k in range(len(rs)):
                    r = rs[k]
                    object.__setattr__(obj, nm[k], vs[k] if r < 0 else new[r])
        CTX.setup_locs = self.setup_locs
        root: T = new[self._root]
        return root


class SetupCache(Generic[T]):
    """Run a model's set-up once per search and hand each execution a clone.

    ``get(setup)`` runs ``setup()`` the first time and snapshots what it returns;
    later calls clone the snapshot.  While call chains are being recorded (a traced
    replay) set-up always runs for real, so reports show where set-up allocated.
    """

    def __init__(self) -> None:
        self._snapshot: Snapshot[T] | None = None

    def get(self, setup: Callable[[], T]) -> T:
        if recording_stacks():
            return setup()
        snap = self._snapshot
        if snap is None:
            self._snapshot = snap = Snapshot(setup())
        return snap.clone()
