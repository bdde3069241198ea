"""The curated public namespaces (trio-style): a change here is a decision."""

from __future__ import annotations

import ptlab.engine
import ptlab.kernel

ENGINE = {
    "ACQUIRE", "ADD", "AWAIT", "BUILD", "CONSUME", "DONE", "DPOR", "HELD", "MODE", "PCT",
    "PEEK", "PROBE", "READ", "RELEASE",
    "SIGNAL", "TRY", "UPDATE", "WRITE", "Call", "Choose", "DynamicOp", "Execution",
    "ExecutionOutcome",
    "Footprint", "Guided", "Model", "ModelError", "ModelViolation", "Op", "RandomWalk",
    "Replay", "Result", "ScheduleError", "SetupCache", "Snapshot", "Stats", "Step", "Thread",
    "TraceStep", "Var", "Violation",
    "WaitUntil", "call", "context_switches", "current_stack", "current_thread", "decode",
    "done", "encode",
    "new_loc", "shrink",
}

KERNEL = {
    "CPU", "GFP_KERNEL", "GFP_NOWAIT", "GFP_PGTABLE_USER", "PG_active", "PG_table", "Field",
    "KObject", "Kernel", "Page", "PageActive", "SetPageActive", "TestClearPageActive",
    "__GFP_ACCOUNT", "__GFP_NOWARN", "__free_page", "alloc_pages", "atomic_add",
    "atomic_add_return", "atomic_dec", "atomic_dec_and_test", "atomic_fetch_add",
    "atomic_fetch_or", "atomic_inc", "atomic_read", "atomic_set", "atomic_sub_and_test",
    "atomic_sub_return", "atomic_t", "atomic_xchg", "call_rcu", "current_kernel", "kfree",
    "kmalloc", "need_resched", "local_irq_restore", "local_irq_save", "pgtable_pte_page_ctor",
    "pgtable_pte_page_dtor", "preempt_disable", "preempt_enable", "rcu_barrier", "rcu_head",
    "rcu_read_lock", "rcu_read_unlock", "smp_call_function", "spin_lock", "spin_trylock",
    "spin_unlock", "spinlock_t", "synchronize_rcu", "this_cpu",
}


def test_engine_namespace_is_pinned() -> None:
    assert set(ptlab.engine.__all__) == ENGINE
    assert all(hasattr(ptlab.engine, n) for n in ENGINE)


def test_kernel_namespace_is_pinned() -> None:
    assert set(ptlab.kernel.__all__) == KERNEL
    assert all(hasattr(ptlab.kernel, n) for n in KERNEL)


def test_the_engine_knows_nothing_of_the_kernel() -> None:
    import pathlib

    src = pathlib.Path(ptlab.engine.__file__).parent
    for f in src.glob("*.py"):
        text = f.read_text()
        assert "ptlab.kernel" not in text and "from .." not in text, f.name
