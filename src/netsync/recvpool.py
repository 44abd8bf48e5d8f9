"""The receiver's local fast path: new files written by worker threads.

A local copy of many files is bound by file creation in the kernel (an ext4 create
scans its inode group's bitmap), not by Python.  rsync overlaps that work across its
three processes; here the receiver hands whole-file copies to two writer threads,
each taking whole directories in turn (creates in one directory serialize on its
lock), while the generator goes on.  The GIL is released in every syscall, which is
where the time goes.

What a copy would print is recorded and printed by the generator's thread when the
file's turn comes (Generator.finish_requests()), so the output, the stats and the exit
code are those of the sequential receiver.  Only plain whole-file copies of regular
files come here (Generator.pool_allowed()); everything else is received in order.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import deque

from netsync import messages as m
from netsync.flist import FileEntry
from netsync.receiver import Receiver
from netsync.report import Reporter

TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Any

IN_FLIGHT = 256  # files handed over and not yet collected (each holds its source fd)
_OUTPUT = ("error_xfer", "error", "warn_msg", "warning", "info", "_emit")


class _Recorder:
    """A Reporter for one copy in a writer thread: its messages are kept, in order."""

    def __init__(self, rep: Reporter) -> None:
        self._rep = rep
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str) -> Any:
        if name in _OUTPUT:
            def keep(*args: Any, **kwargs: Any) -> None:
                self.calls.append((name, args, kwargs))
            return keep
        return getattr(self._rep, name)  # safe(), full_path(), prog, levels: pure

    def progress_update(self, n: int) -> None:  # (no progress display with writers)
        pass

    def replay(self) -> None:
        for name, args, kwargs in self.calls:
            getattr(self._rep, name)(*args, **kwargs)


class Job:
    """One file handed to a writer: wait() gives receive()'s result, after which
    replay() prints what the copy would have printed."""

    __slots__ = ("_done", "_ok", "_exc", "rec", "data")
    is_job = True

    def __init__(self, rec: _Recorder, data: m.FileData) -> None:
        self._done = threading.Event()
        self._ok = False
        self._exc: BaseException | None = None
        self.rec = rec
        self.data = data

    def wait(self) -> bool:
        self._done.wait()
        if self._exc is not None:
            raise self._exc
        return self._ok


class ReceivePool:
    """``writers`` threads, each with its own Receiver (its own held dir fds and temp file),
    fed through its own queue; a directory's files all go to one of them."""

    def __init__(self, model: Receiver, writers: int = 2) -> None:
        self._model = model
        self._writers = writers
        self._closing = False  # the writers end once their queues are empty
        self._abort = False  # ... and drop what is queued
        self._cond = threading.Condition()
        self._queues: list[deque[tuple]] = [deque() for _ in range(writers)]
        self._recvs: list[Receiver] = []
        self._threads: list[threading.Thread] = []
        for i in range(writers):
            # Options of their own: the generator's thread never changes them under us.
            r = Receiver(model.r.copy(), model.a.copy(), model.rep)
            r.confine_root = model.confine_root
            self._recvs.append(r)
            t = threading.Thread(target=self._serve, args=(i,), name=f"writer-{i}",
                                 daemon=True)
            t.start()
            self._threads.append(t)
        self._turn = 0
        self._last_dir: bytes | None = None
        # Room for the next dirs' files (the writers work on different dirs), but at
        # most a quarter of the fds we may open.
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.in_flight = max(8, min(IN_FLIGHT, soft // 4)) if soft > 0 else IN_FLIGHT

    def submit(self, e: FileEntry, data: m.FileData, path: bytes, basis: bytes | None,
               dest_st: os.stat_result | None, new_mode: int) -> Job:
        parent = e.name.rpartition(b"/")[0]
        if parent != self._last_dir:
            self._last_dir = parent
            self._turn = (self._turn + 1) % self._writers
        job = Job(_Recorder(self._model.rep), data)
        with self._cond:
            self._queues[self._turn].append((job, e, data, path, basis, dest_st, new_mode))
            self._cond.notify_all()
        return job

    def _serve(self, i: int) -> None:
        recv = self._recvs[i]
        queue = self._queues[i]
        cond = self._cond
        while True:
            with cond:
                while not queue and not self._closing:
                    cond.wait()
                if not queue:
                    return
                job, e, data, path, basis, dest_st, new_mode = queue.popleft()
            if self._abort:  # nothing more is written
                data.close()
                job._exc = m.DiscardFile()
                job._done.set()
                continue
            recv.rep = job.rec  # type: ignore[assignment]
            try:
                job._ok = recv.receive(e, data, path, e.name, basis, dest_st, new_mode)
            except BaseException as ex:  # (re-raised in the generator's thread)
                job._exc = ex
            finally:
                recv.rep = self._model.rep
                job._done.set()

    def close(self, abort: bool = False) -> None:
        """Stop the writers once their queues are empty (abort: drop what is queued;
        a copy under way ends, its temp file removed if it did not finish).  Once."""
        with self._cond:
            self._closing = True
            self._abort = self._abort or abort
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        for r in self._recvs:
            r.abort()
            r.close_fds()


__all__ = ["ReceivePool", "Job", "IN_FLIGHT"]
