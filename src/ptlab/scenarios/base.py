"""What a scenario is: a question from the seeds, its size parameters, and the
designs (variants) to check, each with the verdict it must get."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine import Model

OK = "ok"


@dataclass(frozen=True)
class Param:
    name: str
    default: int
    help: str
    minimum: int = 1
    maximum: int = 16
    #: The value ``--deep`` uses: a heavier bound, outside the CI budget.
    deep: int | None = None


@dataclass(frozen=True)
class Variant:
    """One design.  ``expect`` is "ok" or the violation kind the checker must find
    (the litmus tests' ``Result:`` line)."""

    name: str
    summary: str
    expect: str
    doc: str = ""
    # Parameters this variant needs to show its verdict, over the scenario defaults.
    params: tuple[tuple[str, int], ...] = ()


@dataclass
class Scenario:
    name: str
    title: str
    source: str
    params: tuple[Param, ...]
    variants: tuple[Variant, ...]
    make: Callable[[str, dict[str, int]], Callable[[], Model]]
    max_steps: int = 2_000
    notes: list[str] = field(default_factory=list)
    #: Figures the scenario reports beside its verdicts (a sequential run of the
    #: design, not a search): printed by ``ptlab check`` and in docs/scenarios.md.
    measure: Callable[[], list[str]] | None = None

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def resolve(self, variant: str, overrides: dict[str, int],
                deep: bool = False) -> dict[str, int]:
        """Defaults (``--deep``: the deep bounds), then the variant's own, then the
        user's ``--set``."""
        values = {p.name: p.deep if deep and p.deep is not None else p.default
                  for p in self.params}
        values.update(dict(self.variant(variant).params))
        values.update(overrides)
        return values
