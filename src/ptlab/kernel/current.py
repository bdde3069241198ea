"""The kernel booted for the running execution, as kernel code reaches it: through
global state (``current``, per-CPU data), not through arguments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..engine import ModelViolation

if TYPE_CHECKING:
    from .kernel import Kernel

_current: Kernel | None = None


def set_current_kernel(kernel: Kernel) -> None:
    global _current
    _current = kernel


def current_kernel() -> Kernel:
    if _current is None:
        raise ModelViolation("bad-context", "no kernel has been booted in this execution")
    return _current
