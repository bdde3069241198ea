"""Every python example in docs/ runs (each page's blocks share one namespace)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


def test_there_are_examples() -> None:
    assert sum(len(blocks(p)) for p in PAGES) >= 4


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path) -> None:
    ns: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for code in blocks(page):
        exec(compile(code, str(page), "exec"), ns)


def test_the_scenarios_page_is_generated_and_current() -> None:
    """docs/scenarios.md is what `ptlab docs --out docs/scenarios.md` writes."""
    from ptlab.docgen import render_scenarios_doc

    assert (DOCS / "scenarios.md").read_text(encoding="utf-8") == render_scenarios_doc(), \
        "docs/scenarios.md is stale: run `ptlab docs --out docs/scenarios.md`"
