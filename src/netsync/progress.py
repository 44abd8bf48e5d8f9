"""--progress and --info=progress2 output, as rsync 3.5's progress.c draws it.

The engine drives a :class:`Progress`:

* before each file's data: bump ``stats.xferred_files`` and
  ``stats.total_transferred_size`` (rsync does it when the file is picked)
  and call :meth:`Progress.start_file` with the file's flist index;
* while data moves: :meth:`Progress.update` (rsync's show_progress; it
  redraws at most once a second, and always on a file's first call);
* after the file: :meth:`Progress.end_file` (end_progress: the final line);
* at the end of the transfer with progress2: :meth:`Progress.end_transfer`.

Lines start with ``\\r``; an intermediate line leaves the cursor on it
(``output_needs_newline``), so any other output must first call
:meth:`Progress.newline_if_needed` on the stream it writes to — rsync's
rwrite() does that for every message.  rsync writes these lines to a pipe
too; it only suppresses them while the job is a background job on a
terminal (pass ``is_foreground``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from netsync.log import human_num
from netsync.messages import Stats

__all__ = ["Progress", "progress_line"]

PROGRESS_HISTORY_SECS = 5


def _split_us(t: float) -> tuple[int, int]:
    us = int(round(t * 1_000_000))
    return us // 1_000_000, us % 1_000_000


def _msdiff(t1: tuple[int, int] | None, t2: tuple[int, int]) -> int:
    """progress.c msdiff(): milliseconds, C truncation, unsigned wrap-around."""
    if t1 is None:  # rsync's zeroed timeval: the epoch, i.e. very long ago
        return 1 << 62
    usec = t2[1] - t1[1]
    d = (t2[0] - t1[0]) * 1000 + int(usec / 1000)
    return d if d >= 0 else d + (1 << 64)


def progress_line(
    ofs: int,
    size: int,
    rate_kib: float,
    remain: float,
    eol: str,
    human: int = 1,
) -> str:
    """Format one progress line: ``\\r%15s %3d%% %7.2f%s %s%s``.

    ``rate_kib`` is in KiB/s (rsync's unit before scaling), ``remain`` seconds
    (time left, or the elapsed total on a final line), ``eol`` the tail
    (``"  "`` on intermediate lines, `` (xfr#N, to-chk=R/T)\\n`` on final ones).
    """
    rate = rate_kib
    if rate > 1024 * 1024:
        rate /= 1024.0 * 1024.0
        units = "GB/s"
    elif rate > 1024:
        rate /= 1024.0
        units = "MB/s"
    else:
        units = "kB/s"
    if remain < 0 or remain > 9999.0 * 3600.0:
        rembuf = "  ??:??:??"
    else:
        rembuf = f"{int(remain / 3600.0):4d}:{int(remain / 60.0) % 60:02d}:{int(remain) % 60:02d}"
    if ofs == size:
        pct = 100
    elif size:
        pct = int(100.0 * ofs / size)
    else:
        pct = 0
    return f"\r{human_num(ofs, human):>15s} {pct:3d}% {rate:7.2f}{units} {rembuf}{eol}"


class Progress:
    """rsync's progress state machine, writing to ``out``.

    ``level`` is info=progressN (1 = --progress, 2 = --info=progress2).
    ``clock`` returns seconds (gettimeofday resolution is used); inject one
    for deterministic tests.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        level: int = 1,
        human: int = 1,
        stats: Stats | None = None,
        clock: Callable[[], float] = time.time,
        quiet: bool = False,
        is_foreground: Callable[[], bool] | None = None,
    ) -> None:
        self.out = out
        self.level = level
        self.human = human
        self.stats = stats if stats is not None else Stats()
        self.clock = clock
        self.quiet = quiet
        self.is_foreground = is_foreground
        self.flist_eof = True  # False while an incremental file list is still arriving
        self.file_index = 0  # set_current_file_index(): the flist index of the current file
        self.output_needs_newline = False
        self._size = 0
        self._start: tuple[tuple[int, int] | None, int] = (None, 0)  # ph_start (time, ofs)
        self._hist: list[tuple[tuple[int, int] | None, int]] = [(None, 0)] * PROGRESS_HISTORY_SECS
        self._newest = 0
        self._oldest = 0
        self._last_len = 0  # progress2 pads a line that got shorter

    # -- engine-facing API -------------------------------------------------

    def start_file(self, index: int, size: int) -> None:
        """Note the file about to move (its index in the file list, minus flist_num)."""
        self.file_index = index
        self._size = size

    def update(self, ofs: int, size: int | None = None) -> None:
        """show_progress(): ``ofs`` bytes of the current file are done."""
        if size is None:
            size = self._size
        now = _split_us(self.clock())
        if self.level >= 2:
            ofs = self.stats.total_transferred_size - size + ofs
            size = self.stats.total_size
        if self._start[0] is None:
            newest_t = self._hist[self._newest][0]
            if _msdiff(newest_t, now) <= 1500:
                # Data was flowing for the previous file: count from then.
                self._start = (newest_t, 0)
            else:
                self._start = (now, ofs)
            self._hist = [self._start] * PROGRESS_HISTORY_SECS
        else:
            if _msdiff(self._hist[self._newest][0], now) < 1000:
                return
            self._newest = self._oldest
            self._oldest = (self._oldest + 1) % PROGRESS_HISTORY_SECS
            self._hist[self._newest] = (now, ofs)
        if self.is_foreground is not None and not self.is_foreground():
            return
        self._print(ofs, size, now, False)

    def end_file(self, size: int | None = None) -> None:
        """end_progress(size): the file is done; print its final line."""
        if size is None:
            size = self._size
        now = _split_us(self.clock())
        if self.level >= 2:
            self._print(self.stats.total_transferred_size, self.stats.total_size, now, True)
        else:
            self._print(size, size, now, True)
            self._start = (None, 0)

    def end_transfer(self) -> None:
        """At the end of the file list (NDX_DONE): progress2 prints a last line."""
        if self.level >= 2:
            self.file_index = self.stats.num_files - 1
            self.end_file(0)

    def newline_if_needed(self, stream: TextIO | None = None) -> None:
        """Finish a half-drawn progress line before other output (rwrite's rule)."""
        if self.output_needs_newline:
            (stream or self.out).write("\n")
            self.output_needs_newline = False

    # -- rprint_progress -----------------------------------------------------

    def _print(self, ofs: int, size: int, now: tuple[int, int], is_last: bool) -> None:
        if is_last:
            st = self.stats
            eol = (f" (xfr#{st.xferred_files}, {'to' if self.flist_eof else 'ir'}-chk="
                   f"{st.num_files - self.file_index - 1}/{st.num_files})\n")
            if self.level >= 2:
                # Drop the newline; pad with spaces if the line got shorter.
                length = len(eol) - 1
                self._last_len = max(self._last_len, length)
                eol = eol[:length].ljust(self._last_len)
                is_last = False
            start_t, start_ofs = self._start
            diff = _msdiff(start_t, now) if start_t is not None else 0
            if not diff:
                diff = 1
            rate = (ofs - start_ofs) * 1000.0 / diff / 1024.0
            remain = diff / 1000.0  # a final line shows the total time taken
        else:
            eol = "  "
            old_t, old_ofs = self._hist[self._oldest]
            diff = _msdiff(old_t, now) or 1
            rate = (ofs - old_ofs) * 1000.0 / diff / 1024.0
            remain = (size - ofs) / rate / 1000.0 if rate else 0.0
        self.output_needs_newline = False
        if not self.quiet:
            self.out.write(progress_line(ofs, size, rate, remain, eol, self.human))
            if not is_last:
                self.output_needs_newline = True
            self.out.flush()
