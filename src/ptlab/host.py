"""The workload on this machine's kernel: the host side of ``ptlab validate``.

:func:`run_on_host` runs a workload in a child process (``python -m ptlab.host``),
so that a crash, a refused ``mmap`` or a hang never takes the caller down; the
child reports one JSON line per step as it goes, so a crash names its step.

The child is the workload's ``parent`` process.  A ``fork`` step forks a worker
that serves its own steps over one of the pipe pairs the child made at start (every
descendant inherits them).  For every step the acting process reports ``VmPTE``
right before and right after its system calls: the interpreter's own page tables
change only when it maps memory, which it does not do in between, so the
difference is the workload's alone.  A forked child reports the page tables it
got for the regions, measured in a throw-away fork of itself that unmaps the
windows (a fork copies exactly the tables its parent's fork copied).  After each
step the acting process also reads, from ``/proc/self/smaps``, how much of the
step's region is mapped by huge PMDs: whether a huge page could be allocated is
the host's business, and the model is told.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

PUD_SPAN = 1 << 39             # what one x86-64 PUD table maps: a window of its own
MAX_PROCS = 8                  # processes a workload may have at once (pipe pairs)

PROT_READ, PROT_WRITE = 0x1, 0x2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE, MREMAP_FIXED = 0x1, 0x2
MADV_DONTNEED, MADV_HUGEPAGE, MADV_COLLAPSE = 4, 14, 25
PR_SET_PDEATHSIG = 1


class HostError(Exception):
    """The host could not run the workload (no VmPTE, a crash, a timeout)."""


@dataclass
class HostStep:
    """What the host did for one step: ``errno`` is "" on success."""

    errno: str
    before: int                  # VmPTE (KiB) of the acting process before the calls
    after: int
    huge_kib: int | None = None  # region mapped by huge PMDs (AnonHugePages + *PmdMapped)
    child_kib: int | None = None  # fork: the new child's page tables for the regions
    khugepaged: int = 0          # khugepaged's pages_collapsed after the step

    @property
    def delta(self) -> int:
        return self.after - self.before


@dataclass
class HostRun:
    steps: list[HostStep] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)   # mappings in the windows
    khugepaged_before: int = 0   # khugepaged's pages_collapsed before the first step


def host_supported() -> str | None:
    """None if this host reports VmPTE, else why not."""
    if not sys.platform.startswith("linux"):
        return f"ptlab validate needs Linux (this is {sys.platform})"
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            if not any(line.startswith("VmPTE:") for line in f):
                return "/proc/self/status has no VmPTE line"
    except OSError as e:
        return f"cannot read /proc/self/status: {e.strerror}"
    return None


def run_on_host(workload: dict[str, Any], timeout: float = 60.0) -> HostRun:
    """Run ``workload`` (``{"regions": [...], "steps": [...]}`` as made by
    ``ptlab.validate``) in a child process."""
    # NOTE: a session of its own, so that whatever is left of it (a worker
    # whose driver crashed) can be killed as one group.
    proc = subprocess.Popen([sys.executable, "-m", "ptlab.host"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(json.dumps(workload), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise HostError(f"the host run took longer than {timeout:.0f} s") from None
    _kill_group(proc)
    run = HostRun()
    done = False
    for line in stdout.splitlines():
        msg = json.loads(line)
        if "khugepaged_before" in msg:
            run.khugepaged_before = msg["khugepaged_before"]
        elif "conflicts" in msg:
            run.conflicts = msg["conflicts"]
        elif "error" in msg:
            raise HostError(msg["error"])
        elif "step" in msg:
            run.steps.append(HostStep(msg["errno"], msg["before"], msg["after"],
                                      msg.get("huge"), msg.get("child"),
                                      msg.get("khugepaged", 0)))
        elif msg.get("done"):
            done = True
    if not done and not run.conflicts:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else \
            f"exit status {proc.returncode}"
        tail = stderr.strip().splitlines()[-1:] or [""]
        raise HostError(f"the host process died ({how}) at step {len(run.steps)}"
                        + (f": {tail[0]}" if tail[0] else ""))
    return run


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


# -- the child ----------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_vp, _sz, _int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
# NOTE: restype c_void_p: the default c_int would truncate a 16 TiB address.
_libc.mmap.restype = _vp
_libc.mmap.argtypes = (_vp, _sz, _int, _int, _int, ctypes.c_long)
_libc.munmap.argtypes = (_vp, _sz)
_libc.mprotect.argtypes = (_vp, _sz, _int)
_libc.madvise.argtypes = (_vp, _sz, _int)
_libc.mremap.restype = _vp
_libc.mremap.argtypes = (_vp, _sz, _sz, _int, _vp)
_MAP_FAILED = ctypes.c_void_p(-1).value


class _Died(Exception):
    def __init__(self, status: int) -> None:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        super().__init__(f"signal {signal.Signals(sig).name}" if sig else
                         f"exit status {os.WEXITSTATUS(status)}")


class _Failed(Exception):
    def __init__(self, err: int) -> None:
        super().__init__(errno.errorcode.get(err, str(err)))
        self.name = errno.errorcode.get(err, str(err))


def _check(ret: int | None) -> None:
    if ret is None or ret == -1 or ret == _MAP_FAILED:
        raise _Failed(ctypes.get_errno())


_VMPTE = re.compile(rb"^VmPTE:\s+(\d+) kB", re.M)
_COLLAPSED = "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_collapsed"


def khugepaged_collapsed() -> int:
    """How many huge pages khugepaged has made since boot (0 if it cannot say)."""
    try:
        with open(_COLLAPSED, encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def vmpte() -> int:
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        m = _VMPTE.search(os.read(fd, 4096))       # small: no new heap for the buffer
    finally:
        os.close(fd)
    assert m is not None
    return int(m.group(1))


def _huge_kib(lo: int, hi: int) -> int:
    """AnonHugePages + ShmemPmdMapped + FilePmdMapped of the VMAs in [lo, hi)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="ascii") as f:
        for line in f:
            head = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
            if head:
                inside = int(head.group(1), 16) < hi and int(head.group(2), 16) > lo
            elif inside and line.startswith(("AnonHugePages:", "ShmemPmdMapped:",
                                             "FilePmdMapped:")):
                total += int(line.split()[1])
    return total


def _windows(regions: list[dict[str, Any]]) -> list[tuple[int, int]]:
    wins = sorted({r["start"] & ~(PUD_SPAN - 1) for r in regions} |
                  {(r["start"] + r["size"] - 1) & ~(PUD_SPAN - 1) for r in regions})
    return [(w, w + PUD_SPAN) for w in wins]


def _conflicts(wins: list[tuple[int, int]]) -> list[str]:
    out = []
    with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
        for line in f:
            a, b = (int(x, 16) for x in line.split(" ", 1)[0].split("-"))
            if any(a < hi and b > lo for lo, hi in wins):
                out.append(line.strip())
    return out


class _Proc:
    """One process of the workload, executing its own steps."""

    def __init__(self, regions: dict[str, dict[str, Any]], fds: dict[str, int],
                 wins: list[tuple[int, int]]) -> None:
        self.regions, self.fds, self.wins = regions, fds, wins

    def do(self, s: dict[str, Any]) -> dict[str, Any]:
        """Run one step; the reply the driver prints."""
        reply: dict[str, Any] = {"step": True, "errno": ""}
        reg = self.regions.get(s.get("region", ""), {})
        addr = reg.get("start", 0) + s.get("offset", 0)
        length = s.get("length", 0)
        reply["before"] = vmpte()
        try:
            self._call(s, reg, addr, length)
        except _Failed as e:
            reply["errno"] = e.name
        reply["after"] = vmpte()
        if reg:
            where = self.regions[s["to"]] if s["op"] == "mremap" else reg
            reply["huge"] = _huge_kib(where["start"], where["start"] + where["size"])
        return reply

    def _call(self, s: dict[str, Any], reg: dict[str, Any], addr: int, length: int) -> None:
        op = s["op"]
        ctypes.set_errno(0)
        if op == "map":
            flags = MAP_FIXED_NOREPLACE | (MAP_SHARED if reg["shared"] else MAP_PRIVATE)
            fd = -1 if reg["anon"] else self.fds[reg["name"]]
            ret = _libc.mmap(reg["start"], reg["size"], PROT_READ | PROT_WRITE,
                             flags | (MAP_ANONYMOUS if reg["anon"] else 0), fd, 0)
            _check(ret)
            if ret != reg["start"]:          # before 4.17 the flag was only a hint
                _libc.munmap(ret, reg["size"])
                raise _Failed(errno.EEXIST)
            if reg["thp"]:
                _check(_libc.madvise(reg["start"], reg["size"], MADV_HUGEPAGE))
        elif op == "touch":
            end, stride = addr + length, s["stride"]
            if s.get("access", "write") == "write":
                while addr < end:
                    ctypes.memset(addr, 0x5A, 1)
                    addr += stride
            else:
                while addr < end:
                    ctypes.string_at(addr, 1)
                    addr += stride
        elif op == "madvise":
            _check(_libc.madvise(addr, length, MADV_DONTNEED))
        elif op == "collapse":
            _check(_libc.madvise(addr, length, MADV_COLLAPSE))
        elif op == "mprotect":
            prot = PROT_READ | (PROT_WRITE if s["prot"] == "rw" else 0)
            _check(_libc.mprotect(addr, length, prot))
        elif op == "mremap":
            to = self.regions[s["to"]]
            _check(_libc.mremap(reg["start"], reg["size"], to["size"],
                                MREMAP_MAYMOVE | MREMAP_FIXED, to["start"]))
        elif op == "unmap":
            _check(_libc.munmap(addr, length))
        elif op == "exit":                   # the parent: exit_mmap() of the windows
            for lo, hi in self.wins:
                _check(_libc.munmap(lo, hi - lo))

    def region_tables(self) -> int:
        """This process's page tables for the windows, measured in a fork of it."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                         # pragma: no cover
            os.close(r)
            before = vmpte()
            for lo, hi in self.wins:
                _libc.munmap(lo, hi - lo)
            os.write(w, str(before - vmpte()).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return int(data or b"-1")


def _send(fd: int, obj: Any) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _recv(fd: int, pid: int = 0) -> Any:
    """One reply; with ``pid`` (a worker this process forked), fail if it dies
    first: every process holds every pipe, so its death is no end of file."""
    buf = b""
    while not buf.endswith(b"\n"):
        if pid:
            while not select.select([fd], [], [], 0.05)[0]:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    raise _Died(status)
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise EOFError
        buf += chunk
    return json.loads(buf)


def _serve(proc: _Proc, cmd_r: int, rep_w: int, pairs: list[tuple[int, int, int, int]]) -> None:
    """A forked worker: run the steps sent to it until its ``exit``."""
    while True:                                              # pragma: no cover
        try:
            s = _recv(cmd_r)
        except EOFError:
            os._exit(0)
        if s["op"] == "exit":
            _send(rep_w, {"step": True, "errno": "", "before": 0, "after": 0})
            os._exit(0)
        if s["op"] == "measure":
            _send(rep_w, {"tables": proc.region_tables()})
        else:
            _send(rep_w, _fork(proc, s, pairs) if s["op"] == "fork" else proc.do(s))


def _fork(proc: _Proc, s: dict[str, Any], pairs: list[tuple[int, int, int, int]]) -> Any:
    """Fork the acting process; the child serves pipe pair ``s["slot"]``."""
    cmd_r, _, _, rep_w = pairs[s["slot"]]
    before = vmpte()
    pid = os.fork()
    if pid == 0:                                             # pragma: no cover
        # Die with the process that forked us: every process holds every pipe,
        # so nothing else would tell a worker that its driver is gone.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _serve(proc, cmd_r, rep_w, pairs)
    after = vmpte()
    return {"step": True, "errno": "", "before": before, "after": after, "pid": pid}


def main() -> int:
    """``python -m ptlab.host``: the workload (JSON) on stdin, a JSON line per step
    on stdout."""
    why = host_supported()
    if why is not None:
        print(json.dumps({"error": why}), flush=True)
        return 3
    wl = json.load(sys.stdin)
    regions = {r["name"]: r for r in wl["regions"]}
    wins = _windows(wl["regions"])
    taken = _conflicts(wins)
    if taken:
        print(json.dumps({"conflicts": taken}), flush=True)
        return 0
    fds = {}
    for r in wl["regions"]:
        if not r["anon"]:
            fds[r["name"]] = os.memfd_create("ptlab-" + r["name"])
            os.ftruncate(fds[r["name"]], r["size"])
    pairs = []
    for _ in range(MAX_PROCS):
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pairs.append((cmd_r, cmd_w, rep_r, rep_w))
    print(json.dumps({"khugepaged_before": khugepaged_collapsed()}), flush=True)
    me = _Proc(regions, fds, wins)
    procs: dict[str, int] = {"parent": -1}       # name -> pipe slot (-1: this process)
    pids: dict[int, int] = {}                    # slot -> pid, for workers forked here
    try:
        _drive(me, wl["steps"], pairs, procs, pids)
    finally:
        for slot in procs.values():              # nobody may outlive the run
            if slot >= 0:
                _send(pairs[slot][1], {"op": "exit"})
        for pid in pids.values():
            os.waitpid(pid, 0)
    return 0


def _drive(me: _Proc, steps: list[dict[str, Any]], pairs: list[tuple[int, int, int, int]],
           procs: dict[str, int], pids: dict[int, int]) -> None:
    free = list(range(MAX_PROCS))
    for n, s in enumerate(steps):
        name = s.get("mm", "parent")
        slot = procs[name]
        if s["op"] == "fork":
            if not free:
                print(json.dumps({"error": f"step {n}: more than {MAX_PROCS} processes"}))
                return
            s = dict(s, slot=free.pop(0))
        try:
            if slot < 0:
                reply = _fork(me, s, pairs) if s["op"] == "fork" else me.do(s)
            else:
                _send(pairs[slot][1], s)
                reply = _recv(pairs[slot][2], pids.get(slot, 0))
            if s["op"] == "fork":
                child = s["slot"]
                procs[s.get("child", "child")] = child
                if slot < 0:
                    pids[child] = reply["pid"]
                _send(pairs[child][1], {"op": "measure"})
                reply["child"] = _recv(pairs[child][2], pids.get(child, 0))["tables"]
            elif s["op"] == "exit" and slot >= 0:
                if slot in pids:
                    os.waitpid(pids.pop(slot), 0)
                free.append(procs.pop(name))
        except _Died as e:
            pids.pop(slot, None)
            procs.pop(name, None)
            print(json.dumps({"error": f"step {n}: process {name!r} died ({e})"}), flush=True)
            return
        reply["khugepaged"] = khugepaged_collapsed()
        print(json.dumps(reply), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
