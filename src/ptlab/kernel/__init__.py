"""The kernel primitives ptlab's page-table model is built on.

Named as in the kernel, so that model code reads like the code it models.  This
package knows nothing of exploration strategies.
"""

from .atomic import (
    atomic_add, atomic_add_return, atomic_dec, atomic_dec_and_test, atomic_fetch_add,
    atomic_fetch_or, atomic_inc, atomic_read, atomic_set, atomic_sub_and_test, atomic_sub_return,
    atomic_t, atomic_xchg,
)
from .cpu import (
    CPU, local_irq_restore, local_irq_save, preempt_disable, preempt_enable, rcu_read_lock,
    rcu_read_unlock, this_cpu,
)
from .kernel import Kernel, current_kernel
from .memory import Field, KObject
from .page_alloc import (
    GFP_KERNEL, GFP_NOWAIT, GFP_PGTABLE_USER, PG_active, PG_table, Page, PageActive,
    SetPageActive, TestClearPageActive, __free_page, __GFP_ACCOUNT, __GFP_NOWARN, alloc_pages,
    kfree, kmalloc, pgtable_pte_page_ctor, pgtable_pte_page_dtor,
)
from .rcu import call_rcu, rcu_barrier, rcu_head, synchronize_rcu
from .smp import smp_call_function
from .spinlock import spin_lock, spin_trylock, spin_unlock, spinlock_t

__all__ = [
    "CPU", "GFP_KERNEL", "GFP_NOWAIT", "GFP_PGTABLE_USER", "PG_active", "PG_table",
    "Field", "KObject", "Kernel", "Page", "PageActive", "SetPageActive", "TestClearPageActive",
    "__GFP_ACCOUNT", "__GFP_NOWARN", "__free_page", "alloc_pages", "atomic_add",
    "atomic_add_return", "atomic_dec", "atomic_dec_and_test", "atomic_fetch_add",
    "atomic_fetch_or", "atomic_inc", "atomic_read", "atomic_set", "atomic_sub_and_test",
    "atomic_sub_return", "atomic_t", "atomic_xchg", "call_rcu", "current_kernel", "kfree",
    "kmalloc", "local_irq_restore", "local_irq_save", "pgtable_pte_page_ctor",
    "pgtable_pte_page_dtor", "preempt_disable", "preempt_enable", "rcu_barrier", "rcu_head",
    "rcu_read_lock", "rcu_read_unlock", "smp_call_function", "spin_lock", "spin_trylock",
    "spin_unlock", "spinlock_t", "synchronize_rcu", "this_cpu",
]
