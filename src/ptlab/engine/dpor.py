"""Exhaustive exploration: optimal dynamic partial-order reduction.

This is Optimal-DPOR (Abdulla, Aronis, Jonsson, Sagonas, POPL 2014 / JACM 2017)
with wakeup trees and sleep sets, for a stateless model checker: every execution
is re-run from the start, following the scheduling decisions stored on a stack of
nodes (one per step).  After each execution its races are reversed by inserting
wakeup sequences into the nodes where they start; a sequence is dropped when a
thread asleep at that node is one of its weak initials, since an equivalent
execution was already explored.  Completed executions are then one per
Mazurkiewicz trace.

Happens-before is kept as bitsets over event indices (a Python int per event), so
joining two clocks is one ``|`` and "does i happen before k" is one shift.  The
happens-before and the races of the prefix a new execution shares with the last
one are kept; every race is reversed again, since its wakeup sequence (notdep,
which runs to the end of the execution) changes with the new suffix.

What the paper does not cover, and how it is handled here:

* Blocking ops.  Lock hand-offs (release then acquire) order without being races;
  handshakes (SIGNAL then AWAIT/CONSUME) order and carry happens-before; a wait
  on data races with every earlier write, not only the last one; a thread blocked
  at the end races as if its op ran last.  A wakeup sequence ends with the one op
  that may turn out not to be enabled; such a *tentative* node hands the
  sequences it absorbed back to its parent when it cannot run.
* Choices (an allocation that may fail, which callback runs): a choice races with
  its own alternatives, in the context of everything that does not depend on it.
* State-dependent footprints (a trylock): the op moved by a reversal is given its
  widest footprint (``fp_bound``).

The brute-force tests (tests/engine) check all of this against every
interleaving of random programs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .execution import (
    CHOICE_SHIFT,
    THREAD_MASK,
    Execution,
    Model,
    Prefix,
    exploring,
)
from .ops import (
    ACQUIRE,
    AWAIT,
    CONFLICT,
    CONSUME,
    DEPENDENT,
    READ,
    TRY,
    UPDATE,
    WRITE,
    Footprint,
)
from .result import Result, Stats

# An event as the wakeup trees and sleep sets hold it.
Ev = tuple[int, int, Footprint]  # (label, thread, footprint)

# _CONFLICT_TO[later][earlier], the column of CONFLICT the race scan reads.
_CONFLICT_TO = tuple(tuple(CONFLICT[a][b] for a in range(len(CONFLICT)))
                     for b in range(len(CONFLICT)))

# Kinds every earlier access to a location happens before.  SIGNAL is not one:
# an AWAIT must see each of them.
_COVERS = (WRITE, UPDATE, ACQUIRE, TRY, CONSUME)


def dependent(ta: int, fa: Footprint, tb: int, fb: Footprint) -> bool:
    if ta == tb:
        return True
    for la, ka in fa:
        for lb, kb in fb:
            if la == lb and DEPENDENT[ka][kb]:
                return True
    return False


class WNode:
    """A wakeup-tree node: an event and the subtrees that follow it.

    A *tentative* node ends an inserted sequence with a blocking op that may turn
    out not to be enabled there (the event it was reversed with may be what enabled
    it).  Every other event of an inserted sequence is feasible: what enabled it is
    in its footprint, so it happens before it and was kept.  When a tentative node
    cannot run, the sequences it took in are inserted again without it.
    """

    __slots__ = ("children", "fp", "label", "tentative", "thread")

    def __init__(self, label: int, thread: int, fp: Footprint, tentative: bool = False) -> None:
        self.label = label
        self.thread = thread
        self.fp = fp
        self.children: list[WNode] = []
        self.tentative = tentative


class Node:
    """The exploration state after a prefix of the current execution."""

    __slots__ = (
        "cur",
        "cur_fp",
        "cur_pre",
        "cur_sub",
        "cur_thread",
        "enabled",
        "free_leaf",
        "preempts",
        "prev",
        "sleep",
        "wut",
    )

    def __init__(self, sleep: list[Ev], wut: list[WNode], preempts: int, prev: int,
                 enabled: list[int]) -> None:
        self.enabled = enabled
        self.sleep = sleep
        self.wut = wut
        self.cur = -1
        self.cur_thread = -1
        self.cur_fp: Footprint = ()
        self.cur_sub: list[WNode] = []
        self.cur_pre = 0
        self.free_leaf: WNode | None = None
        self.preempts = preempts
        self.prev = prev


def _weak_initial(th: int, label: int, fp: Footprint, v: list[Ev]) -> int:
    """Is (label, fp) a weak initial of v?  -1: no; -2: yes, thread absent from v;
    k >= 0: yes, it is v[k]."""
    for k, (lb, tb, fb) in enumerate(v):
        if tb == th:
            if lb != label:
                return -1
            for m in range(k):
                _, tm, fm = v[m]
                if dependent(tm, fm, tb, fb):
                    return -1
            return k
    for _, tb, fb in v:
        if dependent(th, fp, tb, fb):
            return -1
    return -2


def _insert(children: list[WNode], v: list[Ev], tentative: bool) -> bool:
    """insert_[E](v, wut): add v unless some leaf already covers it."""
    while True:
        for ch in children:
            k = _weak_initial(ch.thread, ch.label, ch.fp, v)
            if k == -1:
                continue
            if k >= 0:
                v = v[:k] + v[k + 1:]
            if not v:
                return False
            if not ch.children:
                if not (ch.tentative and k == -2):
                    return False
                # A tentative leaf covers v only if it runs: keep v beneath it, to
                # be inserted again should it not.
            children = ch.children
            break
        else:
            node = None
            last = len(v) - 1
            for n, (label, th, fp) in enumerate(v):
                w = WNode(label, th, fp, tentative and n == last)
                if node is None:
                    children.append(w)
                else:
                    node.children.append(w)
                node = w
            return True


class DPOR:
    """Explore every Mazurkiewicz trace of ``model`` (within the bounds given)."""

    def __init__(self, make_model: Callable[[], Model], *, preemption_bound: int | None = None,
                 max_executions: int | None = None, max_steps: int = 10_000,
                 stop_on_violation: bool = True) -> None:
        self.make_model = make_model
        self.preemption_bound = preemption_bound
        self.max_executions = max_executions
        self.max_steps = max_steps
        self.stop_on_violation = stop_on_violation
        self.stats = Stats()
        self.stack: list[Node] = []
        self.branch = -1
        self.bound_hit: str | None = None
        # Happens-before state of the current execution, kept across executions
        # for the shared prefix.
        self._hb: list[int] = []
        self._hist: dict[int, list[int]] = {}
        self._undo: list[tuple[int, ...]] = []
        self._ev_races: list[tuple[int, ...]] = []
        self._evs: list[Ev] = []
        self.on_execution: Callable[[Execution], None] | None = None

    # -- choosing ------------------------------------------------------------
    def pick(self, ex: Execution, enabled: list[int]) -> int:
        d = len(ex.ev_thread)
        stack = self.stack
        if d == self.branch:
            return self._take_wut(ex, stack[d], enabled, at_branch=True)
        if d > 0:
            parent = stack[d - 1]
            # The footprint the parent's step ran with (_analyse records it on the node).
            pt, pf = parent.cur_thread, ex.ev_fp[d - 1]
            sleep = [q for q in parent.sleep if not dependent(q[1], q[2], pt, pf)]
            wut = parent.cur_sub
            prev = pt
            preempts = parent.preempts + parent.cur_pre
        else:
            sleep, wut, prev, preempts = [], [], -1, 0
        node = Node(sleep, wut, preempts, prev, enabled)
        stack.append(node)
        if wut:
            label = self._take_wut(ex, node, enabled, at_branch=False)
            if label >= 0:
                return label
        return self._free_choice(ex, node, enabled)

    def _is_preemption(self, node: Node, thread: int, enabled: list[int]) -> bool:
        return node.prev >= 0 and thread != node.prev and node.prev in enabled

    def _take_wut(self, ex: Execution, node: Node, enabled: list[int], at_branch: bool) -> int:
        bound = self.preemption_bound
        while node.wut:
            ch = node.wut[0]
            th = ch.thread
            ok = th in enabled
            if ok:
                op = ex.threads[th].pending
                assert op is not None
                if (ch.label >> CHOICE_SHIFT) >= (op.nchoices() if op.choice else 1):
                    ok = False
            if not ok:
                node.wut.pop(0)
                self.stats.infeasible += 1
                for path in _paths(ch.children):
                    self._reinsert(node, path)
                continue
            if bound is not None and node.preempts + self._is_preemption(node, th, enabled) > bound:
                node.wut.pop(0)
                self.stats.pruned += 1
                self.bound_hit = "preemptions"
                continue
            return self._commit(node, ch.label, ch.children, enabled)
        return -1

    def _free_choice(self, ex: Execution, node: Node, enabled: list[int]) -> int:
        if node.sleep:
            asleep = [q[0] for q in node.sleep]
            cands = [t for t in enabled if t not in asleep]
        else:
            cands = enabled
        if not cands:
            self.stats.sleep_blocked += 1
            return -1
        t = node.prev if node.prev in cands else cands[0]
        if self.preemption_bound is not None and \
                node.preempts + self._is_preemption(node, t, enabled) > self.preemption_bound:
            self.stats.pruned += 1
            self.bound_hit = "preemptions"
            return -1
        # Its footprint is filled in once the step has run (_analyse).
        node.free_leaf = WNode(t, t, ())
        node.wut = [node.free_leaf]
        return self._commit(node, t, [], enabled)

    def _commit(self, node: Node, label: int, sub: list[WNode], enabled: list[int]) -> int:
        """Take ``label`` at ``node``.  ``node.cur_fp`` is set from the executed step
        by _analyse: a state-dependent footprint is computed once per step, by the
        execution."""
        th = label & THREAD_MASK
        node.cur_pre = int(self._is_preemption(node, th, enabled))
        node.cur = label
        node.cur_thread = th
        node.cur_sub = sub
        return label

    # -- race analysis ---------------------------------------------------------
    def _analyse(self, ex: Execution, first_new: int) -> None:
        hb, hist, undo, ev_races = self._hb, self._hist, self._undo, self._ev_races
        # Forget the part of the previous execution this one did not share.
        while len(hb) > first_new:
            hb.pop()
            ev_races.pop()
            for loc in undo.pop():
                hist[loc].pop()
        ev_thread, ev_fp, ev_label = ex.ev_thread, ex.ev_fp, ex.ev_label
        n = len(ev_thread)
        nthreads = len(ex.threads)
        thr_hb = [0] * nthreads
        # Rebuild the per-thread clocks of the shared prefix (cheap: one pass).
        for j in range(min(first_new, n)):
            thr_hb[ev_thread[j]] = hb[j]
        # The footprints the new steps ran with (a free choice's leaf too).
        stack = self.stack
        for j in range(first_new, min(n, len(stack))):
            node = stack[j]
            node.cur_fp = ev_fp[j]
            if node.free_leaf is not None:
                node.free_leaf.fp = ev_fp[j]
                node.free_leaf = None
        ev_op = ex.ev_op
        # NOTE: the (label, thread, footprint) triples every reversal copies from.
        self._evs = list(zip(ev_label, ev_thread, ev_fp, strict=True))
        for j in range(first_new, n):
            tj = ev_thread[j]
            races: list[tuple[int, int]] = []
            hbj, extra = self._races(j, tj, ev_fp[j], thr_hb[tj], races,
                                     ev_op[j].blocking and _waits(ev_fp[j]))
            ev_races.append(tuple(i for i, _ in races))
            hbj |= extra | (1 << j)
            hb.append(hbj)
            thr_hb[tj] = hbj
            locs = []
            for loc, kind in ev_fp[j]:
                lst = hist.get(loc)
                if lst is None:
                    lst = hist[loc] = []
                lst.append(j << 4 | kind)
                locs.append(loc)
            undo.append(tuple(locs))
        # Every race of the execution is reversed, the shared prefix's too: the
        # sequence that reverses it (notdep) runs to the end of this execution, so it
        # differs from the one built for the previous execution.  Finding the races
        # of the prefix again is not needed; they are kept per event.
        for j in range(n):
            if ev_races[j]:
                op = ev_op[j]
                fpb = op.fp_bound
                for i in ev_races[j]:
                    # The racing step moves before i, where its footprint may differ.
                    self._reverse(ex, i, j, ev_label[j], ev_thread[j], fpb, op.blocking)
        # A thread blocked at the end may be enabled in a reordering: race its
        # pending op as if it ran last.
        for t in ex.threads:
            pend = t.pending
            if pend is None or ex.aborted:
                continue
            pr: list[tuple[int, int]] = []
            self._races(n, t.idx, pend.fp, thr_hb[t.idx], pr, _waits(pend.fp))
            for i, _ in pr:
                self._reverse(ex, i, n, t.idx, t.idx, pend.fp_bound, True)
        # Alternatives of choice steps: the choice races with itself, so, as for any
        # race, the alternative follows everything that does not depend on the choice
        # (checked against the sleep set in that context, not alone).
        for j in range(n):
            nc = ex.ev_nchoices[j]
            if nc > 1:
                tj = ev_thread[j]
                bit = 1 << j
                rest = [(ev_label[k], ev_thread[k], ev_fp[k]) for k in range(j + 1, n)
                        if not hb[k] & bit]
                for k in range(nc):
                    lab = tj | (k << CHOICE_SHIFT)
                    if lab != ev_label[j]:
                        self._try_insert(j, [*rest, (lab, tj, ev_fp[j])], ev_op[j].blocking)

    def _races(self, j: int, tj: int, fp: Footprint, base: int,
               races: list[tuple[int, int]], waits: bool = False) -> tuple[int, int]:
        """Direct races of event j, and its happens-before.

        A blocking wait also races with every earlier write its thread does not
        already depend on: the state that enabled it may lie further back than the
        last write (x = 1; x = 0; x = 2 against wait(x != 0))."""
        hb, hist, ev_thread = self._hb, self._hist, self._ev_thread
        c = base
        extra = 0
        for loc, kj in fp:
            lst = hist.get(loc)
            if not lst:
                continue
            row = _CONFLICT_TO[kj]
            for idx in range(len(lst) - 1, -1, -1):
                packed = lst[idx]
                i = packed >> 4
                ki = packed & 15
                rel = row[ki]
                if not rel:
                    continue
                if ev_thread[i] != tj:
                    if rel == 1:
                        if not (c >> i) & 1 or (waits and not (base >> i) & 1):
                            races.append((i, j))
                        c |= hb[i]
                    elif rel == 2:
                        extra |= hb[i]
                    else:
                        c |= hb[i]
                if ki in _COVERS and not waits:
                    break
        return c, extra

    def _reverse(self, ex: Execution, i: int, j: int, label: int, tj: int, fpj: Footprint,
                 blocking: bool) -> None:
        hb, evs = self._hb, self._evs
        bit = 1 << i
        jbit = 1 << j
        # notdep(e, E): every later event that does not happen after e, even those
        # after e' (Optimal-DPOR's definition; cutting it at e' would let a sleeping
        # thread that conflicts only with those later events veto the insertion).
        v: list[Ev] = [evs[k] for k in range(i + 1, len(hb))
                       if not hb[k] & bit and not (k >= j and hb[k] & jbit)]
        v.append((label, tj, fpj))
        self._try_insert(i, v, blocking)

    def _reinsert(self, node: Node, v: list[Ev]) -> None:
        for lb, tb, fb in node.sleep:
            if _weak_initial(tb, lb, fb, v) != -1:
                return
        _insert(node.wut, v, True)

    def _try_insert(self, i: int, v: list[Ev], blocking: bool) -> None:
        node = self.stack[i]
        if blocking and _known_infeasible(node, v):
            self.stats.infeasible += 1
            return
        for lb, tb, fb in node.sleep:
            if _weak_initial(tb, lb, fb, v) != -1:
                return
        _insert(node.wut, v, blocking)

    # -- the loop ----------------------------------------------------------------
    def _backtrack(self) -> bool:
        stack = self.stack
        while stack:
            node = stack[-1]
            if node.cur >= 0:
                cur = node.cur
                node.wut = [w for w in node.wut if w.label != cur]
                node.sleep.append((cur, node.cur_thread, node.cur_fp))
                node.cur = -1
            if node.wut:
                self.branch = len(stack) - 1
                return True
            stack.pop()
        return False

    def run(self) -> Result:
        with exploring():
            return self._run()

    def _run(self) -> Result:
        t0 = time.perf_counter()
        stats = self.stats
        violation = None
        schedule: list[int] | None = None
        reached: dict[str, None] = {}
        first_new = 0
        prefix: Prefix | None = None
        while True:
            ex = Execution(self.make_model(), max_steps=self.max_steps)
            self._ev_thread = ex.ev_thread
            self._ev_fp = ex.ev_fp
            out = ex.run(self, prefix)
            stats.steps += len(ex.ev_thread)
            for r in out.reached:
                reached[r] = None
            if out.aborted:
                pass
            else:
                stats.executions += 1
            if self.on_execution is not None:
                self.on_execution(ex)
            if out.violation is not None:
                stats.violations += 1
                if violation is None:
                    violation = out.violation
                    schedule = list(ex.ev_label)
                if self.stop_on_violation:
                    break
            self._analyse(ex, first_new)
            if not self._backtrack():
                break
            first_new = self.branch
            prefix = Prefix(ex, first_new)
            if self.max_executions is not None and stats.executions >= self.max_executions:
                self.bound_hit = self.bound_hit or "executions"
                break
        stats.seconds = time.perf_counter() - t0
        # Exhaustive: the whole tree was explored (possible with stop_on_violation off).
        exhaustive = self.bound_hit is None and (violation is None or not self.stop_on_violation)
        return Result("dpor", "violation" if violation else "ok", exhaustive, self.bound_hit,
                      stats, violation, schedule, None, list(reached))


def _paths(children: list[WNode]) -> list[list[Ev]]:
    """Every root-to-leaf sequence of a wakeup (sub)tree."""
    out: list[list[Ev]] = []
    for ch in children:
        ev = (ch.label, ch.thread, ch.fp)
        if ch.children:
            out.extend([ev, *rest] for rest in _paths(ch.children))
        else:
            out.append([ev])
    return out


_WAIT_KINDS = (READ, AWAIT, CONSUME)


def _waits(fp: Footprint) -> bool:
    """A blocking op waiting on a condition over data (not a lock acquire)."""
    return any(k in _WAIT_KINDS for _, k in fp)


def _known_infeasible(node: Node, v: list[Ev]) -> bool:
    """The last event of v blocks at node, and nothing before it in v could unblock
    it (what enables an op is in its footprint): v cannot be followed."""
    _, tb, fb = v[-1]
    if tb in node.enabled:
        return False
    return not any(dependent(t, f, tb, fb) for _, t, f in v[:-1])


