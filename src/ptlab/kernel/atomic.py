"""``atomic_t`` (include/linux/atomic/atomic-instrumented.h), on a KASAN-checked field.

Value-returning operations are UPDATEs: their result orders them against every
other access.  ``atomic_inc``/``atomic_add`` and friends return nothing and so
commute with each other: they are ADDs.
"""

from __future__ import annotations

from ..engine import ADD, READ, UPDATE, WRITE, Call, Op
from .memory import Field, KObject


class atomic_t(Field):
    def __init__(self, owner: KObject, name: str, value: int = 0) -> None:
        Field.__init__(self, owner, name, value)

    def _rmw(self, delta: int) -> int:
        self.owner.check(self.name, "Write")
        self.value += delta
        return int(self.value)

    def _sub(self, i: int) -> int:
        return self._rmw(-i)

    def _or(self, mask: int) -> int:
        self.owner.check(self.name, "Write")
        old = int(self.value)
        self.value = old | mask
        return old

    def _xchg(self, new: int) -> int:
        self.owner.check(self.name, "Write")
        old = int(self.value)
        self.value = new
        return old

    def _fetch_add(self, delta: int) -> int:
        self.owner.check(self.name, "Write")
        old = int(self.value)
        self.value = old + delta
        return old


def atomic_read(v: atomic_t) -> Op:
    return Call(v.fp(READ), "atomic_read(&{0.name})", atomic_t._get, v)


def atomic_set(v: atomic_t, i: int) -> Op:
    return Call(v.fp(WRITE), "atomic_set(&{0.name}, {1})", atomic_t._set, v, i)


def atomic_add_return(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_add_return({1}, &{0.name})", atomic_t._rmw, v, i)


def atomic_sub_return(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_sub_return({1}, &{0.name})", atomic_t._sub, v, i)


def atomic_fetch_add(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_fetch_add({1}, &{0.name})", atomic_t._fetch_add, v, i)


def atomic_fetch_or(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_fetch_or({1:#x}, &{0.name})", atomic_t._or, v, i)


def atomic_xchg(v: atomic_t, new: int) -> Op:
    return Call(v.fp(UPDATE), "atomic_xchg(&{0.name}, {1})", atomic_t._xchg, v, new)


def atomic_or(i: int, v: atomic_t) -> Op:
    """Returns nothing: commutes with other ADD-kind updates."""
    return Call(v.fp(ADD), "atomic_or({1:#x}, &{0.name})", atomic_t._or, v, i)


def atomic_add(i: int, v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_add({1}, &{0.name})", atomic_t._rmw, v, i)


def atomic_inc(v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_inc(&{0.name})", atomic_t._rmw, v, 1)


def atomic_dec(v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_dec(&{0.name})", atomic_t._rmw, v, -1)


def _is_zero_after(v: atomic_t, delta: int) -> bool:
    return v._rmw(delta) == 0


def _is_zero_after_sub(v: atomic_t, i: int) -> bool:
    return v._rmw(-i) == 0


def atomic_dec_and_test(v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_dec_and_test(&{0.name})", _is_zero_after, v, -1)


def atomic_sub_and_test(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_sub_and_test({1}, &{0.name})", _is_zero_after_sub,
                v, i)
