"""What the engine knows of Python coroutines: their await chains (the call chains
in reports) and the ones created but never awaited (a model error).

Kept out of the compiled engine modules on purpose: ``current_stack`` reads the
Python frame stack, which code compiled with mypyc does not have frames on.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from inspect import CO_COROUTINE
from typing import Any

from .ops import CTX

_unawaited: list[str] = []


def _hook(u: Any) -> None:
    if isinstance(u.exc_value, RuntimeWarning) and "never awaited" in str(u.exc_value):
        _unawaited.append(str(u.exc_value))
    else:  # pragma: no cover - not ours
        sys.__unraisablehook__(u)


@contextmanager
def catching_unawaited() -> Iterator[None]:
    """Turn "coroutine ... was never awaited" into an error the engine sees."""
    old = sys.unraisablehook
    sys.unraisablehook = _hook
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"coroutine .* was never awaited",
                                category=RuntimeWarning)
        try:
            yield
        finally:
            sys.unraisablehook = old
            _unawaited.clear()


def coroutine_stack(coro: Any) -> list[str]:
    """Names of the coroutines in ``coro``'s await chain, outermost first."""
    names: list[str] = []
    c = coro
    while c is not None and hasattr(c, "cr_code"):
        names.append(c.cr_code.co_name)
        c = c.cr_await
    return names


def recording_stacks() -> bool:
    """Whether this execution keeps call chains for reports: only when it is traced
    (a counterexample is always replayed with a trace before it is shown), so the
    search itself does not pay for walking the stack at every allocation."""
    ex = CTX.execution
    return ex is None or bool(ex.trace)


def current_stack() -> list[str]:
    """The running thread's call chain of model functions (for KASAN reports):
    the coroutine frames on the Python stack while model code runs, else the
    await chain the thread is suspended in (an op running for it)."""
    t = CTX.thread
    name = t.name if t is not None else "setup"
    names: list[str] = []
    f = sys._getframe(1)
    while f is not None:
        if f.f_code.co_flags & CO_COROUTINE:
            names.append(f.f_code.co_name)
        f = f.f_back  # type: ignore[assignment]
    if names:
        return [name, *reversed(names)]
    return [name, *coroutine_stack(t.coro)] if t is not None else [name]
