"""Test-suite settings.

Hypothesis runs derandomized by default, so CI gives the same verdict on every run
(the project's determinism rule applies to its tests too).  For a fresh random
search of the engine property tests: ``HYPOTHESIS_PROFILE=explore pytest tests/engine``.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
