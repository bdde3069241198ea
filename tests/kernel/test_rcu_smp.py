"""RCU and IPIs against the properties the seeds rely on, each checked exhaustively."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ptlab.engine import DPOR, Execution, Result
from ptlab.kernel import (
    Kernel,
    KObject,
    call_rcu,
    kfree,
    local_irq_restore,
    local_irq_save,
    rcu_head,
    rcu_read_lock,
    rcu_read_unlock,
    synchronize_rcu,
)
from ptlab.kernel.memory import Field
from ptlab.mm.mmu_gather import tlb_remove_table_sync_one


class Box(KObject):
    __slots__ = ("head", "val")

    def __init__(self) -> None:
        KObject.__init__(self, "struct box", 16)
        self.head = rcu_head(self, "box->rcu")
        self.val = Field(self, "box->val", 1)


FreeFn = Callable[[Field, Box], Awaitable[None]]


class Publish:
    """A pointer to a Box; a reader dereferences it, a writer unpublishes and frees."""

    def __init__(self, free: FreeFn, irqs_off_reader: bool = False) -> None:
        self.free = free
        self.irqs_off_reader = irqs_off_reader

    def build(self, ex: Execution) -> None:
        k = Kernel(ex, 2)
        box = Box()
        ptr = Field(KObject("global", 8), "gp", box)

        async def reader() -> None:
            if self.irqs_off_reader:
                flags = await local_irq_save()
            else:
                await rcu_read_lock()
            b = await ptr.load()
            if b is not None:
                await b.val.load()
            if self.irqs_off_reader:
                await local_irq_restore(flags)
            else:
                await rcu_read_unlock()

        async def writer() -> None:
            await ptr.store(None)
            await self.free(ptr, box)

        k.run_on(0, "reader", reader())
        k.run_on(1, "writer", writer())

    def finish(self, ex: Execution) -> None:
        pass


async def _kfree_cb(head: rcu_head) -> None:
    assert isinstance(head.owner, Box)
    await kfree(head.owner, head)


async def free_now(ptr: Field, box: Box) -> None:
    await kfree(box, box.head)


async def free_after_call_rcu(ptr: Field, box: Box) -> None:
    await call_rcu(box.head, _kfree_cb)


async def free_after_synchronize_rcu(ptr: Field, box: Box) -> None:
    await synchronize_rcu()
    await kfree(box, box.head)


async def free_after_ipi(ptr: Field, box: Box) -> None:
    await tlb_remove_table_sync_one()
    await kfree(box, box.head)


def check(free: FreeFn, irqs_off: bool = False) -> Result:
    return DPOR(lambda: Publish(free, irqs_off)).run()


def test_freeing_at_once_is_a_use_after_free() -> None:
    r = check(free_now)
    assert r.violation is not None and r.violation.kind == "use-after-free"


def test_call_rcu_waits_for_the_reader() -> None:
    r = check(free_after_call_rcu)
    assert r.verdict == "ok" and r.exhaustive and r.executions > 1


def test_synchronize_rcu_waits_for_the_reader() -> None:
    r = check(free_after_synchronize_rcu)
    assert r.verdict == "ok" and r.exhaustive


def test_an_irq_disabled_region_is_a_read_side_critical_section() -> None:
    r = check(free_after_call_rcu, irqs_off=True)
    assert r.verdict == "ok" and r.exhaustive


def test_the_ipi_waits_for_an_irq_disabled_reader() -> None:
    r = check(free_after_ipi, irqs_off=True)
    assert r.verdict == "ok" and r.exhaustive


def test_the_ipi_does_not_wait_for_an_rcu_reader() -> None:
    """Seed 002: tlb_remove_table_sync_one() is not a grace period."""
    r = check(free_after_ipi, irqs_off=False)
    assert r.violation is not None and r.violation.kind == "use-after-free"
    assert r.violation.thread == "reader"


class TwoCallbacks:
    """Two callbacks queued by one CPU: RCU does not order them (seed 000)."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    def build(self, ex: Execution) -> None:
        k = Kernel(ex, 1)
        a, b = Box(), Box()
        seen: list[str] = []
        self.seen = seen

        async def cb_a(h: rcu_head) -> None:
            seen.append("a")

        async def cb_b(h: rcu_head) -> None:
            seen.append("b")

        async def task() -> None:
            await call_rcu(a.head, cb_a)
            await call_rcu(b.head, cb_b)

        k.run_on(0, "task", task())

    def finish(self, ex: Execution) -> None:
        self.order.append("".join(self.seen))


def test_rcu_callbacks_run_in_either_order() -> None:
    orders: list[str] = []
    r = DPOR(lambda: TwoCallbacks(orders)).run()
    assert r.exhaustive
    assert set(orders) == {"ab", "ba"}


class DoubleQueue:
    def build(self, ex: Execution) -> None:
        k = Kernel(ex, 2)
        box = Box()

        async def cb(h: rcu_head) -> None:
            pass

        async def task() -> None:
            await call_rcu(box.head, cb)

        k.run_on(0, "a", task())
        k.run_on(1, "b", task())

    def finish(self, ex: Execution) -> None:
        pass


def test_queueing_a_queued_head_is_reported() -> None:
    r = DPOR(DoubleQueue).run()
    assert r.violation is not None and r.violation.kind == "double-call_rcu"
    assert "ODEBUG" in r.violation.report


class ListWhileQueued:
    """pt_list shares storage with pt_rcu_head (struct ptdesc): using it while the
    head is queued is caught (the s390 v6.6 constraint)."""

    def build(self, ex: Execution) -> None:
        from ptlab.kernel import Page

        k = Kernel(ex, 1)
        page = Page(0x42)

        async def cb(h: rcu_head) -> None:
            pass

        async def task() -> None:
            await call_rcu(page.pt_rcu_head, cb)
            await page.pt_list.store("mm->context.pgtable_list")

        k.run_on(0, "task", task())

    def finish(self, ex: Execution) -> None:
        pass


def test_pt_list_shares_storage_with_pt_rcu_head() -> None:
    r = DPOR(ListWhileQueued).run()
    assert r.violation is not None and r.violation.kind == "rcu-head-clobbered"
