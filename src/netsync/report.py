"""What the user sees: per-file lines, messages, the log file, and the exit status.

The roles call a :class:`Reporter`; it decides (as rsync's log.c does) which
lines appear for the chosen -v/-i/--out-format/--log-file settings.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Callable

from netsync import log
from netsync.errors import (
    RERR_DEL_LIMIT,
    RERR_FILEIO,
    RERR_PARTIAL,
    RERR_VANISHED,
)
from netsync.flist import FileEntry

TYPE_CHECKING = False  # (typing costs ~3 ms at start-up; only the type checker needs it)
if TYPE_CHECKING:
    from typing import Any, TextIO

SIGNIFICANT = ~(log.ITEM_BASIS_TYPE_FOLLOWS | log.ITEM_XNAME_FOLLOWS | log.ITEM_LOCAL_CHANGE)


class _StdFd(io.RawIOBase):
    """fd 1 or 2 for :func:`protect_std_streams`.  A write that fails for good (the
    reader gone, a full disk, an I/O error, or a descriptor that was closed when we
    started) sends the descriptor to /dev/null and counts as done, so the sync goes
    on.  rsync ignores SIGPIPE, and its stdio drops what it cannot write to stdout
    (``rsync -av ... | head`` exits 0); a message it cannot write to stderr makes it
    exit 13, which :attr:`lost` lets the command do at its end."""

    def __init__(self, fd: int, closed: bool) -> None:
        super().__init__()
        self.fd = fd
        self.closed_at_start = closed
        self.lost = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return os.isatty(self.fd)

    def write(self, data) -> int:  # type: ignore[override]
        if self.closed_at_start:
            self.lost = True
            return len(data)
        while not self.lost:
            try:
                return os.write(self.fd, data)
            except BlockingIOError:  # a non-blocking tty or pipe (ssh can leave it so)
                import select

                select.select([], [self.fd], [])
            except InterruptedError:
                pass
            except OSError:
                self.lost = True
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, self.fd)
                os.close(null)
        return len(data)


_stderr_fd: _StdFd | None = None


def protect_std_streams() -> None:
    """For the command line: stdout and stderr whose writes never raise (see _StdFd),
    and /dev/null on a closed fd 0, 1 or 2, so that no file or socket opened later
    takes its number and receives what was meant for the terminal."""
    global _stderr_fd
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        old = getattr(sys, name)
        if old is not None:
            try:
                if old.fileno() != fd:
                    continue  # already replaced (tests, embedding): leave it alone
                old.flush()
            except (OSError, ValueError):
                continue
        raw = _StdFd(fd, fd in closed)
        setattr(sys, name, io.TextIOWrapper(
            io.BufferedWriter(raw),
            encoding=getattr(old, "encoding", None) or "utf-8",
            errors=getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict"),
            line_buffering=fd == 2 or bool(getattr(old, "line_buffering", False)),
        ))
        if fd == 2:
            _stderr_fd = raw


def stderr_lost() -> bool:
    """Whether a message could not be written to stderr (rsync then exits 13)."""
    return _stderr_fd is not None and _stderr_fd.lost


class ListCounter:
    """flist.c's count while a whole list is built or received with -P (info flist2):
    " N files...\r" at every hundredth entry, on a line of its own after
    "building file list ... ", each overwriting the last; the closing "N files to
    consider" overwrites the last of them."""

    def __init__(self, rep: Reporter) -> None:
        self.rep = rep
        self.out = rep.out
        self.next = 0  # the next count the sender shows

    def _show(self, n: int) -> None:
        rep = self.rep
        if rep.needs_newline == 2:  # emit_filelist_progress(): over the last count
            rep.needs_newline = 0
        if rep.needs_newline:  # rwrite(): the pending "... " line ends first
            self.out.write("\n")
        self.out.write(f" {n} files...\r")
        rep.needs_newline = 2

    def sending(self, count: int) -> None:
        """The sender shows the count before adding each entry (0, 100, ...): after
        ``count`` entries, each multiple of 100 below it."""
        if count <= self.next:
            return
        for n in range(self.next, count, 100):
            self._show(n)
        self.next = (count + 99) // 100 * 100
        self.out.flush()

    def received(self, count: int) -> None:
        """The receiver shows it after adding each hundredth entry."""
        if count % 100 == 0 and count:
            self._show(count)
            self.out.flush()


class Reporter:
    def __init__(
        self,
        *,
        prog: str = "netsync",
        info: dict[str, int] | None = None,
        quiet: int = 0,
        itemize: int = 0,
        out_format: str | None = None,
        log_file: str | None = None,
        log_file_format: str | None = None,
        dry_run: bool = False,
        eight_bit: bool = False,
        human: int = 1,
        progress: bool = False,
        preserve_mtimes: bool = True,
        out: TextIO | None = None,
        err: TextIO | None = None,
        stats: bool = False,
    ) -> None:
        self.prog = prog
        self.info_levels = info or {}
        self.quiet = quiet
        self.dry_run = dry_run
        self.eight_bit = eight_bit
        self.human = human
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.ctx = log.LogContext(am_sender=True, local_server=True,
                                  preserve_mtimes=preserve_mtimes)
        # options.c: pick the stdout format and whether lines print before the data.
        fmt = out_format
        self.has_i = 0
        self.log_before_transfer = False
        if fmt:
            if log.log_format_has(fmt, "i"):
                self.has_i = itemize | 1
            if not any(log.log_format_has(fmt, c) for c in "bcC"):
                self.log_before_transfer = True
        elif itemize:
            fmt = "%i %n%L"
            self.has_i = itemize
            self.log_before_transfer = True
        if self.level("name") >= 1 and not fmt:
            fmt = "%n%L"
            self.log_before_transfer = True
        self.stdout_format = fmt
        self.has_o_or_i = bool(self.has_i or log.log_format_has(fmt, "o"))
        self.logfile = None
        self.logfile_format = None
        self.logfile_has_i = False
        if log_file:
            self.logfile = _open_log_file(log_file, prog, self.err, self.out)
        if self.logfile is not None:
            self.logfile_format = log_file_format or "%i %n%L"
            self.logfile_has_i = log.log_format_has(self.logfile_format, "i")
            global _exit_log
            _exit_log = self  # the closing "error ... (code N)" line is logged too
        # What log.c log_exit() reports at the end: the totals (set with the summary),
        # whether this end sends (a receiver's totals are logged only on success: its
        # counts are split between two processes until the end), and whether the
        # summary went out as FINFO lines.
        self.exit_totals: tuple[int, int, int] | None = None
        self.exit_sender = True
        self.stats_shown = self.level("stats") >= 1 or stats  # INFO_GTE(STATS, 1)
        self.progress = None
        self._progress_level = self.level("progress") or (1 if progress else 0)
        self.got_xfer_error = False
        self.got_vanished = False
        self.got_io_error = False
        self.del_limit_hit = False
        self.cwd = os.getcwd().encode()
        # A daemon's (module name, module dir): messages name paths below it (qpath()).
        self.module: tuple[str, bytes] | None = None
        self.dest_root: bytes | None = None  # a daemon receiver's destination (qpath())
        self.top_dir: bytes | None = None  # a receiving client's destination dir: "." in it
        self.roots: list[bytes] = []  # the sender's source dirs, for %f
        self.want_csum = any(log.log_format_has(f, "C") for f in (fmt, self.logfile_format))
        self.saw_error = False
        # rsync's generator sends its messages ("NAME is uptodate") ahead of the
        # buffered file requests whose names the sender prints: with hold_stream set
        # (by the generator) those names wait until release_stream().
        self.hold_stream = False
        self._held: list[str] = []
        # log.c output_needs_newline: 1 after "building file list ... ", 2 after a
        # " N files...\r" count; the next message (on whichever stream) ends the line.
        self.needs_newline = 0

    def list_counter(self) -> ListCounter | None:
        """-P's running count while a whole list is built or received (info flist2)."""
        return ListCounter(self) if self.level("flist") >= 2 else None

    def flist_start(self, kind: str) -> None:
        """flist.c start_filelist_progress(): "building file list ... " (or "receiving
        file list ... "), its line left open for "done"; a message before then
        starts on a line of its own (log.c output_needs_newline)."""
        self.out.write(f"{kind} ... ")
        self.out.flush()
        self.needs_newline = 1
        global _open_line
        _open_line = self

    def flist_done(self, n: int) -> None:
        """flist.c finish_filelist_progress(): "N files to consider" (info flist2, over
        the count's last line), else "done"."""
        self.needs_newline = 0
        global _open_line
        if _open_line is self:
            _open_line = None
        if self.level("flist") >= 2:
            self.out.write(f"{n} file{' ' if n == 1 else 's '}to consider\n")
        else:
            self.out.write("done\n")
        self.out.flush()

    def attach_stats(self, stats) -> None:
        """Progress lines show counters (xfr#, to-chk) kept by the engine."""
        if self._progress_level and not self.quiet:
            from netsync.progress import Progress

            self.progress = Progress(self.out, level=self._progress_level, human=self.human,
                                     stats=stats)

    def level(self, name: str) -> int:
        return self.info_levels.get(name, 0)

    # --------------------------------------------------------------- text
    # A local copy with --iconv shows its names as rsync's does: in the source's charset
    # (client.run_local_forked()).
    name_out: Callable[[bytes], bytes] | None = None

    def safe(self, name: bytes) -> str:
        if self.name_out is not None:
            name = self.name_out(name)
        return log.safe_name(name, self.eight_bit)

    def full_path(self, path: bytes) -> str:
        if not path.startswith(b"/"):
            path = self.cwd + b"/" + path
        return self.safe(log.clean_fname(path))

    def qpath(self, path: bytes) -> str:
        """util1.c full_fname(): the quoted path for a message.  A daemon names it
        below its module, followed by the module's name: "/sub/f" (in mod)."""
        mod = self.module
        if mod is None:
            if path == self.top_dir:  # rsync names the dir it chdir()ed into "."
                return f'"{self.full_path(path).rstrip("/")}/."'
            return f'"{self.full_path(path)}"'
        if not path.startswith(b"/"):
            # curr_dir past the module's dir (none in a chroot of the whole module),
            # as it is now; a slash between only when that leaves something.
            cwd, root = os.getcwdb(), mod[1]
            # A file is named from the dir rsync chdir()s into: a sender's argument's
            # dir, a receiver's destination.
            for r in [self.dest_root] if self.dest_root is not None else self.roots:
                r = r.rstrip(b"/")
                if r not in (b"", b".") and not r.startswith(b"/") \
                        and path.startswith(r + b"/"):
                    cwd, path = log.clean_fname(cwd + b"/" + r), path[len(r) + 1:]
                    break
            p1 = cwd[len(root):] if root != b"/" and cwd.startswith(root) else cwd
            path = p1 + (b"/" if p1.strip(b"/") else b"") + log.clean_fname(path)
        return f'"{self.safe(path)}" (in {mod[0]})'

    def _emit(self, line: str, stream: TextIO | None = None) -> None:
        stream = stream or self.out
        if self._held and stream is self.out:
            self.release_stream()
        if self.needs_newline:
            self.needs_newline = 0
            stream.write("\n")
        if self.progress is not None:
            self.progress.newline_if_needed(stream)
        stream.write(line + "\n")
        stream.flush() if stream is self.err else None

    def info(self, msg: str) -> None:
        if not self.quiet:
            self._emit(msg)
        self._log_file_msg(msg)

    def client_info(self, msg: str) -> None:
        """rprintf(FCLIENT): the client's own stdout, never the log file."""
        if not self.quiet:
            self._emit(msg)

    def log_lines(self, lines: list[str]) -> None:
        """FINFO lines printed on their own (the summary, --stats): the log file takes
        each too, -q or not (log.c rwrite() logs before it looks at quiet)."""
        for line in lines:
            if line:
                self._log_file_msg(line)

    def log_exit(self, code: int, via_peer: bool = False) -> bool:
        """cleanup.c _exit_cleanup() -> log.c log_exit(), a client's: whether the
        closing "error ... (code N)" line is printed, having logged the plain "sent ...
        total size" record first (a sender's, or anyone's on success).  After the
        peer's MSG_ERROR_EXIT the peer has said it, so nothing, unless a log file
        without the summary wants the record; with the summary shown (-v, --stats)
        a successful run's log has that instead."""
        if not ((code and not via_peer) or (self.logfile is not None and not self.stats_shown)):
            return False
        if self.exit_totals is not None and (code == 0 or self.exit_sender):
            sent, received, total = self.exit_totals
            self._log_file_msg(f"sent {sent} bytes  received {received} bytes  "
                               f"total size {total}")
        return bool(code)

    def error(self, msg: str, role: str | None = None) -> None:
        self.saw_error = True
        self.out.flush()
        tag = f" [{role}]" if role else ""
        self._emit(f"{self.prog}:{tag} {msg}", self.err)
        self._log_file_msg(f"{self.prog}:{tag} {msg}")

    def error_xfer(self, msg: str, role: str | None = None, fatal_io: bool = False,
                   bare: bool = False) -> None:
        self.got_xfer_error = True
        if bare:
            self.out.flush()
            self._emit(msg, self.err)
            self._log_file_msg(msg)
        else:
            self.error(msg, role)

    def warning(self, msg: str, role: str | None = None) -> None:
        self.got_vanished = True
        self.out.flush()
        self._emit(msg, self.err)
        self._log_file_msg(msg)

    def warn_msg(self, msg: str) -> None:
        """An FWARNING message: stderr, no effect on the exit code."""
        self.out.flush()
        self._emit(msg, self.err)
        self._log_file_msg(msg)

    def _log_file_msg(self, msg: str | bytes) -> None:
        if self.logfile is not None:
            self.logfile.write(log.log_file_line(msg))

    # --------------------------------------------------------------- items
    def _item(self, e: FileEntry, iflags: int, hlink: bytes | None = None,
              written: int = 0) -> log.LogItem:
        csum = None
        if self.want_csum and stat.S_ISREG(e.mode) and iflags & log.ITEM_TRANSFER:
            csum = self._file_sum(e)
        name, link = e.name, e.link if stat.S_ISLNK(e.mode) else None
        if self.name_out is not None:  # (not a hard link's target: rsync shows it raw)
            name = self.name_out(name)
            link = None if link is None else self.name_out(link)
        return log.LogItem(
            name, e.mode, e.size, e.mtime,
            link=link, hlink=hlink, iflags=iflags,
            uid=e.uid, gid=e.gid, written=written, checksum=csum,
            pathname=self.roots[e.root] if self.roots else None,
        )

    def _file_sum(self, e: FileEntry) -> str | None:
        """%C of a transferred file: the transfer checksum (xxh128 between two 3.5s)."""
        import xxhash

        if not self.roots:
            return None
        root = self.roots[e.root]
        path = e.name if root in (b"", b".") else root.rstrip(b"/") + b"/" + e.name
        h = xxhash.xxh3_128()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError:
            return None
        return h.hexdigest()

    def log_item(self, e: FileEntry, iflags: int, *, to_stdout: bool = True,
                 to_logfile: bool = True, hlink: bytes | None = None, written: int = 0) -> None:
        item = self._item(e, iflags, hlink, written)
        if self._moved is not None:
            item.written, item.read = self._moved_counts()
        if to_stdout and self.stdout_format and not self.quiet:
            line = log.format_log(self.stdout_format, item, self.ctx, eight_bit=self.eight_bit)
            if self._holding():
                self._held.append(line)
            else:
                self._emit(line)
        if to_logfile and self.logfile is not None and self.logfile_format and not self.dry_run:
            raw = log.expand_log_format(self.logfile_format, item, self.ctx)
            self.logfile.write(log.log_file_line(raw))

    def maybe_log_item(self, e: FileEntry, iflags: int, hlink: bytes | None = None) -> None:
        """log.c maybe_log_item(): an item that was not transferred."""
        significant = iflags & SIGNIFICANT & 0xFFFF
        xname = hlink or b""
        see = bool(self.has_i) and bool(significant or xname or self.has_i > 1
                                        or (self.level("name") >= 2 and self.has_i))
        local_change = bool(iflags & log.ITEM_LOCAL_CHANGE and significant)
        if see or local_change or xname or (stat.S_ISDIR(e.mode) and significant):
            to_stdout = True
            to_logfile = bool(significant or self.logfile_has_i)
            self.log_item(e, iflags, to_stdout=to_stdout, to_logfile=to_logfile, hlink=hlink)

    def attrs_report(self, name: bytes, updated: bool = False, suffix: str = "") -> None:
        """rsync's ATTRS_REPORT at -vv when stdout is not itemized: an entry left in
        place prints "NAME" if its attributes changed, else "NAME is uptodate"
        (rprintf FCLIENT: the client's stdout only, never the log file)."""
        if self.level("name") >= 2 and not self.has_i and not self.quiet:
            line = self.safe(name) + suffix + ("" if updated else " is uptodate")
            if self._holding():
                self.out.write(line + "\n")  # overtakes the held names
            else:
                self._emit(line)

    def _holding(self) -> bool:
        return self.hold_stream and self.progress is None and self.level("name") >= 2 \
            and not self.has_i

    def release_stream(self) -> None:
        """Print the held file names (rsync: the generator flushed its requests)."""
        held, self._held = self._held, []
        for line in held:
            self.out.write(line + "\n")

    def should_send_itemize(self, iflags: int, xname: bytes | None = None) -> bool:
        """generator.c itemize(): is this item reported to the sender at all?"""
        return bool(iflags & 0xFFFF & SIGNIFICANT or self.level("name") >= 2
                    or self.has_i > 1 or xname)

    # %b/%c over the wire: the data bytes moved since the file's start (log.c:
    # total_data_written/read less remember_initial_stats()); None: not counted.
    _moved: list[int] | None = None
    _moved_mark = (0, 0)
    _moved_xfer: tuple[int, int] | None = None

    def count_io(self, io, wanted: bool | None = None) -> None:
        """Count what ``io`` moves when ``wanted`` (by default: when a log format shows
        %b or %c)."""
        if wanted is None:
            wanted = any(f and (log.log_format_has(f, "b") or log.log_format_has(f, "c"))
                         for f in (self.stdout_format, self.logfile_format))
        if not wanted:
            return
        moved = self._moved = [0, 0]
        write, advance, unread = io.write, io._advance, io.unread

        def counted_write(data) -> None:
            moved[0] += len(data)
            write(data)

        def counted_advance(n: int) -> None:
            moved[1] += n
            advance(n)

        def counted_unread(data: bytes) -> None:
            moved[1] -= len(data)  # (given back: a later file's, when pipelined)
            unread(data)

        io.write, io._advance, io.unread = counted_write, counted_advance, counted_unread

    def xfer_started(self) -> None:
        """A file's request (sender) or reply (receiver) after its index and iflags:
        from here its bytes count (sender.c / receiver.c remember_initial_stats())."""
        if self._moved is not None:
            self._moved_xfer = (self._moved[0], self._moved[1])

    def _mark_moved(self) -> None:
        """A file's start: from its request or reply on (xfer_started()) if that came
        first (a receiver's pipelined reply is read before this), else from now."""
        if self._moved is not None:
            self._moved_mark = self._moved_xfer or (self._moved[0], self._moved[1])
            self._moved_xfer = None

    def _moved_counts(self) -> tuple[int, int]:
        """(written, read) since the file's start: its %b and %c."""
        moved = self._moved or (0, 0)
        return moved[0] - self._moved_mark[0], moved[1] - self._moved_mark[1]

    def log_item_transfer_start(self, e: FileEntry, iflags: int) -> None:
        """sender.c: the line printed before a file's data when the format allows."""
        self._mark_moved()
        if self.log_before_transfer:
            self.log_item(e, iflags, to_logfile=False)
        elif self.level("name") >= 1 and self.level("progress") == 1 and not self.quiet:
            self._emit(self.safe(e.name))

    def log_item_transfer_end(self, e: FileEntry, iflags: int, written: int) -> None:
        self.log_item(e, iflags, to_stdout=not self.log_before_transfer, written=written)

    def deleted(self, name: bytes, mode: int) -> None:
        if self.level("del") >= 1 or self.stdout_format:
            if not self.quiet:
                self._emit(self._delete_line(name, mode))
        if self.logfile is not None and not self.dry_run and self.logfile_format:
            fmt = log.delete_format(self.logfile_format)
            raw = log.expand_log_format(fmt, log.LogItem.deletion(name, mode), self.ctx)
            self.logfile.write(log.log_file_line(raw))

    def _delete_line(self, name: bytes, mode: int) -> str:
        return log.format_delete(name, mode, self.stdout_format if self.has_o_or_i else None,
                                 self.ctx, eight_bit=self.eight_bit)

    def backup_note(self, name: bytes, bpath: bytes) -> None:
        if self.level("backup") >= 1:
            self.info(f"backed up {self.safe(name)} to {self.safe(bpath)}")

    def remove_note(self, e: FileEntry) -> None:
        if self.level("remove") >= 1:
            self.info(f"sender removed {self.safe(e.name)}")

    # --------------------------------------------------------------- progress
    def progress_start(self, ndx: int, e: FileEntry) -> None:
        if self.progress is not None:
            self.progress.start_file(ndx, e.size)

    def progress_update(self, done: int) -> None:
        if self.progress is not None:
            self.progress.update(done)

    def progress_abort(self) -> None:
        if self.progress is not None:
            self.progress.newline_if_needed()

    def progress_end(self, e: FileEntry) -> None:
        if self.progress is not None:
            self.progress.end_file(e.size)

    # --------------------------------------------------------------- end
    def exit_code(self, io_error: int = 0) -> int:
        # cleanup.c: a partial transfer outranks vanished files, which outrank the
        # --max-delete limit, which outranks the rest.
        if self.got_xfer_error or io_error & 1:
            return RERR_PARTIAL
        if self.got_vanished or io_error & 2:
            return RERR_VANISHED
        if self.del_limit_hit or io_error & 4:
            return RERR_DEL_LIMIT
        if self.got_io_error:
            return RERR_FILEIO
        return 0

    def close(self) -> None:
        global _exit_log
        if _exit_log is self:
            _exit_log = None
        if self.logfile is not None:
            self.logfile.close()
            self.logfile = None


_exit_log: Reporter | None = None  # the reporter whose log file gets the exit line


def log_exit_line(line: str) -> None:
    """The closing "error ... (code N)" line into the open log file (FERROR: logged)."""
    rep = _exit_log
    if rep is not None and rep.logfile is not None:
        try:
            rep._log_file_msg(line)
            rep.logfile.flush()
        except (OSError, ValueError):
            pass


def _open_log_file(path: str, prog: str, err, out):
    """log.c logfile_open(): an operator path (no untrusted symlink followed);
    a failure is reported and logging is off, the transfer goes on."""
    import os

    from netsync import safepath

    try:
        fd = safepath.owner_open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as ex:
        err.write(f"{prog}: [client] failed to open log-file {path}: "
                  f"{os.strerror(ex.errno or 0)} ({ex.errno})\n")
        err.flush()
        out.write('Ignoring "log file" setting.\n')
        out.flush()
        return None
    return open(fd, "ab")


class FinishFirst:
    """An output stream that first collects the files in flight (``finish``), so lines
    come out in the order of the file list, as without them (pipelined wire
    requests, the local receiver's writer threads)."""

    def __init__(self, stream: Any, finish: Callable[[], None]) -> None:
        self._stream = stream
        self._finish = finish

    def write(self, text: str) -> int:
        self._finish()
        return self._stream.write(text)

    def flush(self) -> None:
        self._finish()
        self._stream.flush()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A writer that is called (a daemon's log) rather than written to."""
        self._finish()
        return self._stream(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_open_line: Reporter | None = None  # the reporter whose "... " line may still be open


def end_open_line() -> None:
    """cleanup.c exit_cleanup(): a line left open ends on stdout before the exit."""
    global _open_line
    rep, _open_line = _open_line, None
    if rep is not None and rep.needs_newline:
        rep.needs_newline = 0
        try:
            rep.out.write("\n")
            rep.out.flush()
        except (OSError, ValueError):
            pass
