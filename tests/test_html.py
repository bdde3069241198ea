"""The HTML counterexample: well-formed, self-contained, every step named by its
kernel function, the violating step marked."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ptlab.cli import main


def test_the_html_counterexample_parses_and_names_every_step(tmp_path: Path) -> None:
    out = tmp_path / "uaf.html"
    assert main(["check", "mmu-gather-table-free", "--variant", "ipi", "--html",
                 str(out)]) == 1
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    root = ET.fromstring(text.split("\n", 1)[1])           # well-formed XML (XHTML)
    HTMLParser().feed(text)
    ns = {"h": "http://www.w3.org/1999/xhtml", "s": "http://www.w3.org/2000/svg"}
    assert root.find(".//h:script", ns) is None
    assert not re.search(r"(src|href)=\"https?:", text)     # nothing fetched
    titles = [t.text or "" for t in root.iterfind(".//s:g/s:title", ns)]
    assert titles, "no steps drawn"
    # Each step's title carries its thread and full call chain of kernel functions.
    assert all(": " in t for t in titles)
    assert any("pte_offset_map_walk" in t for t in titles)
    assert any("free_pte_range" in t for t in titles)
    assert len(root.findall(".//s:rect[@class='bad']", ns)) == 1
    assert "BUG: KASAN: use-after-free" in text
    assert root.find(".//s:line[@class='ipi']", ns) is not None


def test_html_of_a_safe_variant_says_what_was_covered(tmp_path: Path) -> None:
    out = tmp_path / "ok.html"
    assert main(["check", "fault-race", "--variant", "v6.18", "--html", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    ET.fromstring(text.split("\n", 1)[1])
    assert "exhaustive" in text and "no violation" in text


def test_html_draws_one_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "x.html"
    assert main(["check", "retract-walkers", "--html", str(target)]) == 2
    assert "--html draws one result: name a --variant" in capsys.readouterr().err
    assert not target.exists()
