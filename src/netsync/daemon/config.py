"""rsyncd.conf, read exactly as rsync 3.5's params.c + loadparm.c read it.

The scanner is a character-level port of params.c's grammar, because its
quirks are what admins' files rely on: a comment is only a comment at the
start of a line, a ``\\`` continuation keeps the whitespace around it,
parameter names compare case-insensitively with *whitespace* ignored (not
underscores: ``read_only`` is an unknown parameter), values lose leading and
trailing whitespace, and ``&include``/``&merge`` directives split at the first
blank.

Like rsync, an unknown parameter or a badly formed boolean is logged and
ignored; a broken section header, an invalid section name, an unknown
directive or an unreadable include is fatal (:class:`ConfigError`).  Every
message keeps rsync's wording (what it writes to its log) and also records the
file and line, so the daemon can log rsync's text and an admin can find it.

String parameters keep their ``%VAR%`` references and are expanded on access
from the environment at that time (rsync does the same, so ``path =
/home/%RSYNC_USER_NAME%`` sees the authenticated user); other types are
expanded while parsing.
"""

from __future__ import annotations

import os
import stat
import syslog
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from netsync.errors import RERR_SYNTAX, RERR_UNSUPPORTED
from netsync.record import Record, factory
from netsync.token import DEFAULT_DONT_COMPRESS
from netsync.wildmatch import wildmatch

__all__ = [
    "DEFAULT_CONFIG", "USER_CONFIG", "DEFAULT_LOCK_FILE", "PARAMS", "ConfigError",
    "ConfigMessage", "DaemonConfig", "Globals", "Module", "Param", "expand_vars",
    "load_config", "check_dparams", "parse_bool",
]

DEFAULT_CONFIG = "/etc/rsyncd.conf"  # RSYNCD_SYSCONF
USER_CONFIG = "rsyncd.conf"  # RSYNCD_USERCONF: rsh-run daemon, not root
DEFAULT_LOCK_FILE = "/var/run/rsyncd.lock"
GLOBAL_NAME = "global"

STRING, PATH, INTEGER, ENUM, BOOL, BOOL3 = "STRING", "PATH", "INTEGER", "ENUM", "BOOL", "BOOL3"


class Param(NamedTuple):
    label: str  # the public name ("read only")
    kind: str
    is_global: bool
    default: object


# daemon-parm.txt, in its order (map_parameter takes the first label that matches).
PARAMS: tuple[Param, ...] = (
    Param("address", STRING, True, None),
    Param("daemon chroot", STRING, True, None),
    Param("daemon gid", STRING, True, None),
    Param("daemon uid", STRING, True, None),
    Param("motd file", STRING, True, None),
    Param("pid file", STRING, True, None),
    Param("proxy protocol hosts", STRING, True, None),
    Param("socket options", STRING, True, None),
    Param("listen backlog", INTEGER, True, 5),
    Param("port", INTEGER, True, 0),
    Param("proxy protocol", BOOL, True, False),
    Param("auth digest", STRING, False, None),
    Param("auth users", STRING, False, None),
    Param("charset", STRING, False, None),
    Param("comment", STRING, False, None),
    Param("dont compress", STRING, False, DEFAULT_DONT_COMPRESS),
    Param("early exec", STRING, False, None),
    Param("exclude", STRING, False, None),
    Param("exclude from", STRING, False, None),
    Param("filter", STRING, False, None),
    Param("gid", STRING, False, None),
    Param("hosts allow", STRING, False, None),
    Param("hosts deny", STRING, False, None),
    Param("include", STRING, False, None),
    Param("include from", STRING, False, None),
    Param("incoming chmod", STRING, False, None),
    Param("lock file", STRING, False, DEFAULT_LOCK_FILE),
    Param("log file", STRING, False, None),
    Param("log format", STRING, False, "%o %h [%a] %m (%u) %f %l"),
    Param("name", STRING, False, None),
    Param("name converter", STRING, False, None),
    Param("outgoing chmod", STRING, False, None),
    Param("post-xfer exec", STRING, False, None),
    Param("pre-xfer exec", STRING, False, None),
    Param("refuse options", STRING, False, None),
    Param("secrets file", STRING, False, None),
    Param("syslog tag", STRING, False, "rsyncd"),
    Param("uid", STRING, False, None),
    Param("path", PATH, False, None),
    Param("temp dir", PATH, False, None),
    Param("max connections", INTEGER, False, 0),
    Param("max verbosity", INTEGER, False, 1),
    Param("timeout", INTEGER, False, 0),
    Param("syslog facility", ENUM, False, syslog.LOG_DAEMON),
    Param("fake super", BOOL, False, False),
    Param("forward lookup", BOOL, False, True),
    Param("ignore errors", BOOL, False, False),
    Param("ignore nonreadable", BOOL, False, False),
    Param("insecure links", BOOL, False, False),
    Param("list", BOOL, False, True),
    Param("read only", BOOL, False, True),
    Param("reverse lookup", BOOL, False, True),
    Param("strict modes", BOOL, False, True),
    Param("transfer logging", BOOL, False, False),
    Param("write only", BOOL, False, False),
    Param("munge symlinks", BOOL3, False, None),
    Param("numeric ids", BOOL3, False, None),
    Param("open noatime", BOOL3, False, None),
    Param("use chroot", BOOL3, False, None),
)
_BY_LABEL = {p.label: p for p in PARAMS}

# The hooks whose %RSYNC_*% values are shell-quoted on expansion.
SHELL_PARAMS = frozenset({"early exec", "pre-xfer exec", "post-xfer exec", "name converter"})

SYSLOG_FACILITIES: dict[str, int] = {
    "auth": syslog.LOG_AUTH, "authpriv": syslog.LOG_AUTHPRIV, "cron": syslog.LOG_CRON,
    "daemon": syslog.LOG_DAEMON, "ftp": getattr(syslog, "LOG_FTP", 11 << 3),
    "kern": syslog.LOG_KERN, "lpr": syslog.LOG_LPR, "mail": syslog.LOG_MAIL,
    "news": syslog.LOG_NEWS, "security": syslog.LOG_AUTH, "syslog": syslog.LOG_SYSLOG,
    "user": syslog.LOG_USER, "uucp": syslog.LOG_UUCP,
    **{f"local{n}": getattr(syslog, f"LOG_LOCAL{n}") for n in range(8)},
}

_WS = " \t\n\v\f\r"  # C isspace() in the C locale
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ConfigMessage(NamedTuple):
    """One line rsync would log while loading the file (``text`` is rsync's wording)."""

    file: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}" if self.line else f"{self.file}: {self.text}"


class ConfigError(Exception):
    """The file could not be loaded (rsync exits with RERR_SYNTAX)."""

    def __init__(self, messages: Sequence[ConfigMessage], code: int = RERR_SYNTAX) -> None:
        self.messages = list(messages)
        self.code = code
        super().__init__("\n".join(str(m) for m in self.messages))


def _squash(name: str) -> str:
    """strwiEQ's view of a name: whitespace dropped, ASCII upper-cased."""
    return "".join(ch for ch in name if ch not in _WS).translate(_UPPER)


def find_param(name: str) -> Param | None:
    """map_parameter(): the first table entry equal to ``name`` ignoring case and blanks."""
    if name.startswith("-"):
        return None
    key = _squash(name)
    for p in PARAMS:
        if _squash(p.label) == key:
            return p
    return None


def _atoi(text: str) -> int:
    s = text.lstrip(_WS)
    sign = 1
    if s[:1] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    digits = ""
    for ch in s:
        if not "0" <= ch <= "9":
            break
        digits += ch
    value = sign * int(digits) if digits else 0
    # C int wraps; rsync then uses the (odd) result, keep it 32-bit signed.
    return (value + 2**31) % 2**32 - 2**31


def parse_bool(value: str, allow_unset: bool = False) -> bool | None | str:
    """set_boolean(): True/False, None for "unset" (BOOL3 only), or the string "bad"."""
    key = _squash(value)
    if key in ("YES", "TRUE", "1"):
        return True
    if key in ("NO", "FALSE", "0"):
        return False
    if allow_unset and key in ("UNSET", "-1"):
        return None
    return "bad"


_SHELL_UNSAFE = set("'\"`$\\;&|<>()*?[]# !~{}")


def _shell_quote(val: str, context: str) -> str:
    if context == "single":
        return val.replace("'", "'\\''")
    out = []
    for ch in val:
        if context == "double" and ch in '\\"`$':
            out.append("\\" + ch)
        elif ch == "'":
            out.append("'\\''")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def expand_vars(text: str | None, env: Mapping[str, str] | None = None,
                shell: bool = False) -> str | None:
    """loadparm.c expand_vars(): replace ``%NAME%`` (NAME starting A-Z) by $NAME.

    An unset variable or odd syntax is left as written.  With ``shell`` (the
    exec hooks) a %RSYNC_*% value is quoted for the quoting context it appears
    in, and a value holding a shell metacharacter is refused outright, as rsync
    3.5 does (the hook may be an access check, so skipping it is no option).
    """
    if text is None or "%" not in text:
        return text
    if env is None:
        env = os.environ
    out: list[str] = []
    budget = len(text) + 2048
    quote = "none"
    escaped = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 1 < n and "A" <= text[i + 1] <= "Z":
            end = text.find("%", i + 1)
            if end >= 0:
                name = text[i + 1:end]
                val = env.get(name)
                if val is not None:
                    if shell and name.startswith("RSYNC_"):
                        if any(c in _SHELL_UNSAFE or ord(c) < 0x20 or ord(c) == 0x7F
                               for c in val):
                            raise ConfigError([ConfigMessage(
                                "", 0, f"refusing to run shell hook: %{name}% holds a shell "
                                "metacharacter")], RERR_UNSUPPORTED)
                        val = _shell_quote(val, quote)
                    budget -= len(val)
                    if budget < 0:
                        raise ConfigError([ConfigMessage(
                            "", 0, f"Overflowed buf in expand_vars() trying to expand: {text}")],
                            22)
                    out.append(val)
                    i = end + 1
                    continue
        if shell:
            if quote == "single":
                if ch == "'":
                    quote = "none"
            elif escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif quote == "double":
                if ch == '"':
                    quote = "none"
            elif ch == "'":
                quote = "single"
            elif ch == '"':
                quote = "double"
        out.append(ch)
        budget -= 1
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------
# Values


def _store(p: Param, value: str, log: _Log) -> object:
    """do_parameter()'s conversion of ``value`` for ``p``; ``_KEEP`` leaves the old one."""
    if p.kind == STRING:
        return value
    if p.kind == PATH:
        stripped = value.rstrip("/")
        return stripped if stripped else value[:1]
    value = expand_vars(value) or ""
    if p.kind in (BOOL, BOOL3):
        b = parse_bool(value, p.kind == BOOL3)
        if b == "bad":
            log(f'Badly formed boolean in configuration file: "{value}".')
            return _KEEP
        return b
    if p.kind == INTEGER:
        return _atoi(value)
    # ENUM (syslog facility): a name, else a positive number.
    fac = SYSLOG_FACILITIES.get(value.lower())
    if fac is not None:
        return fac
    num = _atoi(value)
    return num if num > 0 else _KEEP


_KEEP = object()


class _Log:
    """Collects rsync's messages, stamped with the current file and line."""

    def __init__(self) -> None:
        self.messages: list[ConfigMessage] = []
        self.where = ("", 0)

    def __call__(self, text: str) -> None:
        self.messages.append(ConfigMessage(self.where[0], self.where[1], text))


# ---------------------------------------------------------------------------
# The loaded configuration


class _Section:
    """One module's raw values (None = not set, for strings: fall back to the defaults)."""

    def __init__(self, name: str, defaults: dict[str, object]) -> None:
        self.values: dict[str, object] = dict(defaults)
        self.values["name"] = name


class Module:
    """A ``[module]`` section with rsync's lp_*() accessors.

    Strings are ``""`` when unset and %VAR%-expanded from ``os.environ`` on
    each access (rsync expands on first use, after it has set RSYNC_* vars);
    BOOL3 parameters are None when unset ("Unset" in rsync).
    """

    def __init__(self, values: dict[str, object], fallback: dict[str, object]) -> None:
        self._values = values
        self._fallback = fallback  # the final global defaults (FN_LOCAL_STRING's Vars.l)

    def raw(self, label: str) -> object:
        """The stored value, without %VAR% expansion (None for an unset string)."""
        p = _BY_LABEL[label]
        val = self._values.get(label)
        if p.kind in (STRING, PATH) and val is None:
            val = self._fallback.get(label)
        return val

    def get(self, label: str, env: Mapping[str, str] | None = None) -> object:
        p = _BY_LABEL[label]
        val = self.raw(label)
        if p.kind in (STRING, PATH):
            return expand_vars(val if isinstance(val, str) else "", env,
                               shell=label in SHELL_PARAMS) or ""
        return val

    def _s(self, label: str) -> str:
        v = self.get(label)
        assert isinstance(v, str)
        return v

    def _b(self, label: str) -> bool:
        return bool(self._values[label])

    def _b3(self, label: str) -> bool | None:
        v = self._values[label]
        return None if v is None else bool(v)

    def _i(self, label: str) -> int:
        v = self._values[label]
        assert isinstance(v, int)
        return v

    def __repr__(self) -> str:
        return f"Module({self.name!r})"

    # --- strings
    name = property(lambda self: self._s("name"))
    path = property(lambda self: self._s("path"))
    comment = property(lambda self: self._s("comment"))
    auth_digest = property(lambda self: self._s("auth digest"))
    auth_users = property(lambda self: self._s("auth users"))
    charset = property(lambda self: self._s("charset"))
    dont_compress = property(lambda self: self._s("dont compress"))
    early_exec = property(lambda self: self._s("early exec"))
    exclude = property(lambda self: self._s("exclude"))
    exclude_from = property(lambda self: self._s("exclude from"))
    filter = property(lambda self: self._s("filter"))
    gid = property(lambda self: self._s("gid"))
    hosts_allow = property(lambda self: self._s("hosts allow"))
    hosts_deny = property(lambda self: self._s("hosts deny"))
    include = property(lambda self: self._s("include"))
    include_from = property(lambda self: self._s("include from"))
    incoming_chmod = property(lambda self: self._s("incoming chmod"))
    lock_file = property(lambda self: self._s("lock file"))
    log_file = property(lambda self: self._s("log file"))
    log_format = property(lambda self: self._s("log format"))
    name_converter = property(lambda self: self._s("name converter"))
    outgoing_chmod = property(lambda self: self._s("outgoing chmod"))
    post_xfer_exec = property(lambda self: self._s("post-xfer exec"))
    pre_xfer_exec = property(lambda self: self._s("pre-xfer exec"))
    refuse_options = property(lambda self: self._s("refuse options"))
    secrets_file = property(lambda self: self._s("secrets file"))
    syslog_tag = property(lambda self: self._s("syslog tag"))
    uid = property(lambda self: self._s("uid"))
    temp_dir = property(lambda self: self._s("temp dir"))
    # --- numbers
    max_connections = property(lambda self: self._i("max connections"))
    max_verbosity = property(lambda self: self._i("max verbosity"))
    timeout = property(lambda self: self._i("timeout"))
    syslog_facility = property(lambda self: self._i("syslog facility"))
    # --- booleans
    fake_super = property(lambda self: self._b("fake super"))
    forward_lookup = property(lambda self: self._b("forward lookup"))
    ignore_errors = property(lambda self: self._b("ignore errors"))
    ignore_nonreadable = property(lambda self: self._b("ignore nonreadable"))
    insecure_links = property(lambda self: self._b("insecure links"))
    list = property(lambda self: self._b("list"))
    read_only = property(lambda self: self._b("read only"))
    reverse_lookup = property(lambda self: self._b("reverse lookup"))
    strict_modes = property(lambda self: self._b("strict modes"))
    transfer_logging = property(lambda self: self._b("transfer logging"))
    write_only = property(lambda self: self._b("write only"))
    munge_symlinks = property(lambda self: self._b3("munge symlinks"))
    numeric_ids = property(lambda self: self._b3("numeric ids"))
    open_noatime = property(lambda self: self._b3("open noatime"))
    use_chroot = property(lambda self: self._b3("use chroot"))


class Globals(Module):
    """The global section: the daemon-wide parameters plus every module default
    (rsync's ``lp_*(-1)``, used before a module is chosen)."""

    def __init__(self, gvalues: dict[str, object], lvalues: dict[str, object]) -> None:
        super().__init__({**lvalues, **gvalues}, {})

    address = property(lambda self: self._s("address"))
    daemon_chroot = property(lambda self: self._s("daemon chroot"))
    daemon_gid = property(lambda self: self._s("daemon gid"))
    daemon_uid = property(lambda self: self._s("daemon uid"))
    motd_file = property(lambda self: self._s("motd file"))
    pid_file = property(lambda self: self._s("pid file"))
    proxy_protocol_hosts = property(lambda self: self._s("proxy protocol hosts"))
    socket_options = property(lambda self: self._s("socket options"))
    listen_backlog = property(lambda self: self._i("listen backlog"))
    port = property(lambda self: self._i("port"))
    proxy_protocol = property(lambda self: self._b("proxy protocol"))


class DaemonConfig(Record):
    path: str
    globals: Globals
    modules: list[Module] = factory(list)
    messages: list[ConfigMessage] = factory(list)
    # What the load read (see _Journal) and the environment it expanded values from.
    journal: list[tuple[str, str, object]] = factory(list)
    environ: dict[str, str] = factory(dict)

    def is_current(self) -> bool:
        """Would load_config() with the same arguments read exactly what this load read?
        Then it would build the same configuration: every file's bytes, every include's
        file type and directory listing, and the environment are compared (no time
        stamps, so an edit within the file system's time granularity is seen too)."""
        if dict(os.environ) != self.environ:
            return False
        for op, path, result in self.journal:
            if _JOURNAL_OPS[op](path) != result:
                return False
        return True

    def module(self, name: str) -> Module | None:
        """lp_number(): the module whose (expanded) name is exactly ``name``."""
        for mod in reversed(self.modules):
            if mod.name == name:
                return mod
        return None

    def listing(self) -> list[tuple[str, str]]:
        """send_listing(): (name, comment) of the modules with ``list = yes``."""
        return [(m.name, m.comment) for m in self.modules if m.list]

    def listing_text(self) -> str:
        """The module lines exactly as rsync sends them (before "@RSYNCD: EXIT")."""
        return "".join(f"{name:<15}\t{comment}\n" for name, comment in self.listing())


# ---------------------------------------------------------------------------
# The loader's file-system reads, recorded so that a later load can be skipped


def _read_file(path: str) -> object:
    """pm_process()'s read: the bytes, or the errno (and text) of the failure."""
    try:
        from netsync.safepath import daemon_open

        # params.c OpenConfFile(): a planted symlink on the path is not followed.
        fd = daemon_open(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()
    except OSError as exc:
        return (exc.errno, exc.strerror)


def _stat_kind(path: str) -> object:
    """include_config()'s stat: the file type, or the errno (and text) of the failure."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except OSError as exc:
        return (exc.errno, exc.strerror)


def _list_dir(path: str) -> object:
    """include_config()'s directory read: the sorted names, or the failure."""
    try:
        return sorted(os.fsencode(n) for n in os.listdir(path))
    except OSError as exc:
        return (exc.errno, exc.strerror)


_JOURNAL_OPS = {"read": _read_file, "stat": _stat_kind, "list": _list_dir}


# ---------------------------------------------------------------------------
# The scanner (params.c)


class _Loader:
    def __init__(self, dparams: Sequence[str], globals_only: bool) -> None:
        self.log = _Log()
        self.gvars: dict[str, object] = {p.label: p.default for p in PARAMS if p.is_global}
        self.lvars: dict[str, object] = {p.label: p.default for p in PARAMS if not p.is_global}
        self.stack: list[tuple[dict[str, object], dict[str, object]]] = []
        self.sections: list[_Section] = []
        self.current: _Section | None = None
        self.in_global = True
        self.dparams = list(dparams)
        self.globals_only = globals_only
        self.journal: list[tuple[str, str, object]] = []

    def _io(self, op: str, path: str) -> object:
        result = _JOURNAL_OPS[op](path)
        self.journal.append((op, path, result))
        return result

    # --- loadparm.c callbacks

    def do_parameter(self, name: str, value: str) -> bool:
        p = find_param(name)
        if p is None:
            if not name.startswith("-"):
                self.log(f'Unknown Parameter encountered: "{name}"')
            self.log(f'IGNORING unknown parameter "{name}"')
            return True
        if self.in_global:
            target = self.gvars if p.is_global else self.lvars
        else:
            if p.is_global:
                self.log(f"Global parameter {name} found in module section!")
                return True
            assert self.current is not None
            target = self.current.values
        val = _store(p, value, self.log)
        if val is not _KEEP:
            target[p.label] = val
        return True

    def do_section(self, name: str) -> bool:
        if name.startswith("]"):  # push/pop/reset from an &include
            self.in_global = True
            if name == "]push":
                self.stack.append((dict(self.gvars), dict(self.lvars)))
                return True
            if name in ("]pop", "]reset"):
                if not self.stack:
                    return False
                g, loc = self.stack[-1]
                self.gvars, self.lvars = dict(g), dict(loc)
                if name == "]pop":
                    self.stack.pop()
                return True
            return False
        is_global = _squash(name) == _squash(GLOBAL_NAME)
        if self.in_global and not is_global and not self.sections:
            self.apply_dparams()
        self.in_global = is_global
        if is_global:
            return True
        if "/" in name:
            self.log(f"Warning: invalid section name in configuration file: {name}")
            return False
        key = _squash(name)
        for sec in reversed(self.sections):
            if _squash(str(sec.values["name"])) == key:
                self.current = sec
                return True
        self.current = _Section(name, self.lvars)
        self.sections.append(self.current)
        return True

    def apply_dparams(self) -> None:
        for item in self.dparams:
            name, _, val = item.partition("=")
            self.do_parameter(name, val.lstrip(_WS))

    # --- params.c

    def pm_process(self, path: str, sections: bool, directive: tuple[str, int] | None = None
                   ) -> int:
        saved = self.log.where
        data = self._io("read", path)
        if not isinstance(data, bytes):
            if directive:
                self.log.where = directive
            errno_, strerror = data  # type: ignore[misc]
            self.log(f'unable to open config file "{path}": {strerror} ({errno_})')
            return 0
        text = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        result = _Parser(self, path, text, sections).parse()
        self.log.where = (path, 0)
        if not result:
            self.log("params.c:pm_process() - Failed.  Error returned from params.c:parse().")
        self.log.where = saved
        return result

    def include_config(self, target: str, manage_globals: bool) -> int:
        sections = not self.globals_only
        kind = self._io("stat", target)
        if not isinstance(kind, int):
            errno_, strerror = kind  # type: ignore[misc]
            self.log(f'unable to stat config file "{target}": {strerror} ({errno_})')
            return 0
        if kind == stat.S_IFREG:
            if manage_globals and sections:
                self.do_section("]push")
            ret = self.pm_process(target, sections, self.log.where)
            if manage_globals and sections:
                self.do_section("]pop")
            return ret
        if kind != stat.S_IFDIR:
            return 0
        pattern = b"*.conf" if manage_globals else b"*.inc"
        names = self._io("list", target)
        if not isinstance(names, list):
            errno_, strerror = names  # type: ignore[misc]
            self.log(f'unable to open config dir "{target}": {strerror} ({errno_})')
            return 0
        files = [os.path.join(target, os.fsdecode(n)) for n in names if wildmatch(pattern, n)]
        ret = 1
        for j, fname in enumerate(files):
            if manage_globals and sections:
                self.do_section("]push" if j == 0 else "]reset")
            ret = self.pm_process(fname, sections, self.log.where)
            if ret != 1:
                break
        if files and manage_globals and sections:
            self.do_section("]pop")
        return ret


class _Parser:
    """One file's Parse()/Section()/Parameter() with rsync's buffer arithmetic."""

    def __init__(self, loader: _Loader, path: str, text: str, sections: bool) -> None:
        self.ld = loader
        self.path = path
        self.text = text
        self.pos = 0
        self.line = 1
        self.sections = sections
        self.buf: list[str] = []

    def getc(self) -> str:
        if self.pos >= len(self.text):
            return ""
        ch = self.text[self.pos]
        self.pos += 1
        if ch == "\n":
            self.line += 1
        return ch

    def eat_ws(self) -> str:
        c = self.getc()
        while c and c in _WS and c != "\n":
            c = self.getc()
        return c

    def eat_comment(self) -> str:
        c = self.getc()
        while c and c != "\n":
            c = self.getc()
        return c

    def put(self, k: int, ch: str) -> None:
        while len(self.buf) <= k:
            self.buf.append("\0")
        self.buf[k] = ch

    def text_of(self, start: int, end: int) -> str:
        return "".join(self.buf[start:end]).split("\0", 1)[0]

    def continuation(self, pos: int) -> int:
        pos -= 1
        while pos >= 0 and self.buf[pos] in _WS:
            pos -= 1
        return pos if pos >= 0 and self.buf[pos] == "\\" else -1

    def here(self) -> None:
        self.ld.log.where = (self.path, self.line)

    def parse(self) -> int:
        c = self.eat_ws()
        while c:
            if c == "\n":
                c = self.eat_ws()
            elif c in ";#":
                c = self.eat_comment()
            elif c == "[":
                if not self.sections:
                    return 2
                self.here()
                if not self.section():
                    return 0
                c = self.eat_ws()
            elif c == "\\":
                c = self.eat_ws()
            elif c == "&":
                self.here()
                r = self.parameter(c, directive=True)
                if r != 1:
                    return r
                c = self.eat_ws()
            else:
                self.here()
                if not self.parameter(c):
                    return 0
                c = self.eat_ws()
        return 1

    def section(self) -> bool:
        log = self.ld.log
        i = end = 0
        self.buf = []
        c = self.eat_ws()
        while c:
            if c == "]":
                if end == 0:
                    log("params.c:Section() - Empty section name in config file.")
                    return False
                if not self.ld.do_section(self.text_of(0, end)):
                    return False
                self.eat_comment()
                return True
            if c == "\n":
                i = self.continuation(i)
                if i < 0:
                    log(f"params.c:Section() - Badly formed line in config file: "
                        f"{self.text_of(0, end)}")
                    return False
                end = i - 1 if i > 0 and self.buf[i - 1] == " " else i
                c = self.getc()
            elif c in _WS:
                self.put(end, " ")
                i = end + 1
                c = self.eat_ws()
            else:
                self.put(i, c)
                i += 1
                end = i
                c = self.getc()
        log(f"params.c:Section() - Unexpected EOF in the config file: {self.text_of(0, end)}")
        return False

    def parameter(self, c: str, directive: bool = False) -> int:
        log = self.ld.log
        i = end = vstart = 0
        self.buf = []
        while vstart == 0:
            if c == "=":
                if end == 0:
                    log("params.c:Parameter() - Invalid parameter name in config file.")
                    return 0
                self.put(end, "\0")
                end += 1
                i = vstart = end
                c = self.eat_ws()
            elif c == "\n":
                i = self.continuation(i)
                if i < 0:
                    log("params.c:Parameter() - Ignoring badly formed line in config file: "
                        f"{self.text_of(0, end)}")
                    return 1
                end = i - 1 if i > 0 and self.buf[i - 1] == " " else i
                c = self.getc()
            elif not c:
                log(f"params.c:Parameter() - Unexpected end-of-file at: {self.text_of(0, i)}")
                return 1
            elif c in " \t" and self.buf[:1] == ["&"]:
                self.put(end, "\0")
                end += 1
                i = vstart = end
                c = self.eat_ws()
                if c == "=":
                    c = self.eat_ws()
            elif c in _WS:
                self.put(end, " ")
                i = end + 1
                c = self.eat_ws()
            else:
                self.put(i, c)
                i += 1
                end = i
                c = self.getc()
        while c:
            if c == "\r":
                c = self.getc()
            elif c == "\n":
                i = self.continuation(i)
                if i < 0:
                    break
                end = i
                c = self.getc()
            else:
                self.put(i, c)
                i += 1
                if c not in _WS:
                    end = i
                c = self.getc()
        name = self.text_of(0, vstart)
        value = "".join(self.buf[vstart:end])
        if directive:
            return self.directive(name, value)
        return 1 if self.ld.do_parameter(name, value) else 0

    def directive(self, name: str, value: str) -> int:
        where = self.ld.log.where
        if name.lower() == "&include":
            ret = self.ld.include_config(value, True)
        elif name.lower() == "&merge":
            ret = self.ld.include_config(value, False)
        else:
            self.ld.log(f"Unknown directive: {name}.")
            ret = 0
        self.ld.log.where = where
        return ret


# ---------------------------------------------------------------------------
# Entry points


def check_dparams(dparams: Sequence[str]) -> None:
    """options.c's checks of ``--dparam NAME=VALUE`` before the file is read."""
    for item in dparams:
        if "=" not in item:
            raise ConfigError([ConfigMessage("", 0,
                                             f"--dparam value is missing an '=': {item}")])
        name = item.split("=", 1)[0]
        if find_param(name) is None:
            raise ConfigError([ConfigMessage("", 0, f'Unknown parameter "{name}"')])


def load_config(path: str, dparams: Sequence[str] = (), *, globals_only: bool = False
                ) -> DaemonConfig:
    """lp_load(): read ``path`` (and its includes) with ``--dparam`` overrides.

    ``globals_only`` reads only up to the first section, as the listening
    daemon does at start-up (modules are re-read per connection).  Raises
    :class:`ConfigError` when rsync would fail to load the file.  Warnings
    rsync logs and then ignores are in ``.messages``.
    """
    check_dparams(dparams)
    env = dict(os.environ)  # before the parse: what a value's %VAR% expanded from
    ld = _Loader(dparams, globals_only)
    result = ld.pm_process(path, not globals_only)
    if not result:
        raise ConfigError(ld.log.messages)
    if globals_only:
        ld.in_global = True
        ld.apply_dparams()
    fallback = ld.lvars
    modules = [Module(sec.values, fallback) for sec in ld.sections]
    return DaemonConfig(path, Globals(ld.gvars, ld.lvars), modules, ld.log.messages,
                        ld.journal, env)
