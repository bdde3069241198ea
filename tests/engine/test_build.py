"""Which build of the engine is running: the wheel's compiled search loop, or the
pure-Python one (editable installs, no C compiler).  Both must behave the same; CI
runs the whole suite against each."""

from __future__ import annotations

import os

import pytest

import ptlab.engine
from ptlab.engine import dpor, execution, snapshot


def test_build_names_the_modules_in_use() -> None:
    compiled = [not m.__file__.endswith(".py") for m in (dpor, execution, snapshot)
                if m.__file__]
    assert ptlab.engine.BUILD == ("mypyc" if all(compiled) else "python")
    assert len(set(compiled)) == 1, "the compiled modules must come from the same build"


def test_the_build_ci_asked_for() -> None:
    """CI sets PTLAB_EXPECT_BUILD=mypyc when it builds a wheel with a C compiler at
    hand: a silent fall-back to pure Python would otherwise test it twice."""
    want = os.environ.get("PTLAB_EXPECT_BUILD")
    if want is None:
        pytest.skip("PTLAB_EXPECT_BUILD is not set")
    assert ptlab.engine.BUILD == want
