"""Kernel memory objects and KASAN-style checking.

Every object the model allocates (a page, a slab object, an ``rcu_head`` on a
stack) is a :class:`KObject`.  Each field access carries the object's *alive*
location in its footprint, and freeing writes it, so the explorer orders every
access against the free; an access that lands after the free is reported the way
KASAN would, with the call chains that allocated and freed the object.
"""

from __future__ import annotations

from typing import Any

from ..engine import READ, WRITE, Call, Footprint, ModelViolation, Op, current_stack, new_loc
from ..engine.coro import recording_stacks

# Call chains are kept only in traced executions (see recording_stacks()).
_UNRECORDED = ["(call chain recorded on replay)"]

_RULE = "=" * 66


def _chain(stack: list[str]) -> str:
    return "\n".join(f" {fn}" for fn in reversed(stack))


class KObject:
    """An allocation: where it came from, whether it is still live."""

    __slots__ = ("__weakref__", "addr", "alive", "alloc_stack", "free_stack", "freed", "kind",
                 "size")
    _next_addr = 0

    def __init__(self, kind: str, size: int) -> None:
        self.alive = new_loc()
        self.freed = False
        self.kind = kind
        self.size = size
        self.addr = 0xFFFF_8880_0000_0000 + self.alive * 0x1000
        self.alloc_stack = current_stack() if recording_stacks() else _UNRECORDED
        self.free_stack: list[str] = []

    def __repr__(self) -> str:
        return f"{self.kind}@{self.addr:#x}"

    def kasan_report(self, what: str, access: str, size: int = 8) -> ModelViolation:
        """BUG: KASAN: use-after-free (``what`` names the bad access)."""
        stack = current_stack()
        report = "\n".join([
            _RULE,
            f"BUG: KASAN: use-after-free in {stack[-1]}",
            f"{access} of size {size} at addr {self.addr:#x} by task {stack[0]}",
            "",
            "Call trace:",
            _chain(stack[1:]),
            "",
            f"Allocated by task {self.alloc_stack[0]}:",
            _chain(self.alloc_stack[1:]),
            "",
            f"Freed by task {self.free_stack[0] if self.free_stack else '?'}:",
            _chain(self.free_stack[1:]),
            "",
            f"The buggy address belongs to the object at {self.addr:#x} ({self.kind})",
            _RULE,
        ])
        return ModelViolation("use-after-free", f"{what}: {self.kind} at {self.addr:#x} "
                              f"used by {stack[0]} after it was freed", report)

    def kmemleak_report(self) -> str:
        """kmemleak: an object nobody freed, with where it was allocated."""
        return "\n".join([
            f"unreferenced object {self.addr:#x} (size {self.size}):",
            f"  comm \"{self.alloc_stack[0]}\"",
            "  backtrace:",
            *(f"    {fn}" for fn in reversed(self.alloc_stack[1:])),
        ])

    def check(self, what: str, access: str = "Read") -> None:
        if self.freed:
            raise self.kasan_report(what, access)

    def mark_freed(self, what: str) -> None:
        if self.freed:
            stack = current_stack()
            report = "\n".join([
                _RULE,
                f"BUG: KASAN: double-free in {stack[-1]}",
                f"Free of addr {self.addr:#x} by task {stack[0]}",
                "",
                "Call trace:",
                _chain(stack[1:]),
                "",
                f"Allocated by task {self.alloc_stack[0]}:",
                _chain(self.alloc_stack[1:]),
                "",
                f"Freed by task {self.free_stack[0]}:",
                _chain(self.free_stack[1:]),
                _RULE,
            ])
            raise ModelViolation("double-free", f"{what}: {self.kind} at {self.addr:#x} "
                                 "freed twice", report)
        self.freed = True
        self.free_stack = current_stack() if recording_stacks() else _UNRECORDED


class Field:
    """A field of a :class:`KObject`: an access also reads the object's liveness."""

    __slots__ = ("_rfp", "_wfp", "loc", "name", "owner", "value")

    def __init__(self, owner: KObject, name: str, value: Any = None) -> None:
        self.loc = new_loc()
        self.owner = owner
        self.name = name
        self.value = value
        self._rfp: Footprint = ((self.loc, READ), (owner.alive, READ))
        self._wfp: Footprint = ((self.loc, WRITE), (owner.alive, READ))

    def fp(self, kind: int) -> Footprint:
        return ((self.loc, kind), (self.owner.alive, READ))

    # NOTE: unbound functions and label templates: no bound method and no string
    # is built per access (labels are formatted only for traces).
    def load(self) -> Op:
        return Call(self._rfp, "READ_ONCE({0.name})", Field._get, self)

    def store(self, value: Any) -> Op:
        return Call(self._wfp, "WRITE_ONCE({0.name}, {1!r})", Field._set, self, value)

    def _get(self) -> Any:
        self.owner.check(self.name)
        return self.value

    def _set(self, value: Any) -> None:
        self.owner.check(self.name, "Write")
        self.value = value
