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
    return Call(v.fp(READ), "atomic_read(&" + v.name + ")", v._get)


def atomic_set(v: atomic_t, i: int) -> Op:
    return Call(v.fp(WRITE), "atomic_set(&" + v.name + ", {0})", v._set, i)


def atomic_add_return(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_add_return({0}, &" + v.name + ")", v._rmw, i)


def atomic_sub_return(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_sub_return(" + str(i) + ", &" + v.name + ")",
                v._rmw, -i)


def atomic_fetch_add(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_fetch_add({0}, &" + v.name + ")", v._fetch_add, i)


def atomic_fetch_or(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_fetch_or({0:#x}, &" + v.name + ")", v._or, i)


def atomic_xchg(v: atomic_t, new: int) -> Op:
    return Call(v.fp(UPDATE), "atomic_xchg(&" + v.name + ", {0})", v._xchg, new)


def atomic_add(i: int, v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_add({0}, &" + v.name + ")", v._rmw, i)


def atomic_inc(v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_inc(&" + v.name + ")", v._rmw, 1)


def atomic_dec(v: atomic_t) -> Op:
    return Call(v.fp(ADD), "atomic_dec(&" + v.name + ")", v._rmw, -1)


def _is_zero_after(v: atomic_t, delta: int) -> bool:
    return v._rmw(delta) == 0


def atomic_dec_and_test(v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_dec_and_test(&" + v.name + ")", _is_zero_after, v, -1)


def atomic_sub_and_test(i: int, v: atomic_t) -> Op:
    return Call(v.fp(UPDATE), "atomic_sub_and_test(" + str(i) + ", &" + v.name + ")",
                _is_zero_after, v, -i)
