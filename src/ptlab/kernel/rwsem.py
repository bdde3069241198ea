"""``struct rw_semaphore`` (kernel/locking/rwsem.c), as ``mmap_lock`` uses it.

Readers share it, a writer excludes everyone.  The footprints let two readers
commute: taking it for read reads the writer slot and *adds* to the reader count
(ADD commutes with ADD); taking it for write reads the reader count and writes the
writer slot, so it is ordered against every reader.  What enables each blocking op
is in its footprint, as the explorer requires.  A sleeping lock: holding it does
not make the CPU an RCU reader.
"""

from __future__ import annotations

from typing import Any

from ..engine import ADD, READ, WRITE, Call, Op, WaitUntil, new_loc


class rw_semaphore:
    __slots__ = ("name", "readers", "readers_loc", "writer", "writer_loc")

    def __init__(self, name: str) -> None:
        self.name = name
        self.readers = 0
        self.writer: Any = None
        self.readers_loc = new_loc()
        self.writer_loc = new_loc()

    def _free_for_read(self) -> bool:
        return self.writer is None

    def _free_for_write(self) -> bool:
        return self.writer is None and self.readers == 0

    def _get_read(self) -> None:
        self.readers += 1

    def _put_read(self) -> None:
        self.readers -= 1

    def _get_write(self) -> None:
        self.writer = True

    def _put_write(self) -> None:
        self.writer = None

    def _downgrade(self) -> None:
        self.writer = None
        self.readers += 1


def down_read(sem: rw_semaphore) -> Op:
    return WaitUntil(((sem.writer_loc, READ), (sem.readers_loc, ADD)),
                     "down_read(" + sem.name + ")", sem._free_for_read, sem._get_read)


def up_read(sem: rw_semaphore) -> Op:
    return Call(((sem.readers_loc, ADD),), "up_read({0.name})", rw_semaphore._put_read, sem)


def down_write(sem: rw_semaphore) -> Op:
    return WaitUntil(((sem.readers_loc, READ), (sem.writer_loc, WRITE)),
                     "down_write(" + sem.name + ")", sem._free_for_write, sem._get_write)


def up_write(sem: rw_semaphore) -> Op:
    return Call(((sem.writer_loc, WRITE),), "up_write({0.name})", rw_semaphore._put_write, sem)


def downgrade_write(sem: rw_semaphore) -> Op:
    """Become a reader without letting a writer in between."""
    return Call(((sem.writer_loc, WRITE), (sem.readers_loc, ADD)), "downgrade_write({0.name})",
                rw_semaphore._downgrade, sem)
