"""Kernel calls that can block forever, run in forked children waited for with a bound.

Hazards this module exists for:
- ``statvfs`` or ``open`` on a dead NFS server or a stuck FUSE daemon blocks in the kernel
  (state D). A thread blocked there can never be interrupted and keeps the interpreter from
  exiting; a child process blocked there cannot be killed until the call returns.
- So each call runs in a forked child that reports over a pipe. The parent waits with a
  deadline, then SIGKILLs and abandons what has not answered (it is reaped if it ever wakes).
- The parent is multi-threaded: after ``fork`` the child only calls ``os`` functions and
  formats plain strings, never takes a lock another thread might hold, and leaves by
  ``os._exit``.
- A child stuck in the kernel outlives us and keeps every descriptor it inherited: were
  stdout among them, whoever reads our output through a pipe would wait for EOF forever.
  So the child drops every descriptor but its answer pipe first.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable

_MAX_FD = os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536


#: How long killed children get to leave before they are abandoned: a wait on FUSE or NFS is
#: killable and ends at once; a truly uninterruptible one does not.
_REAP_GRACE_S = 0.2


def _reap_abandoned(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    left = set(pids)
    end = time.monotonic() + _REAP_GRACE_S
    while left:
        for pid in list(left):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if not left or time.monotonic() > end:
            break
        time.sleep(0.01)


def run_isolated(
    calls: list[Callable[[], str]], deadline_s: float
) -> list[str | None]:
    """Run each call in its own forked child, all at once, and collect their one-line answers.

    Each call returns a short ASCII string (no newline). Returns, in order, the answer of
    each call or None when it did not answer within ``deadline_s`` (hung, or died).
    """
    end = time.monotonic() + deadline_s
    children: dict[int, tuple[int, int]] = {}  # read fd -> (index, pid)
    answers: list[str | None] = [None] * len(calls)
    buffers: dict[int, bytes] = {}
    devnull = os.open(os.devnull, os.O_RDWR)
    for index, call in enumerate(calls):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                for std in (0, 1, 2):
                    os.dup2(devnull, std)
                os.closerange(3, wfd)
                os.closerange(wfd + 1, _MAX_FD)
                try:
                    text = call()
                except BaseException as exc:  # noqa: BLE001 - the child reports, never raises
                    text = f"crash {type(exc).__name__}"
                os.write(wfd, text.encode("ascii", "replace") + b"\n")
            finally:
                os._exit(0)
        os.close(wfd)
        children[rfd] = (index, pid)
        buffers[rfd] = b""
    os.close(devnull)
    pending = dict(children)
    while pending:
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select(list(pending), [], [], remaining)
        for rfd in ready:
            chunk = os.read(rfd, 4096)
            buffers[rfd] += chunk
            if not chunk or buffers[rfd].endswith(b"\n"):
                index, pid = pending.pop(rfd)
                line = buffers[rfd].decode("ascii", "replace").strip()
                answers[index] = line or None
                os.close(rfd)
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
    for rfd in pending:
        os.close(rfd)
    _reap_abandoned([pid for _index, pid in pending.values()])
    return answers


def errno_name(code: int) -> str:
    """``ENOSPC`` for 28; ``E<n>`` for a number the platform does not name."""
    return errno.errorcode.get(code, f"E{code}")
