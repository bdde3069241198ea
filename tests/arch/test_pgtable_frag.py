"""arch/powerpc/mm/pgtable-frag.c, run sequentially against its own rules."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from ptlab.arch.powerpc.pgtable_frag import (
    PteFragment,
    pte_frag_destroy,
    pte_fragment_alloc,
    pte_fragment_free,
    pte_free_defer,
)
from ptlab.engine import DPOR, Execution, ModelViolation
from ptlab.kernel import Kernel, PG_active
from ptlab.mm.types import mm_struct


class World:
    """A booted kernel and an mm, driven one call at a time (no exploration)."""

    def __init__(self) -> None:
        self.ex = Execution(self)  # type: ignore[arg-type]
        self.kernel = Kernel(self.ex, 1)
        self.mm = mm_struct()

    def build(self, ex: Execution) -> None:  # pragma: no cover - not explored
        pass

    def finish(self, ex: Execution) -> None:  # pragma: no cover
        pass

    def run(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        return self.ex.run_sync(fn(*args), self.kernel.cpus[0])

    def close(self) -> None:
        for t in self.ex.threads:  # daemons that never ran
            t.coro.close()


@pytest.fixture
def w() -> Iterator[World]:
    world = World()
    yield world
    world.close()


def test_one_page_serves_frag_nr_tables(w: World) -> None:
    tables: list[PteFragment] = [w.run(pte_fragment_alloc, w.mm, 0, 4) for _ in range(4)]
    assert len({id(t.page) for t in tables}) == 1
    assert [t.index for t in tables] == [0, 1, 2, 3]
    # The page was pre-charged with every fragment; the cache is used up.
    assert tables[0].page.pt_frag_refcount.value == 4
    assert w.mm.context.pte_frag.value is None
    assert w.kernel.alloc.nr_pagetable == 1
    fifth = w.run(pte_fragment_alloc, w.mm, 0, 4)
    assert fifth.page is not tables[0].page and fifth.index == 0


def test_freed_fragments_are_never_reused_and_the_last_frees_the_page(w: World) -> None:
    a = w.run(pte_fragment_alloc, w.mm, 0, 2)
    b = w.run(pte_fragment_alloc, w.mm, 0, 2)
    w.run(pte_fragment_free, a, 0)
    assert not a.page.freed and a.page.pt_frag_refcount.value == 1
    c = w.run(pte_fragment_alloc, w.mm, 0, 2)
    assert c.page is not a.page  # a's slot is not handed out again
    w.run(pte_fragment_free, b, 0)
    assert a.page.freed and w.kernel.alloc.nr_pagetable == 1  # c's page remains


def test_pte_frag_destroy_drops_the_fragments_never_handed_out(w: World) -> None:
    a = w.run(pte_fragment_alloc, w.mm, 0, 4)
    cached = w.mm.context.pte_frag.value
    assert cached is not None and cached.index == 1
    w.run(pte_fragment_free, a, 0)
    assert not a.page.freed
    w.run(pte_frag_destroy, cached, 4)
    assert a.page.freed and a.page.pt_frag_refcount.value == 0


class DeferThenFree:
    """pte_free_defer() on one fragment, then pte_fragment_free() on the other."""

    def __init__(self, seen: list[tuple[bool, bool, bool]]) -> None:
        self.seen = seen

    def build(self, ex: Execution) -> None:
        k = Kernel(ex, 1)
        mm = mm_struct()

        async def task() -> None:
            a = await pte_fragment_alloc(mm, 0, 2)
            b = await pte_fragment_alloc(mm, 0, 2)
            self.page = a.page
            await pte_free_defer(mm, a)
            marked = bool(a.page.flags.value & PG_active)
            await pte_fragment_free(b, 0)
            # The last reference is gone and PG_active was set: queued, not freed.
            self.seen.append((marked, a.page.pt_rcu_head.queued, a.page.freed))

        k.run_on(0, "task", task())

    def finish(self, ex: Execution) -> None:
        assert self.page.freed  # after a grace period
        assert not self.page.flags.value & PG_active


def test_pte_free_defer_marks_the_page_and_the_last_free_goes_through_rcu() -> None:
    seen: list[tuple[bool, bool, bool]] = []
    r = DPOR(lambda: DeferThenFree(seen)).run()
    assert r.verdict == "ok" and r.exhaustive
    assert seen and all(s == (True, True, False) for s in seen)


def test_freeing_more_than_was_allocated_is_a_bug_on(w: World) -> None:
    a = w.run(pte_fragment_alloc, w.mm, 0, 1)
    w.run(pte_fragment_free, a, 0)
    with pytest.raises(ModelViolation) as e:
        w.run(pte_fragment_free, a, 0)
    assert e.value.kind in ("bug-on", "use-after-free")
